"""The demo's report: per-language LangBridge (mean over seeds) vs LM alone with paired bootstrap CIs, group
averages, and the markdown tables. Reads only the cached score files (OUTPUT/scores/*.json); `rebuild_report`
writes OUTPUT/results.json and results.md from them."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from langbridge.evaluation.tasks.flores import FLORES_LOW_RESOURCE
from langbridge.utils import atomic_write_text

from .demo_settings import DemoSettings, read_json, write_json

# Report sections in the order the tables show them: the content scores first.
LOSS_TITLES = {
    "translation": "FLORES X → English: nats per English token given the sentence in X (lower is better)",
    "continuation": "FLORES continuation: nats per token of the next English sentence (lower is better)",
}
VALUE_TITLES = {
    "chrf": ("FLORES X → English, greedy output: chrF++ (0-100, higher is better)", 1.0),
    "xcopa": ("XCOPA: accuracy in %", 100.0),
    "mgsm": ("MGSM (small subset): accuracy in %", 100.0),
}


def _loss_arrays(scores: Sequence[dict[str, Any]], key: str, lang: str) -> list[float]:
    """Per-example nats per token, averaged over models (seeds)."""
    import numpy as np

    return np.mean([s[key]["languages"][lang]["values"] for s in scores], axis=0).tolist()


def _value_arrays(scores: Sequence[dict[str, Any]], key: str, lang: str) -> list[float]:
    """Per-example values averaged over models (seeds); examples aligned by id."""
    import numpy as np

    rows = [dict((i, c) for i, c in s[key]["languages"][lang]) for s in scores]
    ids = sorted(rows[0])
    for r in rows[1:]:
        if sorted(r) != ids:
            raise ValueError(f"{key} {lang}: models were scored on different examples; rerun the evaluation")
    return np.mean([[float(r[i]) for i in ids] for r in rows], axis=0).tolist()


def _ci_row(stat: dict[str, Any]) -> dict[str, Any]:
    return {k: stat[k] for k in ("a", "b", "delta", "ci_low", "ci_high", "n")}


def groups(langs: Sequence[str], low: frozenset[str]) -> dict[str, list[str]]:
    return {
        "AVG": list(langs),
        "HRL": [x for x in langs if x not in low and x not in ("eng", "en")],
        "LRL": [x for x in langs if x in low],
    }


def _loss_section(key: str, baseline: dict[str, Any], seeds: Sequence[dict[str, Any]], boot: dict) -> dict:
    from .stats import paired_bootstrap, paired_bootstrap_mean_over_groups

    base = baseline[key]
    no_ctx = base["no_context"]
    upper = base["languages"].get("eng")
    section: dict[str, Any] = {
        "metric": "nats/token (lower is better)",
        "split": base["split"],
        "languages": {},
    }
    arrays = {}
    for lang, lm in base["languages"].items():
        lb = _loss_arrays(seeds, key, lang)
        if len(lb) != len(lm["values"]) or len(lb) != len(no_ctx["values"]):
            raise ValueError(f"{key} {lang}: LangBridge and the LM alone were scored on different examples")
        arrays[lang] = (lb, lm["values"], None)
        row = {
            "low_resource": lang in FLORES_LOW_RESOURCE,
            "lm_alone": lm["nats_per_token"],
            "langbridge": sum(lb) / len(lb),
            "langbridge_per_seed": [s[key]["languages"][lang]["nats_per_token"] for s in seeds],
            "delta_vs_lm": _ci_row(paired_bootstrap(lb, lm["values"], **boot)),
            "delta_vs_no_context": _ci_row(paired_bootstrap(lb, no_ctx["values"], **boot)),
        }
        if upper is not None and len(upper["values"]) == len(lb):
            row["delta_vs_upper_bound"] = _ci_row(paired_bootstrap(lb, upper["values"], **boot))
        section["languages"][lang] = row
    section["no_context"] = no_ctx["nats_per_token"]
    section["upper_bound"] = upper["nats_per_token"] if upper is not None else None
    section["n"] = len(no_ctx["values"])
    section["groups"] = {
        group: {
            "languages": members,
            **_ci_row(paired_bootstrap_mean_over_groups([arrays[m] for m in members], **boot)),
        }
        for group, members in groups(list(arrays), FLORES_LOW_RESOURCE).items()
        if members
    }
    return section


def _value_section(key: str, baseline: dict[str, Any], seeds: Sequence[dict[str, Any]], boot: dict) -> dict:
    from langbridge.evaluation.tasks.mgsm import MGSM_LOW_RESOURCE
    from langbridge.evaluation.tasks.xcopa import XCOPA_LOW_RESOURCE

    from .stats import paired_bootstrap, paired_bootstrap_mean_over_groups

    low = {"xcopa": XCOPA_LOW_RESOURCE, "mgsm": MGSM_LOW_RESOURCE}.get(key, FLORES_LOW_RESOURCE)
    section: dict[str, Any] = {"metric": key, "split": baseline[key]["split"], "languages": {}}
    arrays = {}
    for lang, rows in baseline[key]["languages"].items():
        if not rows:
            continue
        lb, lm = _value_arrays(seeds, key, lang), _value_arrays([baseline], key, lang)
        arrays[lang] = (lb, lm, None)
        section["languages"][lang] = {
            "low_resource": lang in low,
            "lm_alone": sum(lm) / len(lm),
            "langbridge": sum(lb) / len(lb),
            "langbridge_per_seed": [sum(_value_arrays([s], key, lang)) / len(lb) for s in seeds],
            "delta_vs_lm": _ci_row(paired_bootstrap(lb, lm, **boot)),
        }
    section["groups"] = {
        group: {
            "languages": members,
            **_ci_row(paired_bootstrap_mean_over_groups([arrays[m] for m in members], **boot)),
        }
        for group, members in groups(list(arrays), low).items()
        if members
    }
    return section


def build_report(baseline: dict[str, Any], seeds: Sequence[dict[str, Any]], settings: Any) -> dict[str, Any]:
    """Every task the LM alone and at least one seed were scored on; Δ = LangBridge - LM alone."""
    boot = {"n_resamples": settings.n_resamples, "seed": 0}
    report: dict[str, Any] = {"seeds": [s["name"] for s in seeds], "tasks": {}}
    for key in (*LOSS_TITLES, *VALUE_TITLES):
        # The slow generation tasks (chrF, MGSM) run on the first seed only: each uses the seeds that have it.
        scored = [s for s in seeds if key in s]
        if key not in baseline or not scored:
            continue
        section = _loss_section if key in LOSS_TITLES else _value_section
        report["tasks"][key] = {**section(key, baseline, scored, boot), "seeds": len(scored)}
    return report


def fmt_ci(row: dict[str, Any], scale: float = 1.0, digits: int = 3) -> str:
    d, lo, hi = (row[k] * scale for k in ("delta", "ci_low", "ci_high"))
    return f"{d:+.{digits}f} [{lo:+.{digits}f}, {hi:+.{digits}f}]"


def _group_label(lang: str, low_resource: bool) -> str:
    return "en" if lang in ("eng", "en") else ("LRL" if low_resource else "HRL")


def report_markdown(report: dict[str, Any]) -> str:
    """The per-language tables (also printed by the command)."""
    lines: list[str] = []
    n_seeds = len(report["seeds"])
    for key, title in LOSS_TITLES.items():
        sec = report["tasks"].get(key)
        if not sec:
            continue
        upper = (
            f"; LM reading the English sentence itself {sec['upper_bound']:.3f}" if sec["upper_bound"] else ""
        )
        lines += [
            f"### {title}, {sec['split']} portion, n = {sec['n']} per language",
            "",
            f"LangBridge = mean over {n_seeds} training seed(s); Δ = LangBridge − reference, paired bootstrap 95% CI "
            f"over sentences. References: LM with no context {sec['no_context']:.3f}{upper}.",
            "",
            "| language | group | LM alone (X as text) | LangBridge | per seed | Δ vs LM alone | Δ vs no context |",
            "|---|---|---|---|---|---|---|",
        ]
        for lang, r in sec["languages"].items():
            per_seed = " / ".join(f"{v:.3f}" for v in r["langbridge_per_seed"])
            lines.append(
                f"| {lang} | {_group_label(lang, r['low_resource'])} | {r['lm_alone']:.3f} | {r['langbridge']:.3f} | "
                f"{per_seed} | {fmt_ci(r['delta_vs_lm'])} | {fmt_ci(r['delta_vs_no_context'])} |"
            )
        for group, r in sec["groups"].items():
            lines.append(
                f"| **{group}** ({','.join(r['languages'])}) | | {r['b']:.3f} | {r['a']:.3f} | | {fmt_ci(r)} | |"
            )
        lines.append("")
    for key, (title, scale) in VALUE_TITLES.items():
        sec = report["tasks"].get(key)
        if not sec:
            continue
        digits = 1
        n = {r["delta_vs_lm"]["n"] for r in sec["languages"].values()}
        lines += [
            f"### {title} ({sec['split']} split, n = {'/'.join(map(str, sorted(n)))} per language)",
            "",
            "| language | group | LM alone | LangBridge | per seed | Δ [95% CI] |",
            "|---|---|---|---|---|---|",
        ]
        for lang, r in sec["languages"].items():
            per_seed = " / ".join(f"{scale * v:.{digits}f}" for v in r["langbridge_per_seed"])
            lines.append(
                f"| {lang} | {_group_label(lang, r['low_resource'])} | {scale * r['lm_alone']:.1f} | "
                f"{scale * r['langbridge']:.1f} | {per_seed} | {fmt_ci(r['delta_vs_lm'], scale, digits)} |"
            )
        for group, r in sec["groups"].items():
            lines.append(
                f"| **{group}** ({','.join(r['languages'])}) | | {scale * r['b']:.1f} | {scale * r['a']:.1f} | | "
                f"{fmt_ci(r, scale, digits)} |"
            )
        lines.append("")
    return "\n".join(lines)


def pilot_markdown(results: dict[str, Any]) -> str:
    lines = [
        "| recipe | FLORES X→En dev AVG nats/token (LM alone → LangBridge, Δ [95% CI]) | "
        "FLORES continuation dev AVG (Δ [95% CI]) | XCOPA val AVG acc % (Δ [95% CI]) |",
        "|---|---|---|---|",
    ]
    for recipe, rep in results["recipes"].items():
        cells = []
        for key in ("translation", "continuation"):
            r = rep["tasks"].get(key, {}).get("groups", {}).get("AVG")
            cells.append(f"{r['b']:.3f} → {r['a']:.3f}, {fmt_ci(r)}" if r else "–")
        xc = rep["tasks"]["xcopa"]["groups"]["AVG"]
        cells.append(f"{100 * xc['b']:.1f} → {100 * xc['a']:.1f}, {fmt_ci(xc, 100, 1)}")
        lines.append(f"| {recipe} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def rebuild_report(out: Path, peak_rss_mb: float | None = None) -> dict[str, Any]:
    """results.json/.md from the cached scores of OUTPUT (also after changing the report code, without models)."""
    saved = read_json(out / "settings.json") if (out / "settings.json").exists() else None
    if saved is None:
        raise FileNotFoundError(f"{out} holds no demo run (settings.json missing)")
    settings = DemoSettings(**saved)
    baseline = read_json(out / "scores" / "lm_alone.json")
    seeds = [
        read_json(out / "scores" / f"langbridge_seed{s}.json")
        for s in settings.seeds
        if (out / "scores" / f"langbridge_seed{s}.json").exists()
    ]
    if not seeds:
        raise FileNotFoundError(f"{out} has no evaluated LangBridge seed yet")
    report = build_report(baseline, seeds, settings)
    report["settings"] = saved
    timing = out / "timing.json"
    report["timing_s"] = read_json(timing) if timing.exists() else {}
    report["train_summaries"] = {
        f"seed{s}": read_json(out / "train" / f"seed{s}" / "train_summary.json")
        for s in settings.seeds
        if (out / "train" / f"seed{s}" / "train_summary.json").exists()
    }
    previous = out / "results.json"
    if peak_rss_mb is not None:
        report["peak_rss_mb"] = peak_rss_mb
    elif previous.exists():
        report["peak_rss_mb"] = read_json(previous).get("peak_rss_mb")
    write_json(out / "results.json", report)
    atomic_write_text(out / "results.md", report_markdown(report))
    return report
