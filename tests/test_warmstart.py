"""Warm start (mtlrobust.warmstart): a torch stage forked from the worker runs exactly what the cold
command runs (byte-identical checkpoint, training log and evaluation CSV), reports the same errors and
exit status, ends when its command ends, and is never used where it must not be."""

from __future__ import annotations

import json
import os
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


@pytest.fixture(scope="module")
def warm_env():
    """An environment whose commands use a worker of their own (a short runtime dir: socket paths are
    limited to 108 bytes); the worker is stopped afterwards."""
    runtime = Path(tempfile.mkdtemp(prefix="mw", dir="/tmp"))
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "XDG_RUNTIME_DIR": str(runtime)}
    env.update(MTLROBUST_WARM="1", MTLROBUST_WARM_IDLE="300", OMP_NUM_THREADS="1")
    env.pop("SLURM_JOB_ID", None)
    yield env
    subprocess.run([sys.executable, "-m", "mtlrobust.warmstart", "stop"], env=env, check=True)
    shutil.rmtree(runtime, ignore_errors=True)


def _cli(env: dict, *argv, **kw) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "mtlrobust", *map(str, argv)]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, **kw)


def _worker_log(env: dict) -> Path:
    """Start the environment's worker (a first command runs cold and starts it); its log once it serves."""
    sock_dir = Path(env["XDG_RUNTIME_DIR"]) / f"mtlrobust-warm-{os.getuid()}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if list(sock_dir.glob("*.sock")):
            (log,) = sock_dir.glob("*.log")
            return log
        assert _cli(env, "evaluate", "--help").returncode == 0  # cold while no worker serves; starts one
        time.sleep(0.5)
    raise AssertionError(f"no worker socket in {sock_dir}")


def _train_argv(root: Path, out: Path) -> list:
    return ["train", "--data", root, "--arch", "xception", "--tasks", "sd", "--epochs", "1", "--batch-size",
            "3", "--val-limit", "2", "--threads", "1", "--no-progress", "--out", out / "epoch1.pt",
            "--log", out / "log.csv"]  # fmt: skip


def _eval_argv(ckpt: Path, root: Path, out: Path) -> list:
    pgd = {"name": "pgd", "method": "pgd", "norm": "linf", "eps": 8 / 255, "steps": 2}
    return ["evaluate", "--checkpoint", ckpt, "--data", root / "val", "--attack-json", json.dumps(pgd),
            "--attacked", "s", "--attacked", "s+d", "--device", "cpu", "--out", out / "pgd.csv"]  # fmt: skip


@pytest.mark.slow
def test_warm_stages_write_the_same_bytes_as_cold_ones(fake_root, warm_env, tmp_path):
    cold_env = {**warm_env, "MTLROBUST_WARM": "0"}
    log = _worker_log(warm_env)
    for name, env in (("cold", cold_env), ("warm", warm_env)):
        out = tmp_path / name
        trained = _cli(env, *_train_argv(fake_root, out))
        assert trained.returncode == 0, trained.stderr
        evaluated = _cli(env, *_eval_argv(out / "epoch1.pt", fake_root, out))
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


def test_warm_errors_and_exit_status_are_the_commands(warm_env, tmp_path):
    _worker_log(warm_env)
    cold_env = {**warm_env, "MTLROBUST_WARM": "0"}
    argv = _eval_argv(tmp_path / "none.pt", tmp_path, tmp_path)
    warm, cold = _cli(warm_env, *argv), _cli(cold_env, *argv)
    assert warm.returncode == cold.returncode == 2
    assert warm.stderr == cold.stderr and "none.pt does not exist" in warm.stderr
    usage = _cli(warm_env, "evaluate", "--bogus")  # argparse's own exit inside the child
    assert usage.returncode == 2 and "the following arguments are required: --checkpoint" in usage.stderr
    assert str(tmp_path / "none.pt") in _worker_log(warm_env).read_text()


def test_ending_the_command_ends_its_forked_job(fake_root, warm_env, tmp_path):
    log = _worker_log(warm_env)
    argv = _train_argv(fake_root, tmp_path)
    argv[argv.index("--epochs") + 1] = "1000"
    cmd = [sys.executable, "-m", "mtlrobust", *map(str, argv)]
    command = subprocess.Popen(cmd, env=warm_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    mark = f"--out {tmp_path / 'epoch1.pt'}"
    deadline = time.monotonic() + 60
    while mark not in log.read_text():
        assert time.monotonic() < deadline and command.poll() is None, "the job was not forked"
        time.sleep(0.2)
    (line,) = [line for line in log.read_text().splitlines() if mark in line]
    child = int(line.split()[1].rstrip(":"))
    assert Path(f"/proc/{child}").exists()
    # Stopping the worker leaves its running jobs alone, and a new worker can start beside them.
    subprocess.run([sys.executable, "-m", "mtlrobust.warmstart", "stop"], env=warm_env, check=True)
    while list(log.parent.glob("*.sock")):
        assert time.monotonic() < deadline, "the worker did not stop"
        time.sleep(0.2)
    _worker_log(warm_env)
    assert Path(f"/proc/{child}").exists() and command.poll() is None
    command.send_signal(signal.SIGTERM)
    command.wait(timeout=30)
    deadline = time.monotonic() + 30
    while Path(f"/proc/{child}").exists() and "Z" not in Path(f"/proc/{child}/stat").read_text().split()[2]:
        assert time.monotonic() < deadline, f"forked job {child} outlived its command"
        time.sleep(0.2)
    assert not (tmp_path / "epoch1.pt").exists()


def test_no_worker_unless_asked_for_and_never_inside_slurm(monkeypatch):
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    for value, expected in (("1", True), ("0", False), ("", False)):
        monkeypatch.setenv(warmstart.ENV, value)
        assert warmstart.enabled() is expected
    monkeypatch.setenv("SLURM_JOB_ID", "42")
    assert not warmstart.enabled()
    assert warmstart.run(["evaluate", "--help"]) is None


def test_an_edited_source_file_or_import_time_variable_gets_another_worker(tmp_path, monkeypatch):
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
    assert warmstart.fingerprint(package) != hashseed


def test_a_socket_dir_others_can_enter_is_not_used(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    assert warmstart.socket_dir() == tmp_path / f"mtlrobust-warm-{os.getuid()}"
    (tmp_path / f"mtlrobust-warm-{os.getuid()}").chmod(0o777)
    assert warmstart.socket_dir() is None
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / ("x" * 120)))
    (tmp_path / ("x" * 120)).mkdir()
    assert warmstart.socket_path() is None  # too long for a Unix socket: run cold


def test_a_worker_that_cannot_import_is_not_started_again(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    path = warmstart.socket_dir() / "x.sock"
    monkeypatch.setattr(warmstart, "PRELOAD", ("torch", "mtlrobust.no_such_module"))
    assert warmstart.serve(path) == 1
    assert path.with_suffix(".failed").exists() and not path.exists()

    def no_fork():
        raise AssertionError("a worker was started again")

    monkeypatch.setattr(os, "fork", no_fork)
    warmstart._spawn(path)  # commands of this fingerprint now run cold without trying
    assert path.with_suffix(".failed").exists()
    assert warmstart.stop_all() == 0  # no worker runs here; `stop` clears the mark
    assert not path.with_suffix(".failed").exists()
