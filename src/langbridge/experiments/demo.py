"""`langbridge demo`: train the embedded default pair on English-only data and compare LangBridge with the LM
alone on real multilingual data (XCOPA, FLORES-200 cross-lingual continuation, a small MGSM subset).

Stages (each one is skipped when its output already exists, so an interrupted run resumes where it stopped):
  1. corpus     English passages for unlabeled training, cut from ../shared/data/english_demo (written under
                OUTPUT/data; the shared files are only read)
  2. baseline   the LM alone on every task, plus the FLORES no-context and English-context references
  3. seed s     train one bridge (configs/demo/<recipe>.yaml), evaluate it on every task
  4. pca        the representation analysis of the first seed's model (langbridge.analysis)
  5. report     paired bootstrap CIs over examples on every LangBridge - LM-alone delta -> results.json/.md
`--ablations` trains the variants (ffn bridge, trained encoder) and reads the data-amount ablation off the
first seed's intermediate checkpoints (a constant learning rate and a single pass over the data make the
checkpoint after k% of the steps the model trained on the first k% of the examples). `--pilot` compares the
training recipes on dev data only (FLORES dev articles, XCOPA validation).
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from langbridge.utils import atomic_write_text

from .demo_eval import evaluate_model
from .demo_report import build_report, pilot_markdown, report_markdown

logger = logging.getLogger("langbridge.demo")

CONFIG_DIR = Path(__file__).resolve().parents[3] / "configs" / "demo"
RECIPES = ("aligned", "labeled", "unlabeled")
# Steps and bridge learning rate per recipe: `aligned` is the English-only recipe chosen in docs/science.md,
# `labeled` the paper-faithful one the earlier demo ran (RESULTS.md keeps it as the baseline row).
RECIPE_DEFAULTS = {"aligned": (300, 1e-3), "labeled": (120, 6e-4), "unlabeled": (120, 6e-4)}
# FLORES languages (ISO 639-3); the low-resource set is the FLORES tasks' (MGSM's bn, sw, te, th).
FLORES_LANGUAGES = ("eng", "spa", "deu", "zho", "swh", "ben", "tel", "tha")
XCOPA_LANGUAGES = ("et", "ht", "id", "it", "qu", "sw", "ta", "th", "tr", "vi", "zh")
MGSM_LANGUAGES = ("en", "es", "sw", "bn")
PCA_LANGUAGES = ("eng", "swh", "tel", "spa", "deu", "ben", "tha", "zho")


@dataclass
class DemoSettings:
    """Everything that decides the numbers; saved to OUTPUT/settings.json and checked on resume."""

    encoder: str = "e5-small"
    lm: str = "smollm2-135m-instruct"
    recipe: str = "aligned"
    seeds: list[int] = field(default_factory=lambda: [0, 1])
    steps: int = RECIPE_DEFAULTS["aligned"][0]
    batch_size: int = 8
    lr_bridge: float = RECIPE_DEFAULTS["aligned"][1]
    bridge: str = "linear"
    freeze_encoder: bool = True
    checkpoints: int = 4  # intermediate checkpoints per run (for the data-amount ablation)
    flores_languages: list[str] = field(default_factory=lambda: list(FLORES_LANGUAGES))
    flores_pairs: int | None = 100
    # FLORES X -> English: sentences per language scored by loss, and the first ones decoded for chrF.
    translation_limit: int | None = 100
    chrf_limit: int = 24
    xcopa_languages: list[str] = field(default_factory=lambda: list(XCOPA_LANGUAGES))
    xcopa_limit: int | None = 64
    mgsm_languages: list[str] = field(default_factory=lambda: list(MGSM_LANGUAGES))
    mgsm_limit: int = 8
    mgsm_max_new_tokens: int = 128
    pca_languages: list[str] = field(default_factory=lambda: list(PCA_LANGUAGES))
    pca_n: int = 200
    eval_batch_size: int = 8
    max_passages: int | None = None
    n_resamples: int = 2000
    data_dir: str | None = None
    # Which portion the numbers come from: test (the report) or dev (pilot / choices).
    portion: str = "test"

    @property
    def xcopa_split(self) -> str:
        return "test" if self.portion == "test" else "val"


def quick_settings(**overrides: Any) -> DemoSettings:
    """CI-sized smoke run: a few steps and a handful of examples per task (minutes on real models)."""
    base = DemoSettings(
        steps=4,
        batch_size=2,
        checkpoints=2,
        flores_languages=["eng", "swh"],
        flores_pairs=6,
        translation_limit=6,
        chrf_limit=2,
        xcopa_languages=["sw"],
        xcopa_limit=6,
        mgsm_languages=["sw"],
        mgsm_limit=2,
        mgsm_max_new_tokens=8,
        pca_languages=["eng", "swh"],
        pca_n=6,
        eval_batch_size=4,
        max_passages=64,
        n_resamples=200,
    )
    return replace(base, **overrides)


# ----------------------------------------------------------------------------- small helpers


def _write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def _free() -> None:
    gc.collect()


class Timer:
    """Wall and CPU time per stage, kept in OUTPUT/timing.json (a stage resumed from disk adds ~0 s).

    CPU time (all threads of this process) is recorded because the machine may be shared: wall time then
    overstates what the run costs, and CPU seconds / threads estimates the wall time on an idle machine.
    """

    def __init__(self, path: Path):
        self.path = path
        self.data: dict[str, dict[str, float]] = _read_json(path) if path.exists() else {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        wall, cpu = time.perf_counter(), time.process_time()
        yield
        entry = self.data.setdefault(name, {"wall_s": 0.0, "cpu_s": 0.0})
        entry["wall_s"] = round(entry["wall_s"] + time.perf_counter() - wall, 1)
        entry["cpu_s"] = round(entry["cpu_s"] + time.process_time() - cpu, 1)
        _write_json(self.path, self.data)


def _peak_rss_mb() -> float:
    import resource

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024


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


def train_config(
    settings: DemoSettings, out_dir: Path, seed: int, corpus: Path, data_dir: Path, **variant: Any
) -> Any:
    """The TrainConfig of one run: configs/demo/<recipe>.yaml plus the demo's overrides."""
    from langbridge.training import load_config

    recipe = variant.get("recipe", settings.recipe)
    if recipe not in RECIPES:
        raise ValueError(f"recipe {recipe!r} is not one of {', '.join(RECIPES)}")
    steps = variant.get("steps", settings.steps)
    interval = steps // settings.checkpoints if settings.checkpoints > 1 else 0
    overrides = [
        f"model.encoder={settings.encoder}",
        f"model.lm={settings.lm}",
        f"model.bridge={variant.get('bridge', settings.bridge)}",
        f"model.freeze_encoder={str(variant.get('freeze_encoder', settings.freeze_encoder)).lower()}",
        f"optim.lr_bridge={settings.lr_bridge}",
        f"batch_size={settings.batch_size}",
        f"max_steps={steps}",
        f"seed={seed}",
        f"output_dir={out_dir}",
        f"save_interval={interval if interval and steps % settings.checkpoints == 0 else 0}",
        "save_total_limit=null",
        f"data.data_dir={data_dir}",
    ]
    if recipe == "unlabeled":
        overrides.append(f"data.train.0.path={corpus}")
    return load_config(CONFIG_DIR / f"{recipe}.yaml", overrides)


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
    _check_settings(out, settings)
    corpus = prepare_corpus(out, settings, root)
    return [
        train_run(train_config(settings, out / "train" / f"seed{seed}", seed, corpus, root))
        for seed in settings.seeds
    ]


