"""Small shared helpers: atomic file writes, full-disk errors, model-name resolution, BOS detection, thread
settings and peak memory."""

from __future__ import annotations

import errno
import gzip
import json
import os
import re
import resource
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any


def _umask_mode(full: int) -> int:
    """`full` (0o666 files, 0o777 directories) minus the process umask, as open()/mkdir() would give."""
    umask = os.umask(0)
    os.umask(umask)
    return full & ~umask


# Raised by the OS, or inside the message of libraries (safetensors) that wrap the OS error in their own type.
_DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
_DISK_FULL_TEXT = ("No space left on device", "Disk quota exceeded", "StorageFull", "QuotaExceeded")


class DiskFullError(OSError):
    """A write failed because the disk (or the user's quota) is full; the message names the file."""

    def __init__(self, path: str | os.PathLike, hint: str = "") -> None:
        super().__init__(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        self.path = Path(path)
        self.hint = hint

    def __str__(self) -> str:
        hint = self.hint or "nothing partial was kept"
        return (
            f"disk full while writing {self.path} ({_free_space(self.path)}): {hint}; free some space or choose "
            "an output folder on another disk, then rerun"
        )


def _free_space(path: Path) -> str:
    for folder in (path, *path.parents):
        if folder.exists():
            try:
                return f"{shutil.disk_usage(folder).free / 2**20:.0f} MiB free on its device"
            except OSError:
                break
    return "no space left on its device"


def is_disk_full(err: BaseException) -> bool:
    """True for ENOSPC/EDQUOT, also when a library re-raised it as its own type (checks causes)."""
    seen: BaseException | None = err
    for _ in range(8):  # a short chain; a cycle cannot loop forever
        if seen is None:
            return False
        if isinstance(seen, OSError) and seen.errno in _DISK_FULL_ERRNOS:
            return True
        if any(text in str(seen) for text in _DISK_FULL_TEXT):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


@contextmanager
def reporting_disk_full(
    path: str | os.PathLike, hint: str = "", name_from_error: bool = False
) -> Iterator[None]:
    """Turn a full-disk failure inside the block into a one-line :class:`DiskFullError` naming `path`
    (or, with `name_from_error`, the file the OS error names when it names one)."""
    try:
        yield
    except DiskFullError:
        raise
    except Exception as err:
        if is_disk_full(err):
            # The OS names the file when open() failed; os.write() names none, so `path` is the fallback.
            name = (getattr(err, "filename", None) if name_from_error else None) or path
            raise DiskFullError(name, hint) from err
        raise


def atomic_write(path: str | os.PathLike, write: Callable[[IO[Any]], None], binary: bool = False) -> Path:
    """Write a file so that readers see either the old or the new content, never a partial one: `write(handle)`
    fills a temporary file in the same folder, which is synced and then renamed over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with reporting_disk_full(path, f"{path.name} was left as it was"):
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(
                fd, "wb" if binary else "w", **({} if binary else {"encoding": "utf-8"})
            ) as handle:
                write(handle)
                handle.flush()
                os.fsync(handle.fileno())
            # mkstemp creates 0600 files; give the result the permissions a plain write would have.
            os.chmod(tmp, path.stat().st_mode & 0o777 if path.exists() else _umask_mode(0o666))
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """`atomic_write` of a text."""
    atomic_write(path, lambda handle: handle.write(text))


def check_replaceable(path: str | os.PathLike, overwrite: bool, flag: str = "--overwrite") -> None:
    """Refuse to replace a file or a non-empty folder at `path` unless `overwrite` (one-line error)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise FileExistsError(f"{path} is an existing file, not a folder; choose another output folder")
    if overwrite or not path.is_dir():
        return
    entries = sorted(p.name for p in path.iterdir())
    if entries:
        shown = ", ".join(entries[:3]) + (", ..." if len(entries) > 3 else "")
        raise FileExistsError(
            f"{path} is not empty ({len(entries)} entries: {shown}); choose a new or empty folder, or pass "
            f"{flag} to replace it"
        )


@contextmanager
def atomic_directory(path: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling directory; on success it replaces `path` in one rename.

    An existing non-empty `path` is refused (before and after the work) unless `overwrite`; then the old
    folder is moved aside and removed only once the new one is in place."""
    path = Path(path)
    check_replaceable(path, overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    kept = "the partial folder was removed" + (f" and {path} left as it was" if path.exists() else "")
    try:
        with reporting_disk_full(tmp, kept, name_from_error=True):
            yield tmp
        os.chmod(tmp, _umask_mode(0o777))  # mkdtemp creates 0700 directories
        check_replaceable(path, overwrite)  # something may have appeared there meanwhile
        if path.exists():
            # A fresh, unique aside folder: a fixed name could be someone's data.
            aside = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".old"))
            os.replace(path, aside / "old")
            os.replace(tmp, path)
            shutil.rmtree(aside, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def not_utf8_message(path: str | os.PathLike, err: UnicodeDecodeError, line: int | None = None) -> str:
    """One line naming the file, the line and the byte that is not UTF-8, and the fix."""
    if line is None and isinstance(err.object, bytes):
        line = err.object[: err.start].count(b"\n") + 1
    where = f"{path}:{line}" if line is not None else str(path)
    byte = err.object[err.start : err.start + 1].hex() if isinstance(err.object, bytes) else "?"
    return f"{where}: not UTF-8 text (byte 0x{byte}); is it a binary file? Save it as UTF-8 text"


def read_utf8(path: str | os.PathLike, error: type[Exception] = ValueError) -> str:
    """The whole file as text; a file that is not UTF-8 raises `error` naming the file and line."""
    data = Path(path).read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise error(not_utf8_message(path, err)) from None


def utf8_lines(
    handle: Iterable[bytes], path: str | os.PathLike, error: type[Exception] = ValueError
) -> Iterator[tuple[int, str]]:
    """(line number, text) for each line of a binary handle; a line that is not UTF-8 raises `error`."""
    for lineno, raw in enumerate(handle, 1):
        try:
            yield lineno, raw.decode("utf-8")
        except UnicodeDecodeError as err:
            raise error(not_utf8_message(path, err, lineno)) from None


def numbered_jsonl(
    path: str | os.PathLike, error: type[Exception] = ValueError
) -> Iterator[tuple[int, dict]]:
    """(line number, JSON object) for each line of a .jsonl (or .jsonl.gz) file, skipping blank lines; a line
    that is not UTF-8, not JSON or not an object raises `error` naming the file and line."""
    path = Path(path)
    with gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb") as handle:
        for lineno, line in utf8_lines(handle, path, error):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise error(
                    f"{path}:{lineno}: not valid JSON ({exc.msg}); each line must be one JSON object"
                ) from exc
            if not isinstance(row, dict):
                raise error(f"{path}:{lineno}: expected a JSON object per line, got {type(row).__name__}")
            yield lineno, row


def iter_jsonl(path: str | os.PathLike, error: type[Exception] = ValueError) -> Iterator[dict]:
    """The JSON objects of a .jsonl (or .jsonl.gz) file (`numbered_jsonl` without the line numbers)."""
    for _, row in numbered_jsonl(path, error):
        yield row


def resolve_model_name(name_or_path: str | os.PathLike) -> str:
    """Map a short alias of a bundled default model to its local directory; pass anything else through."""
    name = str(name_or_path)
    try:
        from langbridge.pretrained import resolve_pretrained
    except ImportError:  # pretrained module optional in minimal installs
        return name
    return resolve_pretrained(name)


# Hub ids are `name` or `org/name` of these characters; anything else can only be a local path.
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")


def hub_offline(datasets: bool = False) -> bool:
    """HF_HUB_OFFLINE as the hub client reads it (also when it was set after huggingface_hub was imported);
    with `datasets`, HF_DATASETS_OFFLINE counts too."""
    names = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE") if datasets else ("HF_HUB_OFFLINE",)
    if any(os.environ.get(n, "").strip().upper() in {"1", "ON", "YES", "TRUE"} for n in names):
        return True
    try:
        from huggingface_hub import constants
    except ImportError:
        return False
    return bool(constants.HF_HUB_OFFLINE)


def check_model_source(spec: str | os.PathLike) -> None:
    """Before loading a model: a reference that is not a hub id must be an existing folder, and a hub id
    needs the hub or a cached copy. Raises FileNotFoundError with one line saying which."""
    name = os.fspath(spec)
    path = Path(name).expanduser()
    if path.is_dir():
        return
    if path.exists():
        raise FileNotFoundError(f"{name} is a file; pass the folder that holds the model (its config.json)")
    try:
        from langbridge.pretrained import canonical_alias
    except ImportError:  # pretrained module optional in minimal installs
        canonical_alias = None  # type: ignore[assignment]
    if canonical_alias is not None and canonical_alias(name) is not None:
        return  # a bundled alias: converted into a local folder on first use
    if not _HUB_ID.fullmatch(name):
        raise FileNotFoundError(
            f"{name}: no such directory; check the path (a hub model is named like org/name)"
        )
    if hub_offline():
        from huggingface_hub import try_to_load_from_cache

        if not isinstance(try_to_load_from_cache(name, "config.json"), str):
            raise FileNotFoundError(
                f"{name} is not a local folder, and the hub is offline (HF_HUB_OFFLINE=1) with no cached copy "
                f"of it; pass a local folder, or unset HF_HUB_OFFLINE to download {name}"
            )


def model_load_error(spec: str | os.PathLike, err: BaseException) -> str:
    """One line for a model that failed to load from the hub (transformers' messages run over many lines)."""
    first = next((line.strip() for line in str(err).splitlines() if line.strip()), type(err).__name__)
    return (
        f"could not load {os.fspath(spec)} (not a local folder, so it was looked up on the hub): {first}; pass a "
        "local folder, or check the hub id and your connection"
    )


DATA_ENV_VAR = "LANGBRIDGE_DATA"


def find_data_dir(
    explicit: str | os.PathLike | None,
    not_a_dir: Callable[[str | None], Exception],
    fallbacks: Iterable[Path],
) -> Path | None:
    """The shared data root, one rule for training and evaluation: an explicit folder, else $LANGBRIDGE_DATA,
    else the first existing fallback (e.g. ../shared/data). `not_a_dir(env)` builds the caller's error for a
    given folder that is not a directory (`env`: None for the explicit folder, else $LANGBRIDGE_DATA's value)."""
    if explicit:
        path = Path(explicit).expanduser()
        if not path.is_dir():
            raise not_a_dir(None)
        return path
    env = os.environ.get(DATA_ENV_VAR)
    if env:
        path = Path(env).expanduser()
        if not path.is_dir():
            raise not_a_dir(env)
        return path
    return next((p for p in fallbacks if p.is_dir()), None)


def adds_bos(tokenizer: Any) -> bool:
    """True when `tokenizer` puts its BOS token before a text (LLaMA-style), False when it adds none."""
    bos = tokenizer.bos_token_id
    ids = tokenizer("a")["input_ids"]
    return bos is not None and bool(ids) and ids[0] == bos


def peak_rss_mb() -> float:
    """Peak resident memory of this process in MiB (Linux reports KiB, macOS bytes)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024


@contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """torch's intra-op thread count set to `n` inside the block (unchanged when `n` is falsy), restored after:
    a Python caller's process keeps its own setting."""
    import torch

    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def truncate_at_stop(text: str, stop: Iterable[str]) -> str:
    """Cut a generation at the first occurrence of any stop string (generation may overshoot a batch)."""
    cut = len(text)
    for s in stop:
        if s:
            i = text.find(s)
            if i != -1:
                cut = min(cut, i)
    return text[:cut]
