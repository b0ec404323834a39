"""The demo's evaluation of one model: every task through the evaluation registry, cached per model.

Every task keeps one value per example (FLORES losses: nats per target token; XCOPA, MGSM: correct or not;
chrF), so the report pairs models example by example.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from langbridge.utils import atomic_write_text

logger = logging.getLogger("langbridge.demo")

# Report key -> registered task, for the FLORES losses (lower is better).
LOSS_TASKS = {"translation": "flores-x2en", "continuation": "flores-continuation"}
EVAL_FINGERPRINT_KEYS = (
    "flores_languages",
    "flores_pairs",
    "translation_limit",
    "chrf_limit",
    "xcopa_languages",
    "xcopa_limit",
    "portion",
    "mgsm_languages",
    "mgsm_limit",
    "mgsm_max_new_tokens",
)


def eval_rows(
    backend: Any, task: str, languages: Sequence[str], out_dir: Path, settings: Any, **kwargs: Any
) -> tuple[str, dict[str, list[dict]]]:
    """Run a registered task; returns (split, {language: prediction rows sorted by key})."""
    from langbridge.evaluation import evaluate, get_task, read_predictions

    results = evaluate(
        backend,
        task,
        languages=list(languages),
        batch_size=settings.eval_batch_size,
        output_dir=out_dir,
        data_dir=settings.data_dir,
        allow_hub=False,
        progress=False,
        overwrite=True,
        **kwargs,
    )
    splits = get_task(task).splits
    split = kwargs.get("split") or splits[0]
    entry = results["tasks"][task if split == splits[0] else f"{task}[{split}]"]
    logger.info(
        "%s %s (%s): %s", backend.name, task, split, {k: round(v, 3) for k, v in entry["scores"].items()}
    )
    rows = read_predictions(out_dir / "predictions" / f"{task}.jsonl")
    per_lang: dict[str, list[dict]] = {lang: [] for lang in languages}
    for key in sorted(rows):
        row = rows[key]
        if row["split"] == split and row["language"] in per_lang:
            per_lang[row["language"]].append(row)
    return split, per_lang


def eval_benchmark(
    backend: Any, task: str, languages: Sequence[str], out_dir: Path, settings: Any, **kwargs: Any
) -> dict[str, Any]:
    """{split, languages: {lang: [[id, value], ...]}}: correctness (accuracy tasks) or the score (chrF)."""
    split, per_lang = eval_rows(backend, task, languages, out_dir, settings, **kwargs)
    return {
        "split": split,
        "languages": {k: [[r["id"], r["correct"]] for r in v] for k, v in per_lang.items()},
    }


def loss_entry(
    nll: Sequence[float], tokens: Sequence[int], ids: Sequence[str] | None = None
) -> dict[str, Any]:
    """Per-example nats per target token (each model's own token count, so a truncated or differently
    tokenized target still pairs by example) and their mean, the task's score in `langbridge eval`."""
    values = [float(x) / max(1, int(n)) for x, n in zip(nll, tokens, strict=True)]
    entry: dict[str, Any] = {
        "values": values,
        "tokens": [int(x) for x in tokens],
        "nats_per_token": sum(values) / max(1, len(values)),
    }
    if ids is not None:
        entry["ids"] = list(ids)
    return entry


def eval_loss_task(
    backend: Any, task: str, languages: Sequence[str], out_dir: Path, settings: Any, limit: int | None
) -> dict[str, Any]:
    """Summed NLL and target tokens per example, and the English targets (for the no-context reference)."""
    split, per_lang = eval_rows(
        backend, task, languages, out_dir, settings, split=settings.portion, limit=limit
    )
    result: dict[str, Any] = {"split": split, "languages": {}}
    for lang, rows in per_lang.items():
        nll = [-r["output"][0]["logprob"] for r in rows]
        tokens = [r["output"][0]["tokens"] for r in rows]
        result["languages"][lang] = loss_entry(nll, tokens, [r["id"] for r in rows])
    first = next(iter(per_lang.values()))
    result["targets"] = [r["gold"] for r in first]
    return result


def no_context(backend: Any, targets: Sequence[str]) -> dict[str, Any]:
    """The LM alone's loss on the targets with nothing before them but a document start (BOS or EOS)."""
    from langbridge.evaluation import LoglikelihoodRequest

    details = backend.loglikelihood_details([LoglikelihoodRequest("", t) for t in targets])
    return loss_entry([-lp for lp, _, _ in details], [n for _, _, n in details])


def evaluate_model(
    backend: Any, out: Path, settings: Any, *, mgsm: bool = True, chrf: bool = True
) -> dict[str, Any]:
    """All tasks for one loaded model (`load_model`), cached in OUTPUT/scores/<backend.name>.json."""
    from langbridge.evaluation import CausalLMBackend

    name = backend.name
    lm_alone = isinstance(backend, CausalLMBackend)
    path = out / "scores" / f"{name}.json"
    fingerprint = {**{k: getattr(settings, k) for k in EVAL_FINGERPRINT_KEYS}, "mgsm": mgsm, "chrf": chrf}
    if path.exists():
        cached = json.loads(path.read_text(encoding="utf-8"))
        if cached.get("settings") == fingerprint:
            return cached
    eval_dir = out / "eval" / name
    result: dict[str, Any] = {"name": name, "settings": fingerprint}
    timing: dict[str, float] = {}
    limits = {"translation": settings.translation_limit, "continuation": settings.flores_pairs}
    for key, task in LOSS_TASKS.items():
        started = time.perf_counter()
        result[key] = eval_loss_task(
            backend, task, settings.flores_languages, eval_dir, settings, limits[key]
        )
        if lm_alone:
            result[key]["no_context"] = no_context(backend, result[key]["targets"])
        timing[key] = round(time.perf_counter() - started, 1)
    runs: list[tuple[str, str, list[str], dict[str, Any]]] = [
        (
            "xcopa",
            "xcopa",
            settings.xcopa_languages,
            {"split": settings.xcopa_split, "limit": settings.xcopa_limit},
        )
    ]
    if chrf and settings.chrf_limit > 0:
        chrf_kwargs = {"split": settings.portion, "limit": settings.chrf_limit}
        runs.append(("chrf", "flores-x2en-chrf", settings.flores_languages, chrf_kwargs))
    if mgsm and settings.mgsm_limit > 0 and settings.mgsm_languages:
        mgsm_kwargs = {"limit": settings.mgsm_limit, "max_new_tokens": settings.mgsm_max_new_tokens}
        runs.append(("mgsm", "mgsm", settings.mgsm_languages, mgsm_kwargs))
    for key, task, languages, kwargs in runs:
        started = time.perf_counter()
        result[key] = eval_benchmark(backend, task, languages, eval_dir, settings, **kwargs)
        timing[key] = round(time.perf_counter() - started, 1)
    result["timing_s"] = {**timing, "total": round(sum(timing.values()), 1)}
    atomic_write_text(path, json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    return result
