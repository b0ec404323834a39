"""Run model-generated Python (HumanEval / HumanEval-MT) in a contained child process, and pass@k.

Every program runs in its own fresh ``python -I -B`` interpreter, in a throwaway directory that is deleted
afterwards, with a minimal environment, stdin closed, and stdout/stderr captured to files. Containment is
layered:

* kernel limits set in the child before any user code: address space (``RLIMIT_AS``), CPU seconds, file
  size, no core dumps, and a process count cap (``RLIMIT_NPROC``; the kernel does not apply it to root);
* where a cgroup-v1 ``pids`` hierarchy is writable (typically root in a container), a per-run cgroup
  whose ``pids.max`` caps processes and threads even for root, and which is swept and removed afterwards;
* a wall-clock timeout after which the child's whole process group (it is started in a new session) is
  killed, and the group is killed after every run so nothing it started outlives it;
* a fresh, empty network namespace (``unshare -n``) when the machine allows creating one, else nothing at
  kernel level;
* an in-process guard, installed by a small bootstrap before the program runs, that makes process creation
  (``os.fork``, ``subprocess``, ``os.system``, ``multiprocessing``, ``os.exec*``), signalling other
  processes, socket creation, and deleting, renaming, truncating or re-permissioning any path outside the
  sandbox directory raise ``PermissionError``; ``ctypes`` and ``resource`` cannot be imported.

This follows common HumanEval practice (OpenAI human-eval's ``reliability_guard``): it stops accidents in
model output (fork bombs, ``rm``-like cleanup code, runaway loops, memory blow-ups). It is NOT a security
boundary against adversarial code: Python-level guards can be bypassed from inside the interpreter (e.g.
via ``__subclasses__`` or closures, or by re-importing ``ctypes``), and when running as root without a
pids cgroup only the guard stops fork bombs. Run untrusted code inside a container/VM without credentials
for real isolation.

A program ``passed`` only if it ran to its last line without an uncaught exception and the interpreter then
exited with code 0; leaving early through ``sys.exit(0)`` or ``os._exit(0)`` counts as ``failed``, so a
completion cannot skip the HumanEval ``check`` call.
"""

from __future__ import annotations

import functools
import json
import math
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

__all__ = [
    "ExecutionResult",
    "check_correctness",
    "estimate_pass_at_k",
    "execute_program",
    "humaneval_program",
    "network_namespace_available",
    "pids_cgroup_available",
    "pass_at_k",
    "run_many",
]

Status = Literal["passed", "failed", "timeout", "error"]