# ----------------------------------------------------------------------------- 3b. evaluation


def load_langbridge(checkpoint: Path, weights: Path | None = None) -> tuple[Any, Any]:
    """A trained model and its processor, with the eval-time length limits opened up (FLORES sentences can be
    longer than the short training inputs). `weights`: an intermediate checkpoint's trainable.safetensors."""
    import torch

    from langbridge import LangBridgeModel, LangBridgeProcessor

    model = LangBridgeModel.from_pretrained(checkpoint, dtype=torch.float32).eval()
    if weights is not None:
        from safetensors.torch import load_file

        model.load_adapter_state_dict(load_file(weights), source=str(weights))
    positions = getattr(model.encoder.config, "max_position_embeddings", None) or 512
    processor = LangBridgeProcessor.from_pretrained(
        checkpoint, max_encoder_length=min(256, int(positions)), max_lm_length=256
    )
    return model, processor


def load_lm(name: str) -> tuple[Any, Any]:
    import torch
    from transformers import AutoModelForCausalLM

    from langbridge.processing import load_lm_tokenizer
    from langbridge.utils import resolve_model_name

    source = resolve_model_name(name)
    lm = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32).eval()
    return lm, load_lm_tokenizer(source)


# ----------------------------------------------------------------------------- 5. report


# ----------------------------------------------------------------------------- the pipeline


