"""The Snakemake workflow end to end on the tiny study (studies/test.yaml), and its config checks.

The run happens in a temporary working directory (``--directory``), so the repository stays clean.
"""

import copy
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd
import pytest
import yaml

from mtlrobust import study

REPO = Path(__file__).resolve().parents[1]
STUDY = yaml.safe_load((REPO / "studies" / "test.yaml").read_text())
MORE = ["recommend", "supp_tables", "figure1_orders", "table_sets", "figure1_retrained", "steps"]  # issue 11
TABLES = ["table1", "table2", "table3", "figure1", "rq1_norm", "rq1_eps", "rq1_arch", "rq1_epochs", *MORE]
FIGURES = ["figure1", "rq1_norm", "rq1_eps", "rq1_arch", "rq1_epochs", "figure1_orders", "figure1_retrained"]
FIGURES += ["steps"]
TABLES += ["table_at"]  # issue 21
ANALYSIS_RULES = {"aggregate", "table", "figure", "all"}


def snakemake(
    workdir: Path, config: dict, *args: str, timeout: int = 1800, env: dict | None = None
) -> subprocess.CompletedProcess:
    """Run the repository's workflow on `config` inside `workdir`."""
    configfile = workdir / "study.yaml"
    configfile.write_text(yaml.safe_dump(config, sort_keys=False))
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"),
           "--directory", str(workdir), "--configfile", str(configfile), "--cores", "2", *args]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)


def planned_jobs(output: str) -> list[tuple[str, dict]]:
    """(rule, wildcards) of each job listed by a dry run."""
    jobs = []
    for block in re.split(r"\n(?=(?:local)?rule \w+:)", output):
        m = re.match(r"(?:local)?rule (\w+):", block.strip())
        if not m:
            continue
        w = re.search(r"^\s+wildcards: (.*)$", block, re.M)
        wildcards = dict(kv.split("=", 1) for kv in w.group(1).split(", ")) if w else {}
        jobs.append((m.group(1), wildcards))
    return jobs


@pytest.fixture(scope="module")
def study_run(tmp_path_factory):
    """The test study, run once. MTLROBUST_TEST_WORKDIR=DIR keeps the run there to inspect (and reuses it)."""
    keep = os.environ.get("MTLROBUST_TEST_WORKDIR")
    workdir = Path(keep) if keep else tmp_path_factory.mktemp("study")
    workdir.mkdir(parents=True, exist_ok=True)
    runtime = Path(tempfile.mkdtemp(prefix="mw", dir="/tmp"))  # the warm-start worker's, short for its socket
    env = {**os.environ, "XDG_RUNTIME_DIR": str(runtime)}
    env.pop("MTLROBUST_WARM", None)
    proc = snakemake(workdir, STUDY, env=env)
    subprocess.run([sys.executable, "-m", "mtlrobust.warmstart", "stop"], env=env, check=True)
    logs = list(runtime.glob("mtlrobust-warm-*/*.log"))
    (workdir / "warm-worker.log").write_text("".join(log.read_text() for log in logs))
    shutil.rmtree(runtime)
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-5000:]
    return workdir


