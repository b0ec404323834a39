"""Run model-generated Python (HumanEval / HumanEval-MT) in a sandbox, and pass@k.

Every program runs in its own fresh ``python -I -B`` interpreter, with a minimal environment, stdin closed,
and stdout/stderr captured to files. Layers, outermost first:

* **bubblewrap** (:mod:`langbridge.evaluation.bwrap`), the security boundary: new user, pid, mount,
  network, IPC, UTS and cgroup namespaces; uid 65534 with no capabilities and ``no_new_privs``; a read-only
  view of only the shared libraries and the interpreter's standard library; a fresh size-capped tmpfs as
  the working directory; no host ``/tmp``, ``/root``, ``/home`` or ``/proc``. Without a working ``bwrap``
  :func:`execute_program` refuses to run (:class:`SandboxUnavailable`), unless unsafe local execution was
  asked for explicitly (:func:`allow_unsafe_local_exec`, ``--unsafe-local-exec``);
* kernel limits set in the child before any user code: address space (``RLIMIT_AS``), CPU seconds, file
  size, no core dumps, and a process count cap (``RLIMIT_NPROC``; the kernel does not apply it to root,
  and the sandbox's uid maps to the caller's);
* where a cgroup-v1 ``pids`` hierarchy is writable (typically root in a container), a per-run cgroup
  whose ``pids.max`` caps processes and threads even for root, and which is swept and removed afterwards;
* a wall-clock timeout after which the run is killed; the pid namespace ends every process of the run when
  it exits, and bwrap's ``--die-with-parent`` when the evaluator dies;
* the in-process guard (:mod:`langbridge.evaluation.sandbox_bootstrap`), which turns common accidents
  (fork bombs, ``rm``-like cleanup, sockets) into clear ``PermissionError`` failures. It is not a boundary.

A program ``passed`` only if it ran to its last line without an uncaught exception and the interpreter then
exited with code 0; leaving early through ``sys.exit(0)`` or ``os._exit(0)`` counts as ``failed``, so a
completion cannot skip the HumanEval ``check`` call. (Code that attacks the scorer on purpose can still fake
its own pass; the sandbox protects the machine, not the score.)
"""

from __future__ import annotations

import contextlib
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
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from .bwrap import WORK, SandboxUnavailable, bwrap_command, cgroup_wrapper, require_bwrap
from .sandbox_bootstrap import BOOTSTRAP

