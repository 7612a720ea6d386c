"""Warm start (mtlrobust.warmstart): a command launched through it runs forked from the worker exactly as it
runs cold (byte-identical checkpoint, training log and evaluation CSV, same errors and exit status), in its
own process context (limits, nice value, affinity, environment, name), ends when its command ends, never
hangs on a stopped worker, and is never used where it must not be."""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import pytest

from mtlrobust import warmstart

REPO = Path(__file__).resolve().parents[1]
LAUNCH = [sys.executable, "-m", "mtlrobust.warmstart", "run", "--", sys.executable, "-m", "mtlrobust"]


@pytest.fixture(scope="session")
def warm_env(tmp_path_factory):
    """An environment whose commands use a worker of their own, running a copy of the package (edits to
    the tree during the run must not start another worker); the worker is stopped afterwards."""
    src = tmp_path_factory.mktemp("warmsrc")
    shutil.copytree(
        REPO / "src" / "mtlrobust", src / "mtlrobust", ignore=shutil.ignore_patterns("__pycache__")
    )
    runtime = Path(tempfile.mkdtemp(prefix="mw", dir="/tmp"))
    env = {**os.environ, "PYTHONPATH": str(src), "XDG_RUNTIME_DIR": str(runtime), "OMP_NUM_THREADS": "1"}
    env.update(MTLROBUST_WARM_IDLE="300", MTLROBUST_WARM_TIMEOUT="3")
    for key in ("SLURM_JOB_ID", warmstart.ENV):
        env.pop(key, None)
    yield env
    subprocess.run([sys.executable, "-m", "mtlrobust.warmstart", "stop"], env=env, check=True)
    shutil.rmtree(runtime, ignore_errors=True)


def cli(env: dict, *argv, launcher=True, **kw) -> subprocess.CompletedProcess:
    """``mtlrobust ARGV`` as the workflow runs it (through the launcher), or plain."""
    cmd = (LAUNCH if launcher else [sys.executable, "-m", "mtlrobust"]) + [str(a) for a in argv]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, **kw)


def fails_fast(tmp: Path) -> list:
    """An evaluate command that exits 2 at once (no checkpoint): a cheap job for a worker to run."""
    return eval_argv(tmp / "none.pt", tmp, tmp)


