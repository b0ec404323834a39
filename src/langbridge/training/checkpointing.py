"""Training checkpoints: where they are (`output_dir/checkpoint-<step>`, the `latest` pointer), saving and
rotating them, resuming from one, and what changed in the config since.

Checkpoints are written into a temporary directory and renamed, then the `latest` pointer file is replaced
atomically, so a crash never leaves a half-written checkpoint as "latest". Single-process and DDP runs checkpoint
only the trained weights (bridge, trainable encoder weights), the optimizer, the scheduler, every rank's RNG state
and the data position (files in `checkpoint_io`); FSDP / DeepSpeed runs use `accelerator.save_state`, which knows
how to gather their sharded states.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from langbridge.training.checkpoint_io import (
    LATEST,
    OPTIMIZER,
    SCHEDULER,
    TRAINABLE,
    CheckpointError,
    broken_checkpoint_message,
    load_rng_state,
    load_torch_state,
    save_rng_state,
    save_trainer_files,
    scan_pickled_files,
    staged_checkpoint,
)
from langbridge.training.config import TrainConfig, flatten_config
from langbridge.utils import atomic_write_text, reporting_disk_full

FINAL = "final"
STATE = "trainer_state.json"
CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")


@dataclass
class Position:
    """Where training is: optimizer steps done and how many of this epoch's batches were consumed."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    tokens: int = 0
    elapsed: float = 0.0
    # The partly filled logging window, so a resumed run logs the same averages as an uninterrupted one.
    window_loss: float = 0.0
    window_steps: int = 0
    window_tokens: int = 0
    window_targets: int = 0


def list_checkpoints(output_dir: Path) -> list[tuple[int, Path]]:
    found = []
    if output_dir.is_dir():
        for path in output_dir.iterdir():
            m = CHECKPOINT_RE.match(path.name)
            if m and path.is_dir() and (path / STATE).is_file():
                found.append((int(m.group(1)), path))
    return sorted(found)


def latest_checkpoint(output_dir: Path) -> Path | None:
    """The checkpoint named by the `latest` pointer (only complete checkpoints are ever named there)."""
    pointer = output_dir / LATEST
    if not pointer.is_file():
        return None
    path = output_dir / pointer.read_text(encoding="utf-8").strip()
    if not (path / STATE).is_file():
        raise FileNotFoundError(
            f"{pointer} names {path.name}, which is missing or incomplete; delete {pointer} to restart"
        )
    return path


class Checkpointer:
    def __init__(self, accelerator: Any, output_dir: Path, sharded: bool, keep: int | None):
        self.accelerator = accelerator
        self.output_dir = output_dir
        self.sharded = sharded
        self.keep = keep

    def save(self, model: Any, optimizer: Any, scheduler: Any, pos: Position, cfg: TrainConfig) -> Path:
        acc = self.accelerator
        name = f"checkpoint-{pos.step}"
        final = self.output_dir / name
        tmp = self.output_dir / f".{name}.tmp"
        if acc.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        with staged_checkpoint(tmp, self.output_dir, acc.is_main_process):
            acc.wait_for_everyone()
            if self.sharded:
                with reporting_disk_full(tmp, name_from_error=True):
                    acc.save_state(str(tmp))
            elif acc.is_main_process:
                weights = acc.unwrap_model(model).adapter_state_dict()
                save_trainer_files(tmp, weights, optimizer, scheduler)
            # Every rank saves its own RNG streams (dropout differs per rank), without pickle.
            acc.wait_for_everyone()
            save_rng_state(tmp, acc.process_index)
            acc.wait_for_everyone()
            if acc.is_main_process:
                state = {**pos.__dict__, "world_size": acc.num_processes, "config": cfg.to_dict()}
                atomic_write_text(tmp / STATE, json.dumps(state, indent=2))
                _fsync_tree(tmp)  # make the files durable before the rename publishes them
                if final.exists():
                    shutil.rmtree(final)
                os.replace(tmp, final)
                atomic_write_text(self.output_dir / LATEST, name + "\n")
                self._prune(keep_name=name)
        acc.wait_for_everyone()
        return final

    def _prune(self, keep_name: str) -> None:
        if self.keep is None:
            return
        checkpoints = list_checkpoints(self.output_dir)
        for _, path in checkpoints[: max(0, len(checkpoints) - self.keep)]:
            if path.name != keep_name:
                shutil.rmtree(path, ignore_errors=True)

    def load(self, path: Path, model: Any, optimizer: Any, scheduler: Any) -> Position:
        acc = self.accelerator
        # Named in errors about a truncated checkpoint: the newest complete one before it.
        step = int(CHECKPOINT_RE.match(path.name).group(1)) if CHECKPOINT_RE.match(path.name) else 0
        previous = next((p for s, p in reversed(list_checkpoints(self.output_dir)) if s < step), None)
        try:
            state = json.loads((path / STATE).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise CheckpointError(f"{path / STATE} is unreadable ({err})") from err
        if state.get("world_size") != acc.num_processes:
            raise RuntimeError(
                f"{path} was written by {state.get('world_size')} process(es) but this run has {acc.num_processes}; "
                "resume with the same number of processes (the data order depends on it)"
            )
        if self.sharded:
            scan_pickled_files(path)  # accelerate unpickles without an allow-list
            acc.load_state(str(path))
        else:
            from safetensors.torch import load_file

            unwrapped = acc.unwrap_model(model)
            try:
                weights = load_file(path / TRAINABLE)
            except Exception as err:  # safetensors raises its own error types for truncated files
                raise CheckpointError(broken_checkpoint_message(path / TRAINABLE, previous, err)) from err
            expected = set(unwrapped.adapter_state_dict())
            if set(weights) != expected:
                raise RuntimeError(
                    f"{path / TRAINABLE} holds different weights than this model trains "
                    f"(missing {sorted(expected - set(weights))[:3]}, extra {sorted(set(weights) - expected)[:3]}); "
                    "was the config (bridge, freeze_encoder) changed since the checkpoint?"
                )
            unwrapped.load_state_dict(weights, strict=False)
            optimizer.load_state_dict(load_torch_state(path / OPTIMIZER, previous))
            scheduler.load_state_dict(load_torch_state(path / SCHEDULER, previous))
        load_rng_state(path, acc.process_index, previous)
        return Position(**{k: state[k] for k in Position.__dataclass_fields__})


# Settings that do not change what is computed, so they may differ between a run and its resumption.
RESUME_NEUTRAL = (
    "output_dir",
    "max_steps",
    "num_epochs",
    "log_interval",
    "eval_interval",
    "eval_batch_size",
    "save_interval",
    "save_total_limit",
    "report_to",
    "progress_bar",
    "num_threads",
)


def config_changes(checkpoint: Path, cfg: TrainConfig) -> list[str]:
    """Dotted keys whose value differs between the checkpoint's config and `cfg` (outside RESUME_NEUTRAL)."""
    saved = json.loads((checkpoint / STATE).read_text(encoding="utf-8")).get("config") or {}
    old, new = flatten_config(saved), flatten_config(cfg.to_dict())
    return sorted(
        f"{k} ({old.get(k)!r} -> {new.get(k)!r})"
        for k in set(old) | set(new)
        if old.get(k) != new.get(k) and k not in RESUME_NEUTRAL
    )


def _fsync_tree(root: Path) -> None:
    for f in root.rglob("*"):
        if f.is_file():
            with open(f, "rb") as handle:
                os.fsync(handle.fileno())
