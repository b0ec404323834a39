"""`langbridge train CONFIG [key=value ...] [--resume] [--dry-run]`."""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path

EPILOG = """examples:
  langbridge train configs/default.yaml
  langbridge train configs/default.yaml max_steps=50 optim.lr_bridge=3e-4 output_dir=outputs/try
  langbridge train configs/default.yaml --resume            # continue from output_dir/latest
  langbridge train configs/paper/metamath-7b.yaml --dry-run  # parameter counts + memory, no weights
  accelerate launch --config_file configs/accelerate/ddp.yaml -m langbridge.training configs/paper/orca2-7b.yaml
"""


def add_parsers(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train a LangBridge bridge from a YAML config",
        description="Train the bridge (and optionally the encoder) between a multilingual encoder and a frozen LM.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(parser)
    parser.set_defaults(func=run, interrupted=interrupted)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="YAML config (see configs/)")
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="key=value",
        help="dotted overrides parsed as YAML, e.g. optim.lr_bridge=1e-3 data.train.0.max_examples=500",
    )
    parser.add_argument(
        "--resume", action="store_true", help="continue from output_dir/latest (same loss curve)"
    )
    parser.add_argument(
        "--resume-or-start",
        action="store_true",
        help="like --resume, but start from step 0 when output_dir has no checkpoint yet",
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="build the model from configs only and print sizes"
    )
    parser.add_argument(
        "--print-config", action="store_true", help="print the validated config as YAML and exit"
    )


def run(args: argparse.Namespace) -> int:
    from langbridge.training.config import ConfigError, load_config

    try:
        cfg = load_config(args.config, args.overrides)
    except ConfigError as exc:
        print(f"langbridge train: config error: {exc}", file=sys.stderr)
        return 2
    if args.print_config:
        print(cfg.to_yaml(), end="")
        return 0
    if args.dry_run:
        from langbridge.training.dryrun import dry_run

        try:
            dry_run(cfg)
        except ConfigError as exc:
            print(f"langbridge train --dry-run: {exc}", file=sys.stderr)
            return 2
        return 0
    from langbridge.training.checkpoint_io import CheckpointError
    from langbridge.training.data import DataError
    from langbridge.training.recipe import TrainingDiverged, train

    try:
        final = train(cfg, resume="auto" if args.resume_or_start else args.resume)
    except (ConfigError, DataError, FileExistsError, CheckpointError, TrainingDiverged) as exc:
        print(f"langbridge train: {exc}", file=sys.stderr)
        return 2
    if os.environ.get("RANK", "0") == "0":
        print(f"adapter saved to {final}")
    return 0


def interrupted(args: argparse.Namespace) -> str:
    """After Ctrl-C: the checkpoint that was kept (a checkpoint being written is removed) and how to continue."""
    from langbridge.training.checkpointing import latest_checkpoint
    from langbridge.training.config import load_config

    output_dir = Path(load_config(args.config, args.overrides).output_dir)
    checkpoint = latest_checkpoint(output_dir)
    command = shlex.join(["langbridge", "train", args.config, *args.overrides, "--resume"])
    if checkpoint is None:
        return f"no checkpoint was written to {output_dir} yet; rerun the command to start again"
    return f"{checkpoint} is kept (steps after it are redone); continue with: {command}"


def main(argv: list[str] | None = None) -> int:
    from langbridge.cli import run_command

    parser = argparse.ArgumentParser(
        prog="python -m langbridge.training",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(parser)
    parser.set_defaults(func=run, interrupted=interrupted, command="train")
    return run_command(parser.parse_args(argv))
