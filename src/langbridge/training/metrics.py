"""Training metrics: JSON lines in `output_dir/metrics.jsonl`, forwarded to accelerate trackers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from langbridge.utils import atomic_write_text

METRICS = "metrics.jsonl"


def read_metrics(output_dir: Path) -> list[dict[str, Any]]:
    path = output_dir / METRICS
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                break  # a line cut by a kill; everything after it is from the killed run anyway
    return rows


class MetricsWriter:
    """Appends JSON lines to output_dir/metrics.jsonl (main process) and forwards to accelerate trackers."""

    def __init__(self, accelerator: Any, path: Path, trackers: bool):
        self.accelerator = accelerator
        self.path = path
        self.trackers = trackers

    def truncate_after(self, step: int) -> None:
        """On resume, drop rows the killed run logged after its last checkpoint (they will be redone)."""
        if self.accelerator.is_main_process and self.path.exists():
            rows = [r for r in read_metrics(self.path.parent) if r.get("step", 0) <= step]
            atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in rows))

    def write(self, row: dict[str, Any]) -> None:
        if self.accelerator.is_main_process:
            with open(self.path, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(row) + "\n")
                handle.flush()
        if self.trackers:
            values = {k: v for k, v in row.items() if isinstance(v, (int, float)) and k != "step"}
            self.accelerator.log(
                {f"{row.get('split', 'train')}/{k}": v for k, v in values.items()}, step=row["step"]
            )


class BridgeOutputNorms:
    """Where the bridge's outputs sit against the LM's embedding scale (docs/science.md's diagnosis): a forward
    hook on the bridge averages the L2 norm of the soft tokens it produced (real encoder tokens, not padding or
    enc_eos) in training mode over a logging window; `row()` returns it with enc_eos's norm and starts a new window."""

    def __init__(self, bridge: Any):
        self.bridge = bridge
        self.total, self.count = 0.0, 0
        self.handle = bridge.register_forward_hook(self._record)

    def _record(self, module: Any, inputs: Any, output: tuple[Any, Any]) -> None:
        if not module.training:
            return  # held-out passes are not training steps
        embeds, mask = output
        # Masked mean kept on the device: no host sync in the training step (read once per window in `row`).
        real = mask[:, :-1].to(embeds.dtype)
        norms = embeds[:, :-1].detach().float().norm(dim=-1)
        self.total = self.total + (norms * real).sum() / real.sum().clamp_min(1)
        self.count += 1

    def row(self) -> dict[str, float | None]:
        out = {
            "soft_token_norm": float(self.total) / self.count if self.count else None,
            "enc_eos_norm": float(self.bridge.enc_eos.detach().float().norm()),
        }
        self.total, self.count = 0.0, 0
        return out
