"""The code-execution sandbox: containment (all scored as failures, host unharmed), scoring, pass@k."""

from __future__ import annotations

import gzip
import itertools
import json
import math
import os
import signal
import socket
import stat
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_no_connection

from langbridge.evaluation import sandbox
from langbridge.evaluation.bwrap import bwrap_problem
from langbridge.evaluation.sandbox import (
    ExecutionResult,
    check_correctness,
    estimate_pass_at_k,
    execute_program,
    humaneval_program,
    network_namespace_available,
    pass_at_k,
    run_many,
)

# Tests that need no sandboxed run (pure functions, argument checks, the missing-bubblewrap paths).
WITHOUT_BWRAP = {
    "test_without_bubblewrap_generated_code_is_refused_with_the_fix",
    "test_unsafe_local_exec_runs_the_old_way_loudly",
    "test_eval_cli_refuses_code_tasks_without_bubblewrap_before_loading_a_model",
    "test_bad_arguments_are_rejected",
    "test_signal_deaths_are_classified",
    "test_humaneval_program_layout",
    "test_run_many_rejects_bad_jobs",
    "test_run_many_runs_up_to_max_workers_jobs_at_once",
    "test_requiring_a_network_namespace_where_none_works_is_a_clear_error",
    "test_network_namespace_holds_when_the_python_guard_is_bypassed",
}


@pytest.fixture(autouse=True)
def _skip_without_bwrap(request: pytest.FixtureRequest) -> None:
    name = request.node.originalname
    if (
        name not in WITHOUT_BWRAP
        and not name.startswith(("test_pass_at_k", "test_estimate"))
        and bwrap_problem()
    ):
        pytest.skip(f"bubblewrap sandbox unavailable ({bwrap_problem()}); apt-get install bubblewrap")


# Short limits keep the suite fast and light on a 2-core CI machine.
FAST = {"timeout_s": 3.0, "memory_mb": 256}


def run(program: str, **kwargs) -> ExecutionResult:
    return execute_program(textwrap.dedent(program), **{**FAST, **kwargs})


# --------------------------------------------------------------------------------------------- basics


def test_passing_program_captures_stdout_and_stderr() -> None:
    result = run(
        """
        import sys
        print("hello from the sandbox")
        print("a warning", file=sys.stderr)
        """
    )
    assert result.status == "passed" and result.passed
    assert result.returncode == 0
    assert result.stdout == "hello from the sandbox\n"
    assert result.stderr == "a warning\n"
    assert result.exception is None
    assert 0 < result.duration_s < FAST["timeout_s"]


def test_uncaught_exception_fails_with_its_type_and_traceback() -> None:
    result = run("print('before')\nraise ValueError('boom')\n")
    assert result.status == "failed"
    assert result.returncode == 1
    assert result.exception == "ValueError"
    assert result.stdout == "before\n"
    assert "ValueError: boom" in result.stderr


def test_syntax_error_is_a_failure() -> None:
    result = run("def broken(:\n    return 1\n")
    assert result.status == "failed"
    assert result.exception == "SyntaxError"
    assert "SyntaxError" in result.stderr


@pytest.mark.parametrize("exit_code", ["sys.exit(0)", "os._exit(0)", "exit()"])
def test_leaving_before_the_end_is_not_a_pass(exit_code: str) -> None:
    # A completion must not be able to skip the HumanEval check() call by exiting cleanly first.
    result = run(f"import os, sys\n{exit_code}\nraise AssertionError('tests would run here')\n")
    assert result.status == "failed"
    assert result.returncode == 0
    assert "before" in result.detail


def test_output_tail_is_truncated() -> None:
    result = run("for i in range(20000):\n    print(i)\n", max_output_chars=50)
    assert result.status == "passed"
    assert result.stdout.startswith("[... output truncated")
    assert result.stdout.endswith("19998\n19999\n")
    assert len(result.stdout) < 200


