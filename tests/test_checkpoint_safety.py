"""Loading a training checkpoint never runs code from it, and broken checkpoints give one-line errors.

Issue 17, items 1 and 7: a pickled ``os.system`` planted in a checkpoint ran on ``--resume``; ``--resume`` on a
folder without a checkpoint silently started from step 0.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from test_training_run import base_config, write_yaml

from langbridge.training import train
from langbridge.training.checkpoint_io import (
    CheckpointError,
    load_rng_state,
    load_torch_state,
    save_rng_state,
)
from langbridge.training.config import config_from_dict


class Payload:
    """Unpickling this runs a shell command that creates `marker`."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def plant(path: Path, marker: Path) -> None:
    torch.save({"python": Payload(marker), "torch": torch.get_rng_state()}, path)


def draws() -> tuple:
    return random.random(), float(np.random.rand()), float(torch.rand(()))


def test_rng_state_round_trips_without_pickle(tmp_path: Path) -> None:
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    np.random.randn()  # a cached Gaussian is part of NumPy's state
    path = save_rng_state(tmp_path, 0)
    assert path.name == "rng_state_0.safetensors"
    expected = draws()
    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    load_rng_state(tmp_path, 0)
    assert draws() == expected


def test_legacy_pickled_rng_state_still_loads(tmp_path: Path) -> None:
    # What checkpoints written before this change hold: a pickled dict with NumPy's state tuple.
    random.seed(4), np.random.seed(5), torch.manual_seed(6)
    legacy = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": None,
    }
    torch.save(legacy, tmp_path / "rng_state_0.pt")
    expected = draws()
    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    load_rng_state(tmp_path, 0)
    assert draws() == expected


@pytest.mark.parametrize("name", ["rng_state_0.pt", "optimizer.pt"])
def test_planted_pickle_payload_is_refused_and_never_runs(tmp_path: Path, name: str) -> None:
    marker = tmp_path / "PWNED"
    plant(tmp_path / name, marker)
    with pytest.raises(CheckpointError, match="refused") as info:
        if name.startswith("rng"):
            load_rng_state(tmp_path, 0)
        else:
            load_torch_state(tmp_path / name)
    assert str(tmp_path / name) in str(info.value) and "\n" not in str(info.value)
    assert not marker.exists()


def test_truncated_state_names_the_file_and_the_previous_checkpoint(tmp_path: Path) -> None:
    torch.save({"state": {}, "param_groups": []}, tmp_path / "optimizer.pt")
    data = (tmp_path / "optimizer.pt").read_bytes()
    (tmp_path / "optimizer.pt").write_bytes(data[: len(data) // 2])
    previous = tmp_path / "checkpoint-2"
    with pytest.raises(CheckpointError, match="truncated or corrupt") as info:
        load_torch_state(tmp_path / "optimizer.pt", previous)
    assert "optimizer.pt" in str(info.value) and "checkpoint-2" in str(info.value)


@pytest.fixture(scope="module")
def checkpointed_run(tiny_dirs: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A finished 6-step run with complete checkpoints at steps 2 and 4 (`latest` -> checkpoint-4)."""
    tmp = tmp_path_factory.mktemp("ckpt")
    cfg = base_config(tiny_dirs, tmp, max_steps=6, save_interval=2, eval_interval=0, save_total_limit=None)
    train(config_from_dict(cfg))
    assert (tmp / "run" / "latest").read_text().strip() == "checkpoint-4"
    return cfg


def copy_run(cfg: dict, tmp_path: Path) -> dict:
    import shutil

    out = tmp_path / "copy"
    shutil.copytree(cfg["output_dir"], out)
    shutil.rmtree(out / "final")
    return {**cfg, "output_dir": str(out)}


@pytest.mark.parametrize("victim", ["rng_state_0.pt", "optimizer.pt", "scheduler.pt"])
def test_resume_refuses_a_planted_payload(checkpointed_run: dict, tmp_path: Path, victim: str) -> None:
    cfg = copy_run(checkpointed_run, tmp_path)
    ckpt = Path(cfg["output_dir"]) / "checkpoint-4"
    if victim.startswith("rng"):
        (ckpt / "rng_state_0.safetensors").unlink()  # as an older checkpoint would look
    marker = tmp_path / "PWNED"
    plant(ckpt / victim, marker)
    with pytest.raises(CheckpointError, match="refused"):
        train(config_from_dict(cfg), resume=True)
    assert not marker.exists()
    assert not (Path(cfg["output_dir"]) / "final").exists()


def test_resume_from_a_truncated_checkpoint_names_the_previous_one(
    checkpointed_run: dict, tmp_path: Path
) -> None:
    cfg = copy_run(checkpointed_run, tmp_path)
    weights = Path(cfg["output_dir"]) / "checkpoint-4" / "trainable.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(CheckpointError) as info:
        train(config_from_dict(cfg), resume=True)
    message = str(info.value)
    assert "checkpoint-4/trainable.safetensors" in message and "'checkpoint-2'" in message
    assert "\n" not in message


def test_resume_without_a_checkpoint_stops_unless_asked_to_start(tiny_dirs, tmp_path: Path, capsys) -> None:
    from langbridge.cli import main

    cfg = base_config(tiny_dirs, tmp_path, max_steps=1, eval_interval=0, output_dir=str(tmp_path / "typo"))
    config = write_yaml(cfg, tmp_path / "c.yaml")
    assert main(["train", str(config), "--resume"]) == 2
    err = capsys.readouterr().err
    assert "no checkpoint in" in err and "--resume-or-start" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "typo" / "final").exists()
    assert main(["train", str(config), "--resume-or-start"]) == 0
    assert (tmp_path / "typo" / "final").is_dir()


def test_output_dir_that_is_a_file_is_a_one_line_error(tiny_dirs, tmp_path: Path, capsys) -> None:
    from langbridge.cli import main

    (tmp_path / "taken").write_text("notes")
    cfg = base_config(tiny_dirs, tmp_path, max_steps=1, eval_interval=0, output_dir=str(tmp_path / "taken"))
    assert main(["train", str(write_yaml(cfg, tmp_path / "c.yaml"))]) == 2
    err = capsys.readouterr().err
    assert "is an existing file" in err and len(err.strip().splitlines()) == 1
    assert (tmp_path / "taken").read_text() == "notes"


def test_accelerate_files_are_scanned_before_unpickling(tmp_path: Path) -> None:
    from langbridge.training.checkpoint_io import scan_pickled_files

    torch.save(
        {"numpy": np.random.get_state(), "python": random.getstate()}, tmp_path / "random_states_0.pkl"
    )
    scan_pickled_files(tmp_path)  # accelerate's own RNG file: allowed
    marker = tmp_path / "PWNED"
    plant(tmp_path / "custom_checkpoint_0.pkl", marker)
    with pytest.raises(
        CheckpointError, match="custom_checkpoint_0.pkl.*posix.system|custom_checkpoint_0.pkl"
    ):
        scan_pickled_files(tmp_path)
    assert not marker.exists()
