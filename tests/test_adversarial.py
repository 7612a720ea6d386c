"""Adversarial training (issue 21): model ids, the training attack of a batch (eval-mode BatchNorm, share,
determinism), exact resume at milestones and after a kill, refused settings, and standard runs unchanged."""

from __future__ import annotations

import itertools
import json
import re
import sys
from pathlib import Path

import pytest
import torch
from test_train import _assert_same_state, _cfg, _kill_mid_epoch

from mtlrobust import adversarial as ADV
from mtlrobust import commands, study
from mtlrobust import cost as P
from mtlrobust.checkpoint import load_checkpoint, load_model, load_training_state, resume_path
from mtlrobust.cli import main as cli_main
from mtlrobust.data.packed import PackedDataset
from mtlrobust.ids import model_spec, parse_model_id
from mtlrobust.models import MultiTaskNet
from mtlrobust.train import train, validate

REPO = Path(__file__).resolve().parents[1]
EPS = 8 / 255
PGD = {"method": "pgd", "norm": "linf", "eps": EPS, "step_size": 2 / 255, "steps": 2}
ADV_KW = dict(adversarial="madry", adv_attack=PGD, adv_share=0.5, adv_tasks="all")


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# ---------------------------------------------------------------------------------------------- ids
def test_adversarial_ids_name_the_setting_and_standard_ids_do_not_change():
    std = model_spec("resnet18", "paper", "sd", 0, main="s")
    adv = model_spec("resnet18", "paper", "sd", 0, main="s", adversarial="madry")
    assert std.id == "resnet18-paper-seg+depth_z-s0"  # as before issue 21: existing results stay current
    assert adv.id == "resnet18-paper-seg+depth_z-s0-adv_madry"
    assert parse_model_id(adv.id) == adv and parse_model_id(std.id) == std
    assert adv.standard == std and adv.main == "seg"
    # uniform models name their tasks in registry order; adversarial ones keep the main task (attacked) first
    uni = model_spec("resnet18", "uniform", "sd", 0, main="d", adversarial="madry")
    assert uni.id == "resnet18-uniform-depth_z+seg-s0-adv_madry" and parse_model_id(uni.id) == uni
    assert uni.standard.id == "resnet18-uniform-seg+depth_z-s0" == model_spec("resnet18", "uniform", "ds").id
    assert model_spec("resnet18", "paper", "d", 1, adversarial="x").id == "resnet18-uniform-depth_z-s1-adv_x"
    with pytest.raises(ValueError, match="adversarial setting name 'a-b'"):
        model_spec("resnet18", "uniform", "d", adversarial="a-b")
    with pytest.raises(ValueError, match="malformed model id"):
        parse_model_id("resnet18-uniform-depth_z-s0-adv_")


# ------------------------------------------------------------------------------- the training attack
def _batch(n=4, res=32):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(n, 3, res, res, generator=g)
    tg = {"depth_z": torch.rand(n, 1, res, res, generator=g)}
    mk = {"depth_z": torch.ones(n, 1, res, res)}
    return x, (tg, mk)


def test_training_attack_runs_in_eval_mode_and_attacks_the_chosen_share():
    torch.manual_seed(0)
    model = MultiTaskNet("resnet18", ["depth_z"], decoder="skip")
    model.train()
    buffers = {k: v.clone() for k, v in model.state_dict().items()}
    x, y = _batch()
    setting = ADV.Setting("half", PGD, "main", 0.5)
    out = setting.examples(model, x, y, ["depth_z"], key=(0, 3, 1))
    # eval mode: the k attack forwards leave every BatchNorm running statistic as it was
    assert model.training and all(torch.equal(v, buffers[k]) for k, v in model.state_dict().items())
    moved = (out != x).flatten(1).any(1)
    assert int(moved.sum()) == 2  # share 0.5 of 4 samples; the others stay bit-identical
    assert torch.equal(out[~moved], x[~moved])
    assert float((out - x).abs().max()) <= EPS + 1e-6 and out.min() >= 0 and out.max() <= 1
    # a pure function of (seed, epoch, batch): the same key gives the same examples, another key others
    assert torch.equal(out, setting.examples(model, x, y, ["depth_z"], key=(0, 3, 1)))
    other = ADV.Setting("half", PGD, "main", 0.5).examples(model, x, y, ["depth_z"], key=(0, 3, 2))
    assert not torch.equal(out, other)
    full = ADV.Setting("madry", PGD, "main", 1.0).examples(model, x, y, ["depth_z"], key=(0, 0, 0))
    assert bool((full != x).flatten(1).any(1).all())  # Madry: every sample attacked
    assert ADV.Setting("s", PGD, "all").attacked(["seg", "depth_z"]) == ["seg", "depth_z"]
    assert ADV.Setting("s", PGD, "main").attacked(["seg", "depth_z"]) == ["seg"]


