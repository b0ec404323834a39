"""The kernel boundary around generated code: a bubblewrap (``bwrap``) command line.

Each program runs in new user, pid, mount, network, IPC, UTS and cgroup namespaces, as uid/gid 65534 with
every capability dropped (and ``no_new_privs``, which bwrap always sets), unable to create further user
namespaces. Its filesystem is a tmpfs root holding only read-only binds of the shared libraries and the
Python interpreter with its standard library (site-packages hidden), a fresh ``/proc`` and minimal ``/dev``,
and a size-capped tmpfs at :data:`WORK` as the working directory; no host ``/tmp``, ``/root``, ``/home``,
``/etc`` (except the loader cache) or ``/sys``. The program and the bootstrap are copied in through file
descriptors, so no host directory is shared. bwrap kills the sandbox when its parent dies, and the pid
namespace ends every process of the run when its first process exits or is killed.
"""

from __future__ import annotations

import functools
import os
import shutil
import site
import subprocess
import sys
import sysconfig
from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = [
    "INSTALL_HINT",
    "SANDBOX_UID",
    "WORK",
    "SandboxUnavailable",
    "bwrap_command",
    "bwrap_problem",
    "require_bwrap",
]

WORK = "/sandbox"
SANDBOX_UID = 65534  # "nobody"
INSTALL_HINT = "apt-get install bubblewrap (Fedora: dnf install bubblewrap)"


class SandboxUnavailable(RuntimeError):
    """bubblewrap is missing or cannot create namespaces here; the message says how to fix it."""


def _interpreter() -> str:
    # A venv's python is a symlink; the real binary lives with its standard library.
    return os.path.realpath(sys.executable)


def _python_paths() -> tuple[list[str], list[str]]:
    """(paths to bind read-only, site-packages paths to hide under them) for this interpreter."""
    paths = {sysconfig.get_paths()[k] for k in ("stdlib", "platstdlib")}
    paths.add(os.path.join(sys.base_prefix, "lib"))  # libpython*.so of non-system builds
    paths.add(os.path.dirname(_interpreter()))
    binds = sorted(os.path.realpath(p) for p in paths if os.path.isdir(p))
    hidden = {sysconfig.get_paths()[k] for k in ("purelib", "platlib")}
    hidden.update(site.getsitepackages() if hasattr(site, "getsitepackages") else [])
    hide = sorted(
        os.path.realpath(p)
        for p in hidden
        if os.path.isdir(p) and any(os.path.realpath(p).startswith(b + os.sep) for b in binds)
    )
    return binds, hide


def _system_binds() -> list[str]:
    """bwrap arguments for the dynamic loader and shared libraries (merged-/usr aware)."""
    args: list[str] = []
    for top in ("/lib", "/lib64", "/lib32", "/usr/lib", "/usr/lib64", "/usr/lib32"):
        if os.path.islink(top):
            args += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            args += ["--ro-bind", top, top]
    if os.path.isfile("/etc/ld.so.cache"):
        args += ["--ro-bind", "/etc/ld.so.cache", "/etc/ld.so.cache"]
    return args


def bwrap_command(
    python_args: Sequence[str],
    env: Mapping[str, str],
    data_fds: Mapping[str, int],
    work_mb: int,
) -> list[str]:
    """The full ``bwrap ... -- python ...`` argv.

    data_fds: file name in :data:`WORK` -> readable descriptor whose content is copied there read-only
    (the descriptors must be passed to the child). work_mb: size cap of the working tmpfs.
    """
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        raise SandboxUnavailable(f"bubblewrap (bwrap) is not installed; {INSTALL_HINT}")
    binds, hide = _python_paths()
    cmd = [
        bwrap,
        "--unshare-all",
        "--unshare-user",
        "--disable-userns",
        "--uid",
        str(SANDBOX_UID),
        "--gid",
        str(SANDBOX_UID),
        "--cap-drop",
        "ALL",
        "--die-with-parent",
        "--new-session",
        "--hostname",
        "sandbox",
        *_system_binds(),
    ]
    for path in binds:
        cmd += ["--ro-bind", path, path]
    for path in hide:
        cmd += ["--tmpfs", path, "--remount-ro", path]
    cmd += ["--proc", "/proc", "--dev", "/dev"]
    cmd += ["--size", str(work_mb * 1024 * 1024), "--perms", "0700", "--tmpfs", WORK]
    for name, fd in data_fds.items():
        cmd += ["--perms", "0444", "--ro-bind-data", str(fd), f"{WORK}/{name}"]
    cmd += ["--chdir", WORK, "--clearenv"]
    for key, value in env.items():
        cmd += ["--setenv", key, value]
    return [*cmd, "--", _interpreter(), *python_args]


@functools.lru_cache(maxsize=1)
def bwrap_problem() -> str | None:
    """Why bubblewrap cannot sandbox programs here (one line), or None when it works (probed once)."""
    if not sys.platform.startswith("linux"):
        return f"the code sandbox needs Linux namespaces, not {sys.platform}"
    if shutil.which("bwrap") is None:
        return "bubblewrap (bwrap) is not installed"
    try:
        cmd = bwrap_command(["-I", "-B", "-c", "pass"], {}, {}, work_mb=1)
        probe = subprocess.run(
            cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=60
        )
    except (OSError, subprocess.SubprocessError) as err:
        return f"bubblewrap could not be started ({err})"
    if probe.returncode != 0:
        lines = probe.stderr.decode("utf-8", "replace").strip().splitlines()
        reason = lines[-1] if lines else f"exit code {probe.returncode}"
        return f"bubblewrap cannot create the sandbox here ({reason}; user namespaces disabled?)"
    return None


def require_bwrap() -> None:
    """Raise :class:`SandboxUnavailable` with the fix when bubblewrap cannot sandbox programs here."""
    problem = bwrap_problem()
    if problem is not None:
        raise SandboxUnavailable(
            f"{problem}: generated code is only run inside bubblewrap; install it ({INSTALL_HINT}), or pass "
            "--unsafe-local-exec to run it without a sandbox (only on a disposable machine)"
        )


def cgroup_wrapper(cgroup: str | None, cmd: list[str]) -> list[str]:
    """Prefix `cmd` so that it joins the pids cgroup before exec (the host-side shell can see /sys)."""
    if cgroup is None:
        return cmd
    procs = str(Path(cgroup, "cgroup.procs"))
    return ["/bin/sh", "-c", 'echo $$ > "$0" && exec "$@"', procs, *cmd]
