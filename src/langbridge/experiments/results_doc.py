"""Fill the generated parts of RESULTS.md from a demo's JSON outputs, so no number is typed by hand.

RESULTS.md holds marker pairs `<!-- demo:NAME -->` ... `<!-- /demo:NAME -->`; everything between them is
replaced by the block NAME rendered here (headline, samples, main, pilot, timing, pca, comparison, ablations).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from langbridge.utils import atomic_write_text

MARKER = re.compile(r"(<!-- demo:(?P<name>[a-z_]+) -->\n)(?P<body>.*?)(<!-- /demo:(?P=name) -->)", re.DOTALL)


def _read(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


def _ci(row: dict[str, Any], scale: float = 1.0, digits: int = 3) -> str:
    d, lo, hi = (row[k] * scale for k in ("delta", "ci_low", "ci_high"))
    return f"{d:+.{digits}f} [{lo:+.{digits}f}, {hi:+.{digits}f}]"


# (report key, label, scale, digits, English language code) in the order the headline shows them.
HEADLINE_ROWS = (
    ("translation", "FLORES X → English (nats/token, lower = better)", 1.0, 3, "eng"),
    ("chrf", "FLORES X → English, greedy chrF++ (higher = better)", 1.0, 1, "eng"),
    ("continuation", "FLORES continuation (nats/token, lower = better)", 1.0, 3, "eng"),
    ("xcopa", "XCOPA (accuracy %)", 100.0, 1, None),
    ("mgsm", "MGSM subset (accuracy %)", 100.0, 1, "en"),
)


def headline(results: dict[str, Any]) -> str:
    """Group averages (and English): LM alone vs LangBridge, delta and CI, content scores first."""
    lines = [
        "| task (metric) | group | LM alone | LangBridge | Δ [95% CI] |",
        "|---|---|---|---|---|",
    ]
    for key, label, scale, digits, english in HEADLINE_ROWS:
        entry = results["tasks"].get(key)
        if not entry:
            continue
        for group, r in entry["groups"].items():
            lines.append(
                f"| {label} | {group} ({len(r['languages'])} langs) | {scale * r['b']:.{digits}f} | "
                f"{scale * r['a']:.{digits}f} | {_ci(r, scale, digits)} |"
            )
        en = entry["languages"].get(english) if english else None
        if en:
            lines.append(
                f"| {label} | English | {scale * en['lm_alone']:.{digits}f} | {scale * en['langbridge']:.{digits}f} | "
                f"{_ci(en['delta_vs_lm'], scale, digits)} |"
            )
    seeds = len(results["seeds"])
    planned = len(results.get("settings", {}).get("seeds", [])) or seeds
    note = f"LangBridge = mean of {seeds} training seed(s)"
    if seeds < planned:
        note += f" (of {planned} planned; the run was still going when this was written)"
    return "\n".join(lines) + f"\n\n{note}; chrF and MGSM: first seed only.\n"


def timing(results: dict[str, Any], demo_dir: Path) -> str:
    lines = ["| stage | wall time (s) | CPU time (s, all threads) |", "|---|---|---|"]
    total_wall = total_cpu = 0.0
    for stage, t in (results.get("timing_s") or {}).items():
        if isinstance(t, dict):
            lines.append(f"| {stage} | {t['wall_s']:.0f} | {t['cpu_s']:.0f} |")
            total_wall += t["wall_s"]
            total_cpu += t["cpu_s"]
    lines.append(f"| **total** | **{total_wall:.0f}** ({total_wall / 60:.1f} min) | **{total_cpu:.0f}** |")
    out = "\n".join(lines) + "\n"
    summaries = results.get("train_summaries") or {}
    if summaries:
        out += "\n| training run | steps | LM+encoder tokens | tokens/s | peak RSS (MB) |\n|---|---|---|---|---|\n"
        for name, s in summaries.items():
            out += f"| {name} | {s['steps']} | {s['tokens']} | {s['tokens_per_s']:.1f} | {s['peak_rss_mb']:.0f} |\n"
    if results.get("peak_rss_mb"):
        out += f"\nPeak resident memory of the demo process: {results['peak_rss_mb']:.0f} MB.\n"
    return out


def pca_block(demo_dir: Path) -> str:
    rep = _read(demo_dir / "pca" / "representations.json")
    if rep is None:
        return "(the representation analysis has not run yet)\n"
    lines = [
        "![PCA of mean-pooled LM representations, LangBridge vs LM alone](docs/figures/demo_pca.png)",
        "",
        f"{rep['n']} parallel FLORES-200 devtest sentences per language ({', '.join(rep['languages'])}).",
        "",
        "| model | silhouette by language (lower = more language-agnostic) | retrieval top-1 to/from English |",
        "|---|---|---|",
    ]
    names = {"langbridge": "LangBridge (seed 0)", "lm": "LM alone"}
    for key, m in rep["models"].items():
        lines.append(f"| {names.get(key, key)} | {m['silhouette']:.3f} | {m['retrieval']['average']:.3f} |")
    return "\n".join(lines) + "\n"


def pilot_block(pilot_dir: Path) -> str:
    from .demo_report import pilot_markdown

    pilot = _read(pilot_dir / "pilot.json")
    if pilot is None:
        return "(the pilot has not run yet)\n"
    s = pilot["settings"]
    # timing entries are {"wall_s", "cpu_s"} (older runs: plain wall seconds)
    wall = sum(t["wall_s"] if isinstance(t, dict) else t for t in pilot["timing_s"].values())
    return (
        f"{s['steps']} steps x batch {s['batch_size']} per recipe, seed {s['seeds'][0]}; FLORES dev articles "
        f"({', '.join(s['flores_languages'])}), XCOPA validation "
        f"({', '.join(s['xcopa_languages'])}; {s['xcopa_limit']} per language). Wall time {wall / 60:.0f} min.\n\n"
        + pilot_markdown(pilot)
    )


def ablations_block(demo_dir: Path) -> str:
    rows = _read(demo_dir / "ablations.json")
    if rows is None:
        text = "(the ablations have not run yet: `langbridge demo --ablations`)"
        stages = _read(demo_dir / "timing.json") or {}
        trains = [t for k, t in stages.items() if k.startswith("train seed") and isinstance(t, dict)]
        evals = [t for k, t in stages.items() if k.startswith("eval seed") and isinstance(t, dict)]
        if trains and evals:
            # 2 extra trainings (ffn bridge, trained encoder) + 5 evaluations (3 checkpoints, 2 variants).
            est = {
                key: 2 * max(t[key] for t in trains) + 5 * min(t[key] for t in evals)
                for key in ("wall_s", "cpu_s")
            }
            text += (
                f" Estimated from this run's stage times: about {est['wall_s'] / 60:.0f} min wall "
                f"({est['cpu_s'] / 60:.0f} CPU-min) for 2 trainings and 5 evaluations; the trained-encoder run "
                "is slower than that per step (backward through the encoder)."
            )
        return text + "\n"
    lines = [
        "| variant | FLORES X→En LRL nats/token (Δ vs LM alone) | X→En HRL | continuation LRL | continuation HRL "
        "| XCOPA LRL acc % (Δ) | XCOPA HRL |",
        "|---|---|---|---|---|---|---|",
    ]

    def cells(r: dict[str, Any]) -> str:
        parts = []
        for key, scale, digits in (
            ("translation_LRL", 1, 3),
            ("translation_HRL", 1, 3),
            ("continuation_LRL", 1, 3),
            ("continuation_HRL", 1, 3),
            ("xcopa_LRL", 100, 1),
            ("xcopa_HRL", 100, 1),
        ):
            if key in r:
                parts.append(f"{r[key]['a'] * scale:.{digits}f} ({_ci(r[key], scale, digits)})")
            else:
                parts.append("")
        return " | ".join(parts)

    for r in sorted(rows["data_amount"], key=lambda r: r["step"]):
        lines.append(
            f"| {100 * r['fraction']:.0f}% of the data ({r['examples']} training examples) | {cells(r)} |"
        )
    for label, r in rows["variants"].items():
        lines.append(f"| {label} | {cells(r)} |")
    wall = sum(t["wall_s"] for k, t in rows.get("timing_s", {}).items() if k.startswith("ablation"))
    images = [
        f"![{name.replace('_', ' ')} ablation](docs/figures/{Path(path).name})"
        for name, path in rows.get("figures", {}).items()
    ]
    return (
        "\n".join(lines)
        + f"\n\nAblation wall time: {wall / 60:.0f} min (on top of the main run).\n\n"
        + "\n".join(images)
        + "\n"
    )


# LayAlign's reproduction of LangBridge with MetaMath-7B on MGSM (accuracy %): LM alone -> LangBridge.
PAPER_MGSM = {"LRL": (5.9, 45.5), "HRL": (51.6, 52.3), "English": (68.4, 63.2)}


def _verdict(row: dict[str, Any], lower_is_better: bool) -> str:
    """Direction of a LangBridge - LM-alone delta from its CI, in words."""
    if row["ci_low"] <= 0 <= row["ci_high"]:
        return "no detectable difference"
    better = (row["delta"] < 0) if lower_is_better else (row["delta"] > 0)
    return "LangBridge better" if better else "LangBridge worse"


def comparison(results: dict[str, Any]) -> str:
    """The paper's direction and size next to ours, group by group (verdicts computed from the CIs)."""
    lines = [
        "| group | paper: MetaMath-7B MGSM acc % (LM alone → LangBridge, Δ) | ours: FLORES X→En nats/token Δ "
        "[95% CI] | ours: XCOPA acc % Δ [95% CI] |",
        "|---|---|---|---|",
    ]
    fl = results["tasks"].get("translation", {})
    xc = results["tasks"].get("xcopa", {})
    for group, (before, after) in PAPER_MGSM.items():
        if group == "English":
            f_row = fl.get("languages", {}).get("eng", {}).get("delta_vs_lm")
            x_row = None  # XCOPA has no English split
        else:
            f_row = fl.get("groups", {}).get(group)
            x_row = xc.get("groups", {}).get(group)
        f_cell = f"{_ci(f_row)}: {_verdict(f_row, True)}" if f_row else "n/a"
        x_cell = f"{_ci(x_row, 100, 1)}: {_verdict(x_row, False)}" if x_row else "n/a (no English XCOPA)"
        lines.append(f"| {group} | {before} → {after} ({after - before:+.1f}) | {f_cell} | {x_cell} |")
    return "\n".join(lines) + "\n"


