"""Warm start: a launcher that runs ``python -m mtlrobust STAGE ...`` as a child forked from a worker that
imported torch once, or runs it cold.

Why: ``import torch`` (plus ``torch._dynamo``, which torch's optimizers import on their first step) costs
2.8-4.6 CPU-s per process, ~21 % of the default study's CPU when each of its torch jobs pays it. A forked
child starts with everything imported; the hand-over costs ~0.3 CPU-s.

How: for local runs the workflow writes its torch commands as ``python -m mtlrobust.warmstart run --
python -m mtlrobust STAGE ...``. The launcher hands the command's arguments, working directory, environment,
umask, resource limits, nice value, CPU affinity and stdin/stdout/stderr to this environment's worker; the
worker forks a child that takes all of them on (or refuses when it cannot, e.g. a hard limit above the
worker's) and runs ``python -m mtlrobust STAGE ...`` in itself. The launcher passes Ctrl-C, SIGTERM and
SIGHUP on to the child and ends as the child ended (its exit status, or its signal); if the launcher is
killed, the child is ended. Whenever no worker serves the command (none yet, a refusal, no answer within
``MTLROBUST_WARM_TIMEOUT`` seconds, another user's socket, ``--help``, ``MTLROBUST_WARM=0``, a SLURM job)
the launcher execs the command cold; with no worker yet it first starts one in the background, which exits
after ``MTLROBUST_WARM_IDLE`` seconds without a job.

Safety: the socket lives in Linux's abstract namespace (no file anyone could swap), each side checks the
other's uid (SO_PEERCRED), and the worker's log and failure marks are opened relative to a directory
descriptor that was opened without following links and checked (this user's, mode 0700) on the descriptor.
The worker starts with only the environment variables its fingerprint covers, so a child's
``/proc/PID/environ`` never shows another job's variables.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import hashlib
import importlib
import importlib.util
import io
import json
import math
import os
import random
import resource
import runpy
import select
import signal
import socket
import stat
import struct
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path

ENV = "MTLROBUST_WARM"
IDLE_ENV = "MTLROBUST_WARM_IDLE"
TIMEOUT_ENV = "MTLROBUST_WARM_TIMEOUT"
# Where a forked job writes its own wall time, CPU time and peak memory (the workflow's train and evaluate
# rules set it next to their benchmark: file, which sees only the launcher of a warm job).
STATS_ENV = "MTLROBUST_WARM_STATS"
# What a child would otherwise import itself: torch, what its optimizers import on their first step, and the
# modules of the stages the workflow launches (named, not imported from the command line: no import cycle).
PRELOAD = ("torch", "torch._dynamo", "mtlrobust.train", "mtlrobust.evaluate", "mtlrobust.analysis.theory")
# Read by the interpreter or by libraries when they load (locale, thread pools: OMP_NUM_THREADS, ...): a
# worker serves only commands with the values it was started with, and starts with nothing else.
IMPORT_TIME_ENV = ("PYTHON", "TORCH", "PYTORCH", "LD_", "CUDA", "OMP_", "GOMP_", "KMP_", "MKL_", "OPENBLAS_",
                   "GOTO_", "VECLIB_", "NUMEXPR_", "NUMPY_", "TRITON_", "LANG", "LC_")  # fmt: skip
RLIMITS = sorted({getattr(resource, n): n for n in dir(resource) if n.startswith("RLIMIT_")}.values())
FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
_INT = struct.Struct("!i")
_MSG = struct.Struct("!ii")  # (kind, value)
STARTED, REFUSED, EXITED, WAITED = 1, 2, 3, 4  # pid; 0; the stage's exit status; the worker's wait status
REQUEST_MAX = 16 << 20
_TITLE_ROOM = 4096  # bytes of the worker's argument area that a child's command line can be written over


def enabled() -> bool:
    """Whether a launched command may use a worker: not turned off, on Linux, and not inside a SLURM job."""
    return (
        os.environ.get(ENV, "") != "0"
        and sys.platform.startswith("linux")
        and "SLURM_JOB_ID" not in os.environ
    )


def seconds(var: str, default: float) -> float:
    """A positive number of seconds from the environment variable VAR."""
    raw = os.environ.get(var) or str(default)
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"{var}={raw!r}: expected a positive number of seconds")
    return value


def fingerprint(package_dir: str | os.PathLike | None = None) -> str:
    """Hash of what a worker's state depends on: interpreter, import-time environment, cgroup, hard
    resource limits and nice value, sources."""
    h = hashlib.sha256()
    exe = os.stat(os.path.realpath(sys.executable))
    h.update(f"{sys.executable}|{sys.prefix}|{exe.st_dev}|{exe.st_ino}|{sys.version}".encode())
    for key in sorted(k for k in os.environ if k.startswith(IMPORT_TIME_ENV)):
        h.update(f"\0{key}={os.environ[key]}".encode(errors="surrogateescape"))
    with contextlib.suppress(OSError):  # a child stays in the worker's cgroup (CPU and memory controllers)
        h.update(Path("/proc/self/cgroup").read_bytes())
    # What a child could not take on from a worker started elsewhere: a hard limit above the worker's, a
    # nice value below it (soft limits and CPU affinity are carried over by each request).
    hard = [resource.getrlimit(getattr(resource, n))[1] for n in RLIMITS]
    h.update(f"\0{hard}|{os.getpriority(os.PRIO_PROCESS, 0)}".encode())
    spec = importlib.util.find_spec("torch")
    for loc in (spec.submodule_search_locations or []) if spec else []:
        with contextlib.suppress(OSError):
            h.update(f"\0torch|{loc}|{os.stat(os.path.join(loc, 'version.py')).st_mtime_ns}".encode())
    root = Path(package_dir or Path(__file__).parent).resolve()
    for path in sorted(root.rglob("*.py")):
        h.update(f"\0{path.relative_to(root)}\0".encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def private_dir() -> int | None:
    """A descriptor of this user's directory for worker logs and failure marks, or None when it is not
    safely ours. The last component is opened without following a link, and owner and mode are checked on
    the descriptor, so a directory swapped in after a check is never used."""
    base = os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()
    name = f"mtlrobust-warm-{os.geteuid()}"
    try:
        parent = os.open(base, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        with contextlib.suppress(FileExistsError):
            os.mkdir(name, 0o700, dir_fd=parent)
        fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent)
    except OSError:
        return None
    finally:
        os.close(parent)
    if not is_private(fd):
        os.close(fd)
        return None
    return fd


def is_private(fd: int) -> bool:
    """A directory of this user that no one else may enter, list or write."""
    st = os.fstat(fd)
    return stat.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid() and not st.st_mode & 0o077


def open_in(dir_fd: int, name: str, flags: int) -> int:
    """Open NAME inside the verified directory, never through a link, and only if it is this user's
    regular file (O_NONBLOCK: a FIFO planted there must not block the open)."""
    fd = os.open(name, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o600, dir_fd=dir_fd)
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid():
        os.close(fd)
        raise PermissionError(f"{name} in the warm-start directory is not this user's regular file")
    return fd


def socket_name(dir_fd: int, key: str) -> str:
    """The worker's abstract socket name (without its leading NUL): user, directory and fingerprint."""
    st = os.fstat(dir_fd)
    return f"mtlrobust-warm-{os.geteuid()}-{st.st_dev:x}-{st.st_ino:x}-{key}"


