"""Steps ablation (supplementary Figs. 14-15): per-step losses and errors from one attack run.

The recorded state after step t must be what the same attack stopped after t steps returns, the last step
must equal the evaluation CSV, and recording must not change the attack's result.
"""

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from test_evaluate import META, TASKS, VIEWS, Data, Tiny

from mtlrobust import evaluate as EV
from mtlrobust import steptrace as ST
from mtlrobust import study
from mtlrobust import tasks as T
from mtlrobust.analysis import render
from mtlrobust.analysis.layouts import steps as steps_out
from mtlrobust.attacks import run_attack

SPECS = {
    "pgd": {"name": "pgd", "method": "pgd", "eps": 8 / 255, "step_size": 2 / 255, "steps": 4},
    "pgd_restarts": {"name": "pgd_restarts", "method": "pgd", "eps": 8 / 255, "steps": 3, "restarts": 2},
    "mim": {"name": "mim", "method": "mim", "eps": 8 / 255, "steps": 3},
    "apgd": {"name": "apgd", "method": "apgd", "eps": 8 / 255, "steps": 4},
    "wgd": {"name": "wgd", "method": "wgd", "eps": 8 / 255, "steps": 3},
    "wgd_paper": {"name": "wgd_paper", "method": "wgd", "eps": 8 / 255, "steps": 3, "variant": "paper"},
    "fgsm": {"name": "fgsm", "method": "fgsm", "eps": 8 / 255},
    "segpgd": {"name": "segpgd", "method": "segpgd", "eps": 8 / 255, "steps": 3},
    "cospgd": {"name": "cospgd", "method": "cospgd", "eps": 8 / 255, "steps": 3},
}


def _evaluate(spec, steps=None, reduction="valid"):
    attacked = EV.parse_attacked(["d", "s+d"], TASKS)
    return EV.evaluate(
        Tiny(), META, Data(), VIEWS, spec, attacked, batch_size=3, seed=0, steps=steps, reduction=reduction
    )


@pytest.mark.parametrize("name", sorted(SPECS))
def test_recording_leaves_the_evaluation_unchanged_and_ends_at_its_adversarial_error(name):
    steps = []
    rows = _evaluate(SPECS[name], steps)
    assert rows == _evaluate(SPECS[name])  # same x_adv, same bytes
    n_steps = SPECS[name].get("steps", 1)
    assert len(steps) == 2 * 5 * 2 * (n_steps + 1)  # subsets x samples x tasks x (x and each step)
    rec = {(r[4], r[5], r[6], int(r[7])): (float(r[8]), float(r[9])) for r in steps}
    for r in (dict(zip(EV.COLUMNS, r, strict=True)) for r in rows):
        key = (r["attacked"], r["sample"], r["task"])
        assert rec[(*key, 0)][1] == pytest.approx(float(r["clean_error"]), rel=1e-6, abs=1e-9)
        assert rec[(*key, n_steps)][1] == pytest.approx(float(r["adv_error"]), rel=1e-6, abs=1e-9)


