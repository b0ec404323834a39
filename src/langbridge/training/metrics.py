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