__all__ = [
    "ExecutionResult",
    "SandboxUnavailable",
    "allow_unsafe_local_exec",
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
Isolation = Literal["bwrap", "unsafe-local"]

_UNSAFE_LOCAL_EXEC = False


def allow_unsafe_local_exec(allow: bool = True) -> None:
    """Let :func:`execute_program` run programs without bubblewrap where it is missing (``--unsafe-local-exec``).

    Only for disposable machines: generated code then runs as this user, guarded by Python checks that
    hostile code can bypass. Where bubblewrap works it is still used."""
    global _UNSAFE_LOCAL_EXEC
    _UNSAFE_LOCAL_EXEC = bool(allow)


def resolve_isolation(isolation: Isolation | None = None) -> Isolation:
    """The isolation a run gets: bubblewrap, or (only when allowed explicitly) the unsafe local mode.

    Raises :class:`SandboxUnavailable` (one line, with the install command) when bubblewrap is needed but
    does not work here."""
    if isolation not in (None, "bwrap", "unsafe-local"):
        raise ValueError(f"isolation must be 'bwrap' or 'unsafe-local', got {isolation!r}")
    if isolation == "unsafe-local":
        return isolation
    try:
        require_bwrap()
    except SandboxUnavailable as err:
        if isolation is not None or not _UNSAFE_LOCAL_EXEC:
            raise
        _warn_unsafe_once(str(err).split(":")[0])
        return "unsafe-local"
    return "bwrap"


@functools.lru_cache(maxsize=1)
def _warn_unsafe_once(problem: str) -> None:
    warnings.warn(
        f"--unsafe-local-exec: {problem}, so generated code runs WITHOUT a sandbox, as this user, with access "
        "to this machine's files and network (only Python-level guards, which code can bypass)",
        RuntimeWarning,
        stacklevel=3,
    )


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
    isolation: Isolation | None = None,
) -> ExecutionResult:
    """Run ``program`` (Python source) in a fresh, contained interpreter; see the module docstring.

    timeout_s: wall-clock limit, after which the run is killed (CPU limit: ceil + 1 s). memory_mb:
    address-space limit of the child. max_processes: kernel cap on processes: ``RLIMIT_NPROC`` budget and,
    where available, the per-run cgroup's ``pids.max`` (processes and threads, binds root too).
    max_file_mb: largest file the program may write, stdout/stderr included; the working tmpfs holds
    4 x that. max_output_chars: how much of the end of stdout/stderr to keep. isolation: ``"bwrap"``
    (default; raises :class:`SandboxUnavailable` with the fix where bubblewrap does not work) or
    ``"unsafe-local"`` (no boundary; the old in-process guard only). network_namespace: unsafe-local mode
    only: run under ``unshare -n``; None uses it when available, True requires it.
    """
    if not isinstance(program, str):
        raise TypeError(f"program must be Python source as str, got {type(program).__name__}")
    if not sys.platform.startswith("linux"):
        raise RuntimeError(
            f"the code sandbox needs Linux (namespaces, resource limits), not {sys.platform}; "
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
    mode = resolve_isolation(isolation)
    use_netns = False
    if mode == "unsafe-local":
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
        program_path = os.path.join(work, "program.py")
        with open(program_path, "w", encoding="utf-8") as f:
            f.write(program)
        bootstrap = os.path.join(root, "bootstrap.py")
        with open(bootstrap, "w", encoding="utf-8") as f:
            f.write(BOOTSTRAP)
        report_path = Path(root, "report.json")
        out_path, err_path = Path(root, "stdout.txt"), Path(root, "stderr.txt")
        child_work = WORK if mode == "bwrap" else work
        env = {
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "HOME": child_work,
            "TMPDIR": child_work,
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
            # Inside bubblewrap the host-side wrapper joins the cgroup (the sandbox cannot see /sys).
            "cgroup": cgroup if mode == "unsafe-local" else None,
        }
        with contextlib.ExitStack() as stack:
            out = stack.enter_context(open(out_path, "wb"))
            err = stack.enter_context(open(err_path, "wb"))
            report_file = stack.enter_context(open(report_path, "wb"))
            if mode == "bwrap":
                fds = {
                    "program.py": stack.enter_context(open(program_path, "rb")).fileno(),
                    "bootstrap.py": stack.enter_context(open(bootstrap, "rb")).fileno(),
                }
                args = ["-I", "-B", f"{WORK}/bootstrap.py", WORK, f"fd:{report_file.fileno()}"]
                cmd = bwrap_command([*args, json.dumps(config)], env, fds, work_mb=4 * max_file_mb)
                cmd, pass_fds = cgroup_wrapper(cgroup, cmd), (*fds.values(), report_file.fileno())
            else:
                cmd = [sys.executable, "-I", "-B", bootstrap, work, str(report_path), json.dumps(config)]
                if use_netns:
                    cmd = [shutil.which("unshare") or "unshare", "-n", *cmd]
                pass_fds = ()
            start = time.monotonic()
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
                    pass_fds=pass_fds,
                )
            except OSError as exc:
                return ExecutionResult(
                    status="error",
                    returncode=None,
                    stdout="",
                    stderr="",
                    duration_s=time.monotonic() - start,
                    detail=f"could not start the sandbox ({cmd[0]}): {exc}",
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
        if mode == "bwrap" and rc is not None and rc > 128 and report.get("completed") is not True:
            rc = -(rc - 128)  # bwrap reports a child killed by signal N as exit code 128 + N
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