def status(demo_dir: Path, pilot_dirs: Sequence[Path]) -> str:
    """Which stages of the runs have finished (from the files they leave), so partial tables are labelled."""
    settings = _read(demo_dir / "settings.json") or {}
    rows = [(f"pilot (dev data), {d.name}", (d / "pilot.json").exists()) for d in pilot_dirs]
    rows.append(("LM alone evaluated (test)", (demo_dir / "scores" / "lm_alone.json").exists()))
    for seed in settings.get("seeds", []):
        rows.append(
            (f"seed {seed} trained", (demo_dir / "train" / f"seed{seed}" / "train_summary.json").exists())
        )
        rows.append(
            (f"seed {seed} evaluated", (demo_dir / "scores" / f"langbridge_seed{seed}.json").exists())
        )
    rows.append(("representation analysis", (demo_dir / "pca" / "representations.json").exists()))
    rows.append(("ablations", (demo_dir / "ablations.json").exists()))
    lines = ["| stage | done |", "|---|---|"] + [
        f"| {name} | {'yes' if done else 'no'} |" for name, done in rows
    ]
    return "\n".join(lines) + "\n"


def _clip(text: str, limit: int = 180) -> str:
    return text if len(text) <= limit else text[:limit].rstrip() + " …"


def samples(
    demo_dir: Path, languages: Sequence[str] = ("eng", "spa", "zho", "swh", "ben"), n: int = 1
) -> str:
    """Greedy X -> English outputs of the LM alone and LangBridge (seed 0) for the first test sentences, from the
    chrF task's predictions."""
    from langbridge.evaluation import read_predictions

    files = {
        name: demo_dir / "eval" / run / "predictions" / "flores-x2en-chrf.jsonl"
        for name, run in (("LM alone", "lm_alone"), ("LangBridge", "langbridge_seed0"))
    }
    if not all(f.exists() for f in files.values()):
        return "(the FLORES X → English outputs have not been generated yet)\n"
    rows = {name: read_predictions(f) for name, f in files.items()}
    by_id: dict[str, dict[str, dict[str, dict]]] = {}
    for name, preds in rows.items():
        for r in preds.values():
            by_id.setdefault(r["id"], {}).setdefault(r["language"], {})[name] = r
    out = []
    for sid in sorted(by_id, key=lambda k: int(k.split("-")[-1]))[:n]:
        per_lang = by_id[sid]
        reference = next(iter(next(iter(per_lang.values())).values()))["gold"]
        out += [f"FLORES devtest sentence {sid} (reference: *{reference}*)", ""]
        out += ["| input language | input | LM alone | LangBridge |", "|---|---|---|---|"]
        for lang in languages:
            if lang in per_lang and len(per_lang[lang]) == 2:
                cells = [per_lang[lang]["LM alone"], per_lang[lang]["LangBridge"]]
                text = cells[0]["input"]["text"].replace("|", "/")
                # Long degenerate outputs (greedy repetition) are cut for the table; the predictions keep them whole.
                outputs = [_clip(c["extracted"].replace("|", "/")) or "(empty)" for c in cells]
                out.append(f"| {lang} | {text} | {outputs[0]} | {outputs[1]} |")
        out.append("")
    return "\n".join(out)


