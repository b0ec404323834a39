"""Training data sources: finding a configured file (the data folder, the shared data), reading local jsonl /
json / txt / tsv files (plain or gzipped) and hub datasets into rows."""

from __future__ import annotations

import csv
import gzip
import io
import json
import logging
from collections.abc import Iterable, Iterator
from pathlib import Path

from langbridge.training.config import DataSource
from langbridge.utils import find_data_dir, hub_offline, iter_jsonl

logger = logging.getLogger("langbridge.training")

SUFFIX_FORMATS = {".jsonl": "jsonl", ".json": "json", ".txt": "txt", ".tsv": "tsv"}


class DataError(ValueError):
    """Data could not be found or read; the message says which file and how to fix it."""


# ----------------------------------------------------------------------------- locating data


def repo_shared_data() -> Path:
    """../shared/data next to the repository checkout that holds this package."""
    return Path(__file__).resolve().parents[3].parent / "shared" / "data"


def resolve_data_dir(data_dir: str | None = None) -> Path | None:
    """data.data_dir, else $LANGBRIDGE_DATA, else ../shared/data (from the CWD, then from the repo)."""

    def not_a_dir(env: str | None) -> DataError:
        if env is None:
            return DataError(f"data.data_dir={data_dir!r} is not a directory; fix the path or unset it")
        return DataError(f"LANGBRIDGE_DATA={env!r} is not a directory; fix it or unset it")

    return find_data_dir(data_dir, not_a_dir, (Path.cwd().parent / "shared" / "data", repo_shared_data()))


def _candidates(source: DataSource, data_dir: Path | None) -> list[Path]:
    path = Path(str(source.path)).expanduser()
    return [path] if path.is_absolute() else [Path.cwd() / path] + ([data_dir / path] if data_dir else [])


def missing_file(source: DataSource, data_dir: Path | None) -> tuple[str, Path]:
    """'data file ... not found (looked in: ...)' and where the file should go, for a missing `path:`."""
    looked = ", ".join(str(c) for c in _candidates(source, data_dir))
    where = data_dir / str(source.path) if data_dir else Path("<data_dir>") / str(source.path)
    return f"data file {source.path!r} not found (looked in: {looked})", where


def locate(source: DataSource, data_dir: Path | None) -> Path | None:
    """The local file for `source`, or None when it should come from the hub."""
    if source.path is None:
        return None
    for candidate in _candidates(source, data_dir):
        if candidate.is_file():
            return candidate
    if source.hub is not None:
        return None
    missing, where = missing_file(source, data_dir)
    raise DataError(
        f"{missing}. Put the file at {where}, point data.data_dir or $LANGBRIDGE_DATA at the folder that holds "
        "it, or add `hub: <dataset name>` to load it from the hub."
    )


# ----------------------------------------------------------------------------- readers


def _open_text(path: Path) -> io.TextIOBase:
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8")
    return open(path, encoding="utf-8")


def detect_format(path: Path, declared: str) -> str:
    if declared != "auto":
        return declared
    suffix = path.suffix if path.suffix != ".gz" else Path(path.stem).suffix
    if suffix not in SUFFIX_FORMATS:
        raise DataError(
            f"{path}: cannot tell the format from the suffix {suffix!r}; set `format:` to one of "
            f"{', '.join(SUFFIX_FORMATS.values())}"
        )
    return SUFFIX_FORMATS[suffix]


def _iter_json(path: Path) -> Iterator[dict]:
    with _open_text(path) as handle:
        text = handle.read()
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        if exc.msg == "Extra data":  # JSON lines saved under a .json name (common for HF exports)
            yield from iter_jsonl(path, DataError)
            return
        raise DataError(f"{path}: not valid JSON ({exc}); use a list of objects or JSON lines") from exc
    if isinstance(data, dict) and isinstance(data.get("data"), list):
        data = data["data"]
    if not isinstance(data, list):
        raise DataError(
            f"{path}: expected a JSON list of objects (or {{'data': [...]}}), got {type(data).__name__}"
        )
    for i, row in enumerate(data):
        if not isinstance(row, dict):
            raise DataError(f"{path}: item {i} is a {type(row).__name__}, expected an object")
        yield row


