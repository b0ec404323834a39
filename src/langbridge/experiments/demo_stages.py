"""The demo's stages; each one is skipped when its output already exists, so an interrupted run resumes where
it stopped:
  1. corpus     English passages for unlabeled training, cut from ../shared/data/english_demo (written under
                OUTPUT/data; the shared files are only read)
  2. baseline   the LM alone on every task, plus the FLORES no-context and English-context references
  3. seed s     train one bridge (the packaged configs/<recipe>.yaml), evaluate it on every task
  4. pca        the representation analysis of the first seed's model (langbridge.analysis)
  5. report     paired bootstrap CIs over examples on every LangBridge - LM-alone delta -> results.json/.md
`run_ablations` trains the variants of configs/ablations.yaml (ffn bridge, trained encoder) and reads the
data-amount ablation off the first seed's intermediate checkpoints (a constant learning rate and a single pass
over the data make the checkpoint after k% of the steps the model trained on the first k% of the examples).
`run_pilot` compares the training recipes on dev data only (FLORES dev articles, XCOPA validation).
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from langbridge.utils import atomic_write_text, peak_rss_mb

from .demo_eval import evaluate_model
from .demo_report import build_report, rebuild_report
from .demo_settings import (
    RECIPES,
    DemoSettings,
    ablation_variants,
    check_settings,
    read_json,
    recipe_data,
    resolve_data_root,
    write_json,
)

logger = logging.getLogger("langbridge.demo")

# ----------------------------------------------------------------------------- small helpers


def _free() -> None:
    gc.collect()


class Timer:
    """Wall and CPU time per stage, kept in OUTPUT/timing.json (a stage resumed from disk adds ~0 s).

    CPU time (all threads of this process) is recorded because the machine may be shared: wall time then
    overstates what the run costs, and CPU seconds / threads estimates the wall time on an idle machine.
    """

    def __init__(self, path: Path):
        self.path = path
        self.data: dict[str, dict[str, float]] = read_json(path) if path.exists() else {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        wall, cpu = time.perf_counter(), time.process_time()
        yield
        entry = self.data.setdefault(name, {"wall_s": 0.0, "cpu_s": 0.0})
        entry["wall_s"] = round(entry["wall_s"] + time.perf_counter() - wall, 1)
        entry["cpu_s"] = round(entry["cpu_s"] + time.process_time() - cpu, 1)
        write_json(self.path, self.data)


# ----------------------------------------------------------------------------- 1. English corpus


def english_passages(data_dir: Path, words: tuple[int, int] = (40, 120)) -> list[str]:
    """Short English passages (a few sentences) from C4 and Wikipedia demo documents.

    Unlabeled training cuts each document once, after a random number of encoder tokens, and the encoder reads
    only its head; whole multi-page documents would each give one example. Passages of a few sentences give
    many examples whose length matches the evaluation's single-sentence inputs.
    """
    from langbridge.training.data import SENTENCE_BOUNDARY

    root = data_dir / "english_demo"
    c4, wiki = root / "c4_demo.jsonl", root / "wiki_demo.txt"
    missing = [p for p in (c4, wiki) if not p.is_file()]
    if missing:
        raise FileNotFoundError(
            f"English demo corpus missing: {', '.join(map(str, missing))}. Point --data-dir (or LANGBRIDGE_DATA) "
            "at the folder holding english_demo/ (../shared/data)."
        )
    paragraphs = [json.loads(line)["text"] for line in c4.read_text(encoding="utf-8").splitlines() if line]
    paragraphs = [p for doc in paragraphs for p in doc.split("\n")]
    paragraphs += wiki.read_text(encoding="utf-8").splitlines()
    lo, hi = words
    passages = []
    for para in paragraphs:
        sentences = [s.strip() for s in SENTENCE_BOUNDARY.split(para.strip()) if s.strip()]
        chunk: list[str] = []
        count = 0
        for sentence in sentences:
            chunk.append(sentence)
            count += len(sentence.split())
            if count >= lo:
                if count <= hi:
                    passages.append(" ".join(chunk))
                chunk, count = [], 0
    return passages


def prepare_corpus(out: Path, settings: DemoSettings, data_dir: Path) -> Path:
    path = out / "data" / "english_passages.jsonl"
    if not path.exists():
        import numpy as np

        passages = english_passages(data_dir)
        # A fixed shuffle mixes C4 and Wikipedia, so a cap (max_passages) keeps both.
        order = np.random.default_rng(1234).permutation(len(passages))
        keep = [passages[i] for i in order][: settings.max_passages]
        atomic_write_text(path, "".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in keep))
        logger.info("corpus: %d English passages -> %s", len(keep), path)
    return path


# ----------------------------------------------------------------------------- 3a. training


def _merge(base: dict[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    """Nested training-config values on top of `base` (sections merge, values replace)."""
    for key, value in changes.items():
        if isinstance(value, Mapping):
            section = base.get(key)
            base[key] = _merge(section if isinstance(section, dict) else {}, value)
        else:
            base[key] = value
    return base


def train_config(
    settings: DemoSettings,
    out_dir: Path,
    seed: int,
    corpus: Path,
    data_dir: Path,
    *,
    recipe: str | None = None,
    variant: Mapping[str, Any] | None = None,
) -> Any:
    """The TrainConfig of one run: the packaged configs/<recipe>.yaml, the demo's settings on top, then a
    variant's values (an entry of configs/ablations.yaml)."""
    from langbridge.training.config import config_from_dict

    recipe = recipe or settings.recipe
    data = recipe_data(recipe)
    steps = settings.steps
    interval = steps // settings.checkpoints if settings.checkpoints > 1 else 0
    run = {
        "model": {
            "encoder": settings.encoder,
            "lm": settings.lm,
            "bridge": settings.bridge,
            "freeze_encoder": settings.freeze_encoder,
        },
        "optim": {"lr_bridge": settings.lr_bridge},
        "batch_size": settings.batch_size,
        "max_steps": steps,
        "seed": seed,
        "output_dir": str(out_dir),
        "save_interval": interval if interval and steps % settings.checkpoints == 0 else 0,
        "save_total_limit": None,
        "data": {"data_dir": str(data_dir)},
    }
    _merge(data, run)
    if recipe == "unlabeled":
        # The passages this run cut (OUTPUT/data/english_passages.jsonl) replace the recipe's placeholder.
        data["data"]["train"][0]["path"] = str(corpus)
    return config_from_dict(_merge(data, variant or {}))


