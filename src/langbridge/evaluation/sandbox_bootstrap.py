"""The in-process guard: Python run in the sandboxed interpreter before the program (a second layer).

Kept dependency-free (stdlib only) and executed by ``python -I -B``, so nothing from the caller's environment
or working directory is imported. It sets the kernel resource limits, then makes process creation,
signalling other processes, sockets, and changing paths outside the work directory raise
``PermissionError``. Python-level guards can be bypassed (``ctypes`` can be re-imported, ``__subclasses__``),
so the boundary is bubblewrap (:mod:`langbridge.evaluation.bwrap`); this layer turns common accidents in
model output into clear failures.
"""

from __future__ import annotations

# Runs in the child before the program. Kept dependency-free (stdlib only) and executed by `python -I -B`,
# so nothing from the caller's environment or working directory is imported.
BOOTSTRAP = r'''
import builtins, io, json, os, sys, traceback

WORK, REPORT, CONFIG = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
_open = io.open
if REPORT.startswith("fd:"):  # inside bubblewrap: the report goes to an inherited descriptor
    REPORT = int(REPORT[3:])


def _report(data):
    with _open(REPORT, "w", encoding="utf-8", closefd=not isinstance(REPORT, int)) as f:
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