@pytest.mark.slow
def test_local_runs_fork_the_torch_jobs_from_a_warm_worker(study_run):
    """The workflow turns warm start on for local runs: most torch jobs were forked, and all succeeded."""
    log = (study_run / "warm-worker.log").read_text()
    if not log and os.environ.get("MTLROBUST_TEST_WORKDIR"):
        pytest.skip("the kept run had nothing left to do")
    logs = study_run / "logs"
    torch_jobs = [*(logs / "train").rglob("*.log"), *(logs / "evaluate").rglob("*.log")]
    torch_jobs += logs.glob("theory*")
    started = re.findall(r"^pid \d+: mtlrobust (train|evaluate|theory) ", log, re.M)
    forked = re.findall(r"^pid \d+: exit (\d+), ", log, re.M)
    assert "ready on" in log and set(forked) == {"0"} and len(forked) == len(started), log[-3000:]
    # the first jobs run cold while the worker imports torch
    assert len(torch_jobs) // 2 <= len(forked) <= len(torch_jobs), (len(forked), len(torch_jobs))
    # each forked train or evaluate job wrote its own figures next to its benchmark, which measured its
    # launcher (waiting for the job: at least the job's wall time); a cold job's is empty (Snakemake
    # creates the logs a job did not write)
    job_tsvs = sorted([*(logs / "train").rglob("*.job.tsv"), *(logs / "evaluate").rglob("*.job.tsv")])
    written = [p for p in job_tsvs if p.stat().st_size]
    assert len(job_tsvs) == len(torch_jobs) - len(list(logs.glob("theory*")))
    assert len(written) == len(re.findall(r"^pid \d+: mtlrobust (?:train|evaluate) ", log, re.M)) > 0
    for path in written:
        job = pd.read_csv(path, sep="\t").iloc[0]
        bench = pd.read_csv(path.with_name(path.name.replace(".job.tsv", ".benchmark.tsv")), sep="\t").iloc[0]
        assert 0 < job["s"] <= bench["s"] and job["cpu_time"] > 0 and job["max_rss"] > 0, (path, job, bench)


def _read(run_dir: Path, name: str) -> pd.DataFrame:
    md = run_dir / "results" / f"{name}.md"
    assert "|" in md.read_text(), f"{md} has no Markdown table"
    return pd.read_csv(run_dir / "results" / f"{name}.csv")


def _all_finite(df: pd.DataFrame, columns) -> bool:
    values = df[list(columns)].apply(pd.to_numeric, errors="coerce").to_numpy().ravel()
    return len(values) > 0 and all(math.isfinite(v) for v in values)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["table1", "table2"])
def test_tables_1_and_2_rows_are_attack_x_main_and_columns_weighting_x_aux(study_run, name):
    df = _read(study_run, name)
    letters = STUDY["tasks"]
    cells = [f"{w}:{t}" for w in STUDY["weightings"] for t in letters]
    assert list(df.columns) == [
        "attack",
        "main",
        *[
            f"{c}{x}"
            for c in cells
            for x in ("", "_lo", "_hi", "_n", "_rom", "_rom_lo", "_rom_hi", "_median", "_top_share")
        ],
    ]
    kinds = ["single", "multi"] if name == "table1" else STUDY["study"]["table2"]["attacks"]
    mains = STUDY["study"][name]["mains"]
    assert sorted(zip(df["attack"], df["main"], strict=True)) == sorted((k, m) for k in kinds for m in mains)
    assert _all_finite(df, cells)
    assert (df[[f"{c}_lo" for c in cells]].to_numpy() <= df[cells].to_numpy()).all()
    assert (df[[f"{c}_n" for c in cells]] == STUDY["evaluation"]["limit"]).all().all()


@pytest.mark.slow
def test_table3_has_one_row_per_proxy(study_run):
    df = _read(study_run, "table3")
    assert list(df.columns) == [
        "proxy",
        "target",
        "n",
        "pearson_r",
        "pearson_r_lo",
        "pearson_r_hi",
        "p_value",
        "fisher_lo",
        "fisher_hi",
        "pearson_r_rom",
        "pearson_r_rom_lo",
        "pearson_r_rom_hi",
        "excluded",
    ]
    # cells of models that do not beat the constant predictor are left out (all of them in this 2-epoch study)
    assert len(df) == 3 and ((df["n"] >= 3) | (df["excluded"].fillna("") != "")).all()


@pytest.mark.slow
@pytest.mark.parametrize("name", ["rq1_norm", "rq1_eps", "rq1_arch", "rq1_epochs"])
def test_rq1_sweeps_cover_every_setting_with_finite_values(study_run, name):
    df = _read(study_run, name)
    spec = STUDY["study"][name]
    key = {"rq1_norm": "attacks", "rq1_eps": "attacks", "rq1_arch": "archs", "rq1_epochs": "epochs"}[name]
    settings = spec[key]
    assert df["value"].nunique() == len(settings)
    assert set(df["kind"]) == {"single", "multi"}
    assert _all_finite(df, ["rel_vuln", "single_task_rel_vuln"])