def peer(sock: socket.socket) -> tuple[int, int]:
    """(pid, uid) of the process at the other end of a Unix socket, as the kernel recorded it."""
    pid, uid, _ = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
    return pid, uid


# ------------------------------------------------------------------------------ the launcher
def launch(command: list[str]) -> None:
    """Run COMMAND, ``python -m mtlrobust STAGE ...``, forked from the worker and end as it ended; exec it
    cold whenever no worker serves it (never returns)."""
    argv = stage_argv(command)
    if argv is not None and enabled():
        limit = seconds(TIMEOUT_ENV, 5)
        idle = seconds(IDLE_ENV, 120)
        outcome = run_warm(command, argv, limit, idle)
        if outcome is not None:
            end_like(*outcome)
    try:
        os.execvp(command[0], command)
    except OSError as e:  # as a shell reports it: 127 not found, 126 not runnable
        print(f"mtlrobust.warmstart: cannot run {command[0]}: {e.strerror}", file=sys.stderr)
        raise SystemExit(127 if isinstance(e, FileNotFoundError) else 126) from None


def stage_argv(command: list[str]) -> list[str] | None:
    """The stage's arguments when COMMAND is ``python -m mtlrobust ...`` and asks for no help or version
    text; None otherwise. Its interpreter must be the launcher's: a path to this very interpreter, or a
    name looked up in PATH as the launcher's own was (the workflow writes ``python`` for both; a pyenv or
    conda shim resolves both alike)."""
    if len(command) < 4 or command[1:3] != ["-m", "mtlrobust"]:
        return None
    if "/" in command[0] and os.path.abspath(command[0]) != os.path.abspath(sys.executable):
        return None
    asks_help = any(a == "-h" or a == "--version" or (len(a) > 2 and "--help".startswith(a)) for a in command)
    return None if asks_help else command[3:]


