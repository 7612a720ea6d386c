"""``mtlrobust plan``: the job list comes from the study plan and matches what Snakemake schedules."""

import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from mtlrobust import cli, cost, study

REPO = Path(__file__).resolve().parents[1]
TEST_STUDY = REPO / "studies" / "test.yaml"


def test_job_counts_match_a_snakemake_dry_run(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "--snakefile", str(REPO / "Snakefile"), "--directory",
         str(tmp_path), "--configfile", str(TEST_STUDY), "--cores", "1"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    snakemake = Counter(re.findall(r"^(?:local)?rule (\w+):$", proc.stdout + proc.stderr, re.M))
    assert cost.job_counts(study.load(TEST_STUDY)) == snakemake


def test_training_resumes_and_evaluations_charge_each_subset_and_step():
    p = study.load(TEST_STUDY)
    jobs = cost.jobs(p)
    trains = [j for j in jobs if j["rule"] == "train"]
    # milestones 1 and 2: models needed at both train 1 + 1 epochs, models needed only at 2 train 2
    assert sorted(j["epochs"] for j in trains) == [1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2]
    # table_at's two adversarially trained models (2-step PGD, share 1) count 3 standard epochs per epoch
    assert sorted(j["factor"] for j in trains) == [1.0] * 10 + [3.0] * 2
    apgd = [j for j in jobs if j["rule"] == "evaluate" and j["passes"] == 2 + 2]
    assert len(apgd) > 0  # steps: 2 in the test study
    p.attacks["apgd"] = {"name": "apgd", "method": "apgd", "eps": 0.03}  # no steps: apgd's own 100
    assert max(j.get("passes", 0) for j in cost.jobs(p)) == 100 + 2
    hours = cost.estimate(
        [{"rule": "train", "arch": "resnet18", "epochs": 150},
         {"rule": "evaluate", "arch": "resnet18", "subsets": 2, "passes": 27}],
        {"resnet18": 3600.0}, epoch_images=100, test_images=10,
    )  # fmt: skip
    assert hours[("train", "resnet18")] == pytest.approx(150.0)  # 150 epochs x 1 h
    assert hours[("evaluate", "resnet18")] == pytest.approx(10 * 2 * 27 * 36 * 2 / 3 / 3600)
    with pytest.raises(ValueError, match="resnet18"):  # no seconds for an architecture the study trains
        cost.estimate(jobs, {"xception": 1.0}, 100, 1000)


def test_cli_prints_counts_and_hours_as_json(capsys):
    assert cli.main(["plan", "--configfile", str(REPO / "studies" / "paper.yaml"), "--json"]) == 0
    out = capsys.readouterr().out
    assert '"train": 172' in out and '"train_resumable": 132' in out and '"evaluate/resnet18"' in out


@pytest.mark.parametrize("flag", ["--epoch-images", "--test-images"])
def test_cli_rejects_image_counts_below_one(flag, capsys):
    assert cli.main(["plan", "--configfile", str(REPO / "studies" / "test.yaml"), flag, "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"mtlrobust plan: error: {flag}: expected a number of images >= 1, got 0"]
