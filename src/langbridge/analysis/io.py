"""Atomic writers for analysis outputs (temp file in the same directory, then ``os.replace``)."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any


def _atomic(path: Path, mode: str, write: Callable[[IO[Any]], None]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode, **({"encoding": "utf-8"} if "b" not in mode else {})) as handle:
            write(handle)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def write_text_atomic(path: str | os.PathLike[str], text: str) -> Path:
    return _atomic(Path(path), "w", lambda f: f.write(text))


def write_json_atomic(path: str | os.PathLike[str], obj: Any) -> Path:
    return write_text_atomic(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def write_jsonl_atomic(path: str | os.PathLike[str], rows: list[dict[str, Any]]) -> Path:
    return write_text_atomic(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def save_figure_atomic(fig: Any, path: str | os.PathLike[str]) -> Path:
    """Save a matplotlib figure; the format comes from the suffix (``.png``/``.svg``)."""
    path = Path(path)
    fmt = path.suffix.lstrip(".").lower()
    return _atomic(path, "wb", lambda f: fig.savefig(f, format=fmt, dpi=150, bbox_inches="tight"))


def save_npz_atomic(path: str | os.PathLike[str], **arrays: Any) -> Path:
    import numpy as np

    return _atomic(Path(path), "wb", lambda f: np.savez_compressed(f, **arrays))