def render_blocks(demo_dir: str | Path, pilot_dirs: Sequence[str | Path] = ()) -> dict[str, str]:
    from .demo_report import report_markdown

    demo_dir = Path(demo_dir)
    pilots = [Path(d) for d in pilot_dirs]
    results = _read(demo_dir / "results.json")
    blocks: dict[str, str] = {}
    if results is not None:
        blocks["headline"] = headline(results)
        blocks["main"] = report_markdown(results)
        blocks["timing"] = timing(results, demo_dir)
        blocks["comparison"] = comparison(results)
        blocks["samples"] = samples(demo_dir)
    blocks["status"] = status(demo_dir, pilots)
    blocks["pca"] = pca_block(demo_dir)
    blocks["ablations"] = ablations_block(demo_dir)
    if pilots:
        blocks["pilot"] = "\n".join(pilot_block(d) for d in pilots)
    return blocks


def fill_markers(text: str, blocks: dict[str, str]) -> str:
    """Replace the body of each `<!-- demo:NAME -->` block that `blocks` has; others stay as they are."""

    def replace(m: re.Match) -> str:
        name = m.group("name")
        if name not in blocks:
            return m.group(0)
        body = blocks[name] if blocks[name].endswith("\n") else blocks[name] + "\n"
        return f"{m.group(1)}{body}{m.group(4)}"

    return MARKER.sub(replace, text)


def update_results_md(
    path: str | Path, demo_dir: str | Path, pilot_dirs: Sequence[str | Path] = ()
) -> list[str]:
    """Rewrite the generated blocks of RESULTS.md in place; returns the names of the blocks filled."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; it must exist with <!-- demo:NAME --> markers")
    text = path.read_text(encoding="utf-8")
    blocks = render_blocks(demo_dir, pilot_dirs)
    present = [m.group("name") for m in MARKER.finditer(text)]
    # The PCA plot of the analysis command goes next to the ablation figures, where RESULTS.md links it.
    pca_png = Path(demo_dir) / "pca" / "pca.png"
    if pca_png.exists():
        import shutil

        target = path.parent / "docs" / "figures" / "demo_pca.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.tmp")
        shutil.copyfile(pca_png, tmp)
        os.replace(tmp, target)
    atomic_write_text(path, fill_markers(text, blocks))
    return [name for name in present if name in blocks]
