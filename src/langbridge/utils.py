"""Small shared helpers: atomic file writes and model-name resolution."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path


def _umask_mode(full: int) -> int:
    """`full` (0o666 files, 0o777 directories) minus the process umask, as open()/mkdir() would give."""
    umask = os.umask(0)
    os.umask(umask)
    return full & ~umask


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write a file so that readers see either the old or the new content, never a partial one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        # mkstemp creates 0600 files; give the result the permissions a plain write would have.
        os.chmod(tmp, path.stat().st_mode & 0o777 if path.exists() else _umask_mode(0o666))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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
    try:
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


def resolve_model_name(name_or_path: str | os.PathLike) -> str:
    """Map a short alias of a bundled default model to its local directory; pass anything else through."""
    name = str(name_or_path)
    try:
        from langbridge.pretrained import resolve_pretrained
    except ImportError:  # pretrained module optional in minimal installs
        return name
    return resolve_pretrained(name)