def test_environment_and_working_directory_are_private(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LANGBRIDGE_TEST_SECRET", "do-not-leak")
    result = run(
        """
        import os, sys
        open("scratch.txt", "w").write("writing inside the sandbox is fine")
        os.remove("scratch.txt")
        print(os.getcwd())
        print(sorted(os.environ))
        print(sys.flags.isolated)
        """
    )
    assert result.status == "passed", result.stderr
    cwd, env_keys, isolated = result.stdout.splitlines()
    assert "LANGBRIDGE_TEST_SECRET" not in env_keys and "do-not-leak" not in result.stdout
    assert isolated == "1"
    assert not Path(cwd).exists(), "the throwaway working directory must be deleted afterwards"


def test_kernel_limits_are_applied_in_the_child() -> None:
    result = run("print(open('/proc/self/limits').read())", memory_mb=300, max_file_mb=5, timeout_s=2.5)
    assert result.status == "passed", result.stderr
    limits = {}
    for line in result.stdout.splitlines()[1:]:
        if line.strip():
            name, soft = line[:26].strip(), line[26:47].strip()
            limits[name] = soft
    assert limits["Max address space"] == str(300 * 1024 * 1024)
    assert limits["Max file size"] == str(5 * 1024 * 1024)
    assert limits["Max cpu time"] == str(math.ceil(2.5) + 1)
    assert limits["Max core file size"] == "0"
    assert limits["Max processes"] != "unlimited"


# ----------------------------------------------------------------------------------------- containment


@pytest.mark.parametrize(
    "program", ["while True:\n    pass\n", "import time\ntime.sleep(60)\n"], ids=["busy-loop", "sleep"]
)
def test_hanging_program_times_out(program: str) -> None:
    result = run("print('started', flush=True)\n" + program + "print('finished')\n", timeout_s=1.5)
    # Killed by the timeout (not waited out: the program never reaches its last line), and not before it.
    assert result.status == "timeout"
    assert result.returncode == -signal.SIGKILL
    assert result.stdout == "started\n"
    assert result.duration_s >= 1.5


def _process_table() -> dict[int, tuple[int, int, str]]:
    """pid -> (ppid, session id, state) for every process, from /proc."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            text = Path("/proc", entry, "stat").read_text()
        except OSError:
            continue  # exited meanwhile
        fields = text[text.rindex(")") + 2 :].split()
        table[int(entry)] = (int(fields[1]), int(fields[3]), fields[0])
    return table


class SessionWatcher:
    """Samples, while a sandbox runs, how many processes live in the sessions of this process's children.

    The sandboxed interpreter is started in a new session, so everything it forks shares its session id.
    """

    def __init__(self) -> None:
        self.sessions: set[int] = set()
        self.counts: list[int] = []
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch)

    def _watch(self) -> None:
        while not self._done.is_set():
            table = _process_table()
            self.sessions |= {pid for pid, (ppid, _, _) in table.items() if ppid == os.getpid()}
            self.counts.append(sum(1 for _, sid, _ in table.values() if sid in self.sessions))
            time.sleep(0.005)

    def __enter__(self) -> SessionWatcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()

    def survivors(self) -> int:
        """Live (non-zombie) processes still in the watched sessions."""
        return sum(1 for _, sid, state in _process_table().values() if sid in self.sessions and state != "Z")


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc to count processes")
def test_fork_bomb_is_refused_and_process_count_stays_bounded() -> None:
    with SessionWatcher() as watcher:
        # The pause lets the watcher see the sandboxed process before the bomb goes off.
        result = run("import os, time\ntime.sleep(0.5)\nwhile True:\n    os.fork()\n")
    assert result.status == "failed"
    assert result.exception == "PermissionError"
    assert "fork" in result.stderr
    assert max(watcher.counts) >= 1, "the watcher never saw the sandboxed process, so it measured nothing"
    assert max(watcher.counts) <= 2
    assert watcher.survivors() == 0, "nothing the sandbox started may outlive it"


# Re-importing ctypes undoes the import block: a deliberate bypass of the in-process guard. The program is
# bounded (150 forks whose children sleep) so it cannot hurt the machine even if no kernel cap held.
BYPASSING_FORK_BOMB = """
import sys, time
del sys.modules["ctypes"], sys.modules["_ctypes"]
import ctypes
libc = ctypes.CDLL(None)
made = 0
for _ in range(150):
    pid = libc.fork()
    if pid == 0:
        time.sleep(5)
        libc._exit(0)
    if pid < 0:
        break
    made += 1
print(made)
"""


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc to count processes")
@pytest.mark.skipif(
    os.geteuid() == 0 and not sandbox.pids_cgroup_available(),
    reason="as root only a pids cgroup caps processes at kernel level, and none is writable here",
)
@pytest.mark.slow  # many processes
def test_kernel_caps_processes_when_the_guard_is_bypassed() -> None:
    max_processes = 12
    with SessionWatcher() as watcher:
        result = run(BYPASSING_FORK_BOMB, max_processes=max_processes)
    assert result.status == "passed", result.stderr
    made = int(result.stdout)
    slack = 4  # RLIMIT_NPROC counts the user's other processes, which come and go meanwhile
    assert 0 < made < max_processes + slack
    assert 1 <= max(watcher.counts) <= max_processes + slack
    assert watcher.survivors() == 0, "the sleeping children must be killed with the sandbox"


@pytest.mark.parametrize(
    "program",
    [
        "import subprocess\nsubprocess.run(['sh', '-c', 'sleep 30'])",
        "import os\nos.system('sleep 30')",
        "import os\nos.execv('/bin/sh', ['sh', '-c', 'sleep 30'])",
        "import multiprocessing\np = multiprocessing.Process(target=print)\np.start()",
        "import os\nos.posix_spawn('/bin/sh', ['sh'], {})",
        "import os\nos.kill(os.getppid(), 9)",
        "import ctypes\nctypes.CDLL(None).fork()",
    ],
    ids=["subprocess", "os.system", "os.execv", "multiprocessing", "posix_spawn", "kill-parent", "ctypes"],
)
def test_process_creation_and_signalling_are_refused(program: str) -> None:
    result = run(program)
    assert result.status == "failed"
    assert result.exception in {"PermissionError", "ModuleNotFoundError"}
    assert result.duration_s < FAST["timeout_s"]


@pytest.mark.parametrize(
    "program",
    [
        "x = bytearray(10 * 1024**3)",
        "chunks = []\nwhile True:\n    chunks.append(bytearray(32 * 1024**2))",
    ],
    ids=["10GB-at-once", "grow-until-full"],
)
def test_memory_blow_up_is_contained(program: str) -> None:
    result = run(program, memory_mb=256)
    assert result.status != "passed"
    assert result.exception == "MemoryError" or result.status in {"error", "timeout"}


def test_file_size_limit() -> None:
    result = run("open('big.bin', 'wb').write(b'x' * (3 * 1024 * 1024))", max_file_mb=1)
    assert result.status == "failed"
    assert result.exception == "OSError"  # EFBIG: CPython ignores SIGXFSZ so the write raises


@pytest.fixture
def victims(tmp_path: Path) -> dict[str, Path]:
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    folder = tmp_path / "victim_dir"
    folder.mkdir()
    (folder / "inner.txt").write_text("also precious")
    return {"file": victim, "dir": folder}


DELETIONS = {
    "os.remove": "os.remove({file!r})",
    "os.unlink-keyword": "os.unlink(path={file!r})",
    "pathlib.unlink": "pathlib.Path({file!r}).unlink()",
    "shutil.rmtree": "shutil.rmtree({dir!r})",
    "os.rmdir-after-emptying": "os.remove(os.path.join({dir!r}, 'inner.txt'))\nos.rmdir({dir!r})",
    "os.rename-into-sandbox": "os.rename({file!r}, 'stolen.txt')",
    "shutil.move": "shutil.move({file!r}, 'stolen.txt')",
    "truncate-by-open": "open({file!r}, 'w').write('')",
    "os.open-trunc": "os.open({file!r}, os.O_WRONLY | os.O_TRUNC)",
    "os.truncate": "os.truncate({file!r}, 0)",
    "os.chmod": "os.chmod({file!r}, 0)",
    "relative-path": "os.remove(os.path.relpath({file!r}))",
    "symlink-trick": "os.symlink({dir!r}, 'link')\nos.remove('link/inner.txt')",
    "hardlink-trick": "os.link({file!r}, 'hard')\nopen('hard', 'w').write('')",
}


@pytest.mark.parametrize("attack", list(DELETIONS), ids=list(DELETIONS))
def test_files_outside_the_sandbox_are_untouched(attack: str, victims: dict[str, Path]) -> None:
    file_mode = victims["file"].stat().st_mode
    program = "import os, pathlib, shutil\n" + DELETIONS[attack].format(
        file=str(victims["file"]), dir=str(victims["dir"])
    )
    result = run(program)
    assert result.status == "failed"
    assert result.exception == "PermissionError", result.stderr
    assert victims["file"].read_text() == "precious"
    assert stat.S_IMODE(victims["file"].stat().st_mode) == stat.S_IMODE(file_mode)
    assert (victims["dir"] / "inner.txt").read_text() == "also precious"


@pytest.mark.parametrize("network_namespace", [None, False], ids=["auto", "guard-only"])
@pytest.mark.parametrize(
    "connect",
    [
        "socket.create_connection(('127.0.0.1', {port}), timeout=1)",
        "s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)\ns.connect(('127.0.0.1', {port}))",
        "import _socket\ns = _socket.socket(_socket.AF_INET, _socket.SOCK_STREAM)\ns.connect(('127.0.0.1', {port}))",
    ],
    ids=["create_connection", "socket.socket", "_socket"],
)
def test_network_is_refused(
    listening_server: socket.socket, connect: str, network_namespace: bool | None
) -> None:
    port = listening_server.getsockname()[1]
    result = run("import socket\n" + connect.format(port=port), network_namespace=network_namespace)
    assert result.status == "failed"
    assert result.exception == "PermissionError"
    assert_no_connection(listening_server)


@pytest.mark.skipif(not network_namespace_available(), reason="`unshare -n` is not permitted on this machine")
def test_network_namespace_holds_when_the_python_guard_is_bypassed(listening_server: socket.socket) -> None:
    port = listening_server.getsockname()[1]
    # Digging the unpatched socket type out of the class hierarchy gets past the in-process guard ...
    bypass = f"import socket\ns = socket.socket.__mro__[2](socket.AF_INET, socket.SOCK_STREAM)\ns.connect(('127.0.0.1', {port}))"
    result = run(bypass, network_namespace=True, isolation="unsafe-local")
    # ... but the empty network namespace has no route to the host's loopback.
    assert result.status == "failed"
    assert result.exception == "OSError"
    assert_no_connection(listening_server)


def test_requiring_a_network_namespace_where_none_works_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sandbox, "network_namespace_available", lambda: False)
    with pytest.raises(RuntimeError, match="unshare -n"):
        execute_program("pass", network_namespace=True, isolation="unsafe-local")


@pytest.fixture
def no_bwrap(monkeypatch: pytest.MonkeyPatch) -> None:
    from langbridge.evaluation import bwrap

    monkeypatch.setattr(bwrap, "bwrap_problem", lambda: "bubblewrap (bwrap) is not installed")
    monkeypatch.setattr(sandbox, "_UNSAFE_LOCAL_EXEC", False)
    sandbox._warn_unsafe_once.cache_clear()


def test_without_bubblewrap_generated_code_is_refused_with_the_fix(no_bwrap: None) -> None:
    with pytest.raises(sandbox.SandboxUnavailable) as info:
        execute_program("print('should not run')")
    message = str(info.value)
    assert "apt-get install bubblewrap" in message and "--unsafe-local-exec" in message
    assert "\n" not in message
    with pytest.raises(sandbox.SandboxUnavailable):
        run_many(["pass"])


def test_unsafe_local_exec_runs_the_old_way_loudly(no_bwrap: None) -> None:
    sandbox.allow_unsafe_local_exec()
    try:
        with pytest.warns(RuntimeWarning, match="WITHOUT a sandbox"):
            result = run("print('ran')")
    finally:
        sandbox.allow_unsafe_local_exec(False)
    assert result.status == "passed" and result.stdout == "ran\n"


def test_eval_cli_refuses_code_tasks_without_bubblewrap_before_loading_a_model(
    no_bwrap: None, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from langbridge.cli import main

    missing_model = str(tmp_path / "no-such-model")
    assert main(["eval", missing_model, "--tasks", "humaneval", "--output", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "apt-get install bubblewrap" in err and "\n" not in err
    assert not (tmp_path / "out").exists()
    try:
        # With the flag it goes on (and fails later, on the missing model, not on the sandbox).
        with pytest.warns(RuntimeWarning, match="WITHOUT a sandbox"):
            main(["eval", missing_model, "--tasks", "humaneval", "--unsafe-local-exec"])
        assert "bubblewrap" not in capsys.readouterr().err.split("RuntimeWarning")[-1].split("\n", 1)[-1]
    finally:
        sandbox.allow_unsafe_local_exec(False)
        sandbox._warn_unsafe_once.cache_clear()


def test_bad_arguments_are_rejected() -> None:
    with pytest.raises(TypeError, match="program must be"):
        execute_program(b"print(1)")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="timeout_s"):
        execute_program("pass", timeout_s=0)
    with pytest.raises(ValueError, match="memory_mb"):
        execute_program("pass", memory_mb=16)
    with pytest.raises(ValueError, match="max_processes"):
        execute_program("pass", max_processes=2.5)  # type: ignore[arg-type]


def test_signal_deaths_are_classified() -> None:
    assert sandbox._classify(-signal.SIGXCPU, False, 3.0, {})[0] == "timeout"
    status, detail = sandbox._classify(-signal.SIGSEGV, False, 3.0, {})
    assert status == "error" and "SIGSEGV" in detail
    assert sandbox._classify(1, False, 3.0, {"sandbox_error": "x"})[0] == "error"


# --------------------------------------------------------------------------------------- HumanEval style

PROMPT = 'def add(a: int, b: int) -> int:\n    """Return the sum of a and b."""\n'
TEST = "def check(candidate):\n    assert candidate(2, 3) == 5\n    assert candidate(-1, 1) == 0\n"


def test_humaneval_program_layout() -> None:
    program = humaneval_program(PROMPT, "    return a + b\n", TEST, "add")
    assert program == PROMPT + "    return a + b\n" + "\n" + TEST + "\ncheck(add)\n"
    with pytest.raises(ValueError, match="entry_point"):
        humaneval_program(PROMPT, "", TEST, "add; import os")


@pytest.mark.parametrize(
    ("completion", "expected", "exception"),
    [
        ("    return a + b\n", "passed", None),
        ("    return a - b\n", "failed", "AssertionError"),
        ("    return a +\n", "failed", "SyntaxError"),
        ("    import sys\n    sys.exit(0)\nimport sys\nsys.exit(0)\n", "failed", "SystemExit"),
        ("    while True:\n        pass\n", "timeout", None),
    ],
    ids=["correct", "wrong", "syntax-error", "exits-before-check", "infinite-loop"],
)
def test_check_correctness(completion: str, expected: str, exception: str | None) -> None:
    result = check_correctness(PROMPT, completion, TEST, "add", timeout_s=1.5, memory_mb=256)
    assert result.status == expected, result.stderr
    assert result.exception == exception


@pytest.mark.slow  # two sandboxes at once
def test_run_many_keeps_order() -> None:
    # The first job finishes after the second (it sleeps); results still come back in job order.
    jobs = [
        {"program": "import time\ntime.sleep(0.6)\nprint('first')", **FAST},
        "print('second')",
        {"program": "raise KeyError('third')", **FAST},
        {"program": "import time\ntime.sleep(0.6)\nprint('fourth')", **FAST},
    ]
    results = run_many(jobs, max_workers=2, progress=True)
    assert [r.status for r in results] == ["passed", "passed", "failed", "passed"]
    assert [r.stdout for r in results] == ["first\n", "second\n", "", "fourth\n"]
    assert results[2].exception == "KeyError"


def test_run_many_runs_up_to_max_workers_jobs_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    # Each job waits at a two-party barrier: it is released only while another job runs at the same time, so
    # serial execution would break the barrier instead of passing. The peak count shows the cap holds.
    barrier = threading.Barrier(2, timeout=60)
    lock = threading.Lock()
    running, peak = [0], [0]

    def fake_execute(program: str, **kwargs) -> ExecutionResult:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        try:
            barrier.wait()
        finally:
            with lock:
                running[0] -= 1
        return ExecutionResult("passed", 0, program, "", 0.0)

    monkeypatch.setattr(sandbox, "execute_program", fake_execute)
    results = run_many([f"job {i}" for i in range(6)], max_workers=2)
    assert [r.stdout for r in results] == [f"job {i}" for i in range(6)]
    assert peak[0] == 2


def test_run_many_rejects_bad_jobs() -> None:
    with pytest.raises(ValueError, match="max_workers"):
        run_many(["pass"], max_workers=0)
    with pytest.raises(TypeError, match="job 1"):
        run_many(["pass", 42])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="job 0 .*'program'"):
        run_many([{"timeout_s": 1.0}])
    assert run_many([]) == []


def _shared_dir() -> Path:
    return Path(os.environ.get("LANGBRIDGE_SHARED", Path(__file__).resolve().parents[1].parent / "shared"))


HUMANEVAL = _shared_dir() / "data" / "humaneval" / "HumanEval.jsonl.gz"


@pytest.mark.skipif(not HUMANEVAL.exists(), reason=f"HumanEval data not found at {HUMANEVAL}")
def test_humaneval_canonical_solutions_pass_and_empty_bodies_fail() -> None:
    with gzip.open(HUMANEVAL, "rt", encoding="utf-8") as f:
        problems = [json.loads(line) for line in itertools.islice(f, 10)]
    jobs = []
    for body in ("canonical", "    pass\n"):
        for p in problems:
            completion = p["canonical_solution"] if body == "canonical" else body
            program = humaneval_program(p["prompt"], completion, p["test"], p["entry_point"])
            jobs.append({"program": program, "timeout_s": 10.0, "memory_mb": 512})
    results = run_many(jobs, max_workers=2)
    canonical, empty = results[:10], results[10:]
    assert [r.status for r in canonical] == ["passed"] * 10, [
        (p["task_id"], r.stderr) for p, r in zip(problems, canonical, strict=True)
    ]
    assert all(r.status == "failed" for r in empty)


# ------------------------------------------------------------------------------------------------ pass@k


@pytest.mark.parametrize(
    ("n", "c", "k", "expected"),
    [
        (5, 2, 1, 0.4),  # pass@1 is the fraction correct
        (5, 2, 2, 0.7),  # 1 - C(3,2)/C(5,2) = 1 - 3/10
        (10, 3, 5, 1 - 21 / 252),  # 1 - C(7,5)/C(10,5)
        (10, 0, 1, 0.0),
        (10, 0, 10, 0.0),
        (4, 4, 2, 1.0),  # c == n
        (10, 8, 3, 1.0),  # k > n - c: every draw of 3 contains a correct sample
        (1, 1, 1, 1.0),
    ],
)
def test_pass_at_k_hand_computed(n: int, c: int, k: int, expected: float) -> None:
    assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12)


def test_pass_at_k_matches_the_combinatorial_definition() -> None:
    for n in range(1, 13):
        for c in range(n + 1):
            for k in range(1, n + 1):
                exact = 1 - math.comb(n - c, k) / math.comb(n, k)
                assert pass_at_k(n, c, k) == pytest.approx(exact, abs=1e-12), (n, c, k)


def test_pass_at_k_rejects_impossible_counts() -> None:
    with pytest.raises(ValueError, match="k must be between 1 and n"):
        pass_at_k(5, 2, 6)
    with pytest.raises(ValueError, match="c \\(correct samples\\)"):
        pass_at_k(5, 6, 1)
    with pytest.raises(ValueError, match="n \\(samples"):
        pass_at_k(0, 0, 1)
    with pytest.raises(TypeError, match="integer"):
        pass_at_k(5, 2.0, 1)  # type: ignore[arg-type]


def test_estimate_pass_at_k() -> None:
    per_problem = estimate_pass_at_k([5, 10, 4], [2, 0, 4], 1)
    assert isinstance(per_problem, np.ndarray)
    np.testing.assert_allclose(per_problem, [0.4, 0.0, 1.0])
    np.testing.assert_allclose(estimate_pass_at_k(5, [2, 5], 2), [0.7, 1.0])
    with pytest.raises(ValueError, match="one per problem"):
        estimate_pass_at_k([5, 5], [1], 1)
