"""`langbridge eval` and `langbridge compare`. Heavy imports happen inside the handlers."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

TASKS_HELP = "mgsm, msvamp, xcopa, humaneval, humaneval-mt, bbh, bbh-bn"


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _task_dir(text: str) -> tuple[str, str]:
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"expected NAME=DIR (e.g. msvamp=/data/mSVAMP), got {text!r}")
    return name.strip(), path.strip()


def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers (e.g. 1,10), got {text!r}"
        ) from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


# Folder names under --data-dir that --task-dir overrides (task name -> folder).
TASK_FOLDERS = {
    "mgsm": "mgsm",
    "msvamp": "msvamp",
    "xcopa": "xcopa",
    "humaneval": "humaneval",
    "humaneval-mt": "humaneval_mt",
    "bbh": "bbh",
    "bbh-bn": "bbh_bn",
}


def add_parsers(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "eval",
        help="evaluate a LangBridge checkpoint (or, with --lm-only, a plain causal LM) on multilingual benchmarks",
        description=(
            "Evaluate MODEL on benchmarks and write predictions/<task>.jsonl, results.json and results.md to --output. "
            "Re-running with the same settings resumes: finished examples are skipped. Data comes from --data-dir "
            "(default: $LANGBRIDGE_DATA, else ../shared/data) in the original file layouts, else from the hub."
        ),
    )
    p.add_argument(
        "model",
        nargs="?",
        help="LangBridge checkpoint directory (or, with --lm-only, a causal LM path/alias)",
    )
    p.add_argument("--tasks", help=f"comma-separated tasks: {TASKS_HELP}")
    p.add_argument("--languages", help="comma-separated language codes (default: all of each task)")
    p.add_argument("--limit", type=_positive_int, help="first N examples per language (for quick checks)")
    p.add_argument(
        "--batch-size", type=_positive_int, default=8, help="examples per forward/generate call (default 8)"
    )
    p.add_argument("--output", type=Path, help="output directory (default: eval_results/<model name>)")
    p.add_argument(
        "--lm-only", action="store_true", help="MODEL is a plain causal LM: the LM-alone baseline row"
    )
    p.add_argument("--name", help="model name in results and tables (default: the MODEL folder name)")
    p.add_argument(
        "--data-dir",
        type=Path,
        help="folder holding mgsm/, xcopa/, humaneval/, humaneval_mt/, bbh/, msvamp/, bbh_bn/",
    )
    p.add_argument(
        "--task-dir",
        type=_task_dir,
        action="append",
        default=[],
        metavar="TASK=DIR",
        help="use DIR as one task's folder, e.g. msvamp=/data/mSVAMP or bbh-bn=/data/BBH-Bengali (repeatable)",
    )
    p.add_argument("--split", help="dataset split (XCOPA: test or val; default: test)")
    p.add_argument(
        "--prompt-style",
        choices=("auto", "instruct", "base"),
        default="auto",
        help="instruct = zero-shot in the LM's instruction format; base = few-shot exemplars; "
        "auto = instruct when the LM has a chat template or the checkpoint an LM prompt (default)",
    )
    p.add_argument(
        "--instruction-template",
        help="wrap instruct prompts in metamath, alpaca, orca or chatml (or a format string with {user}) "
        "instead of the LM's chat template",
    )
    p.add_argument("--num-fewshot", type=int, help="exemplars for base-LM prompts (MGSM/MSVAMP default 8)")
    p.add_argument("--max-new-tokens", type=_positive_int, help="generation budget (default: per task, 512)")
    p.add_argument(
        "--samples",
        type=_positive_int,
        default=1,
        help="code tasks: completions per problem; >1 samples for pass@k",
    )
    p.add_argument(
        "--temperature", type=float, default=0.8, help="sampling temperature for --samples > 1 (default 0.8)"
    )
    p.add_argument(
        "--top-p", type=float, default=0.95, help="nucleus sampling for --samples > 1 (default 0.95)"
    )
    p.add_argument("--pass-k", type=_int_list, default=[1, 10], help="k values for pass@k (default 1,10)")
    p.add_argument(
        "--sandbox-workers",
        type=_positive_int,
        help="parallel test programs for code tasks (default: CPU count, max 8)",
    )
    p.add_argument(
        "--unsafe-local-exec",
        action="store_true",
        help="code tasks: if bubblewrap is missing, run generated code WITHOUT a sandbox (disposable machines only)",
    )
    p.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: cuda when available)")
    p.add_argument(
        "--dtype", default="auto", help="auto (bf16 on GPU, fp32 on CPU), float32, bfloat16, float16"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--offline", action="store_true", help="never download datasets from the hub")
    p.add_argument(
        "--overwrite", action="store_true", help="discard predictions in --output made with other settings"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--list-tasks", action="store_true", help="list the registered tasks and exit")
    p.set_defaults(func=_run_eval, interrupted=_eval_interrupted)

    c = subparsers.add_parser(
        "compare",
        help="side-by-side table of results.json files with deltas to the first (LM alone first, then LangBridge)",
    )
    c.add_argument(
        "results", nargs="+", type=Path, help="results.json files (or the output folders holding them)"
    )
    c.add_argument("--labels", help="comma-separated row labels, one per file (default: model names)")
    c.add_argument("--output", type=Path, help="also write the markdown to this file")
    c.set_defaults(func=_run_compare)

    h = subparsers.add_parser(
        "lm-eval",
        help="lm-evaluation-harness with the `langbridge` model registered (arguments go to lm-eval)",
        description=(
            "Runs lm-eval's command line after registering the `langbridge` model, e.g. `langbridge lm-eval --model "
            "langbridge --model_args pretrained=CKPT --tasks xcopa_sw`. Needs `pip install 'langbridge[lm-eval]'`."
        ),
        # Every argument, --help included, belongs to lm-eval: no option prefix of our own.
        prefix_chars="\0",
        add_help=False,
    )
    h.add_argument("lm_eval_args", nargs=argparse.REMAINDER, help="lm-eval arguments")
    h.set_defaults(func=_run_lm_eval)


def _code_sandbox_missing(args: argparse.Namespace) -> bool:
    """Before any model is loaded: code tasks need bubblewrap, or an explicit --unsafe-local-exec."""
    from .registry import available_tasks, get_task
    from .sandbox import SandboxUnavailable, allow_unsafe_local_exec, resolve_isolation

    known = set(available_tasks())
    names = [t.strip() for t in str(args.tasks).split(",")]
    if not any(n in known and get_task(n).kind == "code" for n in names):
        return False  # unknown names get their own error later
    allow_unsafe_local_exec(bool(getattr(args, "unsafe_local_exec", False)))
    try:
        resolve_isolation()
    except SandboxUnavailable as err:
        print(f"error: {err}", file=sys.stderr)
        return True
    return False


def _name_and_output(args: argparse.Namespace) -> tuple[str, Path]:
    name = args.name or Path(str(args.model).rstrip("/")).name or str(args.model)
    return name, Path(args.output or Path("eval_results") / (name + ("-lm-only" if args.lm_only else "")))


def _eval_interrupted(args: argparse.Namespace) -> str:
    if not args.model or not args.tasks:
        return "nothing was saved"
    output = _name_and_output(args)[1]
    return (
        f"predictions finished so far are kept in {output / 'predictions'}; rerun the same command (same "
        "--output) to resume from them"
    )


def _run_eval(args: argparse.Namespace) -> int:
    from .registry import available_tasks, get_task

    if args.list_tasks:
        for name in available_tasks():
            task = get_task(name)
            print(
                f"{name:14s} {task.kind:13s} {','.join(task.languages)}\n{'':14s} {task.description}\n{'':14s} data: {task.data_help}"
            )
        return 0
    if not args.model:
        print(
            "error: MODEL is required (a LangBridge checkpoint, or a causal LM with --lm-only).",
            file=sys.stderr,
        )
        return 2
    if not args.tasks:
        print(f"error: --tasks is required (comma-separated: {TASKS_HELP}).", file=sys.stderr)
        return 2
    task_dirs = {}
    for name, path in args.task_dir:
        key = name.lower().replace("_", "-")
        if key not in TASK_FOLDERS:
            print(
                f"error: --task-dir {name}=...: unknown task; use one of {', '.join(TASK_FOLDERS)}.",
                file=sys.stderr,
            )
            return 2
        task_dirs[TASK_FOLDERS[key]] = path

    if _code_sandbox_missing(args):
        return 1
    from ..utils import check_model_source

    try:
        check_model_source(args.model)  # before the data is read: a mistyped path fails at once
    except FileNotFoundError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1

    from .data import DataNotFoundError
    from .report import results_markdown
    from .runner import evaluate

    name, output = _name_and_output(args)
    try:
        results = evaluate(
            args.model,
            args.tasks,
            languages=args.languages,
            limit=args.limit,
            batch_size=args.batch_size,
            output_dir=output,
            data_dir=args.data_dir,
            task_dirs=task_dirs,
            split=args.split,
            seed=args.seed,
            prompt_style=args.prompt_style,
            instruction_template=args.instruction_template,
            num_fewshot=args.num_fewshot,
            max_new_tokens=args.max_new_tokens,
            num_samples=args.samples,
            temperature=args.temperature,
            top_p=args.top_p,
            pass_k=args.pass_k,
            lm_only=args.lm_only,
            device=args.device,
            dtype=args.dtype,
            model_name=name,
            progress=not args.no_progress,
            overwrite=args.overwrite,
            allow_hub=not args.offline,
            sandbox_workers=args.sandbox_workers,
        )
    except (DataNotFoundError, FileNotFoundError, KeyError, ValueError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"error: {message}", file=sys.stderr)
        return 1
    print(results_markdown(results))
    print(f"Wrote {output}/results.json, results.md and predictions/.")
    return 0


def _run_lm_eval(args: argparse.Namespace) -> int:
    try:
        from .lm_eval_backend import main
    except ImportError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    try:
        return main(args.lm_eval_args)
    except SystemExit as done:  # argparse inside lm-eval exits on --help and on bad arguments
        return done.code if isinstance(done.code, int) else (0 if done.code is None else 1)


def _run_compare(args: argparse.Namespace) -> int:
    from ..utils import atomic_write_text
    from .report import compare

    labels = [s.strip() for s in args.labels.split(",")] if args.labels else None
    try:
        text = compare(args.results, labels=labels)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(text)
    if args.output:
        atomic_write_text(args.output, text)
    return 0
