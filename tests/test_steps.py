"""Steps ablation (supplementary Figs. 14-15): per-step losses and errors from one attack run.

The recorded state after step t must be what the same attack stopped after t steps returns, the last step
must equal the evaluation CSV, and recording must not change the attack's result.
"""

import csv

import pytest
import torch

from mtlrobust import evaluate as EV
from mtlrobust import steptrace as ST
from mtlrobust import tasks as T
from mtlrobust.attacks import run_attack

from test_evaluate import META, TASKS, VIEWS, Data, Tiny

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
