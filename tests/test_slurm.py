"""The SLURM profile (profiles/slurm) on a real single-node SLURM cluster started by the test itself.

tests/slurm/install.sh installs Debian's slurm-wlm and munge when missing (needs root and apt-get; the tests
skip with the reason otherwise), tests/slurm/start.sh starts munged, slurmctld and slurmd on 127.0.0.1 with
fake GPU device files, tests/slurm/stop.sh stops exactly the daemons it started. The runs use the repository's
profile with test-only overrides (TEST_OVERRIDES: no accounting database, fast polling) in a temporary
directory, so the repository stays clean. The toy workflow isolates cluster problems from workflow problems.
"""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
HARNESS = REPO / "tests" / "slurm"
PROFILE = REPO / "profiles" / "slurm" / "profile.yaml"

# What a laptop-sized test cluster needs on top of the real profile.
TEST_OVERRIDES = {
    "slurm-status-command": "squeue",  # no slurmdbd here; MinJobAge=300 keeps finished jobs visible to squeue
    "slurm-no-account": True,  # no accounts without slurmdbd
    "slurm-init-seconds-before-status-checks": 1,  # default 40 s
    "seconds-between-status-checks": 1,
    "slurm-keep-successful-logs": True,  # keep .snakemake/slurm_logs for a failed assertion's message
    "latency-wait": 5,  # local disk, no NFS lag
    "retries": 0,  # a failure must fail the test, not be retried
    "keep-going": False,
}
TEST_PARTITION = "debug"
# The test node advertises at least 4 CPUs and 4 fake GPUs whatever the machine has (slurm.conf uses
# config_overrides): jobs spend much of their time waiting on SLURM and status polls, so 4 in flight keep
# 2 real cores busy.
CPUS = max(4, os.cpu_count() or 1)
GPUS = 4


# ------------------------------------------------------------------------------------ cluster
def _script(name: str, *args: str, timeout: int) -> subprocess.CompletedProcess:
    cmd = ["bash", str(HARNESS / name), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def _alive(pid: int, name: str) -> bool:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip() == name
    except OSError:
        return False


@pytest.fixture(scope="module")
def slurm_lab(tmp_path_factory):
    """A running single-node cluster (its scratch folder); every daemon it started is stopped afterwards."""
    install = _script("install.sh", timeout=900)
    if install.returncode == 3:
        pytest.skip(install.stderr.strip())
    assert install.returncode == 0, (
        f"installing slurm-wlm/munge failed:\n{install.stdout[-3000:]}\n{install.stderr}"
    )
    lab = tmp_path_factory.mktemp("slurm-lab")
    started: list[tuple[str, int]] = []
    try:
        start = _script("start.sh", str(lab), str(CPUS), str(GPUS), timeout=120)
        if start.returncode == 3:
            pytest.skip(start.stderr.strip())
        pids = lab / "run" / "started.pids"
        if pids.exists():
            started = [(n, int(p)) for n, p in (line.split() for line in pids.read_text().splitlines())]
        assert start.returncode == 0, f"start.sh failed:\n{start.stdout}{start.stderr}"
        yield lab
    finally:
        stop = _script("stop.sh", str(lab), timeout=120)
        left = [f"{n} ({p})" for n, p in started if _alive(p, n)]
        links = [f for f in ("slurm.conf", "gres.conf") if os.path.islink(f"/etc/slurm/{f}")
                 and os.readlink(f"/etc/slurm/{f}").startswith(str(lab))]  # fmt: skip
        assert not left, f"daemons still running after stop.sh: {left}\n{stop.stdout}{stop.stderr}"
        assert not links, f"stop.sh left /etc/slurm links into {lab}: {links}"


def write_test_profile(workdir: Path) -> Path:
    """The repository's profile plus TEST_OVERRIDES, written to `workdir`/profile/profile.yaml."""
    profile = yaml.safe_load(PROFILE.read_text())
    profile.update(TEST_OVERRIDES)
    profile["default-resources"] = {**profile.get("default-resources", {}), "slurm_partition": TEST_PARTITION}
    out = workdir / "profile"
    out.mkdir(parents=True, exist_ok=True)
    (out / "profile.yaml").write_text(yaml.safe_dump(profile, sort_keys=False))
    return out


def run_snakemake(workdir: Path, *args: str, timeout: int) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "snakemake", "--directory", str(workdir),
           "--workflow-profile", str(write_test_profile(workdir)), *args]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    (workdir / "snakemake.log").write_text(proc.stdout + proc.stderr)
    return proc


# ---------------------------------------------------------------------------------- what went through sbatch
def slurm_jobs(lab: Path, run_uuid: str) -> dict[str, str]:
    """SLURM job id -> final state of every job the run submitted (its SLURM job name is the run id).

    Read from slurmctld's job completion log: squeue forgets finished jobs after MinJobAge (300 s)."""
    text = (lab / "log" / "jobcomp.txt").read_text()
    jobs = re.findall(r"JobId=(\d+) .*?Name=(\S+) JobState=(\S+)", text)
    return {job: state for job, name, state in jobs if name == run_uuid}