def worker_log(env: dict) -> Path:
    """Start the environment's worker (a first command runs cold and starts it); its log once it serves."""
    key = subprocess.run(
        [sys.executable, "-c", "from mtlrobust import warmstart; print(warmstart.fingerprint())"],
        env=env, capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    log = Path(env["XDG_RUNTIME_DIR"]) / f"mtlrobust-warm-{os.geteuid()}" / f"{key}.log"
    deadline = time.monotonic() + 120
    while not (log.exists() and "ready on" in log.read_text() and not gone(worker_pid(log), timeout=0)):
        assert time.monotonic() < deadline, f"no worker ready in {log}"
        cli(env, *fails_fast(Path(env["XDG_RUNTIME_DIR"])))
        time.sleep(1)
    return log


def worker_pid(log: Path) -> int:
    return int(re.findall(r"worker (\d+): ready on", log.read_text())[-1])


def forked(log: Path, mark: str, deadline: float = 60) -> int:
    """The pid of the child the worker forked for a command whose arguments contain MARK."""
    end = time.monotonic() + deadline
    while True:
        pids = re.findall(rf"^pid (\d+): mtlrobust .*{re.escape(mark)}", log.read_text(), re.M)
        if pids:
            return int(pids[-1])
        assert time.monotonic() < end, f"no job with {mark} was forked"
        time.sleep(0.1)


def train_argv(root: Path, out: Path, epochs: int = 1) -> list:
    return ["train", "--data", root, "--arch", "xception", "--tasks", "sd", "--epochs", epochs,
            "--batch-size", "3", "--val-limit", "2", "--threads", "1", "--no-progress",
            "--out", out / "epoch1.pt", "--log", out / "log.csv"]  # fmt: skip


def eval_argv(ckpt: Path, root: Path, out: Path) -> list:
    pgd = {"name": "pgd", "method": "pgd", "norm": "linf", "eps": 8 / 255, "steps": 2}
    return ["evaluate", "--checkpoint", ckpt, "--data", root / "val", "--attack-json", json.dumps(pgd),
            "--attacked", "s", "--attacked", "s+d", "--device", "cpu", "--out", out / "pgd.csv"]  # fmt: skip


def gone(pid: int, timeout: float = 30) -> bool:
    """Whether process PID ended (or is a zombie) within TIMEOUT seconds."""
    end = time.monotonic() + timeout
    while Path(f"/proc/{pid}").exists():
        with __import__("contextlib").suppress(OSError):
            if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                return True
        if time.monotonic() > end:
            return False
        time.sleep(0.1)
    return True


@pytest.mark.slow
def test_warm_stages_write_the_same_bytes_as_cold_ones(fake_root, warm_env, tmp_path):
    log = worker_log(warm_env)
    for name, launcher in (("cold", False), ("warm", True)):
        out = tmp_path / name
        trained = cli(warm_env, *train_argv(fake_root, out), launcher=launcher)
        assert trained.returncode == 0, trained.stderr
        evaluated = cli(warm_env, *eval_argv(out / "epoch1.pt", fake_root, out), launcher=launcher)
        assert evaluated.returncode == 0, evaluated.stderr
    served = log.read_text()
    assert f"--out {tmp_path / 'warm' / 'epoch1.pt'}" in served
    assert f"--out {tmp_path / 'warm' / 'pgd.csv'}" in served
    assert str(tmp_path / "cold") not in served
    for f in ("epoch1.pt", "pgd.csv"):
        assert (tmp_path / "warm" / f).read_bytes() == (tmp_path / "cold" / f).read_bytes(), f
    warm, cold = (pd.read_csv(tmp_path / d / "log.csv").drop(columns="time_s") for d in ("warm", "cold"))
    pd.testing.assert_frame_equal(warm, cold, check_exact=True)  # all but the wall-clock time
    assert served.count("exit 0, ") >= 2  # each forked job's CPU time is logged


def test_a_warm_job_records_its_own_time_and_memory_where_asked(fake_root, warm_env, tmp_path):
    """MTLROBUST_WARM_STATS (set by the train and evaluate rules to their .job.tsv log): a forked job writes
    there what its launcher's benchmark cannot see, its own wall time (all its epochs), CPU time and peak
    memory; a cold job writes nothing (a benchmark of its command measures it)."""
    log = worker_log(warm_env)
    stats = tmp_path / "job.tsv"
    env = {**warm_env, warmstart.STATS_ENV: str(stats)}
    cold = cli({**env, warmstart.ENV: "0"}, *train_argv(fake_root, tmp_path / "cold", epochs=2))
    assert cold.returncode == 0 and not stats.exists()
    launchers = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.monotonic()
    warm = cli(env, *train_argv(fake_root, tmp_path / "warm", epochs=2))
    elapsed = time.monotonic() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)  # the launcher's: the forked job is the worker's
    launcher_cpu = after.ru_utime + after.ru_stime - launchers.ru_utime - launchers.ru_stime
    assert warm.returncode == 0, warm.stderr
    assert f"--out {tmp_path / 'warm' / 'epoch1.pt'}" in log.read_text()  # it ran forked
    row = pd.read_csv(stats, sep="\t").to_dict("records")
    assert len(row) == 1 and "warm-start worker" in row[0]["measured"], row
    epochs = pd.read_csv(tmp_path / "warm" / "log.csv")["time_s"].sum()
    assert 0 < epochs <= row[0]["s"] <= elapsed, (epochs, row, elapsed)
    assert row[0]["cpu_time"] > launcher_cpu, (row, launcher_cpu)
    assert row[0]["max_rss"] > 100  # MiB: torch and the model are in the job's memory, not the launcher's
    assert not list(tmp_path.glob("job.tsv.*"))  # written in one step


def test_warm_errors_and_exit_status_are_the_commands(warm_env, tmp_path):
    log = worker_log(warm_env)
    argv = fails_fast(tmp_path)
    warm, cold = cli(warm_env, *argv), cli(warm_env, *argv, launcher=False)
    assert warm.returncode == cold.returncode == 2
    assert warm.stderr == cold.stderr and "none.pt does not exist" in warm.stderr
    usage = cli(warm_env, "evaluate", "--bogus")  # argparse's own exit inside the child
    assert usage.returncode == 2 and "the following arguments are required: --checkpoint" in usage.stderr
    assert str(tmp_path / "none.pt") in log.read_text() and "evaluate --bogus" in log.read_text()


