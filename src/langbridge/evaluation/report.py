"""Markdown tables of results: one row per model, columns = languages + AVG + HRL + LRL; accuracies in %,
losses in nats per token, chrF on its 0-100 scale.

`compare` lines up several results.json files the way the paper sets LM-alone against LangBridge: the
first file is the reference row and every later row shows its difference to it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..utils import read_utf8

__all__ = ["results_markdown", "compare", "load_results"]

SUMMARY_COLUMNS = ("AVG", "HRL", "LRL")


# (scale, decimals) per metric: accuracies in %, losses in nats per token, chrF on its own 0-100 scale.
METRIC_FORMAT = {"nats_per_token": (1.0, 3), "chrf": (1.0, 1)}


def _fmt(value: float | None, metric: str = "accuracy") -> str:
    scale, digits = METRIC_FORMAT.get(metric, (100.0, 1))
    return "–" if value is None else f"{scale * value:.{digits}f}"


def _fmt_delta(value: float | None, reference: float | None, metric: str = "accuracy") -> str:
    if value is None or reference is None:
        return _fmt(value, metric)
    scale, digits = METRIC_FORMAT.get(metric, (100.0, 1))
    return f"{scale * value:.{digits}f} ({scale * (value - reference):+.{digits}f})"


def _columns(entries: Iterable[Mapping[str, Any]]) -> list[str]:
    langs: list[str] = []
    for entry in entries:
        for lang in entry.get("languages", list(entry.get("scores", {}))):
            if lang not in langs:
                langs.append(lang)
    return langs


def _summary_columns(entries: Sequence[Mapping[str, Any]]) -> list[str]:
    # A group no model has (e.g. LRL for English-only BBH) gets no column.
    return [c for c in SUMMARY_COLUMNS if any(e.get("summary", {}).get(c) is not None for e in entries)]


def _table(title: str, rows: list[tuple[str, Mapping[str, Any]]], with_deltas: bool) -> str:
    entries = [entry for _, entry in rows]
    langs = _columns(entries)
    summary = _summary_columns(entries)
    metric = entries[0].get("metric", "accuracy")
    split = entries[0].get("split")
    heading = f"### {title} ({metric}{', ' + split if split and split != 'test' else ''})"
    header = ["Model", *langs, *summary]
    lines = [heading, "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    ref = entries[0]
    for i, (label, entry) in enumerate(rows):
        cells = [label]
        for lang in langs:
            value = entry.get("scores", {}).get(lang)
            reference = ref.get("scores", {}).get(lang) if with_deltas and i > 0 else None
            cells.append(_fmt_delta(value, reference, metric))
        for col in summary:
            value = entry.get("summary", {}).get(col)
            reference = ref.get("summary", {}).get(col) if with_deltas and i > 0 else None
            cells.append(_fmt_delta(value, reference, metric))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def results_markdown(results: Mapping[str, Any]) -> str:
    """Tables for one results dict (as written to results.json)."""
    model = results.get("model", "model")
    parts = [f"# Evaluation: {model}", ""]
    for task, entry in results.get("tasks", {}).items():
        parts.append(_table(task, [(model, entry)], with_deltas=False))
        extra = entry.get("pass_at_k")
        if extra:
            ks = sorted({k for per in extra.values() for k in per}, key=lambda k: int(k.split("@")[1]))
            parts += ["", "| language | " + " | ".join(ks) + " |", "|---|" + "---|" * len(ks)]
            for lang, per in extra.items():
                parts.append(f"| {lang} | " + " | ".join(_fmt(per.get(k)) for k in ks) + " |")
        parts.append("")
    timing = results.get("timing", {})
    if timing:
        parts += ["| task | examples run | seconds | examples/s |", "|---|---|---|---|"]
        for task, t in timing.items():
            parts.append(f"| {task} | {t['examples']} | {t['seconds']:.1f} | {t['examples_per_s']:.2f} |")
    return "\n".join(parts).rstrip() + "\n"


def load_results(path: str | os.PathLike) -> dict[str, Any]:
    """Read a results.json (or the results.json inside a directory)."""
    p = Path(path)
    if p.is_dir():
        p = p / "results.json"
    if not p.is_file():
        raise FileNotFoundError(
            f"{path}: no results file; pass results.json files written by `langbridge eval`."
        )
    try:
        data = json.loads(read_utf8(p))
    except json.JSONDecodeError as err:
        raise ValueError(f"{p} is not valid JSON ({err}).") from err
    if not isinstance(data, dict) or "tasks" not in data:
        raise ValueError(f"{p} is not a langbridge results file (no 'tasks' key).")
    return data


def compare(paths: Sequence[str | os.PathLike], labels: Sequence[str] | None = None) -> str:
    """Side-by-side markdown of several results files; rows after the first show deltas to the first
    (put the LM-alone run first and the LangBridge run(s) after it)."""
    if len(paths) < 1:
        raise ValueError("compare needs at least one results file.")
    results = [load_results(p) for p in paths]
    if labels is not None and len(labels) != len(results):
        raise ValueError(f"Got {len(labels)} labels for {len(results)} results files; give one per file.")
    names = (
        list(labels)
        if labels is not None
        else [r.get("model") or Path(p).stem for r, p in zip(results, paths, strict=True)]
    )
    # Repeated model names (same model, different settings) get the file's folder as a suffix.
    if len(set(names)) < len(names):
        names = [
            f"{n} ({Path(p).resolve().parent.name if Path(p).is_file() else Path(p).name})"
            for n, p in zip(names, paths, strict=True)
        ]
    tasks: list[str] = []
    for r in results:
        tasks += [t for t in r["tasks"] if t not in tasks]
    parts = []
    for task in tasks:
        rows = [
            (name, r["tasks"][task]) for name, r in zip(names, results, strict=True) if task in r["tasks"]
        ]
        with_deltas = task in results[0]["tasks"] and len(rows) > 1
        parts.append(_table(task, rows, with_deltas=with_deltas))
        parts.append("")
    return "\n".join(parts).rstrip() + "\n"