def check_every_job_went_through_sbatch(lab: Path, log: str) -> tuple[Counter, set[str]]:
    """Parse Snakemake's log: every finished non-local job was submitted with sbatch (alone or in a group job)
    and every submitted SLURM job COMPLETED. Returns (finished jobs per rule, SLURM job ids)."""
    assert "steps (100%) done" in log, log[-5000:]
    run_uuid = re.search(r"^SLURM run ID: (\S+)$", log, re.M).group(1)
    stats_block = log.split("Job stats:", 1)[1].split("\n\n", 1)[0]
    expected = Counter({m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", stats_block, re.M)})
    expected.pop("total", None)

    finished = dict(re.findall(r"^Finished jobid: (\d+) \(Rule: (\w+)\)$", log, re.M))
    assert Counter(finished.values()) == expected, f"finished jobs {Counter(finished.values())} != {expected}"
    local = set(re.findall(r"^localrule \w+:\n(?:    .*\n)*?    jobid: (\d+)$", log, re.M))

    submitted = re.findall(r"^Job (\S+) has been submitted with SLURM jobid (\d+)", log, re.M)
    direct = {job for job, _ in submitted if job.isdigit()}
    n_groups = sum(1 for job, _ in submitted if not job.isdigit())
    headers = log.split("] Group job ")[1:]
    assert len(headers) == n_groups, f"{len(headers)} group jobs printed, {n_groups} submitted"
    members = {m for h in headers for m in re.findall(r"^        jobid: (\d+)$", h.split("\n[", 1)[0], re.M)}

    remote = set(finished) - local
    assert remote == direct | members, (
        f"jobs not submitted with sbatch: {sorted(remote - direct - members)}; "
        f"submitted but not finished: {sorted((direct | members) - remote)}"
    )
    ids = {sid for _, sid in submitted}
    states = slurm_jobs(lab, run_uuid)
    assert set(states) == ids, f"SLURM ran {sorted(states)} for run {run_uuid}; the log: {sorted(ids)}"
    assert set(states.values()) == {"COMPLETED"}, states
    return Counter(finished.values()), ids


# ------------------------------------------------------------------------------------ tests
def documented_slurm_commands() -> list[tuple[str, str]]:
    """(file, command) of every `snakemake ...` command that the README or a profile/study comment gives for
    the SLURM profile."""
    found = []
    for f in [REPO / "README.md", PROFILE, *sorted((REPO / "studies").glob("*.yaml"))]:
        for cmd in re.findall(r"(snakemake [^`\n]*profiles/slurm[\w-]*[^`\n]*)", f.read_text()):
            found.append((f.name, cmd.strip().rstrip(".").strip()))
    return found


def effective_settings(argv: list[str]):
    """The options Snakemake runs with for `snakemake ARGV` in the repository, profiles included."""
    from snakemake.cli import parse_args

    return parse_args(argv)[1]


def test_the_documented_slurm_command_gets_exactly_the_slurm_profile(monkeypatch):
    """One SLURM command, one behaviour: `--workflow-profile profiles/slurm` replaces the local profile,
    whereas `--profile profiles/slurm` keeps profiles/default loaded on top of it (2 cores, no keep-going), so
    the documentation must never give that form."""
    monkeypatch.chdir(REPO)  # Snakemake finds profiles/default next to the Snakefile, as for a user
    slurm = yaml.safe_load(PROFILE.read_text())
    local = yaml.safe_load((REPO / "profiles" / "default" / "profile.yaml").read_text())
    plain = effective_settings(["--workflow-profile", "none"])
    commands = documented_slurm_commands()
    assert any(f == "README.md" for f, _ in commands) and len(commands) >= 3, commands
    for where, cmd in commands:
        argv = cmd.replace("profiles/slurm_mysite", "profiles/slurm").split()[1:]
        assert "--profile" not in argv, f"{where}: {cmd!r} stacks profiles/default; use --workflow-profile"
        args = effective_settings(argv)
        assert (args.executor, args.keep_going, args.jobs) == ("slurm", True, 100), f"{where}: {cmd!r}"
        for key in local:  # nothing of the local profile: the SLURM profile's value or Snakemake's default
            attr = key.replace("-", "_")
            expected = slurm[key] if key in slurm else getattr(plain, attr)
            assert getattr(args, attr) == expected, (
                f"{where}: {cmd!r} runs with {key}={getattr(args, attr)!r}"
            )

    stacked = effective_settings(["--profile", "profiles/slurm", "--configfile", "studies/paper.yaml"])
    assert (stacked.executor, stacked.keep_going, stacked.cores) == ("slurm", False, 2)


def test_no_slurm_variable_skips_the_cluster_tests_quickly():
    """MTLROBUST_NO_SLURM=1: the `slurm` tests are skipped with the reason, before anything is installed."""
    env = {**os.environ, "MTLROBUST_NO_SLURM": "1"}
    cmd = [sys.executable, "-m", "pytest", "-q", "-rs", "-m", "slurm", "-p", "no:cacheprovider", __file__]
    start = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env, cwd=REPO)
    took = time.monotonic() - start
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    n_slurm = sum(1 for f in globals().values() if getattr(f, "pytestmark", None)
                  and any(m.name == "slurm" for m in f.pytestmark))  # fmt: skip
    assert n_slurm >= 2 and f"{n_slurm} skipped" in out, out[-3000:]
    assert "MTLROBUST_NO_SLURM is set" in out and "passed" not in out, out[-3000:]
    assert took < 60, f"the skipped run took {took:.0f} s"


@pytest.mark.slurm
def test_toy_workflow_runs_through_sbatch_with_gpus_and_groups(slurm_lab, tmp_path):
    """Cluster + profile mechanics in ~1 min: GPU rule, grouped light jobs, local rule."""
    proc = run_snakemake(tmp_path, "--snakefile", str(HARNESS / "toy" / "Snakefile"), timeout=240)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-5000:]
    per_rule, ids = check_every_job_went_through_sbatch(slurm_lab, log)
    assert per_rule == {"prepare": 3, "train": 2, "table": 2, "figure": 1, "summary": 1, "all": 1}
    # 1 data group + 2 train + 1 report group + summary = 5 submissions for 9 cluster jobs.
    assert len(ids) == 5

    seen = {}
    outputs = [
        *tmp_path.glob("packed/*.txt"),
        *tmp_path.glob("models/*.txt"),
        *tmp_path.glob("results/[tf]*.txt"),
    ]
    for f in outputs:
        fields = dict(kv.split("=", 1) for kv in f.read_text().split())
        assert fields["job"] in ids, f"{f} was written outside the run's SLURM jobs: {fields}"
        seen.setdefault(fields["rule"], set()).add(fields["job"])
        if fields["rule"] == "train":  # SLURM's GPU mapping reached the job
            assert fields["cuda"] in {str(i) for i in range(GPUS)}, fields
    assert len(seen["prepare"]) == 1 and len(seen["train"]) == 2, seen
    assert seen["table"] == seen["figure"], "table and figure jobs should share the report group's allocation"