def run_warm(command: list[str], argv: list[str], limit: float, idle: float) -> tuple[int, int] | None:
    """Hand the command to the worker: (EXITED, status) or (WAITED, wait status) once its child ended,
    (0, 0) when the child vanished unreported, None when no child ran it (the caller runs it cold)."""
    dir_fd = private_dir()
    if dir_fd is None:
        return None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        key = fingerprint()
        name = socket_name(dir_fd, key)
        deadline = time.monotonic() + limit
        sock.settimeout(limit)
        try:
            sock.connect("\0" + name)
        except ConnectionRefusedError:  # no worker, or one still importing
            spawn(dir_fd, key, name, idle, limit)
            return None
        except OSError:  # e.g. a stopped worker whose queue is full
            return None
        if peer(sock)[1] != os.geteuid():  # another user holds this name
            return None
        request = json.dumps(
            {
                "argv": argv,
                "command": command,
                "cwd": os.getcwd(),
                "env": dict(os.environ),
                "umask": _umask(),
                "nice": os.getpriority(os.PRIO_PROCESS, 0),
                "cpus": sorted(os.sched_getaffinity(0)),
                "limits": {n: list(resource.getrlimit(getattr(resource, n))) for n in RLIMITS},
            }
        ).encode(errors="surrogateescape")
        if len(request) > REQUEST_MAX:
            return None
        sock.sendall(_INT.pack(len(request)) + request)
        kind, pid = recv_msg(sock, deadline)
        if kind != STARTED:
            return None  # refused (its reason is in the worker's log) or closed: nothing ran
        pidfd = os.pidfd_open(pid) if hasattr(os, "pidfd_open") else None
        sock.settimeout(None)
        # The go, with stdin/stdout/stderr: only now, to a child that is waiting for them (descriptors
        # queued for a stopped worker would keep this command's pipes open).
        socket.send_fds(sock, [b"g"], [0, 1, 2])
        return wait_child(sock, pidfd, limit)
    except (OSError, ValueError):
        return None
    finally:
        sock.close()
        os.close(dir_fd)


def recv_msg(sock: socket.socket, deadline: float | None = None) -> tuple[int, int]:
    """One (kind, value) message; (0, 0) when the peer closed first; TimeoutError past DEADLINE."""
    buf = b""
    while len(buf) < _MSG.size:
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("the warm-start worker did not answer in time")
            sock.settimeout(left)
        chunk = sock.recv(_MSG.size - len(buf))
        if not chunk:
            return 0, 0
        buf += chunk
    return _MSG.unpack(buf)


def wait_child(sock: socket.socket, pidfd: int | None, limit: float) -> tuple[int, int]:
    """Pass signals on to the running child until it reports its end (or the worker reports it killed).
    A child that is gone with no report within LIMIT seconds (a stopped worker) gives (0, 0)."""

    def forward(signum, _frame):
        with contextlib.suppress(OSError):
            sock.send(bytes([signum]))

    before = {sig: signal.signal(sig, forward) for sig in FORWARDED}
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    if pidfd is not None:
        poller.register(pidfd, select.POLLIN)
    gone = None
    try:
        while True:
            wait_ms = None if gone is None else max(0, int((gone + limit - time.monotonic()) * 1000))
            ready = {fd for fd, _ in poller.poll(wait_ms)}
            if sock.fileno() in ready:
                kind, value = recv_msg(sock)
                if kind in (EXITED, WAITED) or kind == 0:
                    return kind, value
            elif pidfd in ready:
                poller.unregister(pidfd)
                gone = time.monotonic()
            elif gone is not None:
                return 0, 0
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)
        if pidfd is not None:
            os.close(pidfd)