@pytest.mark.slow
@pytest.mark.parametrize("name", FIGURES)
def test_every_figure_is_drawn(study_run, name):
    png = study_run / "results" / f"{name}.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (study_run / "results" / f"{name}.pdf").read_bytes()[:4] == b"%PDF"


@pytest.mark.slow
@pytest.mark.parametrize("name", TABLES)
def test_every_table_has_a_cell_table(study_run, name):
    from mtlrobust.analysis.claims import read_cells

    assert (study_run / "results" / f"{name}.md").read_text().count("[") > 0  # values with intervals
    if name in ("table1", "table2", "table3", "figure1"):
        assert len(read_cells(study_run / "results" / "cells" / f"{name}.csv")) > 0  # the claims' contract
    elif name != "steps":  # steps: per-step values in steps.csv, no cell of the claims' contract
        assert len(pd.read_csv(study_run / "results" / "cells" / f"{name}.csv")) > 0


@pytest.mark.slow
def test_claims_has_one_row_per_claim(study_run):
    from mtlrobust.analysis.claims import CLAIM_COLUMNS

    df = pd.read_csv(study_run / "results" / "claims.csv")
    assert list(df.columns) == CLAIM_COLUMNS and df["claim"].is_unique
    rq3 = ("rq3_stronger_than_pgd", "rq3_stronger_than_pgd_main_error", "rq3_weights_negated")
    adaptive = [f"{c}:{a}" for a in STUDY["study"]["table2"]["attacks"] for c in rq3]
    proxies = ["rq4_proxy:epochs", "rq4_proxy:arch", "rq4_proxy_very_strong:arch", "rq4_proxy:clean",
               "rq4_proxy_very_strong:clean"]  # fmt: skip
    # rq1_norm's L2 attacks: the paper's budget (label l2) and the budget-matched one (l2_matched)
    l2 = [f"rq1_l2_confirms_mao:{a}" for a in ("pgd_l2", "pgd_l2_matched")]
    first = ["rq1_not_reliably_less_vulnerable:single", "rq1_not_reliably_less_vulnerable:multi", *l2,
             "rq1_eps_not_reliable:single", "rq1_eps_not_reliable:multi", "rq1_deep_more_vulnerable",
             "rq3_weights_lower_pgd"]  # fmt: skip
    figure1 = ["rq2_one_task_dominates", "rq2_same_task_dominates", "rq2_adding_tasks_increases",
               "rq2_theorem4_bound"]  # fmt: skip
    last = ["rq3_some_auxiliary_helps", *proxies, *figure1]
    by_id = df.set_index("claim")
    assert by_id.loc["rq2_theorem4_bound", "n"] > 0  # theory.csv reached the claims
    assert "wgd_paper (WGD, paper variant)" in by_id.loc["rq3_stronger_than_pgd:wgd_paper", "paper"]
    adversarial = [f"{c}:{a}" for a in ("pgd", "apgd")
                   for c in ("at_lowers_vulnerability", "at_auxiliary_lowers_vulnerability")]  # fmt: skip
    assert df["claim"].tolist() == [
        *first,
        *adaptive,
        *last,
        *adversarial,
        "at_clean_cost_smaller_with_auxiliary",
    ]
    assert set(df["verdict"]) <= {"supported", "contradicted", "unresolved", "too few cells"}
    md = (study_run / "results" / "claims.md").read_text()
    # a verdict row per measured claim; the claims no cell measures (n = 0) are named in one line
    measured = df[df["n"] > 0]
    assert sum(line.startswith(("| rq", "| at_")) for line in md.splitlines()) == len(measured)
    unmeasured = df.loc[df["n"] == 0, "claim"]
    line = next((x for x in md.splitlines() if x.startswith("Not measured by this study")), "")
    assert all(f"`{c}`" in line for c in unmeasured)