# ------------------------------------------------------------------------------------- exact resume
def test_adversarial_milestone_resume_is_exact_and_differs_from_standard(fake_root, tmp_path):
    kw = dict(tasks=["seg", "depth_z"], hflip=True, lr_milestones=[1], weighting="paper", main="seg")
    kw["keep_resume"] = True
    train(_cfg(fake_root, tmp_path / "a/epoch2.pt", **kw, **ADV_KW))
    train(_cfg(fake_root, tmp_path / "b/epoch1.pt", epochs=1, **kw, **ADV_KW))
    train(
        _cfg(fake_root, tmp_path / "b/epoch2.pt", resume_from=str(tmp_path / "b/epoch1.pt"), **kw, **ADV_KW)
    )
    a, b = load_training_state(tmp_path / "a/epoch2.pt"), load_training_state(tmp_path / "b/epoch2.pt")
    _assert_same_state(a, b)
    assert (tmp_path / "a/epoch2.pt").read_bytes() == (tmp_path / "b/epoch2.pt").read_bytes()
    assert (
        resume_path(tmp_path / "a/epoch2.pt").read_bytes()
        == resume_path(tmp_path / "b/epoch2.pt").read_bytes()
    )
    assert a["model_id"] == "xception-paper-seg+depth_z-s0-adv_madry"
    # validation saw the clean val views: the final weights on them give the logged validation errors
    model, _ = load_model(tmp_path / "a/epoch2.pt")
    val = validate(model, PackedDataset(fake_root / "val", ["seg", "depth_z"]), ["seg", "depth_z"], 4, "cpu")
    assert {t: val[t] for t in ("seg", "depth_z")} == {t: a["history"][-1][f"val_error_{t}"] for t in val}
    assert a["hparams"]["adversarial"] == {"name": "madry", "attack": PGD, "tasks": "all", "share": 0.5}

    train(_cfg(fake_root, tmp_path / "std/epoch2.pt", **kw))
    std = load_checkpoint(tmp_path / "std/epoch2.pt")
    assert std["model_id"] == "xception-paper-seg+depth_z-s0" and "adversarial" not in std["hparams"]
    assert any(not torch.equal(v, a["model"][k]) for k, v in std["model"].items())  # trained on other inputs

    # resuming under another setting (same name, weaker attack) is refused, naming what differs
    weaker = {**ADV_KW, "adv_share": 0.25}
    with pytest.raises(ValueError, match=r"training settings differ \(adversarial: .*'share': 0.5.*0.25"):
        train(
            _cfg(
                fake_root, tmp_path / "c/epoch2.pt", resume_from=str(tmp_path / "b/epoch1.pt"), **kw, **weaker
            )
        )


def test_killed_adversarial_run_resumes_to_the_same_bytes(fake_root, tmp_path, capsys):
    kw = dict(tasks=["depth_z"], epochs=2, batch_size=2, **ADV_KW)
    ref = tmp_path / "ref/epoch2.pt"
    train(_cfg(fake_root, ref, checkpoint_every=0, **kw))
    out = tmp_path / "run/epoch2.pt"
    argv = [sys.executable, "-m", "mtlrobust", "train", "--data", str(fake_root), "--arch", "xception",
            "--tasks", "d", "--epochs", "2", "--batch-size", "2", "--checkpoint-every", "1", "--threads", "1",
            "--adversarial", "madry", "--adv-attack-json", json.dumps(PGD), "--adv-share", "0.5",
            "--adv-tasks", "all", "--out", str(out), "--no-progress"]  # fmt: skip
    _kill_mid_epoch(argv, out)
    capsys.readouterr()
    train(_cfg(fake_root, out, **kw))  # the same command, rerun
    assert "resuming interrupted run" in capsys.readouterr().err
    assert out.read_bytes() == ref.read_bytes()