def end_like(kind: int, value: int) -> None:
    """End this process as the child ended: its exit status, or killed by its signal."""
    if kind == EXITED:
        raise SystemExit(value)
    if kind == WAITED and os.WIFSIGNALED(value):
        sig = os.WTERMSIG(value)
        resource.setrlimit(resource.RLIMIT_CORE, (0, resource.getrlimit(resource.RLIMIT_CORE)[1]))
        with contextlib.suppress(OSError):  # SIGKILL and SIGSTOP keep their action
            signal.signal(sig, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, [sig])
        os.kill(os.getpid(), sig)
        raise SystemExit(128 + sig)
    if kind == WAITED:
        raise SystemExit(os.waitstatus_to_exitcode(value))
    print(
        "mtlrobust: the job's process (forked by the warm-start worker) ended without an exit status: it "
        "was killed",
        file=sys.stderr,
    )
    raise SystemExit(1)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def spawn(dir_fd: int, key: str, name: str, idle: float, limit: float) -> None:
    """Start a worker in the background (its own session, nobody's child in this job) with only the
    fingerprinted environment; not again once a worker of this fingerprint failed to import (see its log)."""
    with contextlib.suppress(FileNotFoundError):
        os.stat(f"{key}.failed", dir_fd=dir_fd, follow_symlinks=False)
        return
    try:
        log = open_in(dir_fd, f"{key}.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    except OSError:
        return
    env = {k: v for k, v in os.environ.items() if k.startswith(IMPORT_TIME_ENV)}
    package_parent = str(Path(__file__).resolve().parent.parent)  # the worker imports this very package
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_parent, env.get("PYTHONPATH")) if p)
    argv = [sys.executable, "-m", "mtlrobust.warmstart", "serve", name, str(dir_fd), key, f"{idle:g}",
            f"{limit:g}", "-" * _TITLE_ROOM]  # fmt: skip
    pid = os.fork()
    if pid == 0:  # intermediate: exits at once, so the worker is nobody's child in this job
        try:
            os.setsid()
            os.chdir("/")
            if os.fork() == 0:
                null = os.open(os.devnull, os.O_RDONLY)
                for target, fd in enumerate((null, log, log)):
                    os.dup2(fd, target)
                cpu = resource.getrlimit(resource.RLIMIT_CPU)[1]  # the job's soft CPU limit is not ours
                resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))
                os.set_inheritable(dir_fd, True)
                os.closerange(3, dir_fd)
                os.closerange(dir_fd + 1, os.sysconf("SC_OPEN_MAX"))
                os.execve(sys.executable, argv, env)
        finally:
            os._exit(0)
    os.close(log)
    os.waitpid(pid, 0)


# ------------------------------------------------------------------------------ the worker
def serve(name: str, dir_fd: int, key: str, idle: float, limit: float) -> int:
    """Import PRELOAD, then fork a child per request on the abstract socket NAME until idle; 0 also when
    another worker holds NAME (binding it is the lock)."""
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        srv.bind("\0" + name)
    except OSError:
        return 0
    set_title(["mtlrobust.warmstart", "worker", key], "mtlrobust-warm")
    if stat.S_ISREG((log := os.fstat(1)).st_mode) and log.st_size > 1 << 20:
        os.ftruncate(1, 0)  # the log (stdout): keep it from growing over runs
    try:
        if not is_private(dir_fd):
            raise PermissionError("the warm-start directory descriptor is not this user's private directory")
        for module in PRELOAD:
            importlib.import_module(module)
        if sys.modules["torch"].cuda.is_initialized():
            raise RuntimeError("CUDA was initialised while importing: children could not use it after fork")
    except BaseException:
        traceback.print_exc()
        with contextlib.suppress(OSError):  # commands of this fingerprint run cold from now on
            os.close(open_in(dir_fd, f"{key}.failed", os.O_WRONLY | os.O_CREAT))
        return 1
    os.close(dir_fd)
    srv.listen(64)
    wake_r, wake_w = socket.socketpair()
    wake_w.setblocking(False)
    signal.set_wakeup_fd(wake_w.fileno(), warn_on_full_buffer=False)
    signal.signal(signal.SIGCHLD, lambda *_: None)  # wakes the poll below: children are reaped there
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    worker = os.getpid()
    print(f"mtlrobust warm-start worker {worker}: ready on @{name} after {cpu_s():.2f} CPU-s", flush=True)
    jobs: dict[int, socket.socket] = {}  # child pid -> its command's connection (for the wait status)
    poller = select.poll()
    for s in (srv, wake_r):
        poller.register(s, select.POLLIN)
    last = time.monotonic()
    try:
        while True:
            ready = {fd for fd, _ in poller.poll(max(0.0, last + idle - time.monotonic()) * 1000)}
            if wake_r.fileno() in ready:
                with contextlib.suppress(BlockingIOError):
                    wake_r.recv(4096, socket.MSG_DONTWAIT)
            if reap(jobs) and not jobs:
                last = time.monotonic()
            if srv.fileno() in ready:
                conn, _ = srv.accept()
                try:
                    pid = accept_job(conn, limit, (srv, wake_r, wake_w, *jobs.values()))
                except Exception:  # one bad request must not end the worker
                    print(f"refused a request: {traceback.format_exc().strip().splitlines()[-1]}", flush=True)
                    pid = None
                if pid is None:
                    conn.close()
                else:
                    jobs[pid] = conn
                last = time.monotonic()
            elif not ready and not jobs and time.monotonic() >= last + idle:
                break
    finally:
        if os.getpid() == worker:  # not in a child that a signal caught between fork and its exit
            srv.close()
    print(f"mtlrobust warm-start worker {os.getpid()}: idle for {idle:g} s, exiting", flush=True)
    return 0


