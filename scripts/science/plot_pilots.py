"""Figure for docs/science.md: held-out English reconstruction loss over training steps, one line per bridge
option set of the dev pilots (outputs/science/p1/<NAME>/metrics.jsonl).

    python scripts/science/plot_pilots.py outputs/science/p1 docs/figures/science_pilots.png
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

LABELS = {
    "A": "paper: last layer, random start",
    "C": "layer mix + norm, random start",
    "D": "layer mix + norm + soft-token norm, random start",
    "RL": "last layer, ridge start",
    "R": "layer mix + norm, ridge start",
    "L6": "layer 6 + norm, ridge start",
    "L9": "layer 9 + norm, ridge start",
}

root, target = Path(sys.argv[1]), Path(sys.argv[2])
fig, ax = plt.subplots(figsize=(7, 4.2))
for name, label in LABELS.items():
    path = root / name / "metrics.jsonl"
    if not path.exists():
        continue
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    points = sorted((r["step"], r["eval_loss"]) for r in rows if r.get("split") == "eval")
    ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=label)
ax.set_xlabel("training step (batch 8, English sentences)")
ax.set_ylabel("held-out reconstruction loss (nats/token)")
ax.set_title("English reconstruction through the bridge (64 held-out sentences)")
ax.grid(alpha=0.3)
ax.legend(fontsize=8)
fig.tight_layout()
target.parent.mkdir(parents=True, exist_ok=True)
fig.savefig(target, dpi=110)
print("wrote", target)