def train_run(cfg: Any) -> Path:
    """Train unless OUTPUT already holds the finished adapter; returns its directory.

    An exclusive lock file lets a `--train-only` process train the seeds while the main process evaluates:
    whoever comes second waits for the adapter instead of training it again.
    """
    import fcntl

    from langbridge.training import train

    out_dir = Path(cfg.output_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    final = out_dir / "final"
    with open(out_dir.parent / f".{out_dir.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (final / "config.json").exists() and (out_dir / "train_summary.json").exists():
            return final
        return train(cfg, resume=(out_dir / "latest").exists())


def train_all(settings: DemoSettings, out: str | os.PathLike) -> list[Path]:
    """Only the training runs of `run_demo` (for a second process; see train_run)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    root = resolve_data_root(settings)
    settings = replace(settings, data_dir=str(root))
    check_settings(out, settings)
    corpus = prepare_corpus(out, settings, root)
    return [
        train_run(train_config(settings, out / "train" / f"seed{seed}", seed, corpus, root))
        for seed in settings.seeds
    ]


# ----------------------------------------------------------------------------- 3b. evaluation


def load_model(
    name: str, settings: DemoSettings, checkpoint: Path | None = None, weights: Path | None = None
) -> Any:
    """The evaluation backend of a trained checkpoint, or of the LM alone (`checkpoint` None), in float32. A
    checkpoint's length limits are opened up (FLORES sentences can be longer than the short training inputs);
    `weights`: an intermediate checkpoint's trainable.safetensors."""
    from langbridge.evaluation import load_backend

    options = dict(batch_size=settings.eval_batch_size, dtype="float32", name=name, device="cpu")
    if checkpoint is None:
        return load_backend(settings.lm, lm_only=True, **options)
    backend = load_backend(checkpoint, **options)
    if weights is not None:
        from safetensors.torch import load_file

        backend.model.load_adapter_state_dict(load_file(weights), source=str(weights))
    positions = getattr(backend.model.encoder.config, "max_position_embeddings", None) or 512
    backend.processor.max_encoder_length = min(256, int(positions))
    backend.processor.max_lm_length = 256
    return backend


# ----------------------------------------------------------------------------- the pipeline


def run_demo(settings: DemoSettings, out: str | os.PathLike, *, mgsm: bool = True, pca: bool = True) -> dict:
    """Run (or resume) the whole demo; returns the report and writes OUTPUT/results.{json,md}."""
    import torch

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    root = resolve_data_root(settings)
    settings = replace(settings, data_dir=str(root))
    check_settings(out, settings)
    timer = Timer(out / "timing.json")
    torch.manual_seed(0)

    with timer.stage("corpus"):
        corpus = prepare_corpus(out, settings, root)

    with timer.stage("eval lm_alone"):
        evaluate_model(load_model("lm_alone", settings), out, settings, mgsm=mgsm)
        _free()

    checkpoints = []
    for i, seed in enumerate(settings.seeds):
        with timer.stage(f"train seed{seed}"):
            cfg = train_config(settings, out / "train" / f"seed{seed}", seed, corpus, root)
            final = train_run(cfg)
        checkpoints.append(final)
        with timer.stage(f"eval seed{seed}"):
            # Generation (MGSM, chrF) is the slowest part; the first seed shows it.
            backend = load_model(f"langbridge_seed{seed}", settings, final)
            evaluate_model(backend, out, settings, mgsm=mgsm and i == 0, chrf=i == 0)
            del backend
            _free()

    if pca and checkpoints:
        with timer.stage("pca"):
            run_pca(checkpoints[0], out / "pca", settings)
    return rebuild_report(out, peak_rss_mb=round(peak_rss_mb(), 1))


def run_pca(checkpoint: Path, out_dir: Path, settings: DemoSettings) -> dict[str, Any]:
    """`langbridge analyze representations CKPT --languages ... --n ...` through its own CLI handler."""
    from langbridge.analysis.cli import run_representations

    if (out_dir / "representations.json").exists():
        return read_json(out_dir / "representations.json")
    args = argparse.Namespace(
        model=str(checkpoint),
        lm_only=False,
        languages=",".join(settings.pca_languages),
        n=settings.pca_n,
        pivot="eng",
        batch_size=settings.eval_batch_size,
        max_length=512,
        data_dir=settings.data_dir,
        device=None,
        output=str(out_dir),
        save_embeddings=False,
        no_progress=True,
    )
    code = run_representations(args)
    if code != 0:
        raise RuntimeError(f"representation analysis of {checkpoint} failed (exit code {code})")
    return read_json(out_dir / "representations.json")


# ----------------------------------------------------------------------------- pilot and ablations


def run_pilot(settings: DemoSettings, out: str | os.PathLike, steps: int) -> dict[str, Any]:
    """Both training recipes, `steps` steps each, scored on dev data only (FLORES dev articles, XCOPA val)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    root = resolve_data_root(settings)
    settings = replace(settings, data_dir=str(root), portion="dev", seeds=settings.seeds[:1], steps=steps)
    check_settings(out, settings)
    timer = Timer(out / "timing.json")
    corpus = prepare_corpus(out, settings, root)
    with timer.stage("eval lm_alone"):
        baseline = evaluate_model(load_model("lm_alone", settings), out, settings, mgsm=False, chrf=False)
    results: dict[str, Any] = {"settings": asdict(settings), "recipes": {}}
    for recipe in RECIPES:
        with timer.stage(f"train {recipe}"):
            cfg = train_config(
                settings, out / "train" / recipe, settings.seeds[0], corpus, root, recipe=recipe
            )
            final = train_run(cfg)
        with timer.stage(f"eval {recipe}"):
            scores = evaluate_model(
                load_model(recipe, settings, final), out, settings, mgsm=False, chrf=False
            )
        _free()
        results["recipes"][recipe] = build_report(baseline, [scores], settings)
    results["timing_s"] = timer.data
    write_json(out / "pilot.json", results)
    return results


def run_ablations(
    settings: DemoSettings, out: str | os.PathLike, figures: Path | None = None
) -> dict[str, Any]:
    """Data amount (intermediate checkpoints of the first seed), linear vs ffn bridge, frozen vs trained encoder.
    Needs the main run in OUTPUT (it reuses its seed-0 model and LM-alone scores)."""
    out = Path(out)
    root = resolve_data_root(settings)
    settings = replace(settings, data_dir=str(root))
    check_settings(out, settings)
    if not (out / "scores" / "lm_alone.json").exists():
        raise FileNotFoundError(f"{out} has no main run yet; run `langbridge demo --output {out}` first")
    timer = Timer(out / "timing.json")
    baseline = read_json(out / "scores" / "lm_alone.json")
    corpus = prepare_corpus(out, settings, root)
    seed = settings.seeds[0]
    main_dir = out / "train" / f"seed{seed}"
    final = main_dir / "final"
    if not final.exists():
        raise FileNotFoundError(f"{final} missing; finish the main run first")
    main_scores = read_json(out / "scores" / f"langbridge_seed{seed}.json")

    rows: dict[str, Any] = {"data_amount": [], "variants": {}}
    from langbridge.training.checkpointing import list_checkpoints

    for step, path in list_checkpoints(main_dir):
        if step >= settings.steps:
            continue
        name = f"langbridge_seed{seed}_step{step}"
        with timer.stage(f"ablation {name}"):
            scores_path = out / "scores" / f"{name}.json"
            if scores_path.exists():
                scores = read_json(scores_path)
            else:
                backend = load_model(name, settings, final, weights=path / "trainable.safetensors")
                scores = evaluate_model(backend, out, settings, mgsm=False, chrf=False)
                del backend
                _free()
        rows["data_amount"].append(_ablation_row(step, settings, baseline, scores))
    rows["data_amount"].append(_ablation_row(settings.steps, settings, baseline, main_scores))
    rows["variants"]["linear bridge, frozen encoder (main)"] = _ablation_row(
        settings.steps, settings, baseline, main_scores
    )
    for label, variant in ablation_variants().items():
        slug = label.replace(" ", "_")
        with timer.stage(f"ablation train {slug}"):
            cfg = train_config(settings, out / "ablations" / slug, seed, corpus, root, variant=variant)
            trained = train_run(cfg)
        with timer.stage(f"ablation eval {slug}"):
            scores_path = out / "scores" / f"ablation_{slug}.json"
            if scores_path.exists():
                scores = read_json(scores_path)
            else:
                backend = load_model(f"ablation_{slug}", settings, trained)
                scores = evaluate_model(backend, out, settings, mgsm=False, chrf=False)
                _free()
        rows["variants"][label] = _ablation_row(settings.steps, settings, baseline, scores)
    rows["timing_s"] = timer.data
    write_json(out / "ablations.json", rows)
    from .plots import plot_ablations

    rows["figures"] = plot_ablations(rows, figures or (out / "figures"))
    write_json(out / "ablations.json", rows)
    return rows


def _ablation_row(step: int, settings: DemoSettings, baseline: dict, scores: dict) -> dict[str, Any]:
    rep = build_report(baseline, [scores], settings)
    out: dict[str, Any] = {
        "step": step,
        "fraction": step / settings.steps,
        "examples": step * settings.batch_size,
    }
    for task in ("translation", "continuation", "xcopa"):
        for group, r in rep["tasks"][task]["groups"].items():
            out[f"{task}_{group}"] = {k: r[k] for k in ("a", "b", "delta", "ci_low", "ci_high")}
    return out
