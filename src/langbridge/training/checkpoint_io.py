"""Reading and writing the non-weight parts of a training checkpoint without executing code.

A checkpoint folder may come from someone else, so nothing in it is unpickled freely:

* RNG states are stored in ``rng_state_<rank>.safetensors`` (tensors) with the Python/NumPy scalars as JSON
  metadata; no pickle at all.
* Optimizer and scheduler states (``*.pt``) and RNG files of older checkpoints are read with
  ``torch.load(weights_only=True)``, torch's allow-list unpickler (tensors, containers, numbers, strings);
  older RNG files additionally need NumPy's array reconstruction, which is allowed by name and nothing else.

A file that would need anything beyond the allow-list, or that is truncated, raises :class:`CheckpointError`
naming the file and what to do.

Writing goes through :func:`staged_checkpoint`: files land in a temporary sibling folder that is removed if
anything fails (a full disk, Ctrl-C), so the previous checkpoint named by ``latest`` stays the one to resume.
"""

from __future__ import annotations

import json
import pickle
import random
import shutil
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from langbridge.utils import DiskFullError, is_disk_full, reporting_disk_full

__all__ = [
    "CheckpointError",
    "broken_checkpoint_message",
    "load_rng_state",
    "load_torch_state",
    "rng_state_file",
    "save_rng_state",
    "save_trainer_files",
    "scan_pickled_files",
    "staged_checkpoint",
]

LATEST = "latest"
TRAINABLE = "trainable.safetensors"
OPTIMIZER = "optimizer.pt"
SCHEDULER = "scheduler.pt"

# Globals outside torch's weights_only allow-list that accelerate's own checkpoint files need (NumPy RNG state).
ACCELERATE_SAFE_GLOBALS = frozenset(
    {
        "numpy.ndarray",
        "numpy.dtype",
        "numpy._core.multiarray._reconstruct",
        "numpy.core.multiarray._reconstruct",
    }
    | {f"numpy.dtypes.{name}" for name in ("UInt32DType", "Float64DType", "Int64DType")}
)


class CheckpointError(ValueError):
    """A checkpoint file is unsafe, truncated or corrupt. The message names the file and the fix."""


def rng_state_file(directory: Path, rank: int) -> Path:
    return directory / f"rng_state_{rank}.safetensors"


def save_rng_state(directory: Path, rank: int) -> Path:
    """Write this process's Python, NumPy, torch and CUDA RNG states to ``rng_state_<rank>.safetensors``."""
    from safetensors.torch import save_file

    version, py_state, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    tensors = {
        "python": torch.tensor(py_state, dtype=torch.int64),
        "numpy": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
        "torch": torch.get_rng_state(),
    }
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []
    for i, state in enumerate(cuda):
        tensors[f"cuda_{i}"] = state.cpu()
    meta = {
        "python_version": version,
        "python_gauss": gauss,
        "numpy_kind": kind,
        "numpy_pos": int(pos),
        "numpy_has_gauss": int(has_gauss),
        "numpy_cached_gaussian": float(cached),
        "cuda_devices": len(cuda),
    }
    path = rng_state_file(directory, rank)
    with reporting_disk_full(path):
        save_file(tensors, path, metadata={"format": "pt", "langbridge_rng": json.dumps(meta)})
    return path


def save_trainer_files(
    directory: Path, weights: dict[str, torch.Tensor], optimizer: Any, scheduler: Any
) -> None:
    """The trained weights (safetensors) and the optimizer and scheduler states of a non-sharded run."""
    from safetensors.torch import save_file

    with reporting_disk_full(directory / TRAINABLE):
        save_file(weights, directory / TRAINABLE, metadata={"format": "pt"})
    with reporting_disk_full(directory / OPTIMIZER):
        torch.save(optimizer.state_dict(), directory / OPTIMIZER)
    with reporting_disk_full(directory / SCHEDULER):
        torch.save(scheduler.state_dict(), directory / SCHEDULER)


@contextmanager
def staged_checkpoint(tmp: Path, output_dir: Path, owner: bool) -> Iterator[None]:
    """Run the writes of one checkpoint into `tmp`; on any failure the owner (main process) removes `tmp`.

    A full disk becomes one :class:`DiskFullError` naming the file and the checkpoint ``latest`` still names:
    that pointer is only replaced after the new folder is complete, so the previous checkpoint is intact."""
    try:
        yield
    except BaseException as err:
        if owner:
            shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(err, Exception) and is_disk_full(err):
            pointer = output_dir / LATEST
            previous = pointer.read_text(encoding="utf-8").strip() if pointer.is_file() else None
            hint = f"the partial checkpoint {tmp.name} was removed; " + (
                f"{output_dir / previous} (named in {pointer}) is intact, resume from it with --resume"
                if previous
                else "no earlier checkpoint exists"
            )
            raise DiskFullError(err.path if isinstance(err, DiskFullError) else tmp, hint) from err
        raise