# Runs in the child before the program. Kept dependency-free (stdlib only) and executed by `python -I -B`,
# so nothing from the caller's environment or working directory is imported.
_BOOTSTRAP = r'''
import builtins, io, json, os, sys, traceback

WORK, REPORT, CONFIG = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
_open = io.open


def _report(data):
    with _open(REPORT, "w", encoding="utf-8") as f:
        json.dump(data, f)


try:
    if CONFIG["cgroup"]:
        # Join the per-run pids cgroup before anything else, so every process the program makes counts.
        with _open(os.path.join(CONFIG["cgroup"], "cgroup.procs"), "w") as f:
            f.write(str(os.getpid()))
    import resource

    def _limit(name, value):
        value = int(value)
        resource.setrlimit(getattr(resource, name), (value, value))

    uid = os.getuid()
    user_procs = 0
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                user_procs += os.stat("/proc/" + entry).st_uid == uid
            except OSError:
                pass
    # RLIMIT_NPROC counts all processes of the user, so allow the ones already running plus the budget.
    _limit("RLIMIT_NPROC", user_procs + CONFIG["max_processes"])
    _limit("RLIMIT_AS", CONFIG["memory_mb"] * 1024 * 1024)
    # Soft CPU limit sends SIGXCPU (reported as a timeout); the hard one a second later kills.
    resource.setrlimit(resource.RLIMIT_CPU, (CONFIG["cpu_s"], CONFIG["cpu_s"] + 1))
    _limit("RLIMIT_FSIZE", CONFIG["max_file_mb"] * 1024 * 1024)
    _limit("RLIMIT_CORE", 0)

    import _posixsubprocess, _socket, posix, shutil, signal, socket, subprocess

    ROOT = os.path.realpath(WORK)

    def _where(path, dir_fd=None):
        if isinstance(path, int):
            return os.readlink("/proc/self/fd/%d" % path)
        path = os.fsdecode(os.fspath(path))
        if dir_fd is not None and not os.path.isabs(path):
            path = os.path.join(os.readlink("/proc/self/fd/%d" % dir_fd), path)
        # Resolve the parent only: removing a symlink must not be judged by where it points.
        head, tail = os.path.split(os.path.abspath(path))
        return os.path.join(os.path.realpath(head), tail)

    def _inside(path, dir_fd=None):
        try:
            where = _where(path, dir_fd)
        except (OSError, TypeError, ValueError):
            return False
        return where == ROOT or where.startswith(ROOT + os.sep)

    def _check(op, *paths, dir_fd=None):
        for p in paths:
            if not _inside(p, dir_fd):
                raise PermissionError("sandbox: %s(%r) outside the sandbox directory is not allowed" % (op, p))

    def _path_guard(module, name, params=((0, "path"),), fd_keys=("dir_fd",)):
        """Wrap module.name so each (position, keyword) path argument must lie inside the sandbox."""
        original = getattr(module, name, None)
        if original is None:
            return

        def guarded(*args, **kwargs):
            paths = [args[pos] if len(args) > pos else kwargs.get(key) for pos, key in params]
            dir_fd = next((kwargs[k] for k in fd_keys if kwargs.get(k) is not None), None)
            _check(name, *(p for p in paths if p is not None), dir_fd=dir_fd)
            return original(*args, **kwargs)

        guarded.__name__ = name
        setattr(module, name, guarded)

    for mod in (os, posix):
        for name in ("remove", "unlink", "rmdir", "truncate", "chmod", "lchmod", "chown",
                     "lchown", "chflags", "lchflags", "mkfifo", "mknod"):
            _path_guard(mod, name)
        for name in ("rename", "renames", "replace", "link"):
            _path_guard(mod, name, ((0, "src"), (1, "dst")), ("src_dir_fd", "dst_dir_fd"))
        _path_guard(mod, "removedirs", ((0, "name"),))
        _path_guard(mod, "symlink", ((1, "dst"),))
    _path_guard(shutil, "rmtree")
    _path_guard(shutil, "move", ((0, "src"), (1, "dst")))
    _path_guard(shutil, "chown")

    _os_open, _write_flags = os.open, os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC

    def _writes_allowed(file):
        return isinstance(file, int) or os.fspath(file) in ("/dev/null", b"/dev/null") or _inside(file)

    def guarded_open(file, mode="r", *args, **kwargs):
        if any(c in mode for c in "wax+") and not _writes_allowed(file):
            raise PermissionError("sandbox: writing %r outside the sandbox directory is not allowed" % (file,))
        return _open(file, mode, *args, **kwargs)

    def guarded_os_open(path, flags, mode=0o777, *, dir_fd=None):
        if flags & _write_flags and not (os.fspath(path) in ("/dev/null", b"/dev/null") or _inside(path, dir_fd)):
            raise PermissionError("sandbox: writing %r outside the sandbox directory is not allowed" % (path,))
        return _os_open(path, flags, mode, dir_fd=dir_fd)

    builtins.open = io.open = guarded_open
    os.open = posix.open = guarded_os_open
    accessor = getattr(sys.modules.get("pathlib"), "_NormalAccessor", None)  # Python 3.10 binds os.* early
    for name in ("unlink", "rmdir", "rename", "replace", "chmod", "link", "symlink", "open"):
        if accessor is not None and hasattr(accessor, name):
            setattr(accessor, name, staticmethod(guarded_open if name == "open" else getattr(os, name)))

    def _refuser(what):
        def refuse(*args, **kwargs):
            raise PermissionError("sandbox: %s is not allowed" % what)

        return refuse

    for mod in (os, posix):
        for name in ("fork", "forkpty", "vfork", "system", "popen", "posix_spawn", "posix_spawnp", "killpg",
                     "setsid", "setpgid", "setuid", "setgid", "chroot"):
            if hasattr(mod, name):
                setattr(mod, name, _refuser("os.%s()" % name))
        for name in dir(mod):
            if name.startswith(("exec", "spawn")) and callable(getattr(mod, name)):
                setattr(mod, name, _refuser("os.%s()" % name))
    _posixsubprocess.fork_exec = subprocess._fork_exec = _refuser("starting a process")
    subprocess.Popen._execute_child = _refuser("starting a process (subprocess)")

    _kill, _me = os.kill, os.getpid()

    def guarded_kill(pid, sig):
        if pid != _me:
            raise PermissionError("sandbox: signalling other processes is not allowed")
        return _kill(pid, sig)

    os.kill = posix.kill = guarded_kill
    if hasattr(signal, "pthread_kill"):
        signal.pthread_kill = _refuser("signal.pthread_kill()")

    def _socket_guard(base):
        class GuardedSocket(base):
            def __init__(self, *args, **kwargs):
                # Wrapping an existing descriptor (socketpair, fromfd) opens nothing new.
                if kwargs.get("fileno", args[3] if len(args) > 3 else None) is None:
                    raise PermissionError("sandbox: network access is not allowed")
                super().__init__(*args, **kwargs)

        GuardedSocket.__name__ = GuardedSocket.__qualname__ = base.__name__
        return GuardedSocket

    socket.socket = socket.SocketType = _socket_guard(socket.socket)
    _socket.socket = _socket.SocketType = _socket_guard(_socket.socket)
    for name in ("create_connection", "create_server", "getaddrinfo", "gethostbyname", "gethostbyname_ex"):
        setattr(socket, name, _refuser("network access (socket.%s)" % name))

    for name in ("ctypes", "_ctypes", "resource", "pty"):
        sys.modules[name] = None
    source = _open(os.path.join(WORK, "program.py"), encoding="utf-8").read()
except BaseException as exc:  # the sandbox, not the program, failed
    traceback.print_exc()
    _report({"completed": False, "sandbox_error": "%s: %s" % (type(exc).__name__, exc)})
    sys.stderr.flush()
    os._exit(97)

try:
    code = compile(source, os.path.join(WORK, "program.py"), "exec")
    del source
    exec(code, {"__name__": "__main__", "__builtins__": builtins})
except BaseException as exc:
    traceback.print_exc()
    code = exc.code if isinstance(exc, SystemExit) else 1
    _report({"completed": False, "exception": type(exc).__name__})
    sys.stdout.flush()
    sys.stderr.flush()
    raise SystemExit(code)
else:
    sys.stdout.flush()
    sys.stderr.flush()
    _report({"completed": True})
'''


