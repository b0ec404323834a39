"""`evaluate`: run tasks on a model, write predictions / results.json / results.md, resume where it stopped.

Output directory layout:
    predictions/<task>.jsonl   one row per example (and per sample for sampled code runs): id, task, language,
                               split, input, prompt, output (raw), extracted, gold, correct, config (hash)
    results.json               config, model, per-language scores, AVG/HRL/LRL, timing (written atomically)
    results.md                 the markdown table (written atomically)
Rows are appended and flushed after every batch, so an interrupted run loses at most one batch; re-running
with the same settings skips every example already in the file. Settings that change outputs (model,
prompt style, shots, token budget, sampling) are hashed into each row, and a mismatch is an error rather
than a silent mix.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from ..runtime.decoding import longest_first
from ..utils import atomic_write_text, read_utf8, reporting_disk_full
from .backends import EvalModel, load_backend
from .data import DataNotFoundError, DataSource
from .registry import BuildOptions, Example, Task, get_task
from .report import results_markdown
from .requests import GenerationRequest, LoglikelihoodRequest
from .scoring import summarize_languages

__all__ = ["evaluate", "read_predictions"]

logger = logging.getLogger(__name__)


@dataclass
class _Unit:
    example: Example
    key: str
    sample: int | None
    request: GenerationRequest | list[LoglikelihoodRequest]


def _as_list(value: str | Iterable[str] | None) -> list[str] | None:
    if value is None:
        return None
    items = value.split(",") if isinstance(value, str) else list(value)
    return [v.strip() for v in items if v and v.strip()]


def _fingerprint(settings: Mapping[str, Any]) -> str:
    return hashlib.sha1(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:12]


def read_predictions(path: str | os.PathLike) -> dict[str, dict]:
    """Rows of a predictions file by key; a torn last line (interrupted write) is ignored."""
    rows: dict[str, dict] = {}
    p = Path(path)
    if not p.exists():
        return rows
    lines = read_utf8(p).splitlines()
    for n, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            if n == len(lines) - 1:
                break  # interrupted mid-write
            raise ValueError(
                f"{p}: line {n + 1} is not valid JSON; delete the file to start this task over."
            ) from None
        rows[row["key"]] = row
    return rows


def _prompt_record(backend: Any, request: Any) -> dict[str, Any]:
    describe = getattr(backend, "describe_request", None)
    if isinstance(request, list):
        read = describe(request[0]) if describe is not None else {"prompt": request[0].context}
        return {**read, "choices": [r.continuation for r in request]}
    if describe is not None:
        return describe(request)
    return {"prompt": request.full_prompt}


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for package in ("langbridge", "torch", "transformers"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = "not installed"
    return found


def _prompt_changed(row: Mapping[str, Any], record: Mapping[str, Any]) -> bool:
    return any(row.get(k) != v for k, v in record.items() if k in ("prompt", "lm_prompt", "choices"))


def _language_metrics(task: Task, rows: list[dict], pass_k: Sequence[int]) -> dict[str, Any]:
    if task.kind == "code":
        from .sandbox import pass_at_k

        per_problem: dict[str, list[bool]] = {}
        for row in rows:
            per_problem.setdefault(row["id"], []).append(bool(row["correct"]))
        n_min = min(len(v) for v in per_problem.values())
        scores = {}
        for k in sorted(set(pass_k) | {1}):
            if k <= n_min:
                scores[f"pass@{k}"] = sum(pass_at_k(len(v), sum(v), k) for v in per_problem.values()) / len(
                    per_problem
                )
        return {"score": scores["pass@1"], "n": len(per_problem), "pass_at_k": scores}
    correct = [float(r["correct"]) for r in rows]
    out: dict[str, Any] = {"n": len(rows), "micro": sum(correct) / len(correct)}
    if task.subtask is not None:
        by_sub: dict[str, list[float]] = {}
        for r in rows:
            by_sub.setdefault(r["subtask"], []).append(float(r["correct"]))
        out["subtasks"] = {s: sum(v) / len(v) for s, v in sorted(by_sub.items())}
        out["score"] = sum(out["subtasks"].values()) / len(out["subtasks"])  # macro average over subtasks
    else:
        out["score"] = out["micro"]
    return out


def _select_languages(tasks: list[Task], languages: list[str] | None) -> dict[str, list[str]]:
    if languages is None:
        return {t.name: list(t.languages) for t in tasks}
    known = {lang for t in tasks for lang in t.languages}
    unknown = [lang for lang in languages if lang not in known]
    if unknown:
        raise ValueError(
            f"Languages {unknown} are not in any selected task; available: "
            + "; ".join(f"{t.name}: {','.join(t.languages)}" for t in tasks)
        )
    chosen = {t.name: [lang for lang in languages if lang in t.languages] for t in tasks}
    for t in tasks:
        if not chosen[t.name]:
            logger.warning(
                "Skipping %s: none of the languages %s are in it (%s).", t.name, languages, t.languages
            )
    return chosen


def evaluate(
    model: EvalModel | str | os.PathLike,
    tasks: str | Sequence[str | Task],
    *,
    languages: str | Sequence[str] | None = None,
    limit: int | None = None,
    batch_size: int = 8,
    output_dir: str | os.PathLike | None = None,
    data_dir: str | os.PathLike | None = None,
    task_dirs: Mapping[str, str | os.PathLike] | None = None,
    split: str | None = None,
    seed: int = 0,
    prompt_style: str = "auto",
    instruction_template: str | None = None,
    num_fewshot: int | None = None,
    max_new_tokens: int | None = None,
    num_samples: int = 1,
    temperature: float = 0.8,
    top_p: float = 0.95,
    pass_k: Sequence[int] = (1, 10),
    lm_only: bool = False,
    device: str | None = None,
    dtype: str | None = None,
    model_name: str | None = None,
    progress: bool = True,
    overwrite: bool = False,
    allow_hub: bool = True,
    sandbox_workers: int | None = None,
) -> dict[str, Any]:
    """Evaluate `model` (a backend, a LangBridge checkpoint, or with lm_only a causal LM) on `tasks`.

    Returns the results dict that is also written to <output_dir>/results.json (when output_dir is given).
    `num_samples` > 1 samples code completions (temperature/top_p) for pass@k; other tasks decode greedily.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}.")
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}.")
    task_list = [
        t if isinstance(t, Task) else get_task(t)
        for t in (_as_list(tasks) if isinstance(tasks, str) else tasks)
    ]
    if not task_list:
        raise ValueError("No tasks given; pass e.g. tasks='mgsm,xcopa'.")
    lang_choice = _select_languages(task_list, _as_list(languages))
    source = DataSource.create(data_dir, task_dirs, allow_hub=allow_hub)
    # Read every benchmark file before loading the model: a missing file is reported in seconds.
    loaded: dict[tuple[str, str, str], list[Example]] = {}
    for task in task_list:
        task_split = split or task.splits[0]
        if task_split not in task.splits:
            raise ValueError(f"Task {task.name} has splits {task.splits}, not {task_split!r}.")
        for lang in lang_choice[task.name]:
            try:
                examples = task.load(source, lang, task_split)
            except DataNotFoundError as err:
                raise DataNotFoundError(f"{err}\n{task.name} expects: {task.data_help}.") from err
            loaded[(task.name, lang, task_split)] = _limit(task, examples, limit) if limit else examples
    if isinstance(model, str | os.PathLike):
        backend = load_backend(
            model, lm_only=lm_only, batch_size=batch_size, device=device, dtype=dtype, name=model_name
        )
    else:
        backend = model
        if model_name:
            backend.name = model_name
    style = backend.prompt_style(prompt_style, instruction_template)
    out_dir = Path(output_dir) if output_dir is not None else None

    run_config = {
        "tasks": [t.name for t in task_list],
        "languages": _as_list(languages),
        "limit": limit,
        "batch_size": batch_size,
        "split": split,
        "seed": seed,
        "prompt_style": style.describe(),
        "instruction_template": instruction_template,
        "num_fewshot": num_fewshot,
        "max_new_tokens": max_new_tokens,
        "num_samples": num_samples,
        "temperature": temperature if num_samples > 1 else None,
        "top_p": top_p if num_samples > 1 else None,
        "data_dir": str(source.root) if source.root else None,
        "versions": _versions(),
    }
    backend_config = (
        backend.config() if hasattr(backend, "config") else {"name": backend.name, "kind": backend.kind}
    )
    results: dict[str, Any] = {
        "model": backend.name,
        "backend": backend.kind,
        "model_config": backend_config,
        "config": run_config,
        "tasks": {},
        "timing": {},
    }
    previous = out_dir / "results.json" if out_dir is not None else None
    if previous is not None and previous.exists():
        try:
            old = json.loads(previous.read_text(encoding="utf-8"))
            if old.get("model") == backend.name:
                results["tasks"].update(old.get("tasks", {}))  # keep tasks evaluated by earlier runs
        except json.JSONDecodeError:
            logger.warning("Ignoring unreadable %s; it will be rewritten.", previous)

    for task in task_list:
        langs = lang_choice[task.name]
        if not langs:
            continue
        task_split = split or task.splits[0]
        sampled = task.kind == "code" and num_samples > 1
        options = BuildOptions(
            num_fewshot=num_fewshot,
            max_new_tokens=max_new_tokens,
            do_sample=sampled,
            temperature=temperature if sampled else 1.0,
            top_p=top_p if sampled else 1.0,
        )
        settings = {
            "model": backend.name,
            "backend": backend.kind,
            "style": style.describe(),
            "instruction_template": instruction_template,
            "num_fewshot": num_fewshot,
            "max_new_tokens": max_new_tokens,
            "sampling": [temperature, top_p, seed] if sampled else None,
        }
        config_hash = _fingerprint(settings)
        pred_path = out_dir / "predictions" / f"{task.name}.jsonl" if out_dir is not None else None
        done = read_predictions(pred_path) if pred_path is not None else {}
        stale = [k for k, r in done.items() if r.get("config") != config_hash]
        if stale:
            if not overwrite:
                raise ValueError(
                    f"{pred_path} holds {len(stale)} predictions made with other settings or another model "
                    f"(e.g. {stale[0]}). Use a different --output directory, or --overwrite to discard them."
                )
            done = {k: r for k, r in done.items() if r.get("config") == config_hash}

        # All pending examples of the task run together: batches mix languages, sorted by length.
        started = time.perf_counter()
        units_by_lang: dict[str, list[_Unit]] = {}
        pending: list[_Unit] = []
        copies = num_samples if sampled else 1
        needs_shots = task.fewshot is not None and (not style.instruct or task.fewshot_in_instruct)
        for lang in langs:
            examples = loaded[(task.name, lang, task_split)]
            if not examples:
                raise ValueError(f"{task.name} ({lang}, {task_split}) has no examples; check the data files.")
            units = [
                _Unit(
                    ex,
                    f"{task_split}/{lang}/{ex.id}" + (f"#{s}" if sampled else ""),
                    s if sampled else None,
                    None,
                )  # type: ignore[arg-type]
                for ex in examples
                for s in range(copies)
            ]
            units_by_lang[lang] = units
            shots = task.fewshot(source, lang) if needs_shots else None
            for u in units:
                u.request = task.build(u.example, style, options, shots)
                row = done.get(u.key)
                if row is not None and _prompt_changed(row, _prompt_record(backend, u.request)):
                    # The prompt format changed since that row was written (new code or data): rerun it.
                    if not overwrite:
                        raise ValueError(
                            f"{pred_path}: the saved prediction {u.key} was made from a different prompt than this "
                            "run builds. Use a different --output directory, or --overwrite to redo such rows."
                        )
                    del done[u.key]
            pending += [u for u in units if u.key not in done]
        ran = len(pending)
        if pending:
            torch.manual_seed(seed)
            _run_units(
                task,
                backend,
                pending,
                done,
                pred_path,
                config_hash,
                batch_size,
                progress,
                sandbox_workers,
                task_split,
            )
        task_rows = {lang: [done[u.key] for u in units] for lang, units in units_by_lang.items()}
        elapsed = time.perf_counter() - started

        per_lang = {lang: _language_metrics(task, rows, pass_k) for lang, rows in task_rows.items()}
        scores = {lang: m["score"] for lang, m in per_lang.items()}
        entry: dict[str, Any] = {
            "metric": task.metric,
            "split": task_split,
            "languages": list(task_rows),
            "low_resource": sorted(set(task_rows) & task.low_resource),
            "scores": scores,
            "summary": summarize_languages(scores, task.low_resource, task_rows),
            "n": {lang: m["n"] for lang, m in per_lang.items()},
            "prompt_style": style.describe(),
        }
        if task.subtask is not None:
            entry["subtasks"] = {lang: m["subtasks"] for lang, m in per_lang.items()}
        if task.kind == "code":
            entry["pass_at_k"] = {lang: m["pass_at_k"] for lang, m in per_lang.items()}
        name = task.name if task_split == task.splits[0] else f"{task.name}[{task_split}]"
        results["tasks"][name] = entry
        results["timing"][name] = {
            "seconds": elapsed,
            "examples": ran,
            "examples_per_s": ran / elapsed if ran and elapsed > 0 else 0.0,
        }
        if pred_path is not None:
            # Final, sorted copy of everything valid for this task (replaces the append log atomically).
            text = "".join(json.dumps(done[k], ensure_ascii=False) + "\n" for k in sorted(done))
            atomic_write_text(pred_path, text)
        logger.info("%s: %s", name, {k: round(v, 4) for k, v in scores.items()})

    results["created"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    if out_dir is not None:
        atomic_write_text(out_dir / "results.json", json.dumps(results, indent=2, ensure_ascii=False) + "\n")
        atomic_write_text(out_dir / "results.md", results_markdown(results))
    return results


def _limit(task: Task, examples: list[Example], limit: int) -> list[Example]:
    """The first `limit` examples, per subtask when the task has subtasks (so a quick run covers all)."""
    if task.subtask is None:
        return examples[:limit]
    seen: dict[str, int] = {}
    kept = []
    for ex in examples:
        sub = task.subtask(ex)
        if seen.get(sub, 0) < limit:
            seen[sub] = seen.get(sub, 0) + 1
            kept.append(ex)
    return kept


def _prompt_length(unit: _Unit, backend: Any) -> int:
    """Tokens when the backend can count them (scripts differ several-fold in characters per token),
    else characters."""
    req = unit.request
    measure = getattr(backend, "request_length", None)
    if isinstance(req, list):
        return sum(measure(r) if measure else len(r.context) + len(r.continuation) for r in req)
    return measure(req) if measure else max(len(req.full_prompt), len(req.encoder_text))


def _streams(task: Task, backend: EvalModel) -> bool:
    """Whether the backend takes a task's whole queue and sorts and batches it itself (the runtime's models)."""
    return hasattr(backend, "loglikelihood_stream" if task.kind == "loglikelihood" else "generate_stream")


def _answered_batches(
    task: Task, backend: EvalModel, pending: list[_Unit], per_batch: int
) -> Iterator[tuple[list[_Unit], list[Any]]]:
    """(units, model outputs) in groups of `per_batch`. A backend that streams gets the whole queue (it sorts
    and batches it; continuous batching keeps its batch full) and answers are grouped in the order they complete."""
    if _streams(task, backend):
        if task.kind == "loglikelihood":
            # Per-token losses need the number of continuation tokens each score covers.
            def score(details: list[tuple[float, bool, int]]) -> list[Any]:
                if task.metric == "nats_per_token":
                    return [{"logprob": lp, "tokens": n} for lp, _, n in details]
                return [lp for lp, _, _ in details]

            stream = (
                (i, score(d))
                for i, d in backend.loglikelihood_stream([u.request for u in pending])  # type: ignore[attr-defined]
            )
        else:
            stream = backend.generate_stream([u.request for u in pending])  # type: ignore[attr-defined]
        done: list[tuple[_Unit, Any]] = []
        for i, out in stream:
            done.append((pending[i], out))
            if len(done) == per_batch:
                yield [u for u, _ in done], [o for _, o in done]
                done = []
        if done:
            yield [u for u, _ in done], [o for _, o in done]
        return
    for start in range(0, len(pending), per_batch):
        batch = pending[start : start + per_batch]
        if task.kind != "loglikelihood":
            yield batch, backend.generate([u.request for u in batch])  # type: ignore[misc]
            continue
        requests = [r for u in batch for r in u.request]  # type: ignore[union-attr]
        if task.metric == "nats_per_token":
            details = backend.loglikelihood_details(requests)  # type: ignore[union-attr]
            scores: list[Any] = [{"logprob": lp, "tokens": n} for lp, _, n in details]
        else:
            scores = backend.loglikelihood(requests)  # type: ignore[union-attr]
        outputs: list[Any] = []
        pos = 0
        for u in batch:
            k = len(u.request)  # type: ignore[arg-type]
            outputs.append(scores[pos : pos + k])
            pos += k
        yield batch, outputs


def _run_units(
    task: Task,
    backend: EvalModel,
    pending: list[_Unit],
    done: dict[str, dict],
    pred_path: Path | None,
    config_hash: str,
    batch_size: int,
    progress: bool,
    sandbox_workers: int | None,
    split: str,
) -> None:
    from tqdm.auto import tqdm

    # A fixed order (samples of one problem adjacent); a runtime backend sorts the queue longest first itself, any
    # other model gets it sorted here with the runtime's order (longest first keeps padding small within a batch).
    pending = sorted(pending, key=lambda u: (u.example.id, u.sample or 0))
    if not _streams(task, backend):
        pending = [pending[i] for i in longest_first(pending, lambda u: _prompt_length(u, backend))]
    if task.kind == "loglikelihood":
        n_choices = max(len(u.request) for u in pending)  # type: ignore[arg-type]
        per_batch = max(1, batch_size // n_choices)  # all choices of an example share one forward pass
    else:
        per_batch = batch_size
    if pred_path is not None:
        pred_path.parent.mkdir(parents=True, exist_ok=True)
    log = open(pred_path, "a", encoding="utf-8") if pred_path is not None else None  # noqa: SIM115
    langs = sorted({u.example.language for u in pending})
    desc = f"{task.name} ({langs[0]})" if len(langs) == 1 else f"{task.name} ({len(langs)} languages)"
    # tqdm's rate and remaining time are the examples/s and ETA.
    bar = tqdm(total=len(pending), desc=desc, unit="ex", disable=not progress, dynamic_ncols=True)
    n_correct = n_seen = 0
    try:
        for batch, outputs in _answered_batches(task, backend, pending, per_batch):
            extracted = [task.extract(out, u.example) for out, u in zip(outputs, batch, strict=True)]
            if task.score_many is not None:
                kwargs = {"max_workers": sandbox_workers} if (sandbox_workers and task.kind == "code") else {}
                judged = task.score_many(extracted, [u.example for u in batch], **kwargs)
            else:
                judged = [(task.score(x, u.example), {}) for x, u in zip(extracted, batch, strict=True)]  # type: ignore[misc]
            rows: list[dict[str, Any]] = []
            for u, out, x, (ok, detail) in zip(batch, outputs, extracted, judged, strict=True):
                row = {
                    "key": u.key,
                    "id": u.example.id,
                    "task": task.name,
                    "language": u.example.language,
                    "split": split,
                    "input": u.example.input,
                    **_prompt_record(backend, u.request),
                    "output": out,
                    "extracted": x,
                    "gold": u.example.gold,
                    # Accuracy tasks judge right or wrong; real-valued metrics (losses, chrF) keep the value.
                    "correct": bool(ok) if task.metric in ("accuracy", "pass@1") else float(ok),
                    "config": config_hash,
                }
                if u.sample is not None:
                    row["sample"] = u.sample
                if task.subtask is not None:
                    row["subtask"] = task.subtask(u.example)
                if detail:
                    row["detail"] = detail
                done[u.key] = row
                rows.append(row)
                n_correct += float(ok)
            if log is not None:
                # A full disk stops the run here; rows already flushed are kept and a torn last line is ignored.
                with reporting_disk_full(pred_path, "the rows written so far are kept"):
                    log.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
                    log.flush()
                    os.fsync(log.fileno())
            n_seen += len(batch)
            bar.update(len(batch))
            bar.set_postfix({task.metric: f"{n_correct / n_seen:.3f}"}, refresh=False)
    finally:
        bar.close()
        if log is not None:
            log.close()
