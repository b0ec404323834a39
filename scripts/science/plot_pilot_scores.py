"""Figure for docs/science.md: dev X -> English and continuation losses per pilot and language, the LM alone as
a reference (scripts/science/pilot_dev_scores.json).

    python scripts/science/plot_pilot_scores.py scripts/science/pilot_dev_scores.json docs/figures/science_pilot_scores.png
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

source, target = Path(sys.argv[1]), Path(sys.argv[2])
scores = json.loads(source.read_text(encoding="utf-8"))
languages = scores["languages"]
tasks = {"flores-x2en": "X -> English (nats/token)", "flores-continuation": "next sentence (nats/token)"}
# One colour per pilot in both panels; the continuation panel has fewer pilots.
colours = {name: f"C{i}" for i, name in enumerate(scores["pilots"])}
fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=False)
for ax, (task, title) in zip(axes, tasks.items(), strict=True):
    pilots = [(name, p) for name, p in scores["pilots"].items() if task in p]
    width = 0.8 / len(pilots)
    for k, (name, pilot) in enumerate(pilots):
        xs = [i + (k - (len(pilots) - 1) / 2) * width for i in range(len(languages))]
        style = {"color": "black", "alpha": 0.35} if name == "LM alone" else {"color": colours[name]}
        ax.bar(xs, pilot[task], width, label=f"{name}: {pilot['label']}", **style)
    ax.set_xticks(range(len(languages)), languages)
    ax.set_title(f"FLORES dev, {title}; lower is better")
    ax.grid(axis="y", alpha=0.3)
axes[1].set_ylim(3.0, None)
axes[0].legend(fontsize=7, loc="lower right")
fig.tight_layout()
target.parent.mkdir(parents=True, exist_ok=True)
fig.savefig(target, dpi=110)
print("wrote", target)
