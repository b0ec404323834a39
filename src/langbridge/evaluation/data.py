"""Where benchmark files come from: a local directory in the original layouts, else the Hugging Face hub.

Lookup order for the data root: the `data_dir` argument (`--data-dir`), the LANGBRIDGE_DATA environment
variable, then `../shared/data` relative to the working directory when it exists. A single task's folder
can be pointed elsewhere with `task_dirs` (`--task-dir msvamp=/path/to/mSVAMP`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..utils import DATA_ENV_VAR, find_data_dir

__all__ = ["DataSource", "DataNotFoundError", "resolve_data_dir"]

ENV_VAR = DATA_ENV_VAR


class DataNotFoundError(FileNotFoundError):
    """A benchmark's files are neither on disk nor reachable on the hub; the message says what to put where."""


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path | None:
    """The data root: explicit argument, else $LANGBRIDGE_DATA, else ./../shared/data if it exists."""

    def not_a_dir(env: str | None) -> DataNotFoundError:
        if env is None:
            return DataNotFoundError(
                f"--data-dir {Path(data_dir).expanduser()} is not a directory; pass the folder holding mgsm/, "
                "xcopa/, ..."
            )
        return DataNotFoundError(
            f"{ENV_VAR}={env} is not a directory; point it at the folder holding mgsm/, xcopa/, ..."
        )

    return find_data_dir(data_dir, not_a_dir, (Path.cwd().parent / "shared" / "data",))


def _hub_offline() -> bool:
    return any(
        os.environ.get(v, "").lower() in ("1", "true", "yes")
        for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
    )


@dataclass
class DataSource:
    """Finds a task's files. `folder` names are the subfolders of the data root (mgsm, xcopa, ...)."""

    root: Path | None = None
    task_dirs: Mapping[str, Path] = field(default_factory=dict)
    allow_hub: bool = True

    @classmethod
    def create(
        cls,
        data_dir: str | os.PathLike | None = None,
        task_dirs: Mapping[str, str | os.PathLike] | None = None,
        allow_hub: bool = True,
    ) -> DataSource:
        dirs = {}
        for name, path in (task_dirs or {}).items():
            p = Path(path).expanduser()
            if not p.is_dir():
                raise DataNotFoundError(f"Task directory for {name!r} does not exist: {p}")
            dirs[name] = p
        return cls(root=resolve_data_dir(data_dir), task_dirs=dirs, allow_hub=allow_hub)

    def folder(self, name: str) -> Path | None:
        """The local folder for `name` (a task_dirs override, else <root>/<name>), or None."""
        if name in self.task_dirs:
            return self.task_dirs[name]
        if self.root is not None and (self.root / name).is_dir():
            return self.root / name
        return None

    def find(self, folder: str, *parts: str) -> Path | None:
        """The local file <folder>/<parts...> if it exists."""
        base = self.folder(folder)
        if base is None:
            return None
        path = base.joinpath(*parts)
        return path if path.exists() else None

    def expected(self, folder: str, *parts: str) -> str:
        """Where a file is expected, for error messages."""
        base = self.folder(folder) or (
            self.root / folder if self.root else Path(f"$LANGBRIDGE_DATA/{folder}")
        )
        return str(base.joinpath(*parts))

    def hub(self, what: str, expected: str, dataset: str, **kwargs: Any) -> list[dict]:
        """Rows of the hub dataset `dataset` (datasets.load_dataset(dataset, **kwargs)); raises DataNotFoundError
        naming the local file `expected` when the hub cannot be used."""
        hint = (
            f"{what}: no local file at {expected}. Put the original file there (or pass --data-dir / set "
            f"{ENV_VAR} to the folder holding it, or --task-dir for this task's folder)"
        )
        if not self.allow_hub or _hub_offline():
            raise DataNotFoundError(hint + "; the hub is disabled (offline), so the local copy is required.")
        try:
            import datasets
        except ImportError as err:
            raise DataNotFoundError(hint + "; or `pip install datasets` to load it from the hub.") from err
        try:
            data = datasets.load_dataset(dataset, **kwargs)
        except Exception as err:  # network, missing config, auth: all end in the same advice
            raise DataNotFoundError(
                f"{hint}; loading the hub dataset {dataset!r} ({kwargs}) also failed: {type(err).__name__}: {err}"
            ) from err
        return [dict(row) for row in data]
