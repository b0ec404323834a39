"""Ablation figures (matplotlib, Agg): one PNG per ablation, FLORES content scores and XCOPA side by side,
LM-alone lines."""

from __future__ import annotations

from pathlib import Path
from typing import Any

GROUP_STYLE = {"LRL": ("tab:red", "o"), "HRL": ("tab:blue", "s"), "AVG": ("tab:gray", "^")}
PANELS = (
    ("translation", "FLORES X → English\nnats / English token (lower is better)", 1.0),
    ("continuation", "FLORES continuation\nnats / English token (lower is better)", 1.0),
    ("xcopa", "XCOPA accuracy (%)", 100.0),
)


def _errorbar(
    ax: Any, xs: list[float], rows: list[dict], key: str, scale: float, offset: float, **kw: Any
) -> None:
    ys = [r[key]["a"] * scale for r in rows]
    # CI of the delta, re-centred on the LangBridge value (the LM-alone value is shared by all points).
    lo = [(r[key]["delta"] - r[key]["ci_low"]) * scale for r in rows]
    hi = [(r[key]["ci_high"] - r[key]["delta"]) * scale for r in rows]
    ax.errorbar([x + offset for x in xs], ys, yerr=[lo, hi], capsize=3, **kw)


def _panel(
    ax: Any, xs: list[float], rows: list[dict], task: str, title: str, scale: float, connect: bool = True
) -> None:
    for i, group in enumerate(("LRL", "HRL")):
        key = f"{task}_{group}"
        if key not in rows[0]:
            continue
        color, marker = GROUP_STYLE[group]
        offset = (i - 0.5) * 0.06 * (max(xs) - min(xs) if len(xs) > 1 else 1)
        _errorbar(
            ax,
            xs,
            rows,
            key,
            scale,
            offset,
            color=color,
            marker=marker,
            linestyle="-" if connect else "none",
            label=f"LangBridge {group}",
        )
        ax.axhline(
            rows[0][key]["b"] * scale, color=color, linestyle="--", linewidth=1, label=f"LM alone {group}"
        )
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)


def plot_ablations(rows: dict[str, Any], out_dir: str | Path) -> dict[str, str]:
    """data_amount.png, bridge.png, encoder.png; returns their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, str] = {}

    amount = sorted(rows["data_amount"], key=lambda r: r["step"])
    if amount:
        fig, axes = plt.subplots(1, len(PANELS), figsize=(14, 4))
        xs = [100 * r["fraction"] for r in amount]
        for ax, (task, title, scale) in zip(axes, PANELS, strict=True):
            _panel(ax, xs, amount, task, title, scale)
            ax.set_xlabel("English training examples seen (% of the run)")
            ax.set_xticks(xs, [f"{x:.0f}%\n({r['examples']})" for x, r in zip(xs, amount, strict=True)])
        axes[0].legend(fontsize=8)
        fig.suptitle("Amount of English training data (checkpoints of one run, 95% CI over examples)")
        fig.tight_layout()
        written["data_amount"] = str(_save(fig, out / "ablation_data_amount.png"))
        plt.close(fig)

    variants = rows["variants"]
    comparisons = {
        "bridge": (
            "Bridge architecture",
            ["linear bridge, frozen encoder (main)", "ffn bridge"],
            ["linear", "ffn"],
        ),
        "encoder": (
            "Encoder frozen vs trained",
            ["linear bridge, frozen encoder (main)", "trained encoder"],
            ["frozen", "trained"],
        ),
    }
    for name, (title, keys, labels) in comparisons.items():
        present = [(k, lab) for k, lab in zip(keys, labels, strict=True) if k in variants]
        if len(present) < 2:
            continue
        fig, axes = plt.subplots(1, len(PANELS), figsize=(12, 4))
        sel = [variants[k] for k, _ in present]
        xs = list(range(len(sel)))
        for ax, (task, ptitle, scale) in zip(axes, PANELS, strict=True):
            _panel(ax, [float(x) for x in xs], sel, task, ptitle, scale, connect=False)
            ax.set_xticks(xs, [lab for _, lab in present])
            ax.set_xlim(-0.5, len(xs) - 0.5)
        axes[0].legend(fontsize=8)
        fig.suptitle(f"{title} (same data, steps and seed; 95% CI over examples)")
        fig.tight_layout()
        written[name] = str(_save(fig, out / f"ablation_{name}.png"))
        plt.close(fig)
    return written


def _save(fig: Any, path: Path) -> Path:
    import os

    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    os.replace(tmp, path)
    return path
