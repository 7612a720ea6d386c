"""Training: exact resume (milestones and killed runs), checkpoint contents and checks, data order,
flips, schedule, NaN guard, CLI, validation errors and the trivial predictor."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from mtlrobust import tasks as T
from mtlrobust.baseline import trivial_output, trivial_predictor
from mtlrobust.checkpoint import load_checkpoint, load_model, load_training_state, resume_path
from mtlrobust.cli import main as cli_main
from mtlrobust.data.packed import PackedDataset
from mtlrobust.ids import model_spec
from mtlrobust.train import TrainConfig, epoch_batches, hflip_batch, train, validate

TASKS = ["seg", "depth_z", "normal"]


pytestmark = pytest.mark.usefixtures("one_thread")


def write_fake_split(split_dir: Path, task_ids, n: int, res: int = 32, seed: int = 0) -> Path:
    """A packed split in the contract's format whose targets are fixed functions of smooth images."""
    split_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    low = torch.from_numpy(rng.random((n, 3, res // 8, res // 8), dtype=np.float32))
    rgb = (F.interpolate(low, size=(res, res), mode="bilinear").numpy() * 255).round().astype(np.uint8)
    x = rgb.astype(np.float32) / 255
    np.save(split_dir / "rgb.npy", rgb)
    for k, tid in enumerate(task_ids):
        task = T.get(tid)
        if task.is_segmentation:
            target = (1 + x.argmax(1) + 3 * (x.mean(1) > 0.5)).astype(np.uint8)
        else:
            chans = [np.tanh(3 * (x[:, (i + k) % 3] - x[:, (i + k + 1) % 3])) for i in range(task.channels)]
            target = np.stack(chans, 1).astype(np.float32)
        np.save(split_dir / f"{tid}.npy", target)
        mask = np.ones((n, res, res), np.uint8)
        if task.needs_depth_mask:
            mask[:, : res // 4, : res // 4] = 0
        np.save(split_dir / f"{tid}.mask.npy", mask)
    pd.DataFrame({"building": ["fake"] * n, "point": range(n), "view": [0] * n}).to_csv(
        split_dir / "views.csv", index=False
    )
    meta = {"resolution": res, "tasks": list(task_ids), "source": "test", "version": "test"}
    (split_dir / "meta.json").write_text(json.dumps(meta))
    return split_dir


@pytest.fixture(scope="module")
def fake_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("fakepacked")
    write_fake_split(root / "train", TASKS, n=12, seed=0)
    write_fake_split(root / "val", TASKS, n=4, seed=1)
    return root


def _cfg(root, out, **kw) -> TrainConfig:
    base = dict(
        data=str(root),
        arch="xception",
        tasks=["seg", "normal"],
        out=str(out),
        epochs=2,
        batch_size=4,
        checkpoint_every=1,
        threads=1,
        progress=False,
    )
    base.update(kw)
    return TrainConfig(**base)


def _assert_same_state(a: dict, b: dict) -> None:
    """Same weights and history, and the same optimizer and scheduler state where both hold one."""
    ma, mb = a["model"], b["model"]
    assert ma.keys() == mb.keys()
    for k in ma:
        assert torch.equal(ma[k], mb[k]), k
    assert ("optimizer" in a) == ("optimizer" in b)
    if "optimizer" in a:
        sa, sb = a["optimizer"]["state"], b["optimizer"]["state"]
        assert sa.keys() == sb.keys()
        for i in sa:
            for k in sa[i]:
                assert torch.equal(torch.as_tensor(sa[i][k]), torch.as_tensor(sb[i][k])), (i, k)
        assert a["scheduler"] == b["scheduler"]
    strip = [{k: v for k, v in row.items() if k != "time_s"} for row in a["history"]]
    assert strip == [{k: v for k, v in row.items() if k != "time_s"} for row in b["history"]]
    assert a["epoch"] == b["epoch"]


# ---------------------------------------------------------------------------------------------- units
def test_epoch_batches_are_seeded_permutations():
    b0 = epoch_batches(10, 4, seed=0, epoch=0)
    assert len(b0) == 2 and all(len(b) == 4 for b in b0)  # the incomplete last batch is dropped
    assert len(np.unique(np.concatenate(b0))) == 8
    assert all(np.array_equal(x, y) for x, y in zip(b0, epoch_batches(10, 4, 0, 0), strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(b0, epoch_batches(10, 4, 0, 1), strict=True))
    assert [len(b) for b in epoch_batches(3, 4, 0, 0)] == [3]  # smaller than a batch: one short batch


def test_hflip_mirrors_and_negates_normal_x():
    x = torch.rand(2, 3, 4, 8)
    tg = {"normal": torch.rand(2, 3, 4, 8) * 2 - 1, "seg": torch.randint(0, 18, (2, 4, 8))}
    mk = {"normal": (torch.rand(2, 1, 4, 8) > 0.5).float(), "seg": torch.ones(2, 1, 4, 8)}
    flags = torch.tensor([True, False])
    fx, ftg, fmk = hflip_batch(x, tg, mk, flags)
    assert torch.equal(fx[0], x[0].flip(-1)) and torch.equal(fx[1], x[1])
    assert torch.equal(ftg["normal"][0, 0], -tg["normal"][0, 0].flip(-1))
    assert torch.equal(ftg["normal"][0, 1:], tg["normal"][0, 1:].flip(-1))
    assert torch.equal(ftg["normal"][1], tg["normal"][1])
    assert torch.equal(ftg["seg"][0], tg["seg"][0].flip(-1))
    assert torch.equal(fmk["normal"][0], mk["normal"][0].flip(-1))
    assert T.get("normal").hflip_negate == (0,)


# ------------------------------------------------------------------------------------- exact resume
def test_milestone_resume_is_exact_and_checkpoint_complete(fake_root, tmp_path):
    kw = dict(hflip=True, lr_milestones=[1], weighting="paper", main="seg", keep_resume=True)
    train(_cfg(fake_root, tmp_path / "a/epoch2.pt", **kw))
    train(_cfg(fake_root, tmp_path / "b/epoch1.pt", epochs=1, **kw))
    train(_cfg(fake_root, tmp_path / "b/epoch2.pt", resume_from=str(tmp_path / "b/epoch1.pt"), **kw))
    a, b = load_training_state(tmp_path / "a/epoch2.pt"), load_training_state(tmp_path / "b/epoch2.pt")
    _assert_same_state(a, b)
    assert a["rng"]["torch"].equal(b["rng"]["torch"])
    assert not (tmp_path / "a/epoch2.pt.partial").exists()
    assert (tmp_path / "a/epoch2.pt").read_bytes() == (tmp_path / "b/epoch2.pt").read_bytes()
    assert (
        resume_path(tmp_path / "a/epoch2.pt").read_bytes()
        == resume_path(tmp_path / "b/epoch2.pt").read_bytes()
    )

    spec = model_spec("xception", "paper", ["seg", "normal"], 0, "seg")
    assert a["model_id"] == spec.id == "xception-paper-seg+normal-s0"
    assert (
        a["weights"] == T.task_weights(["seg", "normal"], "paper", main="seg") == {"seg": 1.0, "normal": 0.1}
    )
    assert a["tasks"] == ["seg", "normal"] and a["main"] == "seg" and a["seed"] == 0 and a["epoch"] == 2
    assert a["resolution"] == 32 and a["normalization"] == {"mean": [0.5] * 3, "std": [0.5] * 3}
    assert a["complete"] and a["version"] and set(a["rng"]) >= {"torch", "numpy", "python"}
    weights = load_checkpoint(tmp_path / "a/epoch2.pt")  # what evaluate reads: no optimizer or RNG state
    assert not {"optimizer", "scheduler", "scaler", "rng", "running"} & set(weights)
    assert all(v.dtype in (torch.float32, torch.int64) for v in weights["model"].values())
    assert a["hparams"]["lr_milestones"] == [1] and a["hparams"]["hflip"]
    log = pd.read_csv(tmp_path / "a/epoch2.csv")
    assert list(log["epoch"]) == [1, 2] and log["lr"].tolist() == pytest.approx([1e-3, 1e-4])
    for tid in ("seg", "normal"):
        assert {f"train_loss_{tid}", f"val_error_{tid}", f"trivial_error_{tid}"} <= set(log.columns)
    assert log.notna().all().all()


def _kill_mid_epoch(argv: list[str], out: Path) -> Path:
    """Run a 2-epoch ``mtlrobust train`` command, SIGKILL it once its first .partial exists (mid-epoch) and
    return that .partial."""
    partial = out.with_name(out.name + ".partial")
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not partial.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()
    state = load_checkpoint(partial)
    assert state["epoch"] < 2 and state["batch"] > 0  # killed mid-epoch
    return partial


def test_killed_run_resumes_where_it_was(fake_root, tmp_path, capsys):
    ref = tmp_path / "ref/epoch2.pt"
    train(_cfg(fake_root, ref, tasks=["depth_z"], epochs=2, batch_size=2, checkpoint_every=0))
    out = tmp_path / "run/epoch2.pt"
    argv = [
        sys.executable,
        "-m",
        "mtlrobust",
        "train",
        "--data",
        str(fake_root),
        "--arch",
        "xception",
        "--tasks",
        "d",
        "--epochs",
        "2",
        "--batch-size",
        "2",
        "--checkpoint-every",
        "1",
        "--threads",
        "1",
        "--out",
        str(out),
        "--no-progress",
    ]
    partial = _kill_mid_epoch(argv, out)
    assert not out.exists()
    capsys.readouterr()
    train(_cfg(fake_root, out, tasks=["depth_z"], epochs=2, batch_size=2))  # the same command, rerun
    assert "resuming interrupted run" in capsys.readouterr().err
    _assert_same_state(load_checkpoint(ref), load_checkpoint(out))
    assert out.read_bytes() == ref.read_bytes()  # killed and resumed: the same checkpoint bytes
    assert not partial.exists()


# ------------------------------------------------------------------------------------------- checks
def test_checkpoint_checks_and_clear_errors(fake_root, tmp_path):
    out = tmp_path / "m/epoch1.pt"
    train(_cfg(fake_root, out, epochs=1, val_limit=0))
    model, meta = load_model(out, expect=model_spec("xception", "uniform", "sn", 0))
    assert not model.training and meta["weights"] == {"seg": 0.5, "normal": 0.5}
    assert set(model(torch.rand(1, 3, 32, 32))) == {"seg", "normal"}
    for expect, field in [
        ({"arch": "resnet18"}, "arch"),
        ({"tasks": ["seg", "depth_z"]}, "tasks"),
        ({"seed": 1}, "seed"),
        ({"weights": {"seg": 1, "normal": 0.1}}, "weights"),
        ({"decoder": "skip"}, "decoder"),
    ]:
        with pytest.raises(ValueError, match=f"{field}: checkpoint has"):
            load_model(out, expect=expect)
    bad = tmp_path / "corrupt.pt"
    bad.write_bytes(out.read_bytes()[:1000])
    with pytest.raises(ValueError, match="corrupt.pt is corrupt"):
        load_model(bad)
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_model(tmp_path / "missing.pt")
    with pytest.raises(ValueError, match="training settings differ.*lr"):
        train(_cfg(fake_root, tmp_path / "m/epoch2.pt", lr=1e-2, resume_from=str(out), val_limit=0))
    with pytest.raises(ValueError, match="model_id"):
        train(_cfg(fake_root, tmp_path / "m/epoch2.pt", arch="resnet18", resume_from=str(out), val_limit=0))
    with pytest.raises(ValueError, match="decoder: checkpoint has 'reference', expected 'skip'"):
        train(_cfg(fake_root, tmp_path / "m/epoch2.pt", decoder="skip", resume_from=str(out), val_limit=0))


def test_nan_loss_stops_with_epoch_batch_task(tmp_path):
    root = tmp_path / "nan"
    write_fake_split(root / "train", ["depth_z"], n=4)
    t = np.load(root / "train/depth_z.npy")
    t[:, :, :4] = 3e38  # finite (packed arrays refuse NaN), but the loss summed over pixels overflows float32
    np.save(root / "train/depth_z.npy", t)
    with pytest.raises(FloatingPointError, match=r"task depth_z at epoch 1, batch 1/"):
        train(_cfg(root, tmp_path / "x.pt", tasks=["depth_z"], val_limit=0))


def test_cli_trains_with_explicit_weights(fake_root, tmp_path, capsys):
    out = tmp_path / "cli/epoch1.pt"
    rc = cli_main(
        [
            "train",
            "--data",
            str(fake_root),
            "--arch",
            "xception",
            "--tasks",
            "normal+seg",
            "--weighting",
            "mine",
            "--main",
            "normal",
            "--weights-json",
            '{"n": 1, "s": 0.25}',
            "--epochs",
            "1",
            "--batch-size",
            "4",
            "--out",
            str(out),
            "--log",
            str(tmp_path / "l.csv"),
            "--threads",
            "1",
            "--val-limit",
            "2",
            "--no-progress",
        ]
    )
    assert rc == 0
    assert (
        json.loads(capsys.readouterr().out.strip().splitlines()[-1])["model_id"]
        == "xception-mine-normal+seg-s0"
    )
    _, meta = load_model(out)
    assert meta["weights"] == {"normal": 1.0, "seg": 0.25} and meta["weighting"] == "mine"
    assert len(pd.read_csv(tmp_path / "l.csv")) == 1


# ------------------------------------------------------------------------------------- validation
class _Oracle(torch.nn.Module):
    """Outputs exactly the fake targets (write_fake_split's functions of x), or the trivial constant."""

    def __init__(self, task_ids, trivial=None):
        super().__init__()
        self.task_ids, self.trivial = task_ids, trivial

    def forward(self, x):
        out = {}
        for k, tid in enumerate(self.task_ids):
            task = T.get(tid)
            if self.trivial is not None:
                out[tid] = trivial_output(
                    tid, self.trivial[tid], (x.shape[0], task.channels, *x.shape[-2:]), "cpu"
                )
            elif task.is_segmentation:
                lab = 1 + x.argmax(1) + 3 * (x.mean(1) > 0.5).long()
                out[tid] = F.one_hot(lab, task.channels).permute(0, 3, 1, 2).float() * 10
            else:
                chans = [
                    torch.tanh(3 * (x[:, (i + k) % 3] - x[:, (i + k + 1) % 3])) for i in range(task.channels)
                ]
                out[tid] = torch.stack(chans, 1)
        return out


def test_validation_errors_and_trivial_predictor(fake_root):
    train_ds, val_ds = PackedDataset(fake_root / "train", TASKS), PackedDataset(fake_root / "val", TASKS)
    trivial = trivial_predictor(train_ds, TASKS)
    tg = np.load(fake_root / "train/normal.npy")
    mk = np.load(fake_root / "train/normal.mask.npy")[:, None].astype(bool)
    want = [tg[:, c][mk[:, 0]].mean() for c in range(3)]
    assert trivial["normal"] == pytest.approx(want, rel=1e-5)
    labels = np.load(fake_root / "train/seg.npy")
    assert trivial["seg"] == np.bincount(labels[labels > 0]).argmax()
    perfect = validate(_Oracle(TASKS), val_ds, TASKS, batch_size=3, device="cpu", trivial=trivial)
    assert all(perfect[t] == pytest.approx(0.0, abs=1e-6) for t in TASKS)
    assert all(perfect[f"trivial:{t}"] > 0.01 for t in TASKS)
    const = validate(_Oracle(TASKS, trivial), val_ds, TASKS, batch_size=4, device="cpu", trivial=trivial)
    assert all(const[t] == pytest.approx(const[f"trivial:{t}"]) for t in TASKS)


# ------------------------------------------------------------------------------------- reproducibility
def test_same_command_same_checkpoint_bytes(fake_root, tmp_path):
    kw = dict(tasks=["depth_z"], epochs=2, batch_size=4, hflip=True, checkpoint_every=0, keep_resume=True)
    for run in ("a", "b"):
        train(_cfg(fake_root, tmp_path / run / "epoch2.pt", **kw))
    train(_cfg(fake_root, tmp_path / "c/epoch1.pt", **{**kw, "epochs": 1}))
    train(_cfg(fake_root, tmp_path / "c/epoch2.pt", resume_from=str(tmp_path / "c/epoch1.pt"), **kw))
    a = (tmp_path / "a/epoch2.pt").read_bytes()
    assert a == (tmp_path / "b/epoch2.pt").read_bytes()
    assert a == (tmp_path / "c/epoch2.pt").read_bytes()  # resumed at a milestone: the same bytes too
    log = pd.read_csv(tmp_path / "c/epoch2.csv")
    assert log["time_s"].notna().all() and list(log["epoch"]) == [1, 2]  # timings live in the log


def test_stale_partial_is_discarded_with_a_warning(fake_root, tmp_path, capsys):
    out = tmp_path / "m/epoch2.pt"
    partial = out.with_name(out.name + ".partial")
    kw = dict(tasks=["depth_z"], epochs=2, batch_size=4, checkpoint_every=0, val_limit=0)
    train(_cfg(fake_root, tmp_path / "m/epoch1.pt", **{**kw, "epochs": 1}))
    partial.write_bytes((tmp_path / "m/epoch1.pt").read_bytes())  # as left by a killed run at lr 1e-3
    capsys.readouterr()
    train(_cfg(fake_root, out, lr=2e-3, **kw))
    err = capsys.readouterr().err
    assert f"warning: discarding {partial}, starting over" in err and "lr: checkpoint 0.001, now 0.002" in err
    assert not partial.exists() and load_checkpoint(out)["hparams"]["lr"] == 2e-3
    ref = tmp_path / "ref/epoch2.pt"
    train(_cfg(fake_root, ref, lr=2e-3, **kw))
    assert out.read_bytes() == ref.read_bytes()  # the same as a fresh run


def test_sgd_is_stored_and_checked_on_resume(fake_root, tmp_path):
    kw = dict(tasks=["depth_z"], batch_size=4, checkpoint_every=0, val_limit=0, optimizer="sgd", lr=0.01)
    first = tmp_path / "m/epoch1.pt"
    train(_cfg(fake_root, first, epochs=1, momentum=0.9, keep_resume=True, **kw))
    ckpt = load_training_state(first)
    assert ckpt["hparams"]["optimizer"] == "sgd" and ckpt["hparams"]["momentum"] == 0.9
    assert ckpt["optimizer"]["param_groups"][0]["momentum"] == 0.9
    with pytest.raises(ValueError, match="momentum: checkpoint 0.9, now 0.99"):
        train(_cfg(fake_root, tmp_path / "m/epoch2.pt", epochs=2, resume_from=str(first), **kw))
    adam = {**kw, "optimizer": "adam"}
    with pytest.raises(ValueError, match="optimizer: checkpoint 'sgd', now 'adam'"):
        train(_cfg(fake_root, tmp_path / "m/epoch2.pt", epochs=2, resume_from=str(first), **adam))


def test_disk_full_while_saving_leaves_no_temp_file(fake_root, tmp_path, monkeypatch):
    import errno

    def full(obj, f):
        f.write(b"partial bytes")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full)
    out = tmp_path / "m/epoch1.pt"
    with pytest.raises(OSError, match=f"^disk full while writing {out}$"):
        train(
            _cfg(fake_root, out, tasks=["depth_z"], epochs=1, batch_size=4, val_limit=0, checkpoint_every=0)
        )
    assert sorted(p.name for p in out.parent.iterdir()) == []  # no checkpoint, no temp file and no log
