"""The evaluation loop: contract columns, row layout, clean reuse, validation and determinism."""

import csv
import json
import re

import pytest
import torch
from torch import nn

from mtlrobust import evaluate as EV
from mtlrobust import tasks as T

TASKS = ["seg", "depth_z"]
PGD = {
    "name": "pgd",
    "method": "pgd",
    "norm": "linf",
    "eps": 8 / 255,
    "step_size": 2 / 255,
    "steps": 2,
    "random_start": True,
}


class Tiny(nn.Module):
    """A dict-returning two-task convnet (stands in for MultiTaskNet)."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.body = nn.Conv2d(3, 8, 3, padding=1)
        self.heads = nn.ModuleDict({"seg": nn.Conv2d(8, T.SEG_CLASSES, 1), "depth_z": nn.Conv2d(8, 1, 1)})
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        h = torch.relu(self.body(x))
        return {k: m(h) for k, m in self.heads.items()}


class Data:
    def __init__(self, n=5, size=8):
        g = torch.Generator().manual_seed(1)
        self.x = torch.rand(n, 3, size, size, generator=g)
        self.seg = torch.randint(0, 4, (n, size, size), generator=g)
        self.depth = torch.rand(n, 1, size, size, generator=g)

    def __len__(self):
        return len(self.x)

    def batch(self, idx):
        m = torch.ones(len(idx), 1, *self.x.shape[-2:])
        return self.x[idx], {"seg": self.seg[idx], "depth_z": self.depth[idx]}, {"seg": m, "depth_z": m}


META = {
    "model_id": "resnet18-uniform-seg+depth_z-s0",
    "arch": "resnet18",
    "weighting": "uniform",
    "tasks": TASKS,
    "epoch": 3,
}
VIEWS = [f"b/{i}/0" for i in range(5)]


def _rows(**kw):
    model = Tiny()
    attacked = EV.parse_attacked(["seg", "d+s"], TASKS)
    rows = EV.evaluate(model, META, Data(), VIEWS, PGD, attacked, batch_size=2, seed=0, **kw)
    return model, [dict(zip(EV.COLUMNS, r, strict=True)) for r in rows]


def test_rows_follow_the_contract():
    model, rows = _rows()
    assert len(rows) == 2 * 5 * 2  # attacked subsets x samples x model tasks
    assert [r["attacked"] for r in rows[::10]] == ["seg", "seg+depth_z"]  # registry order
    r = rows[0]
    assert (r["model_id"], r["tasks"], r["epoch"], r["attack"], r["method"], r["norm"]) == (
        META["model_id"],
        "seg+depth_z",
        "3",
        "pgd",
        "pgd",
        "linf",
    )
    assert float(r["eps"]) == pytest.approx(8 / 255) and r["steps"] == "2" and r["restarts"] == ""
    assert json.loads(r["options"]) == {"random_start": True}
    assert (r["sample"], r["view"], r["task"]) == ("0", "b/0/0", "seg")
    seg_rows = [x for x in rows if x["task"] == "seg"]
    assert all(x["dataset_clean_miou"] != "" for x in seg_rows)
    assert all(x["dataset_clean_miou"] == "" for x in rows if x["task"] == "depth_z")
    # clean values are the same for every attacked subset, adversarial ones differ
    by = {(x["attacked"], x["sample"], x["task"]): x for x in rows}
    for i in range(5):
        for t in TASKS:
            a, b = by[("seg", str(i), t)], by[("seg+depth_z", str(i), t)]
            assert a["clean_loss"] == b["clean_loss"] and a["clean_error"] == b["clean_error"]
    assert any(float(x["adv_loss"]) > float(x["clean_loss"]) for x in seg_rows)
    # clean pass once per batch (3 batches) + per subset and batch: 2 PGD steps + (random start) + adv pass
    assert model.calls >= 3 + 2 * 3 * 3


def test_clean_metrics_match_the_registry():
    _, rows = _rows()
    data, model = Data(), Tiny()
    x, tg, mk = data.batch([0, 1, 2, 3, 4])
    with torch.no_grad():
        out = model(x)
    loss = T.get("depth_z").loss(out["depth_z"], tg["depth_z"], mk["depth_z"])
    got = [float(r["clean_loss"]) for r in rows if r["task"] == "depth_z" and r["attacked"] == "seg"]
    assert got == pytest.approx(loss.tolist(), rel=1e-6)
    conf = T.seg_confusion(out["seg"], tg["seg"]).sum(0)
    assert float(rows[0]["dataset_clean_miou"]) == pytest.approx(float(T.miou_from_confusion(conf)), rel=1e-7)


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    outs = []
    for k, seed in enumerate((0, 0, 1)):
        rows = EV.evaluate(Tiny(), META, Data(), VIEWS, PGD, [["seg"]], batch_size=2, seed=seed)
        p = tmp_path / f"{k}.csv"
        EV.write_csv(rows, p)
        outs.append(p.read_bytes())
    assert outs[0] == outs[1] and outs[0] != outs[2]
    with open(tmp_path / "0.csv") as f:
        assert next(csv.reader(f)) == EV.COLUMNS
    assert not list(tmp_path.glob(".*tmp*"))


def test_limit_and_validation():
    rows = EV.evaluate(Tiny(), META, Data(), VIEWS, {"name": "clean", "method": "none"}, [["seg"]], limit=3)
    assert len(rows) == 3 * 2
    assert all(r[EV.COLUMNS.index("clean_loss")] == r[EV.COLUMNS.index("adv_loss")] for r in rows)
    with pytest.raises(ValueError, match=r"normal.*model's tasks are \['seg', 'depth_z'\]"):
        EV.parse_attacked(["s+n"], TASKS)
    with pytest.raises(ValueError, match="unknown task"):
        EV.parse_attacked(["seg+nope"], TASKS)
    with pytest.raises(ValueError, match="name"):
        EV.parse_spec('{"method": "pgd"}')
    with pytest.raises(ValueError, match="not valid JSON"):
        EV.parse_spec("{pgd")
    assert EV.parse_attacked(["s", "seg", "ds", "sd"], TASKS) == [["seg"], ["seg", "depth_z"]]


# ------------------------------------------------------------------------------ CLI on a real checkpoint
@pytest.fixture(scope="module")
def checkpoint(packed_dir, tmp_path_factory):
    """A resnet18 seg+depth_z model trained one epoch on the synthetic data (32 px)."""
    from mtlrobust.train import TrainConfig, train

    out = tmp_path_factory.mktemp("models") / "epoch1.pt"
    train(
        TrainConfig(
            data=str(packed_dir),
            arch="resnet18",
            tasks=["seg", "depth_z"],
            out=str(out),
            epochs=1,
            batch_size=4,
            device="cpu",
            progress=False,
        )
    )
    return out


def _evaluate_cli(checkpoint, packed_dir, out, *extra):
    from mtlrobust import cli

    spec = json.dumps({**PGD, "name": "pgd1", "steps": 1})
    argv = [
        "evaluate",
        "--checkpoint",
        str(checkpoint),
        "--data",
        str(packed_dir / "test"),
        "--attack-json",
        spec,
        "--attacked",
        "seg",
        "--attacked",
        "seg+depth_z",
        "--batch-size",
        "2",
        "--device",
        "cpu",
        "--out",
        str(out),
        *extra,
    ]
    return cli.main(argv)


def test_cli_writes_contract_csv_deterministically(checkpoint, packed_dir, tmp_path):
    a, b = tmp_path / "a" / "pgd1.csv", tmp_path / "b" / "pgd1.csv"
    assert _evaluate_cli(checkpoint, packed_dir, a, "--limit", "3") == 0
    assert _evaluate_cli(checkpoint, packed_dir, b, "--limit", "3") == 0
    assert a.read_bytes() == b.read_bytes()
    lines = a.read_text().splitlines()
    assert lines[-1] == "# end of evaluation: 12 rows"  # what tells aggregate the file is complete
    rows = list(csv.DictReader(lines[:-1]))
    assert list(rows[0]) == EV.COLUMNS
    assert len(rows) == 2 * 3 * 2
    views = (packed_dir / "test" / "views.csv").read_text().splitlines()[1].split(",")
    assert rows[0]["view"] == "/".join(views[:3]) and rows[0]["epoch"] == "1"
    assert {r["attack"] for r in rows} == {"pgd1"}
    # the aggregate reads it
    from mtlrobust.analysis.aggregate import aggregate

    vul = aggregate([a])
    assert len(vul) == 4 and vul["n"].max() <= 3


def test_cli_rejects_tasks_the_model_lacks(checkpoint, packed_dir, tmp_path, capsys):
    from mtlrobust import cli

    argv = [
        "evaluate",
        "--checkpoint",
        str(checkpoint),
        "--data",
        str(packed_dir / "test"),
        "--attack-json",
        json.dumps(PGD),
        "--attacked",
        "normal",
        "--device",
        "cpu",
        "--out",
        str(tmp_path / "x.csv"),
    ]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert re.match(
        r"mtlrobust evaluate: error: --attacked 'normal': .*\['normal'\] are not tasks of the model.*seg", err
    )
    assert not (tmp_path / "x.csv").exists()


def test_theory_cli_on_the_checkpoint(checkpoint, packed_dir, tmp_path):
    from mtlrobust import cli

    out = tmp_path / "theory.csv"
    argv = [
        "theory",
        "--checkpoint",
        str(checkpoint),
        "--data",
        str(packed_dir / "test"),
        "--norm",
        "linf",
        "--eps",
        "8/255",
        "--orders",
        "sd",
        "ds",
        "--limit",
        "4",
        "--device",
        "cpu",
        "--out",
        str(out),
    ]
    assert cli.main(argv) == 0
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    q = {(r["quantity"], r["order"], r["step"]): float(r["value"]) for r in rows if r["weighting"] != "mean"}
    assert q[("first_order_vuln", "ds", "2")] == pytest.approx(q[("first_order_vuln", "sd", "2")])
    assert all(v >= 0 for (k, _, _), v in q.items() if k in ("grad_norm", "first_order_vuln"))
    assert rows[0]["n_samples"] == "4" and rows[0]["eps"] == f"{8 / 255:.9g}"