def test_a_job_runs_in_its_own_process_context(fake_root, warm_env, tmp_path):
    """Soft limits, CPU affinity, environment and name are the job's, not the first job's or the
    worker's; /proc/CHILD/environ shows no other job's variable; ending the command ends the child."""
    log = worker_log(warm_env)
    cli({**warm_env, "FIRST_JOB_SECRET": "s3cret"}, *fails_fast(tmp_path))
    cpu_hard = resource.getrlimit(resource.RLIMIT_CPU)[1]
    cpus = sorted(os.sched_getaffinity(0))[:1]

    def job_context():
        resource.setrlimit(resource.RLIMIT_CPU, (4321, cpu_hard))
        resource.setrlimit(resource.RLIMIT_NOFILE, (77, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
        os.sched_setaffinity(0, cpus)

    argv = [str(a) for a in train_argv(fake_root, tmp_path, epochs=1000)]
    command = subprocess.Popen(
        LAUNCH + argv, env={**warm_env, "SECOND_JOB": "b"}, preexec_fn=job_context,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        child = forked(log, f"--out {tmp_path / 'epoch1.pt'}")
        limits = Path(f"/proc/{child}/limits").read_text()
        assert re.search(r"Max cpu time\s+4321\s", limits) and re.search(r"Max open files\s+77\s", limits)
        assert sorted(os.sched_getaffinity(child)) == cpus
        environ = Path(f"/proc/{child}/environ").read_bytes().split(b"\0")
        assert not [
            v for v in environ if v.startswith((b"FIRST_JOB_SECRET", b"SECOND_JOB", b"HOME=", b"PATH="))
        ]
        cmdline = Path(f"/proc/{child}/cmdline").read_bytes().rstrip(b"\0").split(b"\0")
        assert [w.decode() for w in cmdline] == [sys.executable, "-m", "mtlrobust", *argv]
        assert Path(f"/proc/{child}/comm").read_text().strip() == Path(sys.executable).name[:15]
        ps = subprocess.run(
            ["ps", "-ww", "-o", "args=", "-p", str(child)], capture_output=True, text=True
        ).stdout
        assert ps.strip() == " ".join([sys.executable, "-m", "mtlrobust", *argv])
    finally:
        command.send_signal(signal.SIGTERM)
        status = command.wait(timeout=30)
    assert status == -signal.SIGTERM  # as a cold command killed by SIGTERM
    assert gone(child), f"forked job {child} outlived its command"
    assert not (tmp_path / "epoch1.pt").exists()


def test_a_jobs_cpu_limit_ends_it_as_it_ends_a_cold_one(fake_root, warm_env, tmp_path):
    log = worker_log(warm_env)
    hard = resource.getrlimit(resource.RLIMIT_CPU)[1]
    statuses = {}
    for name, launcher in (("warm", True), ("cold", False)):
        argv = [str(a) for a in train_argv(fake_root, tmp_path / name, epochs=1000)]
        cmd = (LAUNCH if launcher else [sys.executable, "-m", "mtlrobust"]) + argv
        job = subprocess.run(
            cmd, env=warm_env, capture_output=True, timeout=300,
            preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_CPU, (2, hard)),
        )  # fmt: skip
        statuses[name] = job.returncode
    assert statuses == {"warm": -signal.SIGXCPU, "cold": -signal.SIGXCPU}
    forked(log, f"--out {tmp_path / 'warm' / 'epoch1.pt'}")  # it did run warm


def test_a_stopped_worker_blocks_nothing(warm_env, tmp_path):
    """With the worker stopped (kill -STOP) a command runs cold after MTLROBUST_WARM_TIMEOUT with its own
    status, --help never asks the worker, and the abandoned request is never run once it continues."""
    log = worker_log(warm_env)
    pid = worker_pid(log)
    os.kill(pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        stopped = cli({**warm_env, "MTLROBUST_WARM_TIMEOUT": "1"}, *fails_fast(tmp_path))
        assert stopped.returncode == 2 and "none.pt does not exist" in stopped.stderr
        assert time.monotonic() - started < 30
        started = time.monotonic()
        assert cli(warm_env, "evaluate", "--help").returncode == 0
        assert time.monotonic() - started < 2.9  # under MTLROBUST_WARM_TIMEOUT: the worker was never asked
    finally:
        os.kill(pid, signal.SIGCONT)
    again = cli(warm_env, *fails_fast(tmp_path))
    assert again.returncode == 2
    served = log.read_text()
    assert served.count(str(tmp_path / "none.pt")) == 2  # the abandoned request was forked once...
    assert len(re.findall(r"^pid \d+: exit 2, .*$", served, re.M)) >= 1
    abandoned = re.findall(rf"^pid (\d+): mtlrobust .*{re.escape(str(tmp_path))}", served, re.M)[0]
    assert not re.search(rf"^pid {abandoned}: exit", served, re.M)  # ...and ran nothing
    assert "evaluate --help" not in served


def test_stopping_the_worker_leaves_running_jobs_alone(fake_root, warm_env, tmp_path):
    log = worker_log(warm_env)
    argv = [str(a) for a in train_argv(fake_root, tmp_path, epochs=15)]
    command = subprocess.Popen(LAUNCH + argv, env=warm_env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    child = forked(log, f"--out {tmp_path / 'epoch1.pt'}")
    subprocess.run([sys.executable, "-m", "mtlrobust.warmstart", "stop"], env=warm_env, check=True)
    assert gone(worker_pid(log)) and not gone(child, timeout=0)
    assert command.wait(timeout=120) == 0, command.stderr.read()
    assert (tmp_path / "epoch1.pt").exists()
    worker_log(warm_env)  # a new worker starts beside it


def test_off_when_asked_inside_slurm_or_for_another_command(warm_env, tmp_path, monkeypatch):
    log = worker_log(warm_env)
    before = log.read_text()
    for extra in ({"MTLROBUST_WARM": "0"}, {"SLURM_JOB_ID": "42"}):
        job = cli({**warm_env, **extra}, *fails_fast(tmp_path))
        assert job.returncode == 2 and "none.pt does not exist" in job.stderr
    other = [sys.executable, "-m", "mtlrobust.warmstart", "run", "--", "sh", "-c", "exit 3"]
    assert subprocess.run(other, env=warm_env).returncode == 3
    missing = subprocess.run(other[:5] + ["no-such-command-x"], env=warm_env, capture_output=True, text=True)
    assert missing.returncode == 127 and "cannot run no-such-command-x" in missing.stderr
    assert log.read_text() == before
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    for value, expected in (("1", True), ("", True), ("0", False)):
        monkeypatch.setenv(warmstart.ENV, value)
        assert warmstart.enabled() is expected
    monkeypatch.setenv("SLURM_JOB_ID", "42")
    assert not warmstart.enabled()


def test_a_bad_timeout_setting_is_one_line_naming_it(warm_env):
    job = cli({**warm_env, "MTLROBUST_WARM_TIMEOUT": "soon"}, "evaluate", "--checkpoint", "x")
    assert job.returncode == 2
    assert job.stderr == (
        "mtlrobust.warmstart: error: MTLROBUST_WARM_TIMEOUT='soon': expected a positive number of seconds\n"
    )


def test_an_edited_source_file_or_process_context_gets_another_worker(tmp_path, monkeypatch):
    package = tmp_path / "mtlrobust"
    shutil.copytree(REPO / "src" / "mtlrobust", package, ignore=shutil.ignore_patterns("__pycache__"))
    before = warmstart.fingerprint(package)
    assert warmstart.fingerprint(package) == before
    pgd = package / "attacks" / "pgd.py"
    pgd.write_text(pgd.read_text().replace("def ", "def  ", 1))
    edited = warmstart.fingerprint(package)
    assert edited != before
    monkeypatch.setenv("PYTHONHASHSEED", "123")
    hashseed = warmstart.fingerprint(package)
    assert hashseed != edited
    monkeypatch.setenv("OMP_NUM_THREADS", "3")  # thread pools are sized when their libraries load
    threads = warmstart.fingerprint(package)
    assert threads != hashseed
    code = (
        "import os, resource, sys; from mtlrobust import warmstart as w; p = sys.argv[1]; "
        "a = w.fingerprint(p); os.nice(1); b = w.fingerprint(p); "
        "h = resource.getrlimit(resource.RLIMIT_NOFILE)[1]; "
        "resource.setrlimit(resource.RLIMIT_NOFILE, (64, h - 1)); print(len({a, b, w.fingerprint(p)}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(package)], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "3"  # a nice value, a hard limit: each its own worker


def test_the_command_line_knows_nothing_of_the_warm_start():
    """No import between cli.py and warmstart.py in either direction."""
    pkg = REPO / "src" / "mtlrobust"
    for path, other in (("cli.py", "warmstart"), ("warmstart.py", "cli")):
        tree = ast.parse((pkg / path).read_text())
        names = {
            a.name for n in ast.walk(tree) if isinstance(n, ast.Import | ast.ImportFrom) for a in n.names
        }
        names |= {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        assert not [n for n in names if n.split(".")[-1] == other], (path, names)


def test_the_worker_preloads_the_torch_stages_modules():
    """PRELOAD names the modules of the stages the workflow launches (a renamed one fails every worker)."""
    from mtlrobust import cli

    stages = {cli.COMMANDS[s][0] for s in ("train", "evaluate", "theory")}
    assert stages <= set(warmstart.PRELOAD)
    assert all(importlib.util.find_spec(m) is not None for m in warmstart.PRELOAD)


def test_a_worker_that_cannot_import_is_not_started_again(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    dir_fd = warmstart.private_dir()
    name = f"mtlrobust-test-{os.getpid()}"
    monkeypatch.setattr(warmstart, "PRELOAD", ("mtlrobust.no_such_module",))
    assert warmstart.serve(name, os.dup(dir_fd), "k", 1, 1) == 1
    marks = tmp_path / f"mtlrobust-warm-{os.geteuid()}"
    assert (marks / "k.failed").exists()

    def no_fork():
        raise AssertionError("a worker was started again")

    monkeypatch.setattr(os, "fork", no_fork)
    warmstart.spawn(dir_fd, "k", name, 1, 1)  # commands of this fingerprint now run cold without trying
    assert warmstart.stop_all() == 0  # no worker runs here; `stop` clears the mark
    assert not (marks / "k.failed").exists()
    os.close(dir_fd)
