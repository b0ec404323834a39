"""Atomic writers for analysis outputs (`langbridge.utils.atomic_write`: a synced temp file, then a rename)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..utils import atomic_write


def write_text_atomic(path: str | os.PathLike[str], text: str) -> Path:
    return atomic_write(path, lambda f: f.write(text))


def write_json_atomic(path: str | os.PathLike[str], obj: Any) -> Path:
    return write_text_atomic(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def write_jsonl_atomic(path: str | os.PathLike[str], rows: list[dict[str, Any]]) -> Path:
    return write_text_atomic(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def save_figure_atomic(fig: Any, path: str | os.PathLike[str]) -> Path:
    """Save a matplotlib figure; the format comes from the suffix (``.png``/``.svg``)."""
    path = Path(path)
    fmt = path.suffix.lstrip(".").lower()
    return atomic_write(path, lambda f: fig.savefig(f, format=fmt, dpi=150, bbox_inches="tight"), binary=True)


def save_npz_atomic(path: str | os.PathLike[str], **arrays: Any) -> Path:
    import numpy as np

    return atomic_write(path, lambda f: np.savez_compressed(f, **arrays), binary=True)