# ------------------------------------------------------------------------------------------ refusals
@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--adversarial", "madry"], "--adversarial and --adv-attack-json go together"),
        (["--adv-attack-json", '{"method": "pgd", "eps": 0.03}'], "go together"),
        (["--adversarial", "m", "--adv-attack-json", '{"method": "pgd", "eps": 8}'], r"-json: .*eps"),
        (["--adversarial", "m", "--adv-attack-json", '{"method": "none"}'], "method 'none' crafts no"),
        (["--adversarial", "m", "--adv-attack-json", '{"method": "pgd", "eps": 0.03}', "--adv-share", "0"],
         r"--adv-share: expected a number in \(0, 1\], got 0.0"),
        (["--adversarial", "m", "--adv-attack-json", '{"method": "pgd", "eps": 0.03}', "--adv-share", "1.5"],
         r"--adv-share: expected a number in \(0, 1\]"),
        (["--adversarial", "a-b", "--adv-attack-json", '{"method": "pgd", "eps": 0.03}'], "'a-b' must be"),
    ],
)  # fmt: skip
def test_cli_refuses_unusable_adversarial_settings(fake_root, tmp_path, capsys, extra, message):
    out = str(tmp_path / "m/epoch1.pt")
    argv = ["train", "--data", str(fake_root), "--arch", "xception", "--tasks", "d", "--epochs", "1",
            "--batch-size", "2", "--val-limit", "0", "--out", out, *extra]  # fmt: skip
    assert cli_main(argv) != 0
    err = capsys.readouterr().err
    assert re.search(message, err), err
    assert not (tmp_path / "m").exists()


# ------------------------------------------------------------------------------------------ the study
def _study(**table_at) -> dict:
    """studies/test.yaml with one adversarial setting and table_at on (main task d; the other outputs off)."""
    c = study.read(REPO / "studies" / "test.yaml")[0]
    c["training"]["adversarial"] = {"madry": {"attack": "pgd_train"}}
    c["attacks"]["pgd_train"] = {"method": "pgd", "eps": "8/255", "step_size": "2/255", "steps": 3}
    c["attacks"]["pgd_unbounded"] = {"method": "pgd", "norm": "linf", "eps": 1, "step_size": 0.25, "steps": 2}
    c["study"] = {name: {"enabled": False} for name in study.OUTPUTS}
    c["study"]["table_at"] = {"enabled": True, "mains": ["d"], "eps_attacks": ["pgd", "pgd_eps16"],
                              "unbounded": "pgd_unbounded", **table_at}  # fmt: skip
    return c