@pytest.mark.slow
def test_table_at_puts_adversarially_trained_models_next_to_standard_ones(study_run):
    from mtlrobust.checkpoint import load_checkpoint

    df = _read(study_run, "table_at")
    grid = df[df["kind"].isin(["single"])]
    assert sorted(zip(grid["training"], grid["attack"], strict=True)) == sorted(
        (t, a) for t in ("adversarial", "standard") for a in ("apgd", "pgd")
    )
    clean = df[df["attack"].str.startswith("clean error")]
    assert sorted(clean["training"]) == ["adversarial", "cost", "standard"]
    assert _all_finite(grid, ["uniform:s", "uniform:d"]) and _all_finite(clean, ["uniform:s"])
    md = (study_run / "results" / "table_at.md").read_text()
    assert "## Gradient-masking checks (" in md and md.count("| resnet18-uniform-seg") >= 2
    ckpt = study_run / "results" / "models" / "resnet18-uniform-seg-s0-adv_madry" / "epoch2.pt"
    adv = load_checkpoint(ckpt)["hparams"]["adversarial"]
    assert adv["name"] == "madry" and adv["share"] == 1.0 and adv["attack"]["steps"] == 2
    assert "adversarial" not in load_checkpoint(str(ckpt).replace("-adv_madry", ""))["hparams"]


@pytest.mark.slow
def test_vulnerability_and_model_check(study_run):
    vuln = pd.read_csv(study_run / "results" / "vulnerability.csv")
    assert set(vuln["attack"]) == set(STUDY["attacks"])
    assert vuln["rel_vuln"].notna().any()
    models = pd.read_csv(study_run / "results" / "models.csv")
    assert {"model_id", "epoch", "task", "val_error", "trivial_error", "beats_trivial"} <= set(models.columns)
    assert set(models["split"]) == {"val"}  # the test study's val views are distinct from its test views
    assert (study_run / "results" / "theory.csv").stat().st_size > 0
    assert any((study_run / "logs" / "train").rglob("*.log"))


@pytest.mark.slow
def test_report_collects_the_outputs(study_run):
    proc = snakemake(study_run, STUDY, "--report", "report.html")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Report created" in proc.stdout + proc.stderr
    assert (study_run / "report.html").stat().st_size > 10_000


@pytest.mark.slow
def test_second_run_has_nothing_to_do(study_run):
    proc = snakemake(study_run, STUDY, "-n")
    assert proc.returncode == 0, proc.stderr
    assert planned_jobs(proc.stdout + proc.stderr) == []
    assert "Nothing to be done" in proc.stdout + proc.stderr


def reversed_mappings(node):
    """The same config with every mapping's keys in reverse order (as another YAML tool might write it)."""
    if isinstance(node, dict):
        return {k: reversed_mappings(node[k]) for k in reversed(list(node))}
    if isinstance(node, list):
        return [reversed_mappings(v) for v in node]
    return node


@pytest.mark.slow
def test_same_values_in_another_key_order_rerun_nothing(study_run):
    config = reversed_mappings(STUDY)
    assert list(config["dataset"]["synthetic"]) == ["seed", "resolution", "views", "points", "buildings"]
    proc = snakemake(study_run, config, "-n")
    assert proc.returncode == 0, proc.stderr
    assert planned_jobs(proc.stdout + proc.stderr) == []
    assert "Nothing to be done" in proc.stdout + proc.stderr


@pytest.mark.slow
def test_changing_one_attack_reruns_only_its_jobs_and_the_outputs_showing_it(study_run):
    config = copy.deepcopy(STUDY)
    config["attacks"]["wgd"]["steps"] += 1
    proc = snakemake(study_run, config, "-n")
    assert proc.returncode == 0, proc.stderr
    jobs = planned_jobs(proc.stdout + proc.stderr)
    evaluations = [w for rule, w in jobs if rule in ("evaluate", "evaluate_traced")]
    assert evaluations and all(w["attack"] == "wgd" for w in evaluations)
    wgd_models = {p.parent.parent.name for p in (study_run / "results" / "evals").glob("*/epoch*/wgd.csv")}
    assert {w["model_id"] for w in evaluations} == wgd_models
    others = sorted((rule, w.get("name", "")) for rule, w in jobs if not rule.startswith("evaluate"))
    # only Table 2 and the steps output show WGD (and the claims read Table 2's cell table)
    assert others == [("aggregate", ""), ("all", ""), ("claims", ""), ("figure", "steps"), ("table", "steps"),
                      ("table", "table2")]  # fmt: skip


