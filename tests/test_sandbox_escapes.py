"""Hostile programs against the bubblewrap sandbox (issue 17, items 3-4): each must fail or be contained.

Every program first gets past the in-process guard (re-importing ``ctypes``, calling libc directly), as a
deliberate attacker would, so these tests exercise the kernel boundary itself. The assertions are about the
host: its files, its processes, its network listener, this test process.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest
from conftest import assert_no_connection

from langbridge.evaluation import sandbox
from langbridge.evaluation.bwrap import bwrap_problem
from langbridge.evaluation.sandbox import ExecutionResult, execute_program

pytestmark = pytest.mark.skipif(
    bwrap_problem() is not None,
    reason=f"bubblewrap sandbox unavailable ({bwrap_problem()}); apt-get install bubblewrap",
)

FAST = {"timeout_s": 5.0, "memory_mb": 256}

# Undo the guard: ctypes comes back after being removed from sys.modules; libc is then called directly.
BYPASS = """
import os, sys
for name in ("ctypes", "_ctypes"):
    sys.modules.pop(name, None)
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
"""


def run(program: str, **kwargs) -> ExecutionResult:
    return execute_program(BYPASS + textwrap.dedent(program), **{**FAST, **kwargs})


def processes_named(comm: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        try:
            if entry.isdigit() and Path("/proc", entry, "comm").read_text().strip() == comm:
                found.append(int(entry))
        except OSError:
            pass
    return found


def test_bypass_really_gets_past_the_python_guard() -> None:
    # Sanity check of the attack itself: ctypes is back and libc.getpid answers.
    result = run("print(libc.getpid() > 0)")
    assert result.status == "passed", result.stderr
    assert result.stdout.strip() == "True"


def test_runs_unprivileged_in_its_own_namespaces() -> None:
    result = run(
        """
        status = dict(l.split(":\\t", 1) for l in open("/proc/self/status").read().splitlines() if ":\\t" in l)
        print(os.getuid(), os.getgid(), status["CapEff"].strip(), status["CapBnd"].strip(), status["NoNewPrivs"].strip())
        print(sorted(p for p in os.listdir("/proc") if p.isdigit()))
        """
    )
    assert result.status == "passed", result.stderr
    ids, pids = result.stdout.splitlines()
    assert ids.split() == ["65534", "65534", "0000000000000000", "0000000000000000", "1"]
    assert len(eval(pids)) <= 3  # only the sandbox's own processes: a fresh pid namespace and /proc


def test_host_secrets_and_homes_are_not_visible(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("host secret")
    paths = ["/etc/shadow", "/etc/passwd", "/home", "/tmp", "/var", "/sys", str(secret)]
    paths += [os.path.expanduser("~/.cache"), os.path.expanduser("~/.ssh")]
    result = run(f"print([p for p in {paths!r} if os.path.exists(p)])\nprint(open({str(secret)!r}).read())")
    assert result.status == "failed"
    assert result.stdout.strip() == "[]"
    assert "host secret" not in result.stdout + result.stderr


WRITES = {
    "open": "open({target!r}, 'w').write('x')",
    "_io.open": "import _io\n_io.open({target!r}, 'w').write('x')",
    "os.open": "import posix\nposix.open({target!r}, os.O_CREAT | os.O_WRONLY)",
    "ctypes-open": (
        "fd = libc.open({target!r}.encode(), os.O_CREAT | os.O_WRONLY, 0o644)\n"
        "assert fd >= 0, ctypes.get_errno()\nlibc.write(fd, b'x', 1)"
    ),
    "ctypes-unlink": "assert libc.unlink({victim!r}.encode()) == 0, ctypes.get_errno()",
    "ctypes-rename": "assert libc.rename({victim!r}.encode(), b'stolen') == 0, ctypes.get_errno()",
    "ctypes-truncate": "assert libc.truncate({victim!r}.encode(), 0) == 0, ctypes.get_errno()",
    "ctypes-chmod": "assert libc.chmod({victim!r}.encode(), 0) == 0, ctypes.get_errno()",
}


@pytest.mark.parametrize("attack", list(WRITES), ids=list(WRITES))
@pytest.mark.parametrize("where", ["host-tmp", "interpreter-dir"])
def test_writes_outside_the_work_directory_fail(tmp_path: Path, attack: str, where: str) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    mode = victim.stat().st_mode
    # A new file next to the standard library: the bind is read-only, so this must fail too.
    target_dir = Path(os.__file__).parent if where == "interpreter-dir" else tmp_path
    target = target_dir / f"langbridge-escape-{uuid.uuid4().hex[:8]}.txt"
    if where == "interpreter-dir":
        victim = target  # destructive calls aim at a path that only this test creates
    try:
        result = run(WRITES[attack].format(target=str(target), victim=str(victim)))
        assert result.status == "failed", result.stdout
        assert not target.exists()
        if where == "host-tmp":
            assert victim.read_text() == "precious" and victim.stat().st_mode == mode
    finally:
        target.unlink(missing_ok=True)


def test_shell_via_ctypes_is_contained(tmp_path: Path) -> None:
    marker = tmp_path / "shell-ran"
    result = run(f"print(libc.system(b'touch {marker}; id > {marker}'))")
    # There is no shell in the sandbox; and were there one, it could not reach the host path.
    assert not marker.exists()
    assert result.status == "passed" and result.stdout.strip() != "0"


@pytest.mark.slow  # a sentinel host process; SIGKILL from inside
def test_signals_cannot_reach_the_evaluator_or_any_host_process() -> None:
    sentinel = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        result = run(
            f"""
            import signal
            print(libc.kill({os.getpid()}, 9), libc.kill({sentinel.pid}, 9), libc.kill(os.getppid(), 9))
            print(libc.kill(-1, 9))
            """
        )
        assert sentinel.poll() is None, "a host process was killed from inside the sandbox"
        # This test process survived too (it is running this line); the run ended however it ended.
        assert result.status in {"passed", "failed", "error"}
        assert result.stdout.splitlines()[0].split()[:2] == [
            "-1",
            "-1",
        ]  # ESRCH: host pids do not exist there
    finally:
        sentinel.kill()
        sentinel.wait()


NETWORK = {
    "socket-bypass": "import socket\ns = socket.socket.__mro__[2](socket.AF_INET, socket.SOCK_STREAM)\n"
    "s.connect(('127.0.0.1', {port}))",
    "setns": (
        "CLONE_NEWNET = 0x40000000\nimport glob\n"
        "for path in glob.glob('/proc/*/ns/net') + ['/proc/{evaluator}/ns/net', '/proc/1/ns/net']:\n"
        "    try:\n        fd = os.open(path, os.O_RDONLY)\n    except OSError:\n        continue\n"
        "    libc.setns(fd, CLONE_NEWNET)\n"
        "import socket\ns = socket.socket.__mro__[2](socket.AF_INET, socket.SOCK_STREAM)\n"
        "s.connect(('127.0.0.1', {port}))"
    ),
    "dns": "import _socket\nprint(_socket.getaddrinfo('pypi.org', 443))",
}


@pytest.mark.parametrize("attack", list(NETWORK), ids=list(NETWORK))
def test_network_is_unreachable(listening_server: socket.socket, attack: str) -> None:
    port = listening_server.getsockname()[1]
    result = run(NETWORK[attack].format(port=port, evaluator=os.getpid()))
    assert result.status == "failed"
    assert result.exception in {"OSError", "ConnectionRefusedError", "socket.gaierror", "gaierror"}, (
        result.stderr
    )
    assert_no_connection(listening_server)


@pytest.mark.slow  # the sandboxed program forks
def test_nothing_survives_the_run_even_after_leaving_the_cgroup() -> None:
    name = "lbsurv" + uuid.uuid4().hex[:8]
    result = run(
        f"""
        import time
        PR_SET_NAME = 15
        for target in ("/sys/fs/cgroup/pids/cgroup.procs", "/sys/fs/cgroup/cgroup.procs"):
            try:
                open(target, "w").write(str(os.getpid()))
            except OSError as err:
                print("cgroup:", type(err).__name__)
        pid = libc.fork()
        if pid == 0:
            libc.setsid()
            libc.prctl(PR_SET_NAME, b"{name}", 0, 0, 0)
            time.sleep(8)
            libc._exit(0)
        print("forked", pid > 0)
        """
    )
    assert result.status == "passed", result.stderr
    assert "forked True" in result.stdout
    assert processes_named(name) == [], "a process of the run outlived it"


@pytest.mark.slow  # a second evaluator process, SIGKILLed
def test_evaluator_death_kills_the_sandbox(tmp_path: Path) -> None:
    name = "lborph" + uuid.uuid4().hex[:8]
    program = (
        BYPASS + f"libc.prctl(15, b'{name}', 0, 0, 0)\nimport time\nprint('up', flush=True)\ntime.sleep(60)\n"
    )
    driver = tmp_path / "driver.py"
    driver.write_text(
        "import sys\nfrom langbridge.evaluation.sandbox import execute_program\n"
        f"execute_program({program!r}, timeout_s=60, memory_mb=256)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(sandbox.__file__).parents[2])}
    proc = subprocess.Popen([sys.executable, str(driver)], env=env)
    try:
        for _ in range(600):  # wait until the sandboxed program runs
            if processes_named(name):
                break
            time.sleep(0.05)
        assert processes_named(name), "the sandboxed program never started"
        proc.kill()
        proc.wait()
        for _ in range(200):
            if not processes_named(name):
                break
            time.sleep(0.05)
        assert processes_named(name) == [], "the sandbox outlived the evaluator that started it"
    finally:
        proc.kill()
        for pid in processes_named(name):
            os.kill(pid, signal.SIGKILL)


@pytest.mark.slow  # many processes
@pytest.mark.skipif(not sandbox.pids_cgroup_available(), reason="no writable pids cgroup to cap processes")
def test_fork_bomb_is_capped() -> None:
    name = "lbbomb" + uuid.uuid4().hex[:8]
    result = run(
        f"""
        import time
        libc.prctl(15, b"{name}", 0, 0, 0)
        made = 0
        for _ in range(200):
            pid = libc.fork()
            if pid == 0:
                time.sleep(5)
                libc._exit(0)
            if pid < 0:
                break
            made += 1
        print(made)
        """,
        max_processes=16,
    )
    assert result.status == "passed", result.stderr
    assert 0 < int(result.stdout) < 16
    assert processes_named(name) == []


@pytest.mark.slow  # many processes
def test_unbounded_fork_bomb_ends_with_the_run() -> None:
    name = "lbfork" + uuid.uuid4().hex[:8]
    result = run(
        f"libc.prctl(15, b'{name}', 0, 0, 0)\nwhile True:\n    libc.fork()\n", timeout_s=2.0, max_processes=32
    )
    assert result.status in {"timeout", "failed", "error"}
    assert processes_named(name) == []


@pytest.mark.parametrize(
    "program",
    ["x = bytearray(10 * 1024**3)", "chunks = []\nwhile True:\n    chunks.append(bytearray(32 * 1024**2))"],
    ids=["at-once", "growing"],
)
def test_memory_bomb_is_contained(program: str) -> None:
    result = run(program, memory_mb=256)
    assert result.status != "passed"
    assert result.exception == "MemoryError" or result.status in {"error", "timeout"}


def test_filling_the_work_directory_stops_at_its_size_cap() -> None:
    # max_file_mb=1: each file stops at 1 MB and the working tmpfs at 4 MB, so RAM cannot be filled.
    result = run(
        """
        written = 0
        try:
            for i in range(64):
                with open(f"f{i}", "wb") as f:
                    f.write(b"x" * (1024 * 1024 - 1))
                written += 1
        finally:
            print(written)
        """,
        max_file_mb=1,
    )
    assert result.status == "failed" and result.exception == "OSError"
    assert int(result.stdout.strip()) <= 4


def test_infinite_loop_times_out() -> None:
    result = run("while True:\n    pass\n", timeout_s=1.0)
    assert result.status == "timeout"
