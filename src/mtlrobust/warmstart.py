"""Warm start: one worker per Python environment imports torch once; each torch stage the workflow runs
(train, evaluate, theory) is a child forked from it instead of a fresh interpreter.

Why: ``import torch`` (plus ``torch._dynamo``, which torch's optimizers import on their first step) costs
2.8-4.6 CPU-s per process, ~21 % of the default study's CPU when each of its 85 torch jobs pays it. A
forked child starts with everything imported; the hand-over costs ~0.3 CPU-s.

How: the workflow sets ``MTLROBUST_WARM=1`` for local runs (never for cluster jobs; the command also
refuses inside a SLURM job, whose CPUs and memory must stay in its allocation). ``mtlrobust STAGE ...``
then connects to the worker's Unix socket and hands over its arguments, working directory, environment,
umask and stdin/stdout/stderr; the child runs exactly ``mtlrobust STAGE ...`` with them, with freshly
seeded ``random``/``numpy`` global generators, and the command exits with the child's status. Ending the
command (Ctrl-C, Snakemake cancelling a job) ends the child. With no worker yet, the command starts one in
the background and runs cold; a worker exits after ``MTLROBUST_WARM_IDLE`` seconds (default 120) without a
new job.

The socket's name hashes the interpreter, the environment variables read at start-up (thread-pool sizes
such as ``OMP_NUM_THREADS`` included) and the package's source files, so a different environment (another
conda env, a container, other thread counts) or an edited source file never reaches an old worker. Sockets
live in a directory only this user can enter. A worker that fails to import leaves its traceback in its
log and a ``.failed`` mark, so its commands run cold without retrying; ``python -m mtlrobust.warmstart
stop`` ends this user's workers now and clears the marks.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import hashlib
import importlib
import importlib.util
import io
import json
import os
import random
import resource
import signal
import socket
import stat
import struct
import sys
import tempfile
import threading
import traceback
from pathlib import Path

from . import cli

ENV = "MTLROBUST_WARM"
IDLE_ENV = "MTLROBUST_WARM_IDLE"
# What a child would otherwise import itself: the torch stages' modules and what torch's optimizers
# import on their first step.
PRELOAD = ("torch", "torch._dynamo", *(cli.COMMANDS[stage][0] for stage in cli.TORCH_STAGES))
# Read by the interpreter or by libraries when they load (thread pools: OMP_NUM_THREADS, ...): a worker
# serves only commands with the values it was started with, so its libraries are set up as theirs would be.
IMPORT_TIME_ENV = ("PYTHON", "TORCH", "PYTORCH", "LD_", "CUDA", "OMP_", "GOMP_", "KMP_", "MKL_", "OPENBLAS_",
                   "GOTO_", "VECLIB_", "NUMEXPR_", "NUMPY_")  # fmt: skip
_INT = struct.Struct("!i")
_SOCKET_PATH_MAX = 100  # sun_path holds 108 bytes on Linux


def enabled() -> bool:
    """Whether this command may use a worker: asked for, on Linux, and not inside a SLURM job."""
    return (
        os.environ.get(ENV, "") not in ("", "0")
        and sys.platform.startswith("linux")
        and "SLURM_JOB_ID" not in os.environ
    )


def fingerprint(package_dir: str | os.PathLike | None = None) -> str:
    """Hash of what a worker's state depends on: interpreter, import-time environment, source files."""
    h = hashlib.sha256()
    exe = os.stat(os.path.realpath(sys.executable))
    h.update(f"{os.path.realpath(sys.executable)}|{exe.st_dev}|{exe.st_ino}|{sys.version}".encode())
    for key in sorted(k for k in os.environ if k.startswith(IMPORT_TIME_ENV)):
        h.update(f"\0{key}={os.environ[key]}".encode())
    spec = importlib.util.find_spec("torch")
    for loc in (spec.submodule_search_locations or []) if spec else []:
        with contextlib.suppress(OSError):
            h.update(f"\0torch|{loc}|{os.stat(os.path.join(loc, 'version.py')).st_mtime_ns}".encode())
    root = Path(package_dir or Path(__file__).parent).resolve()
    for path in sorted(root.rglob("*.py")):
        h.update(f"\0{path.relative_to(root)}\0".encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def socket_dir() -> Path | None:
    """This user's private directory for worker sockets, or None when it is not safely ours."""
    base = os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()
    d = Path(base) / f"mtlrobust-warm-{os.getuid()}"
    try:
        d.mkdir(mode=0o700, exist_ok=True)
        st = os.lstat(d)
    except OSError:
        return None
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o077:
        return None
    return d


def socket_path() -> Path | None:
    d = socket_dir()
    path = d / f"{fingerprint()}.sock" if d else None
    return path if path and len(os.fsencode(path)) <= _SOCKET_PATH_MAX else None


# ------------------------------------------------------------------------------ the command's side
def run(argv: list[str]) -> int | None:
    """Run ``mtlrobust ARGV`` as a child of this environment's worker and return its exit status;
    None when no worker took it (the caller runs it cold; a worker is started for the next job)."""
    if not enabled() or (path := socket_path()) is None:
        return None
    request = json.dumps(
        {"argv": argv, "cwd": os.getcwd(), "env": dict(os.environ), "umask": _umask()}
    ).encode()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        try:
            sock.connect(str(path))
        except OSError:
            _spawn(path)
            return None
        try:
            socket.send_fds(sock, [_INT.pack(len(request))], [0, 1, 2])
            sock.sendall(request)
            started = _recv_exact(sock, _INT.size)
        except OSError:
            started = b""
        if not started:  # the worker was exiting or could not fork: nothing ran
            return None
        (pid,) = _INT.unpack(started)
        try:
            status = _recv_exact(sock, _INT.size)
        except OSError:
            status = b""
    if not status:
        print(
            f"mtlrobust: the job's process (pid {pid}, forked by the warm-start worker) ended without "
            "an exit status: it was killed",
            file=sys.stderr,
        )
        return 1
    return _INT.unpack(status)[0]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    """n bytes, or b"" when the peer closed first."""
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            return b""
        buf += chunk
    return buf


def _spawn(path: Path) -> None:
    """Start a worker for ``path``, detached (its own session, not this job's child), and return;
    not again once a worker of this fingerprint failed to import its modules (see its log)."""
    if path.with_suffix(".failed").exists():
        return
    env = dict(os.environ)
    package_parent = str(Path(__file__).resolve().parent.parent)  # the worker imports this very package
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_parent, env.get("PYTHONPATH")) if p)
    pid = os.fork()
    if pid == 0:  # intermediate: exits at once, so the worker is nobody's child in this job
        try:
            os.setsid()
            os.chdir("/")
            if os.fork() == 0:
                log = os.open(path.with_suffix(".log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
                null = os.open(os.devnull, os.O_RDONLY)
                os.dup2(null, 0)
                os.dup2(log, 1)
                os.dup2(log, 2)
                argv = [sys.executable, "-m", "mtlrobust.warmstart", "serve", str(path)]
                os.execve(sys.executable, argv, env)
        finally:
            os._exit(0)
    os.waitpid(pid, 0)


# ------------------------------------------------------------------------------ the worker's side
def serve(path: Path) -> int:
    """Import PRELOAD, then fork a child per request on ``path`` until idle; 0 also when another
    worker already serves ``path``."""
    lock = open(path.with_suffix(".lock"), "a+")  # noqa: SIM115 (held, and locked, for the worker's life)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        return 0
    lock.truncate(0)
    lock.write(f"{os.getpid()}\n")
    lock.flush()
    if stat.S_ISREG((log := os.fstat(1)).st_mode) and log.st_size > 1 << 20:
        os.ftruncate(1, 0)  # the log (stdout): keep it from growing over runs
    try:
        for name in PRELOAD:
            importlib.import_module(name)
        if sys.modules["torch"].cuda.is_initialized():
            raise RuntimeError("CUDA was initialised while importing: children could not use it after fork")
    except BaseException:
        traceback.print_exc()
        path.with_suffix(".failed").touch()  # commands of this fingerprint run cold from now on
        lock.close()
        return 1
    idle = float(os.environ.get(IDLE_ENV) or 120)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()  # a crashed worker's socket; we hold the lock
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(str(path))
    srv.listen(64)
    srv.settimeout(idle)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the kernel reaps the children
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    worker = os.getpid()
    print(f"mtlrobust warm-start worker {worker}: ready on {path} after {_cpu_s():.2f} CPU-s", flush=True)
    try:
        while True:
            try:
                conn, _ = srv.accept()
            except TimeoutError:
                break
            with conn:
                try:
                    _fork_child(conn, (srv, lock))
                except Exception:  # one bad request must not end the worker
                    traceback.print_exc()
    finally:
        if os.getpid() == worker:  # not in a child that a signal caught between fork and _become
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            srv.close()
    print(f"mtlrobust warm-start worker {os.getpid()}: idle for {idle:g} s, exiting", flush=True)
    return 0


def _fork_child(conn: socket.socket, worker_files: tuple) -> None:
    """Read one request and fork its child; the child never returns (it exits with the stage's status)."""
    conn.settimeout(10)
    head, fds, _, _ = socket.recv_fds(conn, _INT.size, 3)
    try:
        head += _recv_exact(conn, _INT.size - len(head))
        (size,) = _INT.unpack(head)
        request = json.loads(_recv_exact(conn, size))
        if len(fds) != 3:
            raise ValueError(f"a request must pass stdin, stdout and stderr, got {len(fds)} descriptors")
        conn.settimeout(None)
        pid = os.fork()
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise
    if pid:
        for fd in fds:
            os.close(fd)
        print(f"pid {pid}: mtlrobust {' '.join(request['argv'])}", flush=True)
        return
    # Each job's CPU time goes to the worker's log: a rule's benchmark: file sees only the command's.
    code, log = 1, os.dup(1)
    try:
        for f in worker_files:  # the listening socket, and the lock: a long job must not hold it
            f.close()
        _become(request, fds)
        conn.sendall(_INT.pack(os.getpid()))
        threading.Thread(target=_end_with_command, args=(conn,), daemon=True).start()
        code = _run_stage(request["argv"])
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        done = f"pid {os.getpid()}: exit {code}, {_cpu_s():.2f} CPU-s, max RSS {peak:.0f} MiB\n"
        os.write(log, done.encode())
        conn.sendall(_INT.pack(code))
    except BaseException:  # set-up or hand-over failed (the stage's own errors are _run_stage's)
        os.write(log, f"pid {os.getpid()}: {traceback.format_exc()}".encode())
    finally:
        os._exit(code)


def _become(request: dict, fds: list[int]) -> None:
    """Take on the command's directory, environment, umask, stdio and signals; fresh global seeds."""
    os.chdir(request["cwd"])
    os.umask(request["umask"])
    os.environ.clear()
    os.environ.update(request["env"])
    tempfile.tempdir = None  # recomputed from this job's TMPDIR, not the worker's cached one
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
    sys.argv = ["mtlrobust", *request["argv"]]
    for sig in (signal.SIGCHLD, signal.SIGTERM):
        signal.signal(sig, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    random.seed()
    sys.modules["numpy"].random.seed()  # the legacy global generator, fresh as in a new process


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _end_with_command(conn: socket.socket) -> None:
    """The command never writes after its request: end of stream means it ended, so end too."""
    with contextlib.suppress(OSError):
        conn.recv(1)
    os.kill(os.getpid(), signal.SIGTERM)


def _run_stage(argv: list[str]) -> int:
    """``mtlrobust ARGV`` as the interpreter would run it: exit status, traceback, atexit, flush."""
    try:
        code = cli.main(argv, warm=False)
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
    """End this user's workers (running jobs finish) and forget failed starts; the number stopped."""
    d, stopped = socket_dir(), 0
    for failed in d.glob("*.failed") if d else []:
        failed.unlink()
    for lock in sorted(d.glob("*.lock")) if d else []:
        with open(lock) as f:
            try:
                fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)  # free: no worker holds it
                continue
            except BlockingIOError:
                pid = int((lock.read_text().split() or ["0"])[0])
        if pid <= 0:  # a worker still writing its pid
            continue
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
            stopped += 1
    return stopped


if __name__ == "__main__":
    if sys.argv[1:2] == ["serve"] and len(sys.argv) == 3:
        raise SystemExit(serve(Path(sys.argv[2])))
    if sys.argv[1:] == ["stop"]:
        print(f"stopped {stop_all()} warm-start worker(s)")
        raise SystemExit(0)
    print("usage: python -m mtlrobust.warmstart stop", file=sys.stderr)
    raise SystemExit(2)