def test_the_study_trains_adversarial_twins_and_leaves_standard_commands_as_they_were():
    default = study.load(REPO / "config.yaml")
    assert default.adversarial == {} and not any(m.adversarial for m in default.models.values())
    assert all(commands.model(m) == commands.model(m, default.adversarial) for m in default.models.values())

    plan = study.build(study.validated(_study()))
    adv = sorted(m for m, s in plan.models.items() if s.adversarial)
    assert adv == ["resnet18-uniform-depth_z+seg-s0-adv_madry", "resnet18-uniform-depth_z-s0-adv_madry"]
    assert {plan.models[m].standard.id for m in adv} <= set(plan.models)  # each next to its standard twin
    cmd = commands.model(plan.models[adv[1]], plan.adversarial)
    assert cmd == (
        "--arch resnet18 --tasks depth_z --weighting uniform --main depth_z --seed 0 --adversarial madry "
        '--adv-attack-json \'{"eps":0.03137254901960784,"method":"pgd","step_size":0.00784313725490196,'
        '"steps":3}\' --adv-tasks main --adv-share 1.0'
    )
    assert commands.model(plan.models[adv[1]].standard, plan.adversarial) == (
        "--arch resnet18 --tasks depth_z --weighting uniform --main depth_z --seed 0"
    )
    # the cost: (k + 1) standard epochs per adversarial epoch for Madry's share 1 with a k = 3 step attack
    jobs = {(j["arch"], j.get("factor")) for j in P.jobs(plan) if j["rule"] == "train"}
    assert jobs == {("resnet18", 1.0), ("resnet18", 4.0)}
    two = [{"rule": "train", "arch": "resnet18", "epochs": 2, "factor": 4.0},
           {"rule": "train", "arch": "resnet18", "epochs": 2}]  # fmt: skip
    hours = P.estimate(two, {"resnet18": 3600}, 1, 1)
    assert hours[("train", "resnet18")] == pytest.approx(2 * 4 + 2)
    assert plan.outputs["table_at"].traced and "table_at" in plan.claims_sources()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"training": {"adversarial": {"m": {"attack": "nope"}}}},
         r"training.adversarial.m.attack: attack 'nope' is not defined"),
        ({"table_at": {"setting": "other"}}, r"table_at.setting: 'other' is not under training.adversarial"),
        ({"table_at": {"attacks": ["pgd", "pgd_eps16"]}}, "must include a pgd and an apgd attack"),
        ({"table_at": {"unbounded": "pgd"}}, r"table_at.unbounded: .*expected an L-inf attack with eps 1"),
        ({"table_at": {"eps_attacks": ["pgd", "apgd"]}}, r"eps_attacks: .*mix methods"),
    ],
)  # fmt: skip
def test_unusable_adversarial_studies_are_refused_naming_the_key(change, message):
    c = _study(**change.get("table_at", {}))
    if "training" in change:
        c["training"].update(change["training"])
    with pytest.raises(study.StudyError, match=message):
        study.build(study.validated(c))


# ------------------------------------------------------------------------------------------ table_at
N = 12  # test samples of the coded evaluations


def _coded(model_id: str, attack: str, task: str, i: int) -> tuple[float, float, float, float]:
    """(clean_loss, adv_loss, clean_error, adv_error) of sample i with known answers: standard models
    double their error under attack (relative vulnerability 1), adversarially trained ones 0.5 alone and
    0.2 with an auxiliary task; adversarial training costs 0.5 clean error alone, 0.2 with an auxiliary
    task; APGD adds 0.1, eps 16/255 0.3, eps 1 errors of 10 (above the constant predictor's 5)."""
    spec = parse_model_id(model_id)
    pair = len(spec.tasks) > 1
    wobble = 1 + 0.05 * (i % 4)  # per-sample spread, so the intervals have a width
    clean = (1.0 + (0.2 if pair else 0.5) * (spec.adversarial is not None)) * wobble
    r = (0.2 if pair else 0.5) if spec.adversarial else 1.0
    r += {"pgd": 0.0, "apgd": 0.1, "pgd_eps16": 0.3}.get(attack, 0.0)
    adv = 10.0 * wobble if attack == "pgd_unbounded" else clean * (1 + r * wobble)
    return clean, adv, clean, adv


def _csv(path: Path, columns, rows, trailer: str) -> Path:
    """A CSV as ``mtlrobust evaluate`` writes them: header, rows, then the trailer with their count."""
    lines = [",".join(columns)] + [",".join(map(str, r)) for r in rows] + [f"{trailer}{len(rows)} rows"]
    path.write_text("\n".join(lines) + "\n")
    return path