def resolve_data_root(settings: DemoSettings) -> Path:
    from langbridge.training.data import resolve_data_dir

    root = resolve_data_dir(settings.data_dir)
    if root is None:
        raise FileNotFoundError(
            "shared data not found: pass --data-dir pointing at ../shared/data (or set LANGBRIDGE_DATA)"
        )
    return root


def _check_settings(out: Path, settings: DemoSettings, name: str = "settings.json") -> None:
    path = out / name
    current = asdict(settings)
    if path.exists():
        previous = _read_json(path)
        if previous != current:
            changed = sorted(k for k in current if previous.get(k) != current[k])
            raise ValueError(
                f"{out} holds a demo run with other settings ({', '.join(changed)}); use another --output "
                "folder or delete it"
            )
    else:
        _write_json(path, current)


def run_demo(settings: DemoSettings, out: str | os.PathLike, *, mgsm: bool = True, pca: bool = True) -> dict:
    """Run (or resume) the whole demo; returns the report and writes OUTPUT/results.{json,md}."""
    import torch

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    root = resolve_data_root(settings)
    settings = replace(settings, data_dir=str(root))
    _check_settings(out, settings)
    timer = Timer(out / "timing.json")
    torch.manual_seed(0)

    with timer.stage("corpus"):
        corpus = prepare_corpus(out, settings, root)

    with timer.stage("eval lm_alone"):
        lm_pair = load_lm(settings.lm)
        evaluate_model("lm_alone", out, settings, lm_pair=lm_pair, mgsm=mgsm)
        del lm_pair
        _free()

    checkpoints = []
    for i, seed in enumerate(settings.seeds):
        with timer.stage(f"train seed{seed}"):
            cfg = train_config(settings, out / "train" / f"seed{seed}", seed, corpus, root)
            final = train_run(cfg)
        checkpoints.append(final)
        with timer.stage(f"eval seed{seed}"):
            pair = load_langbridge(final)
            # Generation (MGSM, chrF) is the slowest part; the first seed shows it.
            evaluate_model(
                f"langbridge_seed{seed}",
                out,
                settings,
                langbridge_pair=pair,
                mgsm=mgsm and i == 0,
                chrf=i == 0,
            )
            del pair
            _free()

    if pca and checkpoints:
        with timer.stage("pca"):
            run_pca(checkpoints[0], out / "pca", settings)
    return rebuild_report(out, peak_rss_mb=round(_peak_rss_mb(), 1))


def run_pca(checkpoint: Path, out_dir: Path, settings: DemoSettings) -> dict[str, Any]:
    """`langbridge analyze representations CKPT --languages ... --n ...` through its own CLI handler."""
    from langbridge.analysis.cli import run_representations

    if (out_dir / "representations.json").exists():
        return _read_json(out_dir / "representations.json")
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
    return _read_json(out_dir / "representations.json")


# ----------------------------------------------------------------------------- pilot and ablations