def test_evaluations_whose_steps_an_output_reads_and_only_they_write_steps(tmp_path):
    """One evaluate rule, with the per-step output for the evaluations of PLAN.traced (rule evaluate_traced):
    a dry run plans every evaluation once, and --steps-out writes exactly the traced ones' .steps.csv."""
    proc = snakemake(tmp_path, STUDY, "-n", "--printshellcmds", timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    plan = study.load(REPO / "studies" / "test.yaml")
    jobs = {"evaluate": {}, "evaluate_traced": {}}
    for block in re.split(r"\n(?=\[[^\]]+\]\n(?:local)?rule )", proc.stdout + proc.stderr):
        rule = re.search(r"^(?:local)?rule (\w+):", block, re.M)
        if rule and rule.group(1) in jobs:
            model_id, epoch, attack = re.search(
                r"wildcards: model_id=(.+), epoch=(\d+), attack=(\w+)$", block, re.M
            ).groups()
            key = (model_id, int(epoch), attack)
            output = re.search(r"^\s+output: (.*)$", block, re.M).group(1)
            shell = re.search(r"^Shell command: (.*)$", block, re.M).group(1)
            jobs[rule.group(1)][key] = (output, shell)
    assert plan.traced and set(jobs["evaluate_traced"]) == plan.traced
    assert set(jobs["evaluate"]) == set(plan.evals) - plan.traced
    for (model_id, epoch, attack), (output, shell) in jobs["evaluate_traced"].items():
        steps = f"results/evals/{model_id}/epoch{epoch}/{attack}.steps.csv"
        assert steps in output.split(", ") and f"--steps-out {steps} " in shell, (output, shell)
    assert not any("--steps-out" in shell or ".steps.csv" in out for out, shell in jobs["evaluate"].values())


def test_slurm_runtime_of_adversarial_training_grows_with_its_attack_steps(tmp_path):
    """A training job's -t (resources.runtime, minutes) is 480 for a standard model and 480 x (1 + share x k)
    for an adversarially trained one: the test study's madry setting attacks every example with its 2-step
    PGD, so 3 x 480."""
    proc = snakemake(tmp_path, STUDY, "-n", timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    runtimes = {}
    for block in re.split(r"\n(?=\[[^\]]+\]\n(?:local)?rule )", proc.stdout + proc.stderr):
        if re.search(r"^(?:local)?rule train(?:_resumable)?:", block, re.M):
            model_id = re.search(r"wildcards: model_id=([^,]+),", block).group(1)
            runtimes.setdefault(model_id, set()).add(int(re.search(r"runtime=(\d+)", block).group(1)))
    adversarial = {m for m in runtimes if m.endswith("-adv_madry")}
    assert adversarial and len(runtimes) > len(adversarial)
    assert all(runtimes[m] == ({1440} if m in adversarial else {480}) for m in runtimes), runtimes


def test_bad_config_fails_before_any_job_with_a_clear_message(tmp_path):
    """The schema's and the plan's checks stop the run before any job (tests/test_study.py has the cases)."""
    for changes, expected in (
        ({"tasks": ["s", "x"]}, ["tasks", "'x'"]),
        ({"attacks": {**STUDY["attacks"], "pgd": {"method": "fgsm", "eps": "8/255", "steps": 2}}},
         ["attacks.pgd", "'steps'"]),
        ({"study": {**STUDY["study"], "table1": {"mains": ["n"]}}},
         ["study.table1.mains", "'n'", "not among the tasks"]),
    ):  # fmt: skip
        proc = snakemake(tmp_path, {**STUDY, **changes}, "-n", timeout=120)
        message = proc.stdout + proc.stderr
        assert proc.returncode != 0
        for text in expected:
            assert text in message, f"{text!r} not in:\n{message[-3000:]}"
        assert not (tmp_path / "results").exists() and not (tmp_path / "resources").exists()
