"""`langbridge demo`: train the embedded default pair on English-only data and compare LangBridge with the LM
alone on real multilingual data (XCOPA, FLORES-200 X -> English and continuation, a small MGSM subset).

This module is the command line. The rest of the demo, one concern per module:
  demo_settings  DemoSettings, the --quick preset, the packaged recipes and ablation variants (configs/*.yaml)
  demo_stages    corpus, training, evaluation of each model, PCA, pilot and ablations (resumable stages)
  demo_eval      one model on every task through the evaluation registry
  demo_report    paired bootstrap report, markdown tables, results.json/.md
  results_doc    the generated blocks of RESULTS.md (`--report-only --results-md RESULTS.md`)
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from .demo_report import pilot_markdown, rebuild_report, report_markdown
from .demo_settings import (
    FLORES_LANGUAGES,
    MGSM_LANGUAGES,
    RECIPES,
    XCOPA_LANGUAGES,
    DemoSettings,
    quick_settings,
    recipe_defaults,
)
from .demo_stages import run_ablations, run_demo, run_pilot, train_all

__all__ = ["DemoSettings", "add_parsers", "main", "quick_settings", "run_cli", "settings_from_args"]


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
        help="training recipe, the packaged langbridge/experiments/configs/RECIPE.yaml (default aligned, chosen on dev data in docs/science.md; "
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
        updates["steps"], updates["lr_bridge"] = recipe_defaults(args.recipe)
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


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m langbridge.experiments.demo ...` (the same as `langbridge demo ...`)."""
    parser = argparse.ArgumentParser(prog="langbridge")
    add_parsers(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["demo", *(sys.argv[1:] if argv is None else argv)])
    from langbridge.cli import run_command

    return run_command(args)


if __name__ == "__main__":
    sys.exit(main())