def reap(jobs: dict[int, socket.socket]) -> bool:
    """Collect ended children and send each command its child's wait status; whether any ended."""
    ended = False
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return ended
        if pid == 0:
            return ended
        ended = True
        conn = jobs.pop(pid, None)
        if conn is not None:
            with contextlib.suppress(OSError):
                conn.setblocking(False)
                conn.send(_MSG.pack(WAITED, status))
            conn.close()


def accept_job(conn: socket.socket, limit: float, worker_files: tuple) -> int | None:
    """Check the caller, read its request and fork its child; the child's pid, None for a caller that
    only looked (``stop``). The child never returns."""
    if peer(conn)[1] != os.geteuid():
        raise PermissionError(
            f"a process of uid {peer(conn)[1]} connected: only uid {os.geteuid()} is served"
        )
    conn.settimeout(limit)
    head = recv_exact(conn, _INT.size)
    if not head:
        return None
    if len(head) < _INT.size:
        raise ValueError("the request ended early")
    (size,) = _INT.unpack(head)
    if not 0 < size <= REQUEST_MAX:
        raise ValueError(f"a request of {size} bytes (at most {REQUEST_MAX})")
    body = recv_exact(conn, size)
    if len(body) < size:
        raise ValueError("the request ended early")
    request = check_request(json.loads(body.decode(errors="surrogateescape")))
    pid = os.fork()
    if pid:
        print(f"pid {pid}: mtlrobust {' '.join(request['argv'])}", flush=True)
        return pid
    run_child(conn, request, worker_files)
    raise AssertionError("unreachable")  # run_child exits


def check_request(request) -> dict:
    """The request, if it has every field with its type (anything else is refused before a fork)."""
    types = {"argv": list, "command": list, "cwd": str, "env": dict, "umask": int, "nice": int, "cpus": list,
             "limits": dict}  # fmt: skip
    if not isinstance(request, dict) or any(not isinstance(request.get(k), t) for k, t in types.items()):
        raise ValueError("a request without its fields")
    words = [*request["argv"], *request["command"], *request["env"], *request["env"].values()]
    limits = request["limits"].items()
    if not request["argv"] or not request["command"]:
        raise ValueError("a request without a command")
    if not all(isinstance(w, str) for w in words) or not all(isinstance(c, int) for c in request["cpus"]):
        raise ValueError("a request with a non-string argument or variable, or a non-integer CPU")
    if any(n not in RLIMITS or not (isinstance(v, list) and len(v) == 2) for n, v in limits):
        raise ValueError("a request with an unknown resource limit")
    return request


