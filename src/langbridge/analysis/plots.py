"""Figures for the analyses (matplotlib, Agg backend), saved as PNG and SVG."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .io import save_figure_atomic

CATEGORY_STYLE: dict[str, tuple[str, str]] = {
    "input_language": ("in input language", "#2a9d8f"),
    "english": ("English (accidental translation)", "#e76f51"),
    "other": ("other language", "#e9c46a"),
    "undetermined": ("undetermined", "#b0b0b0"),
}


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # headless: never needs a display
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, stem: str | os.PathLike[str]) -> list[str]:
    stem = Path(stem)
    paths = [str(save_figure_atomic(fig, stem.with_suffix(suffix))) for suffix in (".png", ".svg")]
    _pyplot().close(fig)
    return paths


def plot_pca_panels(
    panels: Sequence[Mapping[str, Any]],
    languages: Sequence[str],
    stem: str | os.PathLike[str],
    suptitle: str,
    language_names: Mapping[str, str] | None = None,
) -> list[str]:
    """Side-by-side PCA scatters, one color per language; each panel: {"title", "coords", "labels", "evr"}.

    Returns the written paths (``stem``.png and ``stem``.svg).
    """
    plt = _pyplot()
    names = language_names or {}
    cmap = plt.get_cmap("tab10" if len(languages) <= 10 else "tab20")
    colors = {lang: cmap(i % cmap.N) for i, lang in enumerate(languages)}
    fig, axes = plt.subplots(
        1, len(panels), figsize=(5.6 * len(panels) + 1.8, 5.2), layout="constrained", squeeze=False
    )
    for ax, panel in zip(axes[0], panels, strict=True):
        coords = np.asarray(panel["coords"])
        labels = np.asarray(panel["labels"])
        for lang in languages:
            sel = labels == lang
            ax.scatter(
                coords[sel, 0],
                coords[sel, 1],
                s=7,
                alpha=0.55,
                color=colors[lang],
                label=f"{lang} ({names[lang]})" if lang in names else lang,
                edgecolors="none",
                rasterized=True,  # keeps the SVG small with thousands of points
            )
        evr = panel.get("evr")
        ax.set_xlabel("PC1" + (f" ({100 * evr[0]:.1f}% of variance)" if evr is not None else ""))
        ax.set_ylabel("PC2" + (f" ({100 * evr[1]:.1f}% of variance)" if evr is not None else ""))
        ax.set_title(panel["title"], fontsize=10)
        ax.grid(alpha=0.25)
    handles, labels = axes[0][0].get_legend_handles_labels()
    legend = fig.legend(
        handles, labels, loc="outside right center", title="language", markerscale=2.5, frameon=False
    )
    for handle in legend.legend_handles:
        handle.set_alpha(1.0)
    fig.suptitle(suptitle, fontsize=11)
    return _save(fig, stem)


def plot_output_language(
    report: Mapping[str, Any], stem: str | os.PathLike[str], max_tasks: int = 6
) -> list[str]:
    """Stacked horizontal bars per input language (shares of answer-language categories), one panel per task."""
    plt = _pyplot()
    sections = list(report["by_task"].items())
    if len(sections) > max_tasks:
        sections = [("all tasks", report["overall"])]
    heights = [max(1.6, 0.38 * len(groups) + 1.0) for _, groups in sections]
    fig, axes = plt.subplots(
        len(sections),
        1,
        figsize=(8.5, sum(heights)),
        layout="constrained",
        squeeze=False,
        gridspec_kw={"height_ratios": heights},
    )
    for ax, (task, groups) in zip(axes[:, 0], sections, strict=True):
        codes = list(groups)
        left = np.zeros(len(codes))
        for cat, (label, color) in CATEGORY_STYLE.items():
            values = np.array([groups[c]["shares"][cat] for c in codes])
            ax.barh(range(len(codes)), values, left=left, color=color, label=label, height=0.7)
            for y, (x0, v) in enumerate(zip(left, values, strict=True)):
                if v >= 0.08:  # label only segments wide enough to hold the text
                    ax.text(x0 + v / 2, y, f"{100 * v:.0f}%", ha="center", va="center", fontsize=7)
            left += values
        ax.set_yticks(range(len(codes)), [f"{c} (n={groups[c]['n']})" for c in codes])
        ax.invert_yaxis()
        ax.set_xlim(0, 1)
        ax.set_xlabel("share of answers")
        ax.set_title(task, fontsize=10)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(
        handles, labels, loc="outside lower center", ncols=len(CATEGORY_STYLE), frameon=False, fontsize=8
    )
    fig.suptitle("Language of generated answers by input language", fontsize=11)
    return _save(fig, stem)