def load_rng_state(directory: Path, rank: int, previous: Path | None = None) -> None:
    """Restore the RNG states saved by :func:`save_rng_state` (or an older ``rng_state_<rank>.pt``)."""
    path = rng_state_file(directory, rank)
    if path.is_file():
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                meta = json.loads((f.metadata() or {})["langbridge_rng"])
                tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open has no __iter__)
            random.setstate((meta["python_version"], tuple(tensors["python"].tolist()), meta["python_gauss"]))
            np.random.set_state(
                (
                    meta["numpy_kind"],
                    tensors["numpy"].numpy().astype(np.uint32),
                    meta["numpy_pos"],
                    meta["numpy_has_gauss"],
                    meta["numpy_cached_gaussian"],
                )
            )
            torch.set_rng_state(tensors["torch"])
            cuda = [tensors[f"cuda_{i}"] for i in range(int(meta["cuda_devices"]))]
        except (SafetensorError, OSError, KeyError, TypeError, ValueError) as err:
            raise CheckpointError(broken_checkpoint_message(path, previous, err)) from err
        if cuda and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(cuda)
        return
    legacy = directory / f"rng_state_{rank}.pt"
    if not legacy.is_file():
        raise CheckpointError(broken_checkpoint_message(path, previous, "the file is missing"))
    # Older checkpoints pickled NumPy's state tuple; allow exactly the NumPy names that rebuilds its array.
    multiarray = getattr(np, "_core", None) or np.core
    allowed = [multiarray.multiarray._reconstruct, np.ndarray, np.dtype, type(np.dtype(np.uint32))]
    with torch.serialization.safe_globals(allowed):
        rng = load_torch_state(legacy, previous)
    try:
        random.setstate(rng["python"])
        np.random.set_state(rng["numpy"])
        torch.set_rng_state(rng["torch"])
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(broken_checkpoint_message(legacy, previous, err)) from err
    if rng.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])


def load_torch_state(path: Path, previous: Path | None = None) -> Any:
    """``torch.load(weights_only=True)`` with one-line errors for unsafe, missing or truncated files."""
    if not path.is_file():
        raise CheckpointError(broken_checkpoint_message(path, previous, "the file is missing"))
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        # weights_only's message says which global it refused; keep the first line only.
        first = str(err).strip().splitlines()[0] if str(err).strip() else "unsupported content"
        if "Weights only load failed" in first or "Unsupported global" in str(err):
            raise CheckpointError(
                f"{path} asks to run code or build objects outside the allow-list while loading, and was "
                f"refused ({_unsupported(err) or first}); it was not written by langbridge or was tampered "
                "with: do not resume from it, or restart training without --resume"
            ) from err
        raise CheckpointError(broken_checkpoint_message(path, previous, err)) from err
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile) as err:
        raise CheckpointError(broken_checkpoint_message(path, previous, err)) from err


def _unsupported(err: BaseException) -> str:
    for line in str(err).splitlines():
        if "Unsupported global" in line:
            return line.strip()
    return ""


def broken_checkpoint_message(path: Path, previous: Path | None, err: object) -> str:
    reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    hint = (
        f"resume from the previous complete checkpoint by writing '{previous.name}' into "
        f"{previous.parent / 'latest'}"
        if previous is not None
        else "no earlier complete checkpoint exists; restart without --resume in a new output_dir"
    )
    return f"{path} is truncated or corrupt ({reason}); {hint}"


def scan_pickled_files(directory: Path) -> None:
    """Refuse a checkpoint whose pickled files (read by accelerate's ``load_state``) need unsafe globals.

    accelerate unpickles its files with ``weights_only=False``; listing each file's globals first reads the
    pickle opcodes without running them, so a planted callable is found before anything is loaded.
    """
    for path in sorted(directory.rglob("*")):
        if path.suffix not in (".pkl", ".pt", ".bin") or not path.is_file():
            continue
        try:
            names = torch.serialization.get_unsafe_globals_in_checkpoint(path)
        except Exception as err:  # not a torch zip archive: a raw pickle cannot be checked
            raise CheckpointError(
                f"{path} cannot be checked for unsafe content ({err}); delete it or resume from a checkpoint "
                "written by langbridge"
            ) from err
        unsafe = sorted(set(names) - ACCELERATE_SAFE_GLOBALS)
        if unsafe:
            raise CheckpointError(
                f"{path} would run code while loading ({', '.join(unsafe[:3])}) and was refused; do not "
                "resume from this checkpoint"
            )
