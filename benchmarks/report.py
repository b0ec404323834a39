"""Markdown tables from benchmark results: `python benchmarks/report.py results.json [more.json ...]`."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

# Scaling series and the quantity each one varies.
SERIES = {
    "over_batch": "batch",
    "over_length": "tokens_per_example",
    "collate_over_examples": "examples",
    "decode_over_context": "context",
}


def _num(x: Any, digits: int = 1) -> str:
    if x is None:
        return "-"
    if abs(x) >= 100:
        return f"{x:,.0f}"
    return f"{x:.{digits}f}"


def _pct(x: Any) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _mem(r: dict | None) -> str:
    if not r:
        return "-"
    value = r.get("peak_gpu_mb", r.get("peak_rss_mb"))
    return _num(value, 0) if value is not None else "-"


def markdown(results: dict[str, Any]) -> str:
    sysinfo = results["system"]
    where = sysinfo.get("gpu") or sysinfo.get("cpu")
    lines = [
        f"Machine: {where}, torch {sysinfo['torch']}, transformers {sysinfo['transformers']}, {results['dtype']}, "
        f"{sysinfo.get('threads_choice', '')}; load average at start {sysinfo.get('load_average')}; "
        f"data: {results['data']['kind']}.",
        "",
        "| model | metric | ours | reference | ours / reference |",
        "|---|---|---:|---:|---:|",
    ]
    for name, r in results["models"].items():
        label = f"{name} ({r.get('weights', '?')})"
        t = r.get("train")
        if t:
            o, ref = t["ours"], t.get("reference", {})
            lines += [
                f"| {label} | training tokens/s (end to end{', compiled layers' if t.get('compiled') else ''}) | "
                f"{_num(o['tokens_per_s'])} | "
                f"{_num(ref.get('tokens_per_s'))} | {_num(t.get('speedup_tokens_per_s'), 2)} |",
                f"| {label} | training MFU (wall clock) | {_pct(o['mfu'])} | {_pct(ref.get('mfu'))} | |",
                f"| {label} | training MFU (peak probed around each step) | {_pct(o.get('mfu_step_peaks'))} | "
                f"{_pct(ref.get('mfu_step_peaks'))} | |",
                f"| {label} | training MFU (CPU time) | {_pct(o.get('mfu_cpu_time'))} | "
                f"{_pct(ref.get('mfu_cpu_time'))} | |",
                f"| {label} | bare forward+backward MFU | {_pct(o.get('bare_forward_backward_mfu'))} | | |",
                f"| {label} | padding share of processed tokens (encoder + LM) | {_pct(o['padding_fraction'])} | "
                f"{_pct(ref.get('padding_fraction'))} | |",
                f"| {label} | padding share of LM positions | {_pct(o.get('lm_padding_fraction'))} | "
                f"{_pct(ref.get('lm_padding_fraction'))} | |",
                f"| {label} | mean example length (encoder + LM) | {_num(o['mean_example_length'], 0)} | "
                f"{_num(ref.get('mean_example_length'), 0)} | |",
                f"| {label} | training peak memory MB | {_mem(o)} | {_mem(ref)} | |",
            ]
        rc = r.get("recipe")
        if rc and rc.get("tokens_per_s"):
            lines.append(f"| {label} | `langbridge train` tokens/s | {_num(rc['tokens_per_s'])} | | |")
        g = r.get("generate")
        if g:
            ref = g.get("reference", {})
            for what, key, speedup in (
                ("generation tokens/s", "tokens_per_s", "speedup_vs_reference"),
                (
                    "decode tokens/s (after the first token)",
                    "decode_tokens_per_s",
                    "decode_speedup_vs_reference",
                ),
            ):
                for b, v in g["ours"].items():
                    if key in v:
                        lines.append(
                            f"| {label} | {what}, batch {b} | {_num(v[key])} | {_num(ref.get(key))} | "
                            f"{_num(g.get(speedup, {}).get(b), 2)} |"
                        )
            last = list(g["ours"])[-1]
            lines.append(
                f"| {label} | generation batch {last} / batch 1 | {_num(g['batch_scaling'][last], 1)} | | |"
            )
            if "decode_batch_scaling" in g:
                lines.append(
                    f"| {label} | decode batch {last} / batch 1 | {_num(g['decode_batch_scaling'][last], 1)} | | |"
                )
            lines.append(
                f"| {label} | generation peak memory MB, batch {last} | {_mem(g['ours'][last])} | {_mem(ref)} | |"
            )
        e = r.get("evaluate")
        if e:
            ref = e.get("reference", {})
            lines += [
                f"| {label} | MGSM {e['questions']} questions, seconds (max {e['max_new_tokens']} new tokens) | "
                f"{_num(e['ours']['seconds'])} | {_num(ref.get('seconds'))} | {_num(e.get('speedup_vs_reference'), 2)} |",
                f"| {label} | MGSM identical outputs | | | {_pct(e.get('identical_outputs'))} |",
                f"| {label} | MGSM peak memory MB | {_mem(e['ours'])} | {_mem(ref)} | |",
            ]
    out = "\n".join(lines)
    scaling = [(n, r["scaling"]) for n, r in results["models"].items() if "scaling" in r]
    if scaling:
        rows = [
            "",
            "| model | series | x | time per token vs first | FLOPs per token vs first |",
            "|---|---|---|---:|---:|",
        ]
        for name, s in scaling:
            for key, x_name in SERIES.items():
                for r in s[key]["rows"]:
                    rows.append(
                        f"| {name} | {key} | {x_name} {r[x_name]} | {r['time_per_token_vs_first']:.2f} | "
                        f"{r['flops_per_token_vs_first']:.2f} |"
                    )
        out += "\n" + "\n".join(rows)
    targets = results.get("targets")
    if targets:
        out += "\n\n" + "\n".join(
            f"- target {k}: {v['value']:.3g} ({'met' if v['met'] else 'missed'})" for k, v in targets.items()
        )
    return out


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__)
        return 2
    for path in argv:
        print(markdown(json.loads(Path(path).read_text())))
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
