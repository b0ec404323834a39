"""`langbridge` command line: one subcommand per task (train, eval, analyze, generate, ...)."""

from __future__ import annotations

import argparse
import importlib
import sys

# Each module registers its subcommands with `add_parsers(subparsers)` and imports heavy code lazily.
COMMAND_MODULES = (
    "langbridge.training.cli",
    "langbridge.evaluation.cli",
    "langbridge.analysis.cli",
    "langbridge.inference",
    "langbridge.convert_official",
    "langbridge.pretrained",
    "langbridge.experiments.demo",
    "langbridge.serving.cli",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="langbridge",
        description="LangBridge: multilingual reasoning for English-centric LMs, trained on English data only.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).add_parsers(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return run_command(args)


def run_command(args: argparse.Namespace) -> int:
    """Run a parsed subcommand; errors and Ctrl-C become one line (`LANGBRIDGE_DEBUG=1` shows the traceback)."""
    import os

    debug = bool(os.environ.get("LANGBRIDGE_DEBUG"))
    command = getattr(args, "command", None) or "command"
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        if debug:
            raise
        print(f"langbridge {command}: interrupted; {interrupted_message(args)}", file=sys.stderr)
        return 130  # 128 + SIGINT, what shells report for a Ctrl-C
    except (ValueError, FileNotFoundError, OSError, TypeError) as err:
        if debug:
            raise
        print(f"langbridge {command}: error: {err}", file=sys.stderr)
        return 1


def interrupted_message(args: argparse.Namespace) -> str:
    """What an interrupted subcommand kept and how to continue, from its `interrupted` hook (set_defaults)."""
    hook = getattr(args, "interrupted", None)
    if hook is None:
        return "nothing was saved; rerun the command to start again"
    try:
        return hook(args)
    except Exception:  # the hook reads the output folder, which may be unreadable: keep the one line
        return "rerun the same command to continue"


if __name__ == "__main__":
    sys.exit(main())