@pytest.mark.parametrize("name", ["pgd", "mim", "wgd", "cospgd"])
def test_step_t_is_the_attack_stopped_after_t_steps(name):
    """For attacks that return their last iterate, step t of one run = the final state of a t-step run."""
    spec = SPECS[name]
    model, data = Tiny(), Data()
    x, targets, masks = data.batch(list(range(5)))
    rec = ST.Recorder(model, targets, masks, TASKS, ["depth_z", "seg"])
    trace = []
    run_attack(spec, rec, x, (targets, masks), "seg+depth_z", generator=0, trace=trace)
    loss, errors = rec.per_step(trace, spec)
    for t in (1, spec["steps"] - 1):
        x_t = run_attack({**spec, "steps": t}, model, x, (targets, masks), "seg+depth_z", generator=0)
        with torch.no_grad():
            out = model(x_t)
        for task in TASKS:
            want = T.get(task).error(out[task], targets[task], masks[task])
            torch.testing.assert_close(errors[task][t - 1], want, rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(loss[t - 1], rec.objective(out, (targets, masks)), rtol=1e-5, atol=1e-7)


def test_apgd_reports_its_running_best():
    """APGD returns the best iterate: per sample, the recorded loss never falls from one step to the next."""
    spec = SPECS["apgd"]
    model, data = Tiny(), Data()
    x, targets, masks = data.batch(list(range(5)))
    rec = ST.Recorder(model, targets, masks, TASKS, ["seg", "depth_z"])
    trace = []
    run_attack(spec, rec, x, (targets, masks), "seg+depth_z", generator=0, trace=trace)
    loss, _ = rec.per_step(trace, spec)
    assert (loss[1:] >= loss[:-1]).all()
    assert (loss[-1] >= torch.stack(trace).amax(0) - 1e-6).all()


def test_a_forward_layout_that_does_not_fit_the_trace_is_refused():
    spec = SPECS["pgd"]
    model, data = Tiny(), Data()
    x, targets, masks = data.batch(list(range(3)))
    rec = ST.Recorder(model, targets, masks, TASKS, ["seg"])
    trace = []
    run_attack(spec, rec, x, (targets, masks), "seg", generator=0, trace=trace)
    rec(x)  # one forward too many
    with pytest.raises(ValueError, match="do not split into restarts"):
        rec.per_step(trace, spec)
    rec.losses, rec.errors = rec.losses[1:], rec.errors[1:]  # right count, shifted steps
    with pytest.raises(ValueError, match="differ from the attack's trace"):
        rec.per_step(trace, spec)


def test_reference_reduction_is_recorded_and_changes_the_multi_task_attack():
    spec = SPECS["pgd"]
    valid = [dict(zip(EV.COLUMNS, r, strict=True)) for r in _evaluate(spec)]
    ref = [dict(zip(EV.COLUMNS, r, strict=True)) for r in _evaluate(spec, reduction="reference")]
    assert {r["options"] for r in valid} == {"{}"}
    assert {r["options"] for r in ref} == {'{"loss_reduction":"reference"}'}
    assert [r["adv_loss"] for r in valid] != [r["adv_loss"] for r in ref]


def test_steps_csv_is_written_with_a_trailer(tmp_path):
    steps = []
    _evaluate(SPECS["pgd"], steps)
    out = tmp_path / "pgd.steps.csv"
    ST.write_csv(steps, out)
    lines = out.read_text().splitlines()
    assert lines[0].split(",") == ST.COLUMNS
    assert lines[-1] == f"# end of steps: {len(steps)} rows"
    assert len(list(csv.reader(lines[1:-1]))) == len(steps)


# ------------------------------------------------------------------------------------ plan and output
REPO = Path(__file__).resolve().parents[1]


def _study(**steps):
    c = yaml.safe_load((REPO / "studies" / "test.yaml").read_text())
    c["attacks"]["none"] = {"method": "none"}
    c["study"]["steps"] = steps
    return study.validated(c)


def test_the_steps_output_traces_exactly_its_own_evaluations():
    p = study.build(_study(pairs=["sd"], marks=[1, 2]))
    out = p.outputs["steps"]
    traced = {n for n, o in p.outputs.items() if o.traced}
    assert traced == {"steps", "table_at"}  # table_at's masking check reads the loss after every step
    assert p.traced == set(out.evals) | set(p.outputs["table_at"].evals)
    series = out.spec["panels"][0]["series"]
    assert [s["label"] for s in series] == [
        "s model, s attacked",
        "sd model, s attacked",
        "sd model, sd attacked",
    ]
    assert [c[2:] for c in series[2]["cells"]] == [[a, "seg+depth_z", "seg"] for a in ("pgd", "apgd", "wgd")]
    off = study.build(_study(enabled=False))
    assert "steps" not in off.outputs and off.traced == set(off.outputs["table_at"].evals)


@pytest.mark.parametrize(
    ("steps", "message"),
    [
        ({"marks": [3]}, r"study\.steps\.marks: \[3\] beyond the steps"),
        ({"pairs": ["ss"]}, r"study\.steps\.pairs: task list \['s', 's'\] repeats"),
        ({"pairs": ["sD"]}, r"study\.steps\.pairs: 'sD' must be two distinct tasks"),
        (
            {"attacks": ["pgd", "none"]},
            r"study\.steps\.attacks: attack 'none' \(method 'none'\) takes no steps",
        ),
        ({"attacks": ["pgd", "nope"]}, r"study\.steps\.attacks: attack 'nope' is not defined"),
    ],
)
def test_steps_section_mistakes_name_the_key(steps, message):
    with pytest.raises(study.StudyError, match=message):
        study.build(_study(**steps))


def _sidecar(path, model_id, attack, errors, losses):
    """A steps CSV of one attacked subset 'seg', task seg: errors/losses [samples][steps + 1]."""
    rows = [[model_id, "2", attack, "pgd", "seg", str(i), "seg", str(t), str(losses[i][t]), str(e)]
            for i, errs in enumerate(errors) for t, e in enumerate(errs)]  # fmt: skip
    ST.write_csv(rows, path)
    return path


def test_steps_table_computes_vulnerability_and_loss_change_per_step(tmp_path):
    series = {"label": "s model, s attacked", "cells": [["m", 2, "pgd", "seg", "seg"]]}
    panel = {"label": "sd", "main": "s", "series": [series]}
    spec = {"layout": "steps", "title": "t", "attacks": ["pgd"], "steps": [2], "marks": [2]}
    spec["panels"] = [panel]
    errors = [[0.5, 0.6, 1.0], [0.2, 0.2, 0.3], [0.4, 0.5, 0.6]]
    losses = [[1.0, 2.0, 3.0], [1.0, 1.0, 2.0], [1.0, 3.0, 4.0]]
    path = _sidecar(tmp_path / "pgd.steps.csv", "m", "pgd", errors, losses)
    table = steps_out.table(spec, steps_out.load([tmp_path / "pgd.csv", path]))
    assert table["step"].tolist() == [1, 2] and table["marked"].tolist() == [False, True]
    want = [np.mean([(e[t] - e[0]) / e[0] for e in errors]) for t in (1, 2)]
    np.testing.assert_allclose(table["rel_vuln"], want)
    np.testing.assert_allclose(table["loss_change"], [(2.0 - 1.0) / 1.0, (3.0 - 1.0) / 1.0])
    # 3 samples: 3 of the 27 bootstrap draws repeat one sample (se* = 0), more than the 2.5 % tail, so the
    # studentized interval cannot bound the value and says so (NaN bounds, "-" in the Markdown)
    assert table["rel_vuln_lo"].isna().all() and table["rel_vuln_hi"].isna().all()
    render.write("steps", spec, [path], csv=tmp_path / "steps.csv")
    md = (tmp_path / "steps.md").read_text()
    assert "| pgd, 2 steps |" in md and "| s model, s attacked | 0.667 |" in md  # no bounds: no brackets
    assert render.write("steps", spec, [path], png=tmp_path / "steps.png")[1].suffix == ".pdf"


def test_a_steps_csv_cut_short_is_refused(tmp_path):
    path = _sidecar(tmp_path / "pgd.steps.csv", "m", "pgd", [[0.5, 0.6]], [[1.0, 2.0]])
    path.write_text("".join(path.read_text().splitlines(keepends=True)[:-2]))
    with pytest.raises(ValueError, match="incomplete steps CSV"):
        steps_out.read_steps(path)
