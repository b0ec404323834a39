"""LangBridge benchmark: training throughput and MFU, generation tokens/s, MGSM evaluation time, peak memory, and
speed ratios to a reference that follows the official implementation's approach, all measured in one run.

    python benchmarks/run.py                                   # tiny + default pair, CPU, full settings
    python benchmarks/run.py --models default --quick          # a few minutes
    python benchmarks/run.py --device cuda --dtype bf16 --models default,llama-1b --random-weights
    python benchmarks/run.py --models paper --device cuda --dtype bf16 --phases train --no-reference

See docs/performance.md for the FLOP formula and the results.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `benchmarks` and `langbridge` importable
    _repo = Path(__file__).resolve().parents[1]
    sys.path[:0] = [str(_repo), str(_repo / "src")]

import torch

from benchmarks.common import DTYPES, choose_threads, system_info, write_json
from benchmarks.data import find_data_dir, mgsm_questions, text_sample, training_config
from benchmarks.models import SPECS, build_pair, fp32_copy
from benchmarks.suite import Options, evaluation_phase, generation_phase, scaling_phase, training_phase

# (row label, tokens/s key of a generation result, its speedup-vs-reference key): whole call, then decode only.
GENERATION_ROWS = (
    ("gen", "tokens_per_s", "speedup_vs_reference"),
    ("decode", "decode_tokens_per_s", "decode_speedup_vs_reference"),
)
SCALING_SERIES = ("over_batch", "over_length", "collate_over_examples", "decode_over_context")
PHASES = ("train", "generate", "evaluate", "scaling", "recipe")
DEFAULT_PHASES = ("train", "generate", "evaluate", "scaling")
# Targets of issue 7 for the default pair on CPU.
TARGETS = {"train_mfu": 0.70, "gen_batch32_over_batch1": 10.0, "eval_speedup": 3.0, "scaling_slack": 1.3}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="tiny,default", help=f"comma list of {', '.join(SPECS)}")
    p.add_argument("--quick", action="store_true", help="fewer steps, tokens and questions (a smoke run)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument(
        "--dtype", choices=tuple(DTYPES), default="fp32", help="bf16 = bf16 weights + autocast (GPU)"
    )
    p.add_argument("--output", default=None, help="write the JSON results here")
    p.add_argument("--random-weights", action="store_true", help="random weights even where pretrained exist")
    p.add_argument(
        "--phases", default=None, help=f"comma list of {', '.join(PHASES)} (default: all but recipe)"
    )
    p.add_argument("--no-reference", action="store_true", help="skip the official-approach reference")
    p.add_argument("--data-dir", default=None, help="folder with gsm8k/ and mgsm/ (default: ../shared/data)")
    p.add_argument(
        "--threads",
        default="auto",
        help="torch threads: a number, or auto (all cores on an idle machine, 1 when others keep the cores busy)",
    )
    p.add_argument("--train-steps", type=int, default=None)
    p.add_argument("--train-batch", type=int, default=None)
    p.add_argument("--repeats", type=int, default=None, help="alternating ours/reference training runs")
    p.add_argument("--gen-tokens", type=int, default=None)
    p.add_argument("--gen-batches", default=None, help="comma list, default 1,8,32")
    p.add_argument("--eval-questions", type=int, default=None)
    p.add_argument("--eval-max-new-tokens", type=int, default=None)
    p.add_argument("--eval-batch", type=int, default=None)
    p.add_argument("--train-override", action="append", default=[], help="key=value for the training config")
    args = p.parse_args(argv)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in models if m not in SPECS]
    if unknown or not models:
        p.error(f"--models: unknown {unknown}; choose from {', '.join(SPECS)}")
    args.models = models
    if args.phases is not None:
        args.phases = [x.strip() for x in args.phases.split(",") if x.strip()]
        bad = [x for x in args.phases if x not in PHASES]
        if bad or not args.phases:
            p.error(f"--phases: unknown {bad}; choose from {', '.join(PHASES)}")
    if args.threads != "auto" and (not str(args.threads).isdigit() or int(args.threads) < 1):
        p.error(f"--threads must be a positive number or auto, got {args.threads!r}")
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA device is available here")
    if args.dtype == "bf16" and args.device == "cpu":
        p.error("--dtype bf16 is for GPUs (the CPU benchmark is fp32, as CPU training is)")
    return args


def options_for(args: argparse.Namespace, model: str) -> Options:
    quick = args.quick
    big = model in ("llama-1b", "paper")
    opts = Options(
        device=torch.device(args.device),
        dtype=DTYPES[args.dtype],
        train_steps=2 if quick else (10 if args.device == "cuda" else 4),
        warmup_steps=1 if args.device == "cpu" else 3,
        train_batch=4 if quick else 8,
        repeats=1 if quick else 2,
        gen_tokens=16 if quick else 64,
        reference_gen_examples=2 if quick else 4,
        eval_questions=20 if quick else 100,
        eval_max_new_tokens=32 if quick else 128,
        reference=not args.no_reference and model != "paper",
        scaling_batches=(1, 2, 4) if quick else (1, 2, 4, 8),
        scaling_lengths=(128, 256) if quick else (128, 256, 512),
        scaling_collate=(8, 32) if quick else (8, 32, 128),
        scaling_contexts=(128, 512) if quick else (128, 512, 1024),
        scaling_decode_steps=4 if quick else 16,
        train_overrides=list(args.train_override),
    )
    if big and args.device == "cuda":
        opts.gen_tokens = 32 if quick else 64
    for name, attr in (
        ("train_steps", "train_steps"),
        ("train_batch", "train_batch"),
        ("repeats", "repeats"),
        ("gen_tokens", "gen_tokens"),
        ("eval_questions", "eval_questions"),
        ("eval_max_new_tokens", "eval_max_new_tokens"),
        ("eval_batch", "eval_batch"),
    ):
        value = getattr(args, name)
        if value is not None:
            if value < 1:
                raise SystemExit(f"--{name.replace('_', '-')} must be >= 1, got {value}")
            setattr(opts, attr, value)
    if args.gen_batches:
        opts.gen_batches = tuple(int(b) for b in args.gen_batches.split(","))
    return opts


def run_model(
    name: str, args: argparse.Namespace, data_dir: Path, phases: list[str], result: dict[str, Any], save: Any
) -> None:
    """Fills `result` phase by phase, calling `save()` after each so a run cut off by a time limit keeps what it
    measured."""
    opts = options_for(args, name)
    device, dtype = opts.device, DTYPES[args.dtype]
    cfg = training_config(data_dir, opts.train_batch, opts.train_overrides)
    d = cfg.data
    processor_kwargs = {
        "encoder_template": "{text}",
        "lm_prompt": "<|im_end|>\n<|im_start|>assistant\n",  # the chatml template of configs/default.yaml
        "lm_prefix": d.lm_prefix,
        "max_encoder_length": d.max_encoder_length,
        "max_lm_length": d.max_lm_length,
    }
    from langbridge.training.templates import get_template

    template = get_template(d.template, d.encoder_template, d.lm_prompt)
    processor_kwargs.update(encoder_template=template.encoder_template, lm_prompt=template.lm_prompt)
    t0 = time.perf_counter()
    pair = build_pair(
        name,
        texts=text_sample(data_dir),
        random_weights=args.random_weights,
        device=device,
        dtype=dtype,
        processor_kwargs=processor_kwargs,
    )
    load_s = time.perf_counter() - t0
    ref_model = fp32_copy(pair.model) if opts.reference else None
    n_params = {
        part: sum(p.numel() for p in getattr(pair.model, part).parameters())
        for part in ("encoder", "bridge", "lm")
    }
    result.update(
        {
            "weights": pair.weights,
            "tokenizers": pair.tokenizers,
            "parameters": n_params,
            "load_seconds": load_s,
            "options": {k: v for k, v in vars(opts).items() if k not in ("device", "dtype")},
        }
    )
    save()
    log = logging.getLogger("benchmarks")
    if "train" in phases:
        log.info("[%s] training", name)
        result["train"] = training_phase(pair, ref_model, cfg, opts)
        save()
    if "recipe" in phases:
        log.info("[%s] recipe cross-check", name)
        result["recipe"] = recipe_check(name, pair, cfg, opts)
        save()
    if "generate" in phases:
        log.info("[%s] generation", name)
        result["generate"] = generation_phase(pair, ref_model, mgsm_questions(data_dir, "en", 64), opts)
        save()
    if "evaluate" in phases:
        log.info("[%s] MGSM evaluation", name)
        result["evaluate"] = evaluation_phase(pair, ref_model, data_dir, opts)
        save()
    if "scaling" in phases:
        log.info("[%s] scaling", name)
        result["scaling"] = scaling_phase(pair, cfg, opts)
        save()


def recipe_check(name: str, pair: Any, cfg: Any, opts: Options) -> dict[str, Any]:
    """tokens/s as `langbridge train` itself logs it (metrics.jsonl), for the pretrained pair."""
    import json
    import tempfile

    from langbridge.training import train

    if pair.weights != "pretrained":
        return {"skipped": "the recipe loads pretrained models by name; this pair has random weights"}
    with tempfile.TemporaryDirectory(prefix="langbridge-bench-recipe-") as tmp:
        steps = opts.warmup_steps + opts.train_steps
        run_cfg = training_config(
            Path(cfg.data.data_dir),
            opts.train_batch,
            [
                *opts.train_overrides,
                f"max_steps={steps}",
                "log_interval=1",
                "save_interval=0",
                "eval_interval=0",
                "progress_bar=false",
                f"output_dir={tmp}/run",
            ],
        )
        train(run_cfg)
        rows = [json.loads(line) for line in Path(tmp, "run", "metrics.jsonl").read_text().splitlines()]
    rows = [r for r in rows if r.get("split") == "train"]
    # With log_interval=1 each row covers one step: its time is the growth of elapsed_s since the previous row.
    measured = [
        (r, r["elapsed_s"] - prev["elapsed_s"])
        for prev, r in zip(rows, rows[1:], strict=False)
        if r["step"] > opts.warmup_steps
    ]
    seconds = sum(dt for _, dt in measured)
    tokens = sum(r["tokens_per_s"] * dt for r, dt in measured)
    return {"steps": len(measured), "tokens_per_s": tokens / seconds if seconds else None, "rows": rows}


# ----------------------------------------------------------------------------------------------------------------
def _fmt(x: Any, digits: int = 2) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        if abs(x) >= 1000:
            return f"{x:,.0f}"
        return f"{x:.{digits}f}"
    return str(x)


def table(results: dict[str, Any]) -> str:
    rows = [("model", "metric", "ours", "reference", "ours/ref")]
    for name, r in results["models"].items():
        t = r.get("train")
        if t:
            ref = t.get("reference", {})
            rows.append(
                (
                    name,
                    "train tokens/s" + (" (compiled layers)" if t.get("compiled") else ""),
                    _fmt(t["ours"]["tokens_per_s"]),
                    _fmt(ref.get("tokens_per_s")),
                    _fmt(t.get("speedup_tokens_per_s")),
                )
            )
            rows.append(
                (
                    name,
                    "train MFU",
                    f"{100 * t['ours']['mfu']:.1f}%",
                    f"{100 * ref['mfu']:.1f}%" if ref else "-",
                    "",
                )
            )
            rows.append(
                (
                    name,
                    "train MFU vs peak probed at each step",
                    f"{100 * t['ours']['mfu_step_peaks']:.1f}%",
                    f"{100 * ref['mfu_step_peaks']:.1f}%" if ref else "-",
                    "",
                )
            )
            rows.append(
                (
                    name,
                    "bare fwd+bwd MFU (no data/padding)",
                    f"{100 * t['ours']['bare_forward_backward_mfu']:.1f}%",
                    "",
                    "",
                )
            )
            rows.append(
                (
                    name,
                    "train padding",
                    f"{100 * t['ours']['padding_fraction']:.1f}%",
                    f"{100 * ref['padding_fraction']:.1f}%" if ref else "-",
                    "",
                )
            )
            rows.append(
                (name, "train peak mem MB", _fmt(_mem(t["ours"])), _fmt(_mem(ref)) if ref else "-", "")
            )
        rc = r.get("recipe")
        if rc and rc.get("tokens_per_s"):
            rows.append((name, "`langbridge train` tokens/s", _fmt(rc["tokens_per_s"]), "", ""))
        g = r.get("generate")
        if g:
            for label, key, speedup in GENERATION_ROWS:
                for b, v in g["ours"].items():
                    if key in v:
                        rows.append(
                            (
                                name,
                                f"{label} tokens/s b={b}",
                                _fmt(v[key]),
                                _fmt(g.get("reference", {}).get(key)),
                                _fmt(g.get(speedup, {}).get(b)),
                            )
                        )
            b_last = list(g["ours"])[-1]
            rows.append((name, f"gen b={b_last} / b=1", _fmt(g["batch_scaling"][b_last]), "", ""))
            if "decode_batch_scaling" in g:
                rows.append(
                    (name, f"decode b={b_last} / b=1", _fmt(g["decode_batch_scaling"][b_last]), "", "")
                )
            rows.append(
                (
                    name,
                    f"gen peak mem MB b={b_last}",
                    _fmt(_mem(g["ours"][b_last])),
                    _fmt(_mem(g.get("reference", {}))),
                    "",
                )
            )
        e = r.get("evaluate")
        if e:
            ref = e.get("reference", {})
            rows.append(
                (
                    name,
                    f"MGSM {e['questions']} q. seconds",
                    _fmt(e["ours"]["seconds"]),
                    _fmt(ref.get("seconds")),
                    _fmt(e.get("speedup_vs_reference")),
                )
            )
            rows.append((name, "MGSM peak mem MB", _fmt(_mem(e["ours"])), _fmt(_mem(ref)), ""))
        s = r.get("scaling")
        if s:
            for key in SCALING_SERIES:
                rows.append(
                    (
                        name,
                        f"scaling {key} time/FLOP growth",
                        _fmt(s[key]["worst_time_over_flops_growth"]),
                        "",
                        "",
                    )
                )
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    lines = [
        "  ".join(
            c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in rows
    ]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def _mem(r: dict | None) -> float | None:
    if not r:
        return None
    return r.get("peak_gpu_mb", r.get("peak_rss_mb"))


def targets(results: dict[str, Any]) -> dict[str, Any]:
    r = results["models"].get("default")
    if not r:
        return {}
    out: dict[str, Any] = {}
    if "train" in r:
        for key, label in (("mfu", ""), ("mfu_step_peaks", " (peak probed at each step)")):
            v = r["train"]["ours"][key]
            out[f"train_mfu>=0.70{label}"] = {"value": v, "met": v >= TARGETS["train_mfu"]}
    g = r.get("generate")
    if g and "32" in g["batch_scaling"]:
        v = g["batch_scaling"]["32"]
        out["gen_b32/b1>=10 (end to end)"] = {"value": v, "met": v >= TARGETS["gen_batch32_over_batch1"]}
        if "32" in g.get("decode_batch_scaling", {}):
            v = g["decode_batch_scaling"]["32"]
            out["gen_b32/b1>=10 (decode, KV cache)"] = {
                "value": v,
                "met": v >= TARGETS["gen_batch32_over_batch1"],
            }
    e = r.get("evaluate")
    if e and "speedup_vs_reference" in e:
        v = e["speedup_vs_reference"]
        out["eval_speedup>=3"] = {"value": v, "met": v >= TARGETS["eval_speedup"]}
    s = r.get("scaling")
    if s:
        v = max(s[k]["worst_time_over_flops_growth"] for k in SCALING_SERIES)
        out["scaling_time/flops<=1.3"] = {"value": v, "met": v <= TARGETS["scaling_slack"]}
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    warnings.filterwarnings("ignore", message=r".*exceed.*max_(encoder|lm)_length.*")
    device = torch.device(args.device)
    threads, why = choose_threads(args.threads)
    torch.set_num_threads(threads)
    if threads == 1:
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # no Rust thread pool fighting for the cores
    logging.getLogger("benchmarks").info("threads: %s", why)
    data_dir, data_kind = find_data_dir(args.data_dir)
    results: dict[str, Any] = {
        "system": {**system_info(device), "threads_choice": why},
        "dtype": args.dtype,
        "quick": args.quick,
        "data": {"dir": str(data_dir), "kind": data_kind},
        "models": {},
    }
    started = time.perf_counter()
    for name in args.models:
        phases = args.phases or (["train"] if name in ("paper", "tiny-mt5") else list(DEFAULT_PHASES))
        results["models"][name] = {}

        def save(name: str = name) -> None:
            results["elapsed_s"] = time.perf_counter() - started
            try:  # how busy the machine was as each phase ended (other jobs distort absolute numbers)
                results["models"][name].setdefault("load_average_after_phase", []).append(
                    round(os.getloadavg()[0], 2)
                )
            except OSError:
                pass
            if args.output:
                write_json(args.output, results)

        run_model(name, args, data_dir, phases, results["models"][name], save)
    results["targets"] = targets(results)
    results["elapsed_s"] = time.perf_counter() - started
    if args.output:
        write_json(args.output, results)
    print(table(results))
    for key, v in results["targets"].items():
        print(f"target {key}: {v['value']:.3g} -> {'met' if v['met'] else 'MISSED'}")
    if args.output:
        print(f"results: {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