def _write_evals(folder: Path, plan) -> list[Path]:
    """Evaluation CSVs and per-step sidecars of every planned evaluation; the step curve of the
    adversarially trained single-task model falls (a masking check that must FAIL and be shown)."""
    from mtlrobust.evaluate import COLUMNS, TRAILER
    from mtlrobust.steptrace import COLUMNS as STEP_COLUMNS
    from mtlrobust.steptrace import TRAILER as STEP_TRAILER

    paths = []
    for (mid, epoch, attack), subsets in sorted(plan.evals.items()):
        spec, a = parse_model_id(mid), plan.attacks[attack]
        model = [mid, spec.arch, spec.weighting, "+".join(spec.tasks), epoch, attack, a["method"], "linf"]
        falls = spec.adversarial and len(spec.tasks) == 1
        rows, steps = [], []
        for sub, i, t in itertools.product(["+".join(x) for x in sorted(subsets)], range(N), spec.tasks):
            cl, al, ce, ae = _coded(mid, attack, t, i)
            rows.append([*model, a["eps"], "", 2, 1, "{}", sub, i, f"b/{i}/0", t, cl, al, ce, ae, "", ""])
            for step, loss in enumerate([cl, al, cl] if falls else [cl, (cl + al) / 2, al]):
                steps.append([mid, epoch, attack, a["method"], sub, i, t, step, loss, ce])
        paths.append(_csv(folder / f"{mid}-{attack}.csv", COLUMNS, rows, TRAILER))
        paths.append(_csv(folder / f"{mid}-{attack}.steps.csv", STEP_COLUMNS, steps, STEP_TRAILER))
    return paths


def test_table_at_marks_known_effects_reports_failed_checks_and_the_claims_follow(tmp_path):
    import pandas as pd

    from mtlrobust.analysis import claims as CL
    from mtlrobust.analysis import render as RD

    plan = study.build(study.validated(_study()))
    out = plan.outputs["table_at"]
    inputs = _write_evals(tmp_path, plan)
    models = tmp_path / "models.csv"
    pd.DataFrame([{"model_id": m, "epoch": 2, "task": t, "trivial_error": 5.0, "beats_trivial": True}
                  for m, s in plan.models.items()
                  for t in s.tasks]).to_csv(models, index=False)  # fmt: skip
    RD.write(
        "table_at",
        out.spec,
        inputs,
        csv=tmp_path / "table_at.csv",
        cells=tmp_path / "cells.csv",
        models=models,
    )
    md = (tmp_path / "table_at.md").read_text()
    t = pd.read_csv(tmp_path / "table_at.csv")
    adv = t[(t["training"] == "adversarial") & (t["attack"] == "pgd")].iloc[0]
    assert adv["uniform:d"] == pytest.approx(0.5 * 1.075, rel=1e-6)  # 0.5 x the mean wobble
    assert adv["uniform:s"] == pytest.approx(0.2 * 1.075, rel=1e-6)
    std = t[(t["training"] == "standard") & (t["attack"] == "pgd")].iloc[0]
    assert std["uniform:d"] == pytest.approx(1.075, rel=1e-6)
    rows = {line.split("|")[1].strip() + line.split("|")[2].strip(): line for line in md.splitlines()[:30]
            if line.startswith("| adversarial") or line.startswith("| cost")}  # fmt: skip
    assert "↓std" in rows["adversarialpgd"] and "↓st" in rows["adversarialpgd"]
    assert "↓st" in rows["costclean error cost (adversarial - standard)"]
    # the falling step curve of the single-task model is reported, the other checks pass
    assert "## Gradient-masking checks (1 failed)" in md
    checks = {line.split("|")[1].strip(): line for line in md.splitlines() if line.startswith("| resnet18-")}
    single, pair = (
        checks["resnet18-uniform-depth_z-s0-adv_madry"],
        checks["resnet18-uniform-depth_z+seg-s0-adv_madry"],
    )
    assert len(checks) == 2 and "**FAIL** (loss" in single and single.count("pass (") == 3
    assert pair.count("pass (") == 4 and "pass (error at eps 1 10.75 vs constant predictor 5)" in pair

    cells = pd.read_csv(tmp_path / "cells.csv", dtype=str, keep_default_na=False)
    masking = cells[cells["kind"] == "masking"]
    assert len(masking) == 8 and sorted(masking["value"]) == ["0"] + ["1"] * 7
    verdicts = CL.claims(CL.check_cells(cells)).set_index("claim")["verdict"]
    for claim in ("at_lowers_vulnerability:pgd", "at_lowers_vulnerability:apgd",
                  "at_auxiliary_lowers_vulnerability:pgd", "at_auxiliary_lowers_vulnerability:apgd",
                  "at_clean_cost_smaller_with_auxiliary"):  # fmt: skip
        assert verdicts[claim] == "supported", claim