def _iter_txt(path: Path, unit: str, field: str) -> Iterator[dict]:
    with _open_text(path) as handle:
        if unit == "line":
            for line in handle:
                if line.strip():
                    yield {field: line.rstrip("\n")}
        elif unit == "paragraph":
            block: list[str] = []
            for line in handle:
                if line.strip():
                    block.append(line.rstrip("\n"))
                elif block:
                    yield {field: "\n".join(block)}
                    block = []
            if block:
                yield {field: "\n".join(block)}
        else:
            yield {field: handle.read()}


def _iter_tsv(path: Path, columns: list[str] | None) -> Iterator[dict]:
    with _open_text(path) as handle:
        # QUOTE_NONE: benchmark TSVs (e.g. MGSM) contain bare quotes inside fields.
        reader = csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = columns
        for lineno, row in enumerate(reader, 1):
            if not row:
                continue
            if header is None:
                header = row
                continue
            if len(row) != len(header):
                raise DataError(
                    f"{path}:{lineno}: {len(row)} columns but the header has {len(header)} ({header}); "
                    "set `columns:` for files without a header row"
                )
            yield dict(zip(header, row, strict=True))


def iter_local(path: Path, source: DataSource) -> Iterator[dict]:
    fmt = detect_format(path, source.format)
    if fmt == "jsonl":
        return iter_jsonl(path, DataError)
    if fmt == "json":
        return _iter_json(path)
    if fmt == "txt":
        return _iter_txt(path, source.txt_unit, source.text_field)
    return _iter_tsv(path, source.columns)


def load_hub(source: DataSource, streaming: bool, missing: tuple[str, Path] | None = None) -> Iterable[dict]:
    """Rows of `source.hub`. `missing` (from :func:`missing_file`) is the local file it stands in for: errors
    then name that file first, since putting it in place is usually the simpler fix."""
    first, local_fix = (
        (f"{missing[0]}; its fallback, ", f"put the file at {missing[1]}")
        if missing
        else ("", "use a local file via `path:`")
    )
    try:
        import datasets
    except ImportError as exc:
        raise DataError(
            f"{first}hub dataset {source.hub!r} needs the `datasets` package: pip install 'langbridge[hub]', "
            f"or {local_fix}"
        ) from exc
    try:
        rows = datasets.load_dataset(
            source.hub,
            source.hub_config,
            split=source.split,
            data_dir=source.hub_data_dir,
            streaming=streaming,
        )
    except Exception as exc:  # datasets raises many types (connection, missing config, ...)
        reason = next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
        if hub_offline(datasets=True):
            raise DataError(
                f"{first}hub dataset {source.hub!r} cannot be loaded: the hub is offline (HF_HUB_OFFLINE or "
                f"HF_DATASETS_OFFLINE is set) and it is not cached ({reason}); {local_fix}, or go online"
            ) from exc
        raise DataError(
            f"{first}hub dataset {source.hub!r} (split {source.split!r}) could not be loaded: {reason}; "
            f"{local_fix}, or check the dataset name, config and your connection"
        ) from exc
    if missing:  # only once it worked: a failure stays a single line
        logger.warning("%s; loaded the hub dataset %r instead", missing[0], source.hub)
    return rows


def iter_records(source: DataSource, data_dir: Path | None, streaming: bool = False) -> Iterator[dict]:
    """Raw rows of one source, local file first, hub second; stops after source.max_examples rows."""
    path = locate(source, data_dir)
    if path is not None:
        rows: Iterable[dict] = iter_local(path, source)
    else:
        missing = missing_file(source, data_dir) if source.path is not None else None
        rows = load_hub(source, streaming, missing)
    for i, row in enumerate(rows):
        if source.max_examples is not None and i >= source.max_examples:
            break
        yield row


def describe(source: DataSource, data_dir: Path | None) -> str:
    path = locate(source, data_dir)
    return str(path) if path is not None else f"hub:{source.hub}[{source.split}]"