def run_child(conn: socket.socket, request: dict, worker_files: tuple) -> None:
    """In the forked child: take on the command's process context, report, wait for the go (with the
    command's stdio), run the stage and exit with its status; exit without running anything when the
    context cannot be reproduced or the command went cold meanwhile."""
    code, log = 1, os.dup(1)  # each job's CPU time goes to the worker's log
    try:
        signal.set_wakeup_fd(-1)
        for f in worker_files:  # the listening socket (a long job must not hold the name) and the others'
            f.close()
        conn.settimeout(None)
        refusal = take_context(request)
        if refusal:
            os.write(log, f"pid {os.getpid()}: refused, running cold: {refusal}\n".encode())
            conn.sendall(_MSG.pack(REFUSED, 0))
            code = 0
            return
        conn.sendall(_MSG.pack(STARTED, os.getpid()))
        go, fds, _, _ = socket.recv_fds(conn, 1, 3)
        if go != b"g" or len(fds) != 3:  # the command gave up waiting and runs cold: run nothing
            for fd in fds:
                os.close(fd)
            code = 0
            return
        start = time.monotonic()
        become(request, fds)
        stats = os.environ.get(STATS_ENV)  # read before the stage runs (it may change its environment)
        threading.Thread(target=follow_command, args=(conn,), daemon=True).start()
        code = run_stage(request["argv"])
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        done = f"pid {os.getpid()}: exit {code}, {cpu_s():.2f} CPU-s, max RSS {peak:.0f} MiB\n"
        os.write(log, done.encode())
        if stats:
            try:
                write_stats(stats, time.monotonic() - start)
            except OSError as e:
                os.write(log, f"pid {os.getpid()}: cannot write {stats}: {e}\n".encode())
        conn.sendall(_MSG.pack(EXITED, code))
    except BaseException:  # set-up or hand-over failed (the stage's own errors are run_stage's)
        os.write(log, f"pid {os.getpid()}: {traceback.format_exc()}".encode())
    finally:
        os._exit(code)


def take_context(request: dict) -> str | None:
    """Apply the command's working directory, resource limits, nice value and CPU affinity to this
    process; the reason when one cannot be reproduced (e.g. a hard limit above the worker's, a lower nice
    value)."""
    try:
        os.chdir(request["cwd"])
    except OSError as e:
        return f"working directory {request['cwd']}: {e.strerror}"
    for name, (soft, hard) in sorted(request["limits"].items()):
        try:
            resource.setrlimit(getattr(resource, name), (soft, hard))
        except (OSError, ValueError) as e:
            return f"{name} ({soft}, {hard}): {e}"
    try:
        os.setpriority(os.PRIO_PROCESS, 0, request["nice"])
        os.sched_setaffinity(0, request["cpus"])
    except OSError as e:
        return f"nice {request['nice']} / CPUs {request['cpus']}: {e}"
    if os.getpriority(os.PRIO_PROCESS, 0) != request["nice"]:
        return f"nice {request['nice']} not reproducible (got {os.getpriority(os.PRIO_PROCESS, 0)})"
    if sorted(os.sched_getaffinity(0)) != request["cpus"]:
        return f"CPU affinity {request['cpus']} not reproducible (got {sorted(os.sched_getaffinity(0))})"
    return None


