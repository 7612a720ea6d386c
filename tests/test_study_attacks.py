"""An attack named in a study file runs exactly as the attack function with the same explicit arguments.

For each method, the study's attack entry goes through ``study.build`` and the evaluate rule's arguments
(``Plan.attack_json`` and ``commands.evaluation``, the functions the rule uses) into ``mtlrobust evaluate``;
its adversarial losses must equal those of calling the attack function directly with the entry's values
and the function's own defaults for everything else (tiny model, 4 samples).
"""

import copy
import csv
import inspect
import shlex
from pathlib import Path

import pytest
import torch
import yaml

from mtlrobust import cli, commands, study
from mtlrobust import metrics as M
from mtlrobust.attacks import METHODS, MultiTaskObjective, apgd, fgsm, mim, pgd, wgd

REPO = Path(__file__).resolve().parents[1]
TASKS = ["seg", "depth_z"]
# study entry -> (function, explicit arguments); every other argument takes the function's default
CASES = {
    "none": ({"method": "none"}, None, {}),
    "fgsm": ({"method": "fgsm", "eps": "8/255"}, fgsm, {"eps": 8 / 255}),
    "pgd": ({"method": "pgd", "eps": "8/255", "steps": 3}, pgd, {"eps": 8 / 255, "steps": 3}),
    "mim": ({"method": "mim", "eps": "4/255", "steps": 2, "options": {"decay": 0.5}}, mim,
            {"eps": 4 / 255, "steps": 2, "decay": 0.5}),
    "apgd": ({"method": "apgd", "eps": "8/255", "steps": 3}, apgd, {"eps": 8 / 255, "steps": 3}),
    "wgd": ({"method": "wgd", "norm": "l2", "eps": 0.5, "steps": 2}, wgd,
            {"norm": "l2", "eps": 0.5, "steps": 2}),
}  # fmt: skip


@pytest.fixture(scope="module")
def checkpoint(packed_dir, tmp_path_factory):
    """A resnet18 seg+depth_z model trained one epoch (random heads: input gradients are not 0)."""
    from mtlrobust.train import TrainConfig, train

    out = tmp_path_factory.mktemp("models") / "epoch1.pt"
    cfg = TrainConfig(data=str(packed_dir), arch="resnet18", tasks=TASKS, out=str(out), epochs=1,
                      batch_size=4, device="cpu", progress=False, init_at_prior=False)  # fmt: skip
    train(cfg)
    return out


@pytest.fixture(scope="module")
def plan():
    config = yaml.safe_load((REPO / "studies" / "test.yaml").read_text())
    config["attacks"] = {name: copy.deepcopy(entry) for name, (entry, _, _) in CASES.items()}
    config["evaluation"].update(limit=4, batch_size=4, seed=0, device="cpu")
    config["study"] = {s: {"enabled": False} for s in study.OUTPUTS}
    return study.build(study.validated(config))


def evaluate_csv(plan, name, checkpoint, data, out) -> dict:
    """Adversarial loss per (sample, task) from ``mtlrobust evaluate`` with the rule's arguments."""
    argv = ["evaluate", "--checkpoint", str(checkpoint), "--data", str(data),
            "--attack-json", plan.attack_json(name), *shlex.split(commands.attacked([tuple(TASKS)])),
            *shlex.split(commands.evaluation(plan.config)), "--out", str(out)]  # fmt: skip
    assert cli.main(argv) == 0
    with open(out, newline="") as f:
        rows = [r for r in csv.DictReader(f) if not r["model_id"].startswith("#")]
    assert {r["attacked"] for r in rows} == {"+".join(TASKS)}
    return {(int(r["sample"]), r["task"]): float(r["adv_loss"]) for r in rows}


def direct(fn, kwargs, checkpoint, data) -> dict:
    """Adversarial loss per (sample, task) of the attack function called directly on the same 4 samples."""
    from mtlrobust.checkpoint import load_model
    from mtlrobust.data.packed import PackedDataset

    model, meta = load_model(checkpoint, device="cpu")
    for p in model.parameters():
        p.requires_grad_(False)
    x, targets, masks = PackedDataset(data, TASKS).batch(list(range(4)))
    objective = MultiTaskObjective("+".join(TASKS))
    if fn is None:
        x_adv = x
    else:
        loss = objective.task_losses() if fn is wgd else objective
        if "generator" in inspect.signature(fn).parameters:
            kwargs = {**kwargs, "generator": torch.Generator().manual_seed(0)}
        x_adv = fn(model, loss, x, (targets, masks), **kwargs)
    with torch.no_grad():
        adv = M.task_metrics(model(x_adv), targets, masks, TASKS)
    return {(i, t): float(adv[t][0][i]) for i in range(4) for t in TASKS}


def test_every_method_is_covered():
    assert set(CASES) >= {"none", "fgsm", "pgd", "mim", "apgd", "wgd"} and set(CASES) <= set(METHODS)


@pytest.mark.parametrize("name", list(CASES))
def test_study_attack_equals_the_direct_call(plan, name, checkpoint, packed_dir, tmp_path):
    _, fn, kwargs = CASES[name]
    data = packed_dir / "test"
    got = evaluate_csv(plan, name, checkpoint, data, tmp_path / f"{name}.csv")
    want = direct(fn, kwargs, checkpoint, data)
    assert got.keys() == want.keys()
    for key, v in want.items():
        assert got[key] == pytest.approx(v, rel=1e-6, abs=1e-7), (name, key)
    if fn is not None:  # and the attack did something: some loss differs from the clean one
        clean = direct(None, {}, checkpoint, data)
        assert any(abs(want[k] - clean[k]) > 1e-6 for k in want)
