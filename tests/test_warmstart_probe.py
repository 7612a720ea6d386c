"""Probe of the warm start as a hostile or careless user would try it (issue 20, items 2-4): 21 security
cases (swapped or foreign directories, modes, planted links and FIFOs, a squatted socket name, foreign,
garbage, oversized and malformed requests) and 21 faults with the warm start on (stopped, killed or missing
worker, killed jobs and launchers, bad settings, refused contexts). Each case must end safe: nothing written
through a link or into another's directory, nothing run for another uid, every command with its own status."""

from __future__ import annotations

import inspect
import json
import os
import re
import resource
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_warmstart import LAUNCH, cli, fails_fast, forked, gone, train_argv, warm_env, worker_log, worker_pid

from mtlrobust import warmstart as w

assert warm_env  # the session's worker environment (a fixture shared with test_warmstart)
NOBODY = 65534


def as_nobody(case):
    """A case that acts as another uid (needs root to become it)."""
    case.needs_root = True
    return case


@pytest.fixture
def runtime(tmp_path, monkeypatch):
    """A fresh XDG_RUNTIME_DIR for this process; its warm-start directory path."""
    base = tmp_path / "run"
    base.mkdir()
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(base))
    return base / f"mtlrobust-warm-{os.geteuid()}"


def start_as_nobody(fn, *args):
    """Run FN(OUT, *ARGS) in a forked process of uid NOBODY; its pid and a file of what it writes to OUT."""
    r, wr = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            with os.fdopen(wr, "w", buffering=1) as out:
                try:
                    fn(out, *args)
                except BaseException as e:
                    out.write(f"error: {e!r}\n")
        finally:
            os._exit(0)
    os.close(wr)
    return pid, os.fdopen(r)


def as_nobody_result(fn, *args) -> str:
    pid, out = start_as_nobody(fn, *args)
    with out:
        text = out.read()
    os.waitpid(pid, 0)
    return text.strip()


def worker_name(log: Path) -> str:
    return re.findall(r"ready on @(\S+)", log.read_text())[-1]