def run_pilot(settings: DemoSettings, out: str | os.PathLike, steps: int) -> dict[str, Any]:
    """Both training recipes, `steps` steps each, scored on dev data only (FLORES dev articles, XCOPA val)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    root = resolve_data_root(settings)
    settings = replace(settings, data_dir=str(root), portion="dev", seeds=settings.seeds[:1], steps=steps)
    _check_settings(out, settings)
    timer = Timer(out / "timing.json")
    corpus = prepare_corpus(out, settings, root)
    with timer.stage("eval lm_alone"):
        baseline = evaluate_model(
            "lm_alone", out, settings, lm_pair=load_lm(settings.lm), mgsm=False, chrf=False
        )
    results: dict[str, Any] = {"settings": asdict(settings), "recipes": {}}
    for recipe in RECIPES:
        with timer.stage(f"train {recipe}"):
            cfg = train_config(
                settings, out / "train" / recipe, settings.seeds[0], corpus, root, recipe=recipe
            )
            final = train_run(cfg)
        with timer.stage(f"eval {recipe}"):
            scores = evaluate_model(
                recipe, out, settings, langbridge_pair=load_langbridge(final), mgsm=False, chrf=False
            )
        _free()
        results["recipes"][recipe] = build_report(baseline, [scores], settings)
    results["timing_s"] = timer.data
    _write_json(out / "pilot.json", results)
    return results


ABLATION_VARIANTS = {
    "ffn bridge": {"bridge": "ffn"},
    "trained encoder": {"freeze_encoder": False},
}


def run_ablations(
    settings: DemoSettings, out: str | os.PathLike, figures: Path | None = None
) -> dict[str, Any]:
    """Data amount (intermediate checkpoints of the first seed), linear vs ffn bridge, frozen vs trained encoder.
    Needs the main run in OUTPUT (it reuses its seed-0 model and LM-alone scores)."""
    out = Path(out)
    root = resolve_data_root(settings)
    settings = replace(settings, data_dir=str(root))
    _check_settings(out, settings)
    if not (out / "scores" / "lm_alone.json").exists():
        raise FileNotFoundError(f"{out} has no main run yet; run `langbridge demo --output {out}` first")
    timer = Timer(out / "timing.json")
    baseline = _read_json(out / "scores" / "lm_alone.json")
    corpus = prepare_corpus(out, settings, root)
    seed = settings.seeds[0]
    main_dir = out / "train" / f"seed{seed}"
    final = main_dir / "final"
    if not final.exists():
        raise FileNotFoundError(f"{final} missing; finish the main run first")
    main_scores = _read_json(out / "scores" / f"langbridge_seed{seed}.json")

    rows: dict[str, Any] = {"data_amount": [], "variants": {}}
    from langbridge.training.recipe import list_checkpoints

    for step, path in list_checkpoints(main_dir):
        if step >= settings.steps:
            continue
        name = f"langbridge_seed{seed}_step{step}"
        with timer.stage(f"ablation {name}"):
            scores_path = out / "scores" / f"{name}.json"
            if scores_path.exists():
                scores = _read_json(scores_path)
            else:
                pair = load_langbridge(final, weights=path / "trainable.safetensors")
                scores = evaluate_model(name, out, settings, langbridge_pair=pair, mgsm=False, chrf=False)
                del pair
                _free()
        rows["data_amount"].append(_ablation_row(step, settings, baseline, scores))
    rows["data_amount"].append(_ablation_row(settings.steps, settings, baseline, main_scores))
    rows["variants"]["linear bridge, frozen encoder (main)"] = _ablation_row(
        settings.steps, settings, baseline, main_scores
    )
    for label, variant in ABLATION_VARIANTS.items():
        slug = label.replace(" ", "_")
        with timer.stage(f"ablation train {slug}"):
            cfg = train_config(settings, out / "ablations" / slug, seed, corpus, root, **variant)
            trained = train_run(cfg)
        with timer.stage(f"ablation eval {slug}"):
            scores_path = out / "scores" / f"ablation_{slug}.json"
            if scores_path.exists():
                scores = _read_json(scores_path)
            else:
                scores = evaluate_model(
                    f"ablation_{slug}",
                    out,
                    settings,
                    langbridge_pair=load_langbridge(trained),
                    mgsm=False,
                    chrf=False,
                )
                _free()
        rows["variants"][label] = _ablation_row(settings.steps, settings, baseline, scores)
    rows["timing_s"] = timer.data
    _write_json(out / "ablations.json", rows)
    from .plots import plot_ablations

    rows["figures"] = plot_ablations(rows, figures or (out / "figures"))
    _write_json(out / "ablations.json", rows)
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


# ----------------------------------------------------------------------------- CLI


def add_parsers(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "demo",
        help="train the default pair on English only and compare LangBridge with the LM alone per language",
        description="English-only training of the embedded default pair (e5-small + SmolLM2-135M-Instruct), then "
        "XCOPA, FLORES-200 cross-lingual continuation and a small MGSM subset for LangBridge and the LM alone, "
        "with paired bootstrap 95%% CIs. Resumes an interrupted run in the same --output folder.",
    )
    p.add_argument("--quick", action="store_true", help="CI-sized smoke run (a few steps, a few examples)")
    p.add_argument(
        "--output", default=None, help="output folder (default outputs/demo, or outputs/demo-quick)"
    )
    p.add_argument("--seeds", type=int, default=2, help="number of training seeds (default 2)")
    p.add_argument(
        "--steps",
        type=int,
        default=None,
        help="training steps per seed (default: the recipe's, aligned 300; quick 4)",
    )
    p.add_argument(
        "--recipe",
        choices=RECIPES,
        default="aligned",
        help="training recipe, configs/demo/RECIPE.yaml (default aligned, chosen on dev data in docs/science.md; "
        "labeled is the paper-faithful recipe of the earlier demo)",
    )
    p.add_argument("--encoder", default=None, help="encoder alias/path (default e5-small)")
    p.add_argument("--lm", default=None, help="LM alias/path (default smollm2-135m-instruct)")
    p.add_argument(
        "--data-dir", default=None, help="shared data folder (default $LANGBRIDGE_DATA or ../shared/data)"
    )
    p.add_argument(
        "--flores-pairs",
        type=int,
        default=None,
        help="FLORES continuation pairs per language (default 100; 0 = all)",
    )
    p.add_argument(
        "--xcopa-limit", type=int, default=None, help="XCOPA examples per language (default 64; 0 = all)"
    )
    for task, default in (("flores", FLORES_LANGUAGES), ("xcopa", XCOPA_LANGUAGES), ("mgsm", MGSM_LANGUAGES)):
        p.add_argument(
            f"--{task}-languages",
            default=None,
            help=f"comma-separated {task.upper()} languages (default {','.join(default)})",
        )
    p.add_argument("--no-mgsm", action="store_true", help="skip the MGSM subset")
    p.add_argument("--no-pca", action="store_true", help="skip the representation analysis")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument(
        "--ablations",
        action="store_true",
        help="after the main run: data amount, linear vs ffn bridge, frozen vs trained encoder (+ figures)",
    )
    mode.add_argument(
        "--pilot",
        type=int,
        metavar="STEPS",
        default=None,
        help="compare the training recipes for STEPS steps on dev data only (FLORES dev, XCOPA val)",
    )
    mode.add_argument(
        "--train-only",
        action="store_true",
        help="only train the seeds (run next to a main `langbridge demo` on the same --output to overlap "
        "training with evaluation)",
    )
    mode.add_argument(
        "--report-only", action="store_true", help="rebuild results.md/json from the scores in --output"
    )
    p.add_argument(
        "--results-md",
        default=None,
        help="with --report-only: rewrite the generated blocks (<!-- demo:NAME -->) of this RESULTS.md",
    )
    p.add_argument(
        "--pilot-dir",
        action="append",
        default=[],
        help="with --results-md: a --pilot output folder to report (repeat for several pilots)",
    )
    p.add_argument("--figures", default=None, help="folder for the ablation figures (default OUTPUT/figures)")
    p.set_defaults(func=run_cli, interrupted=interrupted)


def settings_from_args(args: argparse.Namespace) -> DemoSettings:
    settings = quick_settings() if args.quick else DemoSettings()
    if args.seeds < 1:
        raise ValueError(f"--seeds must be >= 1, got {args.seeds}")
    updates: dict[str, Any] = {"seeds": list(range(args.seeds)), "recipe": args.recipe}
    if not args.quick:
        updates["steps"], updates["lr_bridge"] = RECIPE_DEFAULTS[args.recipe]
    if args.steps is not None:
        if args.steps < 1:
            raise ValueError(f"--steps must be >= 1, got {args.steps}")
        updates["steps"] = args.steps
    for name in ("encoder", "lm", "data_dir"):
        if getattr(args, name) is not None:
            updates[name] = getattr(args, name)
    for task in ("flores", "xcopa", "mgsm"):
        value = getattr(args, f"{task}_languages", None)
        if value is not None:
            langs = [x.strip() for x in value.split(",") if x.strip()]
            if not langs:
                raise ValueError(f"--{task}-languages is empty; give comma-separated codes")
            updates[f"{task}_languages"] = langs
    for name in ("flores_pairs", "xcopa_limit"):
        value = getattr(args, name)
        if value is not None:
            if value < 0:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 0 (0 = all), got {value}")
            updates[name] = value or None
    return replace(settings, **updates)


def output_dir(args: argparse.Namespace) -> Path:
    return Path(args.output or ("outputs/demo-quick" if args.quick else "outputs/demo"))


def interrupted(args: argparse.Namespace) -> str:
    """After Ctrl-C: finished stages stay on disk and each is skipped when the same command runs again."""
    return (
        f"finished stages (trained checkpoints, scores) are kept in {output_dir(args)}; rerun the same command "
        "to resume from there"
    )


def run_cli(args: argparse.Namespace) -> int:
    import torch

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    settings = settings_from_args(args)
    out = output_dir(args)
    started = time.perf_counter()
    if args.pilot is not None:
        if args.pilot < 1:
            raise ValueError(f"--pilot needs a positive number of steps, got {args.pilot}")
        results = run_pilot(settings, out, args.pilot)
        print(pilot_markdown(results))
    elif args.ablations:
        rows = run_ablations(settings, out, Path(args.figures) if args.figures else None)
        print(json.dumps(rows["figures"], indent=2))
    elif args.train_only:
        for final in train_all(settings, out):
            print(f"trained: {final}")
    elif args.report_only:
        if list((out / "scores").glob("langbridge_seed*.json")):
            print(report_markdown(rebuild_report(out)))
        if args.results_md:
            from .results_doc import update_results_md

            filled = update_results_md(args.results_md, out, args.pilot_dir)
            print(f"{args.results_md}: filled {', '.join(filled) or 'no'} block(s) from {out}")
    else:
        report = run_demo(settings, out, mgsm=not args.no_mgsm, pca=not args.no_pca)
        print(report_markdown(report))
    print(f"done in {time.perf_counter() - started:.0f} s; outputs in {out}")
    return 0


def rebuild_report(out: Path, peak_rss_mb: float | None = None) -> dict[str, Any]:
    """results.json/.md from the cached scores of OUTPUT (also after changing the report code, without models)."""
    saved = _read_json(out / "settings.json") if (out / "settings.json").exists() else None
    if saved is None:
        raise FileNotFoundError(f"{out} holds no demo run (settings.json missing)")
    settings = DemoSettings(**saved)
    baseline = _read_json(out / "scores" / "lm_alone.json")
    seeds = [
        _read_json(out / "scores" / f"langbridge_seed{s}.json")
        for s in settings.seeds
        if (out / "scores" / f"langbridge_seed{s}.json").exists()
    ]
    if not seeds:
        raise FileNotFoundError(f"{out} has no evaluated LangBridge seed yet")
    report = build_report(baseline, seeds, settings)
    report["settings"] = saved
    timing = out / "timing.json"
    report["timing_s"] = _read_json(timing) if timing.exists() else {}
    report["train_summaries"] = {
        f"seed{s}": _read_json(out / "train" / f"seed{s}" / "train_summary.json")
        for s in settings.seeds
        if (out / "train" / f"seed{s}" / "train_summary.json").exists()
    }
    previous = out / "results.json"
    if peak_rss_mb is not None:
        report["peak_rss_mb"] = peak_rss_mb
    elif previous.exists():
        report["peak_rss_mb"] = _read_json(previous).get("peak_rss_mb")
    _write_json(out / "results.json", report)
    atomic_write_text(out / "results.md", report_markdown(report))
    return report


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m langbridge.experiments.demo ...` (the same as `langbridge demo ...`)."""
    parser = argparse.ArgumentParser(prog="langbridge")
    add_parsers(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["demo", *(sys.argv[1:] if argv is None else argv)])
    from langbridge.cli import run_command

    return run_command(args)


if __name__ == "__main__":
    sys.exit(main())
