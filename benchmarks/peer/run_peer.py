"""Peer benchmark (issue 19): this library against the REAL official LangBridge code, side by side, equal work.

    bash benchmarks/peer/setup_official_env.sh /path/venv          # once: transformers 4.37.2 + the harness's imports
    python benchmarks/peer/run_peer.py --official-checkout /path/LangBridge --official-python /path/venv/bin/python \
        --out-dir peer_results                                      # writes peer_results/peer.json and peer.md

The official code (github.com/kaistAI/LangBridge, checked out by the user at commit 4f43fb2; never copied here) runs
in its own environment and process (benchmarks/peer/official_side.py), ours in this one (our_side.py), one process
per measurement, one after another, so each runs alone. Steps:

1. prepare: the default pair (e5-small + SmolLM2-135M-Instruct; real weights where installed, or --random-weights)
   with a seeded random linear bridge (or --checkpoint), saved in our format, in the official format (lb.* keys,
   its config) with the same weights, and with encoder/LM folders transformers 4.37 reads (benchmarks/peer/legacy.py);
   20 Swahili MGSM questions in the official harness's context format.
2. correctness: the LM alone (4.37's LlamaForCausalLM on the copy vs ours) and the whole LangBridge forward (the
   official model on the harness layout vs ours) on the same input; token ids and logits compared.
3. speed, exactly --new-tokens per answer on both sides: official harness path (`LBSeq2SeqLM._model_generate`:
   `generate` with enc_ids/enc_mask) at batch 1 and --batch; ours `model.generate` at batch 1 and --batch, our
   continuous-batching engine (EOS and stop strings off) at each --engine-batches, and `langbridge eval` at its
   defaults (its own prompt, stop strings and EOS: not forced to the budget, reported apart).
   Each reports tokens/s, peak memory during generation (RSS, or GPU allocated) and its token ids, from which
   batched-vs-batch-1 equality is computed for each system, and ours-vs-official at batch 1.

On an offline GPU machine (benchmarks/gpu_check.sh) pass --official-site DIR instead of --official-python: wheels
installed into DIR (setup_official_env.sh --wheels) go ahead of that machine's packages, with its own torch; the
harness's unused imports are then stood in (recorded in the results).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--official-checkout", required=True, help="checkout of github.com/kaistAI/LangBridge (4f43fb2)"
    )
    env = p.add_mutually_exclusive_group(required=True)
    env.add_argument("--official-python", help="the Python of the env setup_official_env.sh made")
    env.add_argument("--official-site", help="a --target folder of the official wheels (offline GPU machine)")
    p.add_argument("--out-dir", default="peer_results", help="peer.json, peer.md and each run's JSON")
    p.add_argument("--assets", help="prepared models and questions (default: OUT_DIR/assets)")
    p.add_argument("--reuse-assets", action="store_true", help="skip prepare when ASSETS is already prepared")
    p.add_argument("--questions", type=int, default=20)
    p.add_argument("--language", default="sw")
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--batch", type=int, default=20, help="the batched size for both systems (default 20)")
    p.add_argument("--engine-batches", default="8,20", help="continuous-batching sizes (8 = eval's default)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32")
    p.add_argument(
        "--random-weights", action="store_true", help="the default pair's architectures, random weights"
    )
    p.add_argument(
        "--pair",
        choices=("default", "tiny"),
        default="default",
        help="tiny: 2-layer random models with synthetic tokenizers, to smoke-test the benchmark itself",
    )
    p.add_argument(
        "--checkpoint", help="a trained LangBridge checkpoint of ours (default: fresh, seeded bridge)"
    )
    p.add_argument("--data-dir", help="folder with mgsm/ (default: the benchmark's lookup)")
    p.add_argument("--skip-eval", action="store_true", help="leave out the `langbridge eval` run")
    p.add_argument("--only", help="comma list of run names to do (default: all; see RUNS in the results)")
    p.add_argument(
        "--nice", type=int, default=0, help="run every child under nice -n N (for checks on a busy host)"
    )
    p.add_argument("--timeout", type=int, default=3600, help="seconds per child process")
    return p.parse_args(argv)


def _env(args: argparse.Namespace, official: bool) -> dict[str, str]:
    env = dict(os.environ)
    threads = str(args.threads)
    env.update(
        OMP_NUM_THREADS=threads,
        MKL_NUM_THREADS=threads,
        TOKENIZERS_PARALLELISM="false",
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
    )
    if official:
        # Never our `langbridge` package (same name as the official one) on the official side.
        env.pop("PYTHONPATH", None)
        if args.official_site:
            env["PYTHONPATH"] = str(Path(args.official_site).resolve())
    else:
        env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), str(REPO), env.get("PYTHONPATH", "")]).rstrip(
            os.pathsep
        )
    return env


def _run(args: argparse.Namespace, name: str, official: bool, argv: list[str], log: Path) -> dict[str, Any]:
    python = (args.official_python or sys.executable) if official else sys.executable
    script = HERE / ("official_side.py" if official else "our_side.py")
    cmd = [python, str(script), *argv]
    if args.nice:
        cmd = ["nice", "-n", str(args.nice), *cmd]
    print(f"[{time.strftime('%H:%M:%S')}] {name}: {' '.join(cmd)}", flush=True)
    start = time.perf_counter()
    with open(log, "w", encoding="utf-8") as f:
        try:
            proc = subprocess.run(
                cmd,
                env=_env(args, official),
                stdout=f,
                stderr=subprocess.STDOUT,
                timeout=args.timeout,
                cwd=REPO,
            )
            rc = proc.returncode
        except subprocess.TimeoutExpired:
            rc = "timeout"
    wall = time.perf_counter() - start
    tail = log.read_text(encoding="utf-8", errors="replace").splitlines()[-3:]
    print(f"    exit {rc} in {wall:.0f} s: {tail[-1] if tail else ''}", flush=True)
    return {"name": name, "rc": rc, "wall_s": wall, "log": str(log)}


def _common(args: argparse.Namespace, assets: Path) -> list[str]:
    return [
        "--assets",
        str(assets),
        "--threads",
        str(args.threads),
        "--device",
        args.device,
        "--dtype",
        args.dtype,
    ]


def runs(args: argparse.Namespace) -> list[tuple[str, bool, list[str]]]:
    """(name, official?, argv) of every speed run, in order."""
    n = ["--questions", str(args.questions), "--new-tokens", str(args.new_tokens)]
    stubs = ["--allow-stubs"] if args.official_site else []
    official = ["--checkout", str(Path(args.official_checkout).resolve()), *stubs]
    out = [
        ("official_b1", True, ["generate", *official, "--batch-size", "1", *n]),
        (f"official_b{args.batch}", True, ["generate", *official, "--batch-size", str(args.batch), *n]),
        ("ours_generate_b1", False, ["generate", "--batch-size", "1", *n]),
        (f"ours_generate_b{args.batch}", False, ["generate", "--batch-size", str(args.batch), *n]),
    ]
    for b in [int(x) for x in args.engine_batches.split(",") if x.strip()]:
        out.append((f"ours_engine_b{b}", False, ["engine", "--batch-size", str(b), *n]))
    if not args.skip_eval:
        out.append(("ours_eval_default", False, ["eval", *n]))
    return out


# ---------------------------------------------------------------------------------------------------------------
def compare_logits(official: dict[str, Any], ours: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for part, ids in (("lm", "lm_input_ids"), ("langbridge", "lb_enc_ids")):
        a, b = (
            official[f"{'lm' if part == 'lm' else 'lb'}_logits"],
            ours[f"{'lm' if part == 'lm' else 'lb'}_logits"],
        )
        entry: dict[str, Any] = {
            "input_ids_equal": official[ids] == ours[ids],
            "positions": [a.shape[0], b.shape[0]],
        }
        if a.shape == b.shape:
            entry["max_abs_diff"] = float((a - b).abs().max())
            entry["max_abs_logit"] = float(a.abs().max())
            entry["argmax_agree"] = float((a.argmax(-1) == b.argmax(-1)).float().mean())
        out[part] = entry
    out["official_meta"] = official.get("meta")
    out["official_lm_rope_theta"] = official.get("lm_rope_theta")
    return out


def equal_count(a: list[list[int]] | None, b: list[list[int]] | None) -> str | None:
    if not a or not b or len(a) != len(b):
        return None
    return f"{sum(x == y for x, y in zip(a, b, strict=True))}/{len(a)}"


def summarize(args: argparse.Namespace, results: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    official_b1 = results.get("official_b1", {})
    ours_b1 = results.get("ours_generate_b1", {})
    base = official_b1.get("tokens_per_s")
    rows = []
    for name, r in results.items():
        if "tokens_per_s" not in r:
            rows.append({"run": name, "error": r.get("error", "no result")})
            continue
        own_b1 = official_b1 if r["system"] == "official" else ours_b1
        forced = name != "ours_eval_default"
        rows.append(
            {
                "run": name,
                "system": r["system"],
                "mode": r["mode"],
                "batch_size": r["batch_size"],
                "tokens": sum(r["new_tokens"]),
                "all_answers_full_length": all(t == r["new_tokens_requested"] for t in r["new_tokens"]),
                "seconds": r["seconds"],
                "tokens_per_s": r["tokens_per_s"],
                "vs_official_b1": r["tokens_per_s"] / base if base else None,
                "peak_rss_generation_mb": r.get("peak_rss_mb"),
                "peak_rss_process_mb": r.get("peak_rss_process_mb"),
                "peak_gpu_mb": r.get("peak_gpu_mb"),
                "equals_own_batch1": equal_count(r.get("tokens"), own_b1.get("tokens")) if forced else None,
                "equals_official_batch1": equal_count(r.get("tokens"), official_b1.get("tokens"))
                if forced
                else None,
            }
        )
    return rows


def _fmt(v: Any, digits: int = 1) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.{digits}f}"
    return str(v)


def markdown(report: dict[str, Any]) -> str:
    s = report["settings"]
    lines = [
        f"Peer benchmark, {report['date']}: {s['questions']} {s['language']} MGSM questions, {s['new_tokens']} new "
        f"tokens each, {s['threads']} threads, {s['device']} {s['dtype']}; weights: {report['meta'].get('weights')}.",
        "",
        "| run | batch | tokens/s | vs official b1 | peak memory MB (generation / process) | = own batch 1 "
        "| = official batch 1 | full-length answers |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in report["rows"]:
        if "error" in r:
            lines.append(f"| {r['run']} | | failed: {r['error']} | | | | | |")
            continue
        mem = (
            f"{_fmt(r['peak_gpu_mb'], 0)} (GPU)"
            if r["peak_gpu_mb"] is not None
            else f"{_fmt(r['peak_rss_generation_mb'], 0)} / {_fmt(r['peak_rss_process_mb'], 0)}"
        )
        lines.append(
            f"| {r['mode'] if r['system'] == 'ours' else 'official: ' + r['mode']} | {r['batch_size']} "
            f"| {_fmt(r['tokens_per_s'], 2)} | {_fmt(r['vs_official_b1'], 2)}x | {mem} "
            f"| {_fmt(r['equals_own_batch1'])} | {_fmt(r['equals_official_batch1'])} "
            f"| {'yes' if r['all_answers_full_length'] else 'no (' + str(r['tokens']) + ' tokens)'} |"
        )
    c = report.get("logit_check") or {}
    if c:
        lm, lb = c.get("lm", {}), c.get("langbridge", {})
        lines += [
            "",
            f"Correctness: LM alone (transformers 4.37 on the written copy vs ours): input ids equal "
            f"{lm.get('input_ids_equal')}, max |logit difference| {_fmt(lm.get('max_abs_diff'), 6)} "
            f"(logits up to {_fmt(lm.get('max_abs_logit'), 1)}), argmax agreement {_fmt(lm.get('argmax_agree'), 3)}; "
            f"whole LangBridge forward (official model, harness layout vs ours): encoder ids equal "
            f"{lb.get('input_ids_equal')}, max |difference| {_fmt(lb.get('max_abs_diff'), 6)}, argmax agreement "
            f"{_fmt(lb.get('argmax_agree'), 3)}.",
        ]
    meta = (c.get("official_meta") or {}) if c else {}
    if meta:
        lines.append(
            f"Official side: transformers {meta.get('transformers')}, torch {meta.get('torch')}, LM attention "
            f"{meta.get('lm_attn_implementation')}, encoder attention {meta.get('encoder_attn_implementation')}, "
            f"rope_theta {meta.get('lm_rope_theta')}; adaptations: {'; '.join(meta.get('adaptations') or []) or 'none'}; "
            f"stand-in modules: {', '.join(meta.get('harness_stubbed_modules') or []) or 'none'}."
        )
    lines.append(
        "`langbridge eval` runs its own prompt with stop strings and EOS, so its answers are not forced to the budget"
        " and its time includes loading the model: not equal work, shown for scale."
    )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    assets = Path(args.assets) if args.assets else out_dir / "assets"
    logs = out_dir / "logs"
    logs.mkdir(exist_ok=True)
    report: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "host": platform.node(),
        "settings": {k: v for k, v in vars(args).items()},
        "runs": [],
    }
    only = set(args.only.split(",")) if args.only else None
    if not (args.reuse_assets and (assets / "meta.json").is_file()):
        prep = [
            "prepare",
            "--assets",
            str(assets),
            "--questions",
            str(args.questions),
            "--language",
            args.language,
        ]
        prep += ["--random-weights"] if args.random_weights else []
        prep += ["--pair", args.pair]
        prep += ["--checkpoint", args.checkpoint] if args.checkpoint else []
        prep += ["--data-dir", args.data_dir] if args.data_dir else []
        r = _run(args, "prepare", False, prep, logs / "prepare.log")
        report["runs"].append(r)
        if r["rc"] != 0:
            print(f"prepare failed; see {r['log']}", file=sys.stderr)
            return 1
    report["meta"] = json.loads((assets / "meta.json").read_text(encoding="utf-8"))

    # Correctness: the same logits on both sides.
    if only is None or "logits" in only:
        import torch

        files = {}
        for official in (True, False):
            name = "official_logits" if official else "ours_logits"
            files[name] = out_dir / f"{name}.pt"
            extra = ["--checkout", str(Path(args.official_checkout).resolve())] if official else []
            extra += ["--allow-stubs"] if official and args.official_site else []
            report["runs"].append(
                _run(
                    args,
                    name,
                    official,
                    ["logits", *_common(args, assets), *extra, "--out", str(files[name])],
                    logs / f"{name}.log",
                )
            )
        if all(f.is_file() for f in files.values()):
            report["logit_check"] = compare_logits(
                torch.load(files["official_logits"], weights_only=True),
                torch.load(files["ours_logits"], weights_only=True),
            )
            print(
                f"    logit check: {json.dumps({k: v for k, v in report['logit_check'].items() if k != 'official_meta'})}"
            )

    results: dict[str, dict[str, Any]] = {}
    for name, official, argv_ in runs(args):
        if only is not None and name not in only:
            continue
        target = out_dir / f"{name}.json"
        if target.exists():
            target.unlink()
        r = _run(
            args,
            name,
            official,
            [*argv_[:1], *_common(args, assets), *argv_[1:], "--out", str(target)],
            logs / f"{name}.log",
        )
        report["runs"].append(r)
        if target.is_file():
            results[name] = json.loads(target.read_text(encoding="utf-8"))
        else:
            results[name] = {"error": f"exit {r['rc']}, see {r['log']}"}
    report["rows"] = summarize(args, results)
    (out_dir / "peer.json").write_text(json.dumps(report, indent=1, default=str), encoding="utf-8")
    md = markdown(report)
    (out_dir / "peer.md").write_text(md, encoding="utf-8")
    print(md)
    failed = [r["name"] for r in report["runs"] if r["rc"] != 0]
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