def send_raw(name: str, data: bytes) -> bytes:
    """Connect to the worker NAME as this user, send DATA and return what comes back until it closes."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect("\0" + name)
        try:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
            return s.recv(1024)
        except (BrokenPipeError, ConnectionResetError):  # closed before reading all of it
            return b""


def still_serves(env: dict, tmp: Path) -> None:
    """The worker survived: the next command ran in a child it forked, with its own status."""
    log = worker_log(env)
    job = cli(env, *fails_fast(tmp / "next"))
    assert job.returncode == 2 and "does not exist" in job.stderr
    child = forked(log, str(tmp / "next" / "none.pt"), deadline=5)
    assert re.search(rf"^pid {child}: exit 2, ", log.read_text(), re.M)


def request(words: list[str], **fields) -> bytes:
    body = {"argv": words, "command": [sys.executable, "-m", "mtlrobust", *words], "cwd": "/", "env": {},
            "umask": 0o22, "nice": 0, "cpus": sorted(os.sched_getaffinity(0)), "limits": {},
            **fields}  # fmt: skip
    raw = json.dumps(body).encode()
    return struct.pack("!i", len(raw)) + raw


# ------------------------------------------------------------------------------------------------ security
def sec_dir_is_a_symlink(runtime, tmp_path):
    (tmp_path / "attacker").mkdir(mode=0o700)
    runtime.symlink_to(tmp_path / "attacker")
    assert w.private_dir() is None


def sec_dir_swapped_for_a_symlink_after_mkdir(runtime, tmp_path, monkeypatch):
    (tmp_path / "attacker").mkdir(mode=0o700)
    real_mkdir = os.mkdir

    def racing_mkdir(name, mode=0o777, *, dir_fd=None):  # the swap lands between mkdir and open
        real_mkdir(name, mode, dir_fd=dir_fd)
        runtime.rename(tmp_path / "moved")
        runtime.symlink_to(tmp_path / "attacker")

    monkeypatch.setattr(os, "mkdir", racing_mkdir)
    assert w.private_dir() is None


def sec_dir_swapped_after_it_was_opened(runtime, tmp_path):
    fd = w.private_dir()
    runtime.rename(tmp_path / "moved")
    (tmp_path / "attacker").mkdir(mode=0o700)
    runtime.symlink_to(tmp_path / "attacker")
    os.write(log := w.open_in(fd, "k.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND), b"x")
    os.close(log)
    assert (tmp_path / "moved" / "k.log").read_bytes() == b"x" and not list((tmp_path / "attacker").iterdir())
    assert w.socket_name(fd, "k").endswith(f"-{(tmp_path / 'moved').stat().st_ino:x}-k")
    os.close(fd)


@as_nobody
def sec_dir_owned_by_another_user(runtime):
    runtime.mkdir(mode=0o700)
    os.chown(runtime, NOBODY, NOBODY)
    assert w.private_dir() is None


def sec_dir_group_writable(runtime):
    runtime.mkdir()
    runtime.chmod(0o770)
    assert w.private_dir() is None


def sec_dir_world_writable(runtime):
    runtime.mkdir()
    runtime.chmod(0o777)
    assert w.private_dir() is None


def sec_dir_group_readable(runtime):
    runtime.mkdir()
    runtime.chmod(0o750)
    assert w.private_dir() is None


def sec_dir_sticky_and_shared(runtime):
    runtime.mkdir()
    runtime.chmod(0o1777)
    assert w.private_dir() is None


def sec_dir_is_a_file(runtime):
    runtime.write_text("not a directory")
    assert w.private_dir() is None


def sec_log_is_a_symlink(runtime, tmp_path, monkeypatch):
    fd = w.private_dir()
    victim = tmp_path / "victim"
    victim.write_text("keep")
    (runtime / "k.log").symlink_to(victim)
    monkeypatch.setattr(os, "fork", lambda: pytest.fail("a worker was started with a linked log"))
    w.spawn(fd, "k", "unused-name", 1, 1)
    with pytest.raises(OSError):
        w.open_in(fd, "k.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    assert victim.read_text() == "keep"
    os.close(fd)


def sec_failed_mark_is_a_symlink(runtime, tmp_path, monkeypatch):
    fd = w.private_dir()
    victim = tmp_path / "victim"
    victim.write_text("keep")
    (runtime / "k.failed").symlink_to(victim)
    monkeypatch.setattr(w, "PRELOAD", ("mtlrobust.no_such_module",))
    assert w.serve(f"mtlrobust-probe-{os.getpid()}", os.dup(fd), "k", 1, 1) == 1
    assert victim.read_text() == "keep" and (runtime / "k.failed").is_symlink()
    os.close(fd)


def sec_log_is_a_fifo(runtime):
    fd = w.private_dir()
    os.mkfifo(runtime / "k.log")
    started = time.monotonic()
    with pytest.raises(OSError):  # ENXIO: no reader, and never a wait for one
        w.open_in(fd, "k.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    assert time.monotonic() - started < 1
    os.close(fd)


@as_nobody
def sec_log_owned_by_another_user(runtime):
    fd = w.private_dir()
    (runtime / "k.log").write_text("theirs")
    os.chown(runtime / "k.log", NOBODY, NOBODY)
    with pytest.raises(PermissionError):
        w.open_in(fd, "k.log", os.O_WRONLY | os.O_APPEND)
    assert (runtime / "k.log").read_text() == "theirs"
    os.close(fd)


def sec_old_lock_and_socket_links_are_ignored(warm_env, tmp_path):
    log = worker_log(warm_env)
    victim = tmp_path / "victim"
    victim.write_text("keep")
    for suffix in (".lock", ".sock"):
        log.with_suffix(suffix).symlink_to(victim)
    try:
        still_serves(warm_env, tmp_path)
    finally:
        for suffix in (".lock", ".sock"):
            log.with_suffix(suffix).unlink()
    assert victim.read_text() == "keep"


@as_nobody
def sec_socket_name_squatted_by_another_user(runtime, tmp_path):
    fd = w.private_dir()
    name = w.socket_name(fd, w.fingerprint())

    def squat(out, name):
        s = socket.socket(socket.AF_UNIX)
        s.bind("\0" + name)
        s.listen()
        out.write("ready\n")
        s.settimeout(15)
        conn, _ = s.accept()
        conn.settimeout(2)
        got = b""
        with __import__("contextlib").suppress(OSError):
            while chunk := conn.recv(65536):
                got += chunk
        out.write(f"{len(got)}\n")

    pid, out = start_as_nobody(squat, name)
    assert out.readline().strip() == "ready"
    assert w.run_warm([sys.executable, "-m", "mtlrobust", "x"], ["x"], 3, 10) is None  # runs cold
    assert out.read().strip() == "0"  # the squatter got not one byte of the request (nor descriptors)
    os.waitpid(pid, 0)
    os.close(fd)


@as_nobody
def sec_worker_refuses_another_users_request(warm_env, tmp_path):
    log = worker_log(warm_env)

    def intrude(out, name, data):
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(10)
            s.connect("\0" + name)
            try:
                s.sendall(data)
                out.write(repr(s.recv(64)))
            except (BrokenPipeError, ConnectionResetError):
                out.write("b''")

    answer = as_nobody_result(intrude, worker_name(log), request(["evaluate", "--out", str(tmp_path)]))
    assert answer == "b''"  # closed, nothing started
    assert f"only uid {os.geteuid()} is served" in log.read_text()
    assert str(tmp_path) not in log.read_text()


def sec_garbage_on_the_socket(warm_env, tmp_path):
    assert send_raw(worker_name(worker_log(warm_env)), os.urandom(64)) == b""
    still_serves(warm_env, tmp_path)


def sec_oversized_request(warm_env, tmp_path):
    log = worker_log(warm_env)
    assert send_raw(worker_name(log), struct.pack("!i", 1 << 30) + b"{") == b""
    assert f"a request of {1 << 30} bytes" in log.read_text()
    still_serves(warm_env, tmp_path)


def sec_malformed_json_request(warm_env, tmp_path):
    assert send_raw(worker_name(worker_log(warm_env)), struct.pack("!i", 5) + b"{{{{{") == b""
    still_serves(warm_env, tmp_path)


def sec_request_with_wrong_field_types(warm_env, tmp_path):
    log = worker_log(warm_env)
    assert send_raw(worker_name(log), request(["evaluate"], argv=[1, 2], env="PATH=/x")) == b""
    bogus = request(["evaluate", "--probe-x"], limits={"RLIMIT_BOGUS": [1, 1]})
    assert send_raw(worker_name(log), bogus) == b""
    assert "--probe-x" not in log.read_text()  # refused before any fork
    still_serves(warm_env, tmp_path)


def sec_silent_client_does_not_stall_the_worker(warm_env, tmp_path):
    log = worker_log(warm_env)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as silent:
        silent.connect("\0" + worker_name(log))
        time.sleep(0.2)
        # The worker drops it after its MTLROBUST_WARM_TIMEOUT (3 s): a more patient command is served.
        still_serves({**warm_env, "MTLROBUST_WARM_TIMEOUT": "20"}, tmp_path)


SECURITY = [f for n, f in sorted(globals().items()) if n.startswith("sec_")]


# ------------------------------------------------------------------------------------------------ faults
def long_job(env: dict, tmp: Path) -> tuple[subprocess.Popen, int]:
    """A 1000-epoch training through the launcher, and the pid of its forked child."""
    log = worker_log(env)
    argv = [str(a) for a in train_argv(env["_fake_root"], tmp, epochs=1000)]
    command = subprocess.Popen(LAUNCH + argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return command, forked(log, f"--out {tmp / 'epoch1.pt'}")


def fault_child_killed_by_sigkill(env, tmp_path):
    command, child = long_job(env, tmp_path)
    os.kill(child, signal.SIGKILL)
    assert command.wait(timeout=60) == -signal.SIGKILL  # as a cold job killed so (e.g. by the OOM killer)


def fault_child_crashes_with_sigsegv(env, tmp_path):
    command, child = long_job(env, tmp_path)
    os.kill(child, signal.SIGSEGV)
    assert command.wait(timeout=60) == -signal.SIGSEGV


def fault_ctrl_c_on_the_command(env, tmp_path):
    command, child = long_job(env, tmp_path)
    time.sleep(0.5)
    command.send_signal(signal.SIGINT)
    assert command.wait(timeout=60) == 130  # the stage's own Ctrl-C handling, as cold
    assert "Traceback" not in command.stderr.read().decode() and gone(child)


def fault_hangup_of_the_command(env, tmp_path):
    command, child = long_job(env, tmp_path)
    command.send_signal(signal.SIGHUP)
    assert command.wait(timeout=60) == -signal.SIGHUP and gone(child)


def fault_command_killed_by_sigkill(env, tmp_path):
    command, child = long_job(env, tmp_path)
    command.kill()
    command.wait(timeout=60)
    assert gone(child), "the forked job outlived its SIGKILLed command"


def fault_stopped_worker_command_runs_cold(env, tmp_path):
    pid = worker_pid(worker_log(env))
    os.kill(pid, signal.SIGSTOP)
    try:
        job = cli({**env, "MTLROBUST_WARM_TIMEOUT": "0.5"}, *fails_fast(tmp_path))
    finally:
        os.kill(pid, signal.SIGCONT)
    assert job.returncode == 2 and "does not exist" in job.stderr


def fault_stopped_worker_help_is_immediate(env):
    pid = worker_pid(worker_log(env))
    os.kill(pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        job = cli({**env, "MTLROBUST_WARM_TIMEOUT": "30"}, "train", "--help")
    finally:
        os.kill(pid, signal.SIGCONT)
    assert job.returncode == 0 and "usage: mtlrobust train" in job.stdout and time.monotonic() - started < 25


def fault_stopped_worker_with_a_job_running(env, tmp_path):
    """A job already handed over finishes and reports its status even while its worker is stopped."""
    log = worker_log(env)
    argv = [str(a) for a in train_argv(env["_fake_root"], tmp_path, epochs=2)]
    command = subprocess.Popen(LAUNCH + argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    forked(log, f"--out {tmp_path / 'epoch1.pt'}")
    pid = worker_pid(log)
    os.kill(pid, signal.SIGSTOP)
    try:
        assert command.wait(timeout=120) == 0
    finally:
        os.kill(pid, signal.SIGCONT)


def fault_stale_name_bound_but_not_listening(runtime, monkeypatch):
    fd = w.private_dir()
    spawned = []
    monkeypatch.setattr(w, "spawn", lambda *a: spawned.append(a))
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as stale:  # a worker still importing, or stuck
        stale.bind("\0" + w.socket_name(fd, w.fingerprint()))
        started = time.monotonic()
        assert w.run_warm([sys.executable, "-m", "mtlrobust", "x"], ["x"], 5, 10) is None
    assert time.monotonic() - started < 1 and len(spawned) == 1
    os.close(fd)


def fault_bad_timeout_setting(env):
    job = cli({**env, "MTLROBUST_WARM_TIMEOUT": "nan"}, "evaluate")
    assert job.returncode == 2 and "MTLROBUST_WARM_TIMEOUT='nan': expected a positive number" in job.stderr


def fault_bad_idle_setting(env):
    job = cli({**env, "MTLROBUST_WARM_IDLE": "-1"}, "evaluate")
    assert job.returncode == 2 and "MTLROBUST_WARM_IDLE='-1': expected a positive number" in job.stderr


def fault_turned_off(env, tmp_path):
    before = worker_log(env).read_text()
    job = cli({**env, "MTLROBUST_WARM": "0"}, *fails_fast(tmp_path))
    assert job.returncode == 2 and worker_log(env).read_text() == before


def fault_inside_a_slurm_job(env, tmp_path):
    before = worker_log(env).read_text()
    job = cli({**env, "SLURM_JOB_ID": "7"}, *fails_fast(tmp_path))
    assert job.returncode == 2 and worker_log(env).read_text() == before


def fault_another_interpreter_runs_cold(env):
    before = worker_log(env).read_text()
    job = subprocess.run(LAUNCH[:5] + ["/bin/false", "-m", "mtlrobust", "evaluate"], env=env)
    assert job.returncode == 1 and worker_log(env).read_text() == before


def fault_command_not_found(env):
    job = subprocess.run(LAUNCH[:5] + ["./no-such-python"], env=env, capture_output=True, text=True)
    assert job.returncode == 127 and job.stderr.startswith("mtlrobust.warmstart: cannot run ./no-such-python")


def fault_deleted_working_directory(env, tmp_path):
    gone_dir = tmp_path / "gone"
    gone_dir.mkdir()
    argv = fails_fast(tmp_path)
    warm = cli(env, *argv, cwd=gone_dir, preexec_fn=lambda: os.rmdir(gone_dir))
    gone_dir.mkdir()
    cold = cli(env, *argv, launcher=False, cwd=gone_dir, preexec_fn=lambda: os.rmdir(gone_dir))
    assert warm.returncode == cold.returncode and warm.stderr == cold.stderr


@as_nobody
def fault_hard_limit_above_the_workers_is_refused():

    def raise_hard_limit(out):
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
        context = {"cwd": "/", "nice": 0, "cpus": sorted(os.sched_getaffinity(0))}
        out.write(str(w.take_context({**context, "limits": {"RLIMIT_NOFILE": [64, 65]}})))

    assert as_nobody_result(raise_hard_limit).startswith("RLIMIT_NOFILE (64, 65): not allowed to raise")


@as_nobody
def fault_lower_nice_value_is_refused():

    def lower_nice(out):
        os.nice(5)
        context = {"cwd": "/", "nice": 0, "cpus": sorted(os.sched_getaffinity(0)), "limits": {}}
        out.write(str(w.take_context(context)))

    assert as_nobody_result(lower_nice).startswith("nice 0 / CPUs")


def fault_concurrent_commands(env, tmp_path):
    log = worker_log(env)
    jobs = [subprocess.Popen(LAUNCH + [str(a) for a in fails_fast(tmp_path / str(i))], env=env,
                             stderr=subprocess.PIPE, text=True) for i in range(3)]  # fmt: skip
    for i, job in enumerate(jobs):
        assert job.wait(timeout=120) == 2 and str(tmp_path / str(i) / "none.pt") in job.stderr.read()
    assert all(str(tmp_path / str(i) / "none.pt") in log.read_text() for i in range(3))


def fault_worker_killed_then_replaced(env, tmp_path):
    log = worker_log(env)
    os.kill(pid := worker_pid(log), signal.SIGKILL)
    assert gone(pid)
    job = cli(env, *fails_fast(tmp_path))  # cold, and starts a new worker
    assert job.returncode == 2 and "does not exist" in job.stderr
    still_serves(env, tmp_path)


def fault_stop_ends_a_stopped_worker(env):
    log = worker_log(env)
    os.kill(pid := worker_pid(log), signal.SIGSTOP)
    subprocess.run([sys.executable, "-m", "mtlrobust.warmstart", "stop"], env=env, check=True, timeout=30)
    assert gone(pid)


FAULTS = [f for n, f in globals().items() if n.startswith("fault_")]  # in order: destructive ones last


def cases(functions, prefix: str) -> list:
    skip = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another uid")
    return [pytest.param(f, id=f.__name__[len(prefix) :], marks=skip if hasattr(f, "needs_root") else ())
            for f in functions]  # fmt: skip


def run_case(case, request, **given) -> None:
    """Call CASE with the fixtures it names (runtime and warm_env only when it asks for them)."""
    names = [n for n in inspect.signature(case).parameters if n != "_"]
    case(**{n: given[n] if n in given else request.getfixturevalue(n) for n in names})


def test_the_probe_has_its_cases():
    assert (len(SECURITY), len(FAULTS)) == (21, 21)


@pytest.mark.parametrize("case", cases(SECURITY, "sec_"))
def test_security(case, request, tmp_path, monkeypatch):
    run_case(case, request, tmp_path=tmp_path, monkeypatch=monkeypatch)


@pytest.mark.parametrize("case", cases(FAULTS, "fault_"))
def test_fault(case, request, tmp_path, monkeypatch, fake_root):
    env = {**request.getfixturevalue("warm_env"), "_fake_root": str(fake_root)}
    soft, hard = resource.getrlimit(resource.RLIMIT_CORE)
    resource.setrlimit(resource.RLIMIT_CORE, (0, hard))  # no core files from the SIGSEGV case
    try:
        run_case(case, request, env=env, tmp_path=tmp_path, monkeypatch=monkeypatch)
    finally:
        resource.setrlimit(resource.RLIMIT_CORE, (soft, hard))
