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
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, OSError, TypeError) as err:
        # User errors are reported as one clear line; `LANGBRIDGE_DEBUG=1` shows the traceback.
        import os

        if os.environ.get("LANGBRIDGE_DEBUG"):
            raise
        print(f"langbridge {args.command}: error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