@dataclass(frozen=True)
class ExecutionResult:
    """Outcome of one sandboxed program.

    status: ``passed`` (ran to the end, exit code 0), ``failed`` (raised, exited early or non-zero),
    ``timeout`` (wall-clock or CPU limit hit; the process group was killed) or ``error`` (the sandbox could
    not run it, or the interpreter died from a signal). Only ``passed`` counts as correct.
    """

    status: Status
    returncode: int | None
    stdout: str
    stderr: str
    duration_s: float
    exception: str | None = None  # type name of the program's uncaught exception, e.g. "AssertionError"
    detail: str = ""  # human-readable reason for the status

    @property
    def passed(self) -> bool:
        return self.status == "passed"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@functools.lru_cache(maxsize=1)
def network_namespace_available() -> bool:
    """Whether ``unshare -n`` can give a child an empty network namespace on this machine (probed once)."""
    unshare = shutil.which("unshare")
    if unshare is None or not sys.platform.startswith("linux"):
        return False
    try:
        probe = subprocess.run(
            [unshare, "-n", sys.executable, "-I", "-c", "pass"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=30,
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return probe.returncode == 0


@functools.lru_cache(maxsize=1)
def _pids_cgroup_base() -> str | None:
    """This process's directory in a writable cgroup-v1 ``pids`` hierarchy, or None (probed once)."""
    try:
        mounts = Path("/proc/self/mounts").read_text().splitlines()
        memberships = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    mount = next(
        (
            f[1]
            for f in (m.split() for m in mounts)
            if len(f) > 3 and f[2] == "cgroup" and "pids" in f[3].split(",")
        ),
        None,
    )
    own = next((m.split(":", 2)[2] for m in memberships if "pids" in m.split(":", 2)[1].split(",")), None)
    if mount is None or own is None:
        return None
    base = os.path.normpath(os.path.join(mount, own.lstrip("/")))
    probe = os.path.join(base, f"langbridge-sandbox-probe-{os.getpid()}")
    try:
        os.mkdir(probe)
    except OSError:
        return None
    try:
        return base if os.path.exists(os.path.join(probe, "pids.max")) else None
    finally:
        os.rmdir(probe)


def pids_cgroup_available() -> bool:
    """Whether each run can get its own ``pids`` cgroup (a kernel process cap that also binds root)."""
    return _pids_cgroup_base() is not None


def _make_pids_cgroup(max_processes: int) -> str | None:
    base = _pids_cgroup_base()
    if base is None:
        return None
    path = os.path.join(base, f"langbridge-sandbox-{os.getpid()}-{uuid.uuid4().hex[:12]}")
    try:
        os.mkdir(path)
        Path(path, "pids.max").write_text(str(max_processes))
    except OSError:
        _remove_cgroup(path)
        return None
    return path


def _remove_cgroup(path: str, patience_s: float = 2.0) -> None:
    """Kill whatever is still in the cgroup (e.g. processes that left the process group) and remove it."""
    deadline = time.monotonic() + patience_s
    while True:
        try:
            os.rmdir(path)
            return
        except FileNotFoundError:
            return
        except OSError:
            if time.monotonic() > deadline:
                return  # an empty leftover group is harmless; the kernel removes nothing by itself
        try:
            pids = Path(path, "cgroup.procs").read_text().split()
        except OSError:
            pids = []
        for pid in pids:
            try:
                os.kill(int(pid), signal.SIGKILL)
            except (ProcessLookupError, PermissionError, ValueError):
                pass
        time.sleep(0.01)


def _positive(name: str, value: float, kind: type = float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"{name} must be a positive number, got {value!r}")
    if kind is int and not isinstance(value, int):
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def _tail(path: Path, max_chars: int) -> str:
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            # 4 bytes per char covers any UTF-8 text; decode errors at the cut are replaced.
            f.seek(max(0, size - 4 * max_chars))
            text = f.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    if len(text) > max_chars or size > 4 * max_chars:
        return f"[... output truncated to the last {max_chars} characters ...]\n" + text[-max_chars:]
    return text


def _wait_exit_unreaped(pid: int, timeout_s: float) -> bool:
    """Block until ``pid`` exits (leaving it a zombie) or ``timeout_s`` passes; True if it exited."""
    deadline = time.monotonic() + timeout_s
    if hasattr(os, "pidfd_open"):
        try:
            fd = os.pidfd_open(pid)
        except OSError:
            pass  # kernel without pidfd: poll below
        else:
            try:
                # A pidfd becomes readable when the process exits; it stays unreaped until waited for.
                return bool(select.select([fd], [], [], max(0.0, timeout_s))[0])
            finally:
                os.close(fd)
    delay = 0.0005
    while os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT | os.WNOHANG) is None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        time.sleep(min(delay, remaining))
        delay = min(delay * 2, 0.01)
    return True


def _wait_then_kill_group(proc: subprocess.Popen, timeout_s: float) -> bool:
    """Wait for the child, kill its whole process group, then reap it. Returns True on timeout.

    The group is killed while its leader is still an unreaped zombie, so its id cannot have been reused
    by an unrelated process group; this also ends anything the program left running in the background.
    """
    exited = False
    try:
        exited = _wait_exit_unreaped(proc.pid, timeout_s)
    finally:  # also on KeyboardInterrupt: never leave the program running
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        proc.wait()
    return not exited


def _remove_tree(path: str) -> None:
    def make_writable_and_retry(func: Callable[..., Any], failed: str, _exc: Any) -> None:
        # The program may have removed permissions from its own files; give them back and retry once.
        try:
            os.chmod(os.path.dirname(failed), 0o700)
            if os.path.isdir(failed) and not os.path.islink(failed):
                os.chmod(failed, 0o700)
            func(failed)
        except OSError:
            pass

    shutil.rmtree(path, onerror=make_writable_and_retry)


def execute_program(
    program: str,
    timeout_s: float = 10.0,
    memory_mb: int = 1024,
    max_processes: int = 64,
    *,
    max_file_mb: int = 64,
    max_output_chars: int = 4000,
    network_namespace: bool | None = None,
) -> ExecutionResult:
    """Run ``program`` (Python source) in a fresh, contained interpreter; see the module docstring.

    timeout_s: wall-clock limit, after which the whole process group is killed (CPU limit: ceil + 1 s).
    memory_mb: address-space limit of the child. max_processes: kernel cap on processes: ``RLIMIT_NPROC``
    budget above the user's current process count (ignored by the kernel for root) and, where available,
    the per-run cgroup's ``pids.max`` (processes and threads, binds root too); the in-process guard
    refuses process creation anyway. max_file_mb: largest file the program may write, stdout/stderr included.
    max_output_chars: how much of the end of stdout/stderr to keep. network_namespace: run under
    ``unshare -n``; None uses it when available, True requires it.
    """
    if not isinstance(program, str):
        raise TypeError(f"program must be Python source as str, got {type(program).__name__}")
    if not sys.platform.startswith("linux"):
        raise RuntimeError(
            f"the code sandbox needs Linux (/proc, resource limits, process groups), not {sys.platform}; "
            "run code evaluation on a Linux machine or container"
        )
    _positive("timeout_s", timeout_s)
    for name, value in (
        ("memory_mb", memory_mb),
        ("max_processes", max_processes),
        ("max_file_mb", max_file_mb),
        ("max_output_chars", max_output_chars),
    ):
        _positive(name, value, int)
    if memory_mb < 64:
        raise ValueError(f"memory_mb={memory_mb} is too small to start a Python interpreter; use at least 64")
    use_netns = network_namespace_available() if network_namespace is None else bool(network_namespace)
    if use_netns and not network_namespace_available():
        raise RuntimeError(
            "network_namespace=True but `unshare -n` does not work here (needs util-linux and permission "
            "to create network namespaces); pass network_namespace=None to fall back to the in-process guard"
        )

    root = tempfile.mkdtemp(prefix="langbridge-sandbox-")
    cgroup = _make_pids_cgroup(max_processes)
    try:
        work = os.path.join(root, "work")
        os.mkdir(work, 0o700)
        with open(os.path.join(work, "program.py"), "w", encoding="utf-8") as f:
            f.write(program)
        bootstrap = os.path.join(root, "bootstrap.py")
        with open(bootstrap, "w", encoding="utf-8") as f:
            f.write(_BOOTSTRAP)
        report_path = Path(root, "report.json")
        out_path, err_path = Path(root, "stdout.txt"), Path(root, "stderr.txt")
        env = {
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "HOME": work,
            "TMPDIR": work,
            "LANG": "C.UTF-8",
            "PYTHONIOENCODING": "utf-8",
            "OMP_NUM_THREADS": "1",
            "OPENBLAS_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
        }
        config = {
            "memory_mb": memory_mb,
            "max_processes": max_processes,
            "max_file_mb": max_file_mb,
            "cpu_s": math.ceil(timeout_s) + 1,
            "cgroup": cgroup,
        }
        cmd = [sys.executable, "-I", "-B", bootstrap, work, str(report_path), json.dumps(config)]
        if use_netns:
            cmd = [shutil.which("unshare") or "unshare", "-n", *cmd]

        start = time.monotonic()
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            try:
                proc = subprocess.Popen(
                    cmd,
                    cwd=work,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=err,
                    start_new_session=True,
                    close_fds=True,
                )
            except OSError as exc:
                return ExecutionResult(
                    status="error",
                    returncode=None,
                    stdout="",
                    stderr="",
                    duration_s=time.monotonic() - start,
                    detail=f"could not start the sandboxed interpreter {sys.executable}: {exc}",
                )
            timed_out = _wait_then_kill_group(proc, timeout_s)
        duration = time.monotonic() - start

        try:
            report = json.loads(report_path.read_text(encoding="utf-8"))
            if not isinstance(report, dict):
                report = {}
        except (OSError, ValueError):
            report = {}
        rc = proc.returncode
        exception = report.get("exception")
        status, detail = _classify(rc, timed_out, timeout_s, report)
        return ExecutionResult(
            status=status,
            returncode=rc,
            stdout=_tail(out_path, max_output_chars),
            stderr=_tail(err_path, max_output_chars),
            duration_s=duration,
            exception=exception if isinstance(exception, str) else None,
            detail=detail,
        )
    finally:
        if cgroup is not None:
            _remove_cgroup(cgroup)
        _remove_tree(root)


def _classify(rc: int, timed_out: bool, timeout_s: float, report: Mapping[str, Any]) -> tuple[Status, str]:
    if timed_out:
        return "timeout", f"timed out after {timeout_s:g} s; the process group was killed"
    if rc < 0:
        sig = -rc
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = f"signal {sig}"
        if sig == signal.SIGXCPU:
            return "timeout", "CPU time limit exceeded (SIGXCPU)"
        return "error", f"the interpreter was killed by {name}"
    if "sandbox_error" in report:
        return "error", f"the sandbox could not be set up: {report['sandbox_error']}"
    if report.get("completed") is True:
        if rc == 0:
            return "passed", "ran to the end"
        return "failed", f"ran to the end but the interpreter exited with code {rc} (e.g. output write error)"
    if report.get("exception") == "SystemExit":
        return "failed", f"the program called sys.exit() before its end (exit code {rc})"
    if "exception" in report:
        return "failed", f"uncaught {report['exception']} (exit code {rc})"
    return "failed", f"the interpreter exited with code {rc} before the end of the program (os._exit?)"


def humaneval_program(prompt: str, completion: str, test: str, entry_point: str) -> str:
    """The HumanEval check program: prompt + completion, the test suite, then ``check(entry_point)``."""
    for name, value in (
        ("prompt", prompt),
        ("completion", completion),
        ("test", test),
        ("entry_point", entry_point),
    ):
        if not isinstance(value, str):
            raise TypeError(f"{name} must be a str, got {type(value).__name__}")
    if not entry_point.isidentifier():
        raise ValueError(f"entry_point must be a Python identifier (the function name), got {entry_point!r}")
    return prompt + completion + "\n" + test + "\n" + f"check({entry_point})\n"


def check_correctness(
    prompt: str, completion: str, test: str, entry_point: str, timeout_s: float = 10.0, **kwargs: Any
) -> ExecutionResult:
    """Run one HumanEval sample in the sandbox; ``kwargs`` go to :func:`execute_program`."""
    return execute_program(
        humaneval_program(prompt, completion, test, entry_point), timeout_s=timeout_s, **kwargs
    )


def _run_job(job: str | Mapping[str, Any]) -> ExecutionResult:
    if isinstance(job, str):
        return execute_program(job)
    return execute_program(**job)


def run_many(
    jobs: Iterable[str | Mapping[str, Any]],
    max_workers: int = 2,
    *,
    progress: bool = False,
    desc: str = "sandbox",
) -> list[ExecutionResult]:
    """Run several programs concurrently (threads driving separate sandboxes); results keep job order.

    Each job is program source (run with the defaults) or a mapping of :func:`execute_program` keyword
    arguments including ``program``. Keep ``max_workers`` at or below the number of CPU cores, or CPU-bound
    programs may hit their timeouts only because they wait for a core.
    """
    if isinstance(max_workers, bool) or not isinstance(max_workers, int) or max_workers < 1:
        raise ValueError(f"max_workers must be a positive integer, got {max_workers!r}")
    jobs = list(jobs)
    for i, job in enumerate(jobs):
        if isinstance(job, Mapping):
            if "program" not in job:
                raise ValueError(f"job {i} is a mapping without a 'program' key; give the program source")
        elif not isinstance(job, str):
            raise TypeError(f"job {i} must be program source (str) or a mapping of execute_program arguments")
    results: list[ExecutionResult | None] = [None] * len(jobs)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(jobs), desc=desc, unit="prog")
    try:
        with ThreadPoolExecutor(max_workers=min(max_workers, max(1, len(jobs)))) as pool:
            futures = {pool.submit(_run_job, job): i for i, job in enumerate(jobs)}
            for future in as_completed(futures):
                results[futures[future]] = future.result()
                if bar is not None:
                    bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    return [r for r in results if r is not None]


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k estimate from ``n`` samples of which ``c`` are correct (Chen et al., 2021).

    1 - C(n - c, k) / C(n, k), computed as a numerically stable product.
    """
    for name, value in (("n", n), ("c", c), ("k", k)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise TypeError(f"{name} must be an integer, got {value!r}")
    if n < 1:
        raise ValueError(f"n (samples per problem) must be >= 1, got {n}")
    if not 0 <= c <= n:
        raise ValueError(f"c (correct samples) must be between 0 and n={n}, got {c}")
    if not 1 <= k <= n:
        raise ValueError(
            f"k must be between 1 and n={n} (pass@k needs at least k samples per problem), got {k}"
        )
    if n - c < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1, dtype=np.float64)))


def estimate_pass_at_k(num_samples: int | Sequence[int], num_correct: Sequence[int], k: int) -> np.ndarray:
    """pass@k per problem; ``num_samples`` is one count for all problems or one per problem."""
    correct = list(num_correct)
    if isinstance(num_samples, (int, np.integer)) and not isinstance(num_samples, bool):
        samples = [int(num_samples)] * len(correct)
    else:
        samples = list(num_samples)
        if len(samples) != len(correct):
            raise ValueError(
                f"num_samples has {len(samples)} entries but num_correct has {len(correct)}; give one per problem"
            )
    return np.array([pass_at_k(n, c, k) for n, c in zip(samples, correct, strict=True)], dtype=np.float64)