def _finite(df: pd.DataFrame) -> list[float]:
    values = pd.to_numeric(df.select_dtypes("number").stack(), errors="coerce")
    return [v for v in values if not math.isnan(v)]


@pytest.mark.slurm
@pytest.mark.slow
def test_test_study_runs_through_the_slurm_profile(slurm_lab, tmp_path):
    """studies/test.yaml end to end on the cluster: every job via sbatch, every output complete and finite.

    ~35 SLURM jobs, each starting Snakemake twice (jobstep plugin) plus the job: a few minutes on 2 idle
    cores, ~10 min on a loaded machine, hence the generous timeout."""
    proc = run_snakemake(tmp_path, "--snakefile", str(REPO / "Snakefile"),
                         "--configfile", str(REPO / "studies" / "test.yaml"), timeout=1500)  # fmt: skip
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-8000:]
    per_rule, _ = check_every_job_went_through_sbatch(slurm_lab, log)
    assert per_rule["train"] > 0 and per_rule["evaluate"] > 0, per_rule

    # Same outputs as a local run would leave: Snakemake sees every output present and up to date.
    summary = subprocess.run(
        [sys.executable, "-m", "snakemake", "--summary", "--workflow-profile", "none",
         "--directory", str(tmp_path), "--snakefile", str(REPO / "Snakefile"),
         "--configfile", str(REPO / "studies" / "test.yaml")],
        capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert summary.returncode == 0, summary.stderr[-3000:]
    rows = [line.split("\t") for line in summary.stdout.splitlines() if line.count("\t") == 5][1:]
    assert rows, summary.stdout[-3000:]
    # a resume file is temp(): removed once the next milestone exists, which leaves nothing to update
    stale = [r for r in rows if r[4] not in ("ok", "removed temp file") or r[5] != "no update"]
    assert any(r[4] == "removed temp file" and r[0].endswith(".resume.pt") for r in rows)
    assert not stale, f"outputs missing or out of date after the SLURM run: {stale[:10]}"

    results = tmp_path / "results"
    vuln = pd.read_csv(results / "vulnerability.csv")
    assert len(vuln) > 0 and all(math.isfinite(v) for v in _finite(vuln[["clean_loss", "adv_loss"]]))
    for csv in results.glob("*.csv"):
        df = pd.read_csv(csv)
        assert len(df) > 0, f"{csv.name} is empty"
    for fig in results.glob("*.png"):
        assert fig.stat().st_size > 1000, f"{fig.name} looks empty"