def become(request: dict, fds: list[int]) -> None:
    """Take on the command's environment, umask, stdio, name and signals; fresh global seeds."""
    os.umask(request["umask"])
    os.environ.clear()
    os.environ.update(request["env"])
    tempfile.tempdir = None  # recomputed from this job's TMPDIR, not the worker's cached one
    if sys.path and sys.path[0] == "/":  # `python -m` puts its working directory first: the command's
        sys.path[0] = request["cwd"]
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        if fd > 2:
            os.close(fd)
    unbuffered = os.environ.get("PYTHONUNBUFFERED", "") != ""
    for fd, name in enumerate(("stdin", "stdout", "stderr")):
        old = getattr(sys, name)
        stream = io.TextIOWrapper(
            io.FileIO(fd, "r" if fd == 0 else "w", closefd=False),
            encoding=old.encoding,
            errors=old.errors,
            line_buffering=fd == 2 or os.isatty(fd),
            write_through=unbuffered and fd > 0,
        )
        setattr(sys, name, stream)
        setattr(sys, f"__{name}__", stream)
    set_title(request["command"], os.path.basename(request["command"][0]))
    for sig in (signal.SIGCHLD, signal.SIGTERM):
        signal.signal(sig, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    random.seed()
    sys.modules["numpy"].random.seed()  # the legacy global generator, fresh as in a new process


def set_title(words: list[str], comm: str) -> None:
    """What ps shows for this process: COMM as its name (``ps -o comm``, top) and WORDS as its command
    line (``ps -f``, /proc/PID/cmdline), written over the process's own argument area and cut to its size."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(15, ctypes.c_char_p(os.fsencode(comm)[:15]), 0, 0, 0)  # PR_SET_NAME
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        start, end = int(fields[45]), int(fields[46])  # arg_start, arg_end: fields 48 and 49
        text = b"\0".join(os.fsencode(w) for w in words)[: end - start - 1]
        ctypes.memmove(start, text.ljust(end - start, b"\0"), end - start)


def write_stats(path: str, wall: float) -> None:
    """This forked job's own figures as a one-row TSV at PATH, in the units and column names of a Snakemake
    benchmark file: wall seconds from the hand-over to the end, peak resident memory (MiB) and CPU seconds
    (user + system, its own processes included). The launcher, which is all a benchmark of the command
    measures, uses almost no CPU or memory: these are the job's."""
    own, children = (resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    cpu = own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime
    rss = max(own.ru_maxrss, children.ru_maxrss) / 1024
    note = "this job's own process, forked by the warm-start worker (its benchmark file sees the launcher)"
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        f.write(f"s\tmax_rss\tcpu_time\tmeasured\n{wall:.4f}\t{rss:.2f}\t{cpu:.2f}\t{note}\n")
    os.replace(tmp, path)


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def recv_exact(sock: socket.socket, n: int) -> bytes:
    """n bytes, or fewer when the peer closed first."""
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            break
        buf += chunk
    return buf


def follow_command(conn: socket.socket) -> None:
    """Signals the launcher passes on are raised here; its end of the connection closing (it was
    killed) ends the child with SIGTERM."""
    while True:
        try:
            data = conn.recv(64)
        except OSError:
            data = b""
        if not data:
            os.kill(os.getpid(), signal.SIGTERM)
            return
        for signum in data:
            if signum in FORWARDED:
                os.kill(os.getpid(), signum)


def run_stage(argv: list[str]) -> int:
    """``python -m mtlrobust ARGV`` as the interpreter would run it: exit status, traceback, atexit, flush."""
    sys.argv = ["mtlrobust", *argv]
    try:
        runpy.run_module("mtlrobust", run_name="__main__", alter_sys=True)
        code = 0
    except SystemExit as e:
        if e.code is None or isinstance(e.code, int):
            code = e.code or 0
        else:
            print(e.code, file=sys.stderr)
            code = 1
    except BaseException:
        traceback.print_exc()
        code = 1
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    return code


def stop_all() -> int:
    """End this user's workers of this directory (running jobs finish) and forget failed starts; the
    number stopped."""
    dir_fd, stopped = private_dir(), 0
    if dir_fd is None:
        return 0
    try:
        for entry in os.listdir(dir_fd):
            if entry.endswith(".failed"):
                os.unlink(entry, dir_fd=dir_fd)
        prefix = "@" + socket_name(dir_fd, "")
        with open("/proc/net/unix") as table:
            names = {line.split()[-1] for line in table if line.split()[-1].startswith(prefix)}
    finally:
        os.close(dir_fd)
    for name in sorted(names):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(5)
            try:
                sock.connect("\0" + name[1:])
            except OSError:
                continue
            pid, uid = peer(sock)
            if uid != os.geteuid() or pid <= 0:
                continue
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
                os.kill(pid, signal.SIGCONT)  # a stopped worker must run to end
                stopped += 1
    return stopped


def main(argv: list[str]) -> int:
    command = argv[2:] if argv[1:2] == ["--"] else argv[1:]
    if argv[:1] == ["run"] and command:
        try:
            launch(command)
        except ValueError as e:
            print(f"mtlrobust.warmstart: error: {e}", file=sys.stderr)
            return 2
    if argv[:1] == ["serve"] and len(argv) >= 6:
        return serve(argv[1], int(argv[2]), argv[3], float(argv[4]), float(argv[5]))
    if argv == ["stop"]:
        print(f"stopped {stop_all()} warm-start worker(s)")
        return 0
    print("usage: python -m mtlrobust.warmstart run -- python -m mtlrobust STAGE ... | stop", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
