"""The two paper studies (the supplementary's text, the authors' job scripts) and the training keys they use:
optimizer, momentum, loss reduction and per-encoder schedules reach the jobs' command lines."""

import copy
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from test_train import _cfg, write_fake_split

from mtlrobust import cli, commands, study
from mtlrobust.checkpoint import load_checkpoint
from mtlrobust.train import train

REPO = Path(__file__).resolve().parents[1]
PAPER = REPO / "studies" / "paper.yaml"
JOBS = REPO / "studies" / "paper_jobscripts.yaml"


def _load(path):
    return yaml.safe_load(path.read_text())


def _train_args(plan, arch):
    return next(commands.training(plan.config, m.arch) for m in plan.models.values() if m.arch == arch)


def test_paper_study_follows_the_supplementary_text():
    p = study.load(PAPER)
    args = _train_args(p, "resnet18")
    for flag in ("--optimizer sgd", "--momentum 0.99", "--lr 0.01", "--lr-milestones 100,120,140",
                 "--loss-reduction reference", "--reference-init"):  # fmt: skip
        assert flag in args, (flag, args)
    assert p.final_epoch == 150
    assert "--loss-reduction reference" in commands.evaluation(p.config)  # attacked with the training loss


def test_jobscripts_study_follows_the_authors_scripts_and_differs_only_in_training():
    paper, jobs = _load(PAPER), _load(JOBS)
    paper.pop("training"), jobs.pop("training")
    assert paper == jobs
    p = study.load(JOBS)
    r18 = _train_args(p, "resnet18")
    assert "--optimizer" not in r18 and "--lr 0.001" in r18 and "--lr-milestones 120,140" in r18
    assert "--lr-milestones 170,200" in _train_args(p, "wide_resnet50_2")  # WRN50's own schedule
    assert max(max(e) for e in p.epochs.values()) == 150  # the epoch-150 snapshots, as the paper read them


def test_paper_table2_runs_both_wgd_variants_and_says_so():
    p = study.load(PAPER)
    assert p.attacks["wgd_paper"]["variant"] == "paper"
    spec = p.outputs["table2"].spec
    assert {r["attack"] for r in spec["rows"]} == {"apgd", "wgd", "wgd_paper"}
    assert "wgd = balanced" in spec["note"] and "wgd_paper = paper" in spec["note"]
    assert "WGD equals PGD" in spec["note"]


@pytest.mark.parametrize("path", [PAPER, JOBS], ids=["paper", "jobscripts"])
def test_paper_studies_pass_a_dry_run_and_plan(path, tmp_path, capsys):
    (tmp_path / "resources" / "taskonomy" / "raw" / "rgb").mkdir(parents=True)  # data there: no licence check
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "--quiet", "rules", "--snakefile", str(REPO / "Snakefile"),
         "--directory", str(tmp_path), "--configfile", str(path), "--cores", "1"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert re.search(r"^evaluate_traced\s+21$", proc.stdout + proc.stderr, re.M)
    assert cli.main(["plan", "--configfile", str(path)]) == 0
    assert re.search(r"^evaluate_traced\s+21$", capsys.readouterr().out, re.M)  # the steps output's


def test_default_study_commands_do_not_change():
    """Keys added later leave a study that does not set them with the same job commands (nothing reruns)."""
    p = study.load(REPO / "config.yaml")
    args = _train_args(p, "resnet18")
    assert not re.search(r"--optimizer|--momentum|--loss-reduction", args + commands.evaluation(p.config))


def _config(**training):
    c = _load(REPO / "studies" / "test.yaml")
    c["training"].update(training)
    return study.validated(copy.deepcopy(c))


@pytest.mark.parametrize(
    ("training", "message"),
    [
        (
            {"per_arch": {"xception": {"lr": 0.1}}},
            r"per_arch: \['xception'\] not in config key architectures",
        ),
        (
            {"per_arch": {"resnet50": {"lr_milestones": [2]}}},
            r"per_arch\.resnet50\.lr_milestones: \[2\] never",
        ),
        ({"per_arch": {"resnet50": {"lr": float("nan")}}}, r"per_arch\.resnet50\.lr: expected a finite"),
    ],
)
def test_per_arch_mistakes_are_rejected_naming_the_key(training, message):
    with pytest.raises(study.StudyError, match=message):
        study.build(_config(**training))


@pytest.mark.parametrize("training", [{"per_arch": {"resnet50": {"epochs": 3}}}, {"optimizer": "rmsprop"},
                                      {"momentum": 1.0}, {"loss_reduction": "mean"}])  # fmt: skip
def test_schema_rejects_unknown_training_values(training):
    with pytest.raises(Exception, match="training|per_arch|optimizer|momentum|loss_reduction|rmsprop|mean"):
        _config(**training)


def test_per_arch_schedule_reaches_only_its_encoder():
    p = study.build(_config(per_arch={"resnet50": {"lr": 0.01, "lr_milestones": [1]}}))
    assert "--lr 0.01 --lr-milestones 1 " in _train_args(p, "resnet50")
    assert "--lr 0.001 --lr-milestones ''" in _train_args(p, "resnet18")


def test_training_with_the_reference_reduction_records_it_and_changes_the_weights(tmp_path):
    root = tmp_path / "data"
    write_fake_split(root / "train", ["seg", "normal"], n=8, seed=0)  # normal: a quarter of each view invalid
    kw = dict(tasks=["seg", "normal"], arch="resnet18", epochs=1, batch_size=4, checkpoint_every=0)
    kw["val_limit"] = 0
    train(_cfg(root, tmp_path / "valid.pt", **kw))
    train(_cfg(root, tmp_path / "ref.pt", loss_reduction="reference", **kw))
    valid, ref = load_checkpoint(tmp_path / "valid.pt"), load_checkpoint(tmp_path / "ref.pt")
    assert (valid["hparams"]["loss_reduction"], ref["hparams"]["loss_reduction"]) == ("valid", "reference")
    assert not all(torch.equal(valid["model"][k], ref["model"][k]) for k in valid["model"])
    with pytest.raises(ValueError, match="loss_reduction: checkpoint 'valid', now 'reference'"):
        resumed = {
            **kw,
            "epochs": 2,
            "loss_reduction": "reference",
            "resume_from": str(tmp_path / "valid.pt"),
        }
        train(_cfg(root, tmp_path / "e2.pt", **resumed))
