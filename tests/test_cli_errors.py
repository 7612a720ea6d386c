"""Every stage reports a user's mistake as one line ``mtlrobust STAGE: error: ...`` with exit status 2, before
doing the work, and writes nothing half-done; ``--debug`` brings the traceback back."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest
import torch
from test_train import write_fake_split

from mtlrobust import cli
from mtlrobust.evaluate import write_csv as write_eval_csv

pytestmark = pytest.mark.usefixtures("one_thread")


def _fails(capsys, stage: str, *argv, match: str) -> str:
    """Run ``mtlrobust STAGE ARGV``; assert exit 2 and a last stderr line naming the problem, no traceback."""
    capsys.readouterr()
    try:
        rc = cli.main([stage, *map(str, argv)])
    except SystemExit as e:  # argparse's own errors
        rc = e.code
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert rc == 2, err
    assert "Traceback" not in err, err
    assert lines and lines[-1].startswith(f"mtlrobust {stage}: error: "), err
    assert re.search(match, lines[-1]), lines[-1]
    return lines[-1]


def _no_temp_files(folder) -> None:
    assert not [p for p in folder.rglob("*") if ".tmp" in p.name], list(folder.rglob("*"))


# ---------------------------------------------------------------------------------------------- data
@pytest.fixture(scope="module")
def checkpoint(fake_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("ckpt") / "epoch1.pt"
    argv = ["train", "--data", fake_root, "--arch", "xception", "--tasks", "sd", "--epochs", "1"]
    argv += ["--batch-size", "3", "--val-limit", "0", "--threads", "1", "--no-progress", "--out", out]
    assert cli.main(list(map(str, argv))) == 0
    return out


def _empty_split(src, dst):
    """A split folder in the packed format holding no view."""
    dst.mkdir(parents=True)
    for f in src.iterdir():
        if f.suffix == ".npy":
            np.save(dst / f.name, np.load(f)[:0])
    shutil.copy(src / "meta.json", dst / "meta.json")
    (dst / "views.csv").write_text("building,point,view\n")
    return dst


@pytest.fixture(scope="module")
def odd_data(fake_root, tmp_path_factory):
    """Folders of unusable data: an empty test split, 64 px data (the model is 32 px), an empty train split
    and a 40 px training set."""
    base = tmp_path_factory.mktemp("odd")
    empty = _empty_split(fake_root / "train", base / "empty")
    big = write_fake_split(base / "big", ["seg", "depth_z"], n=2, res=64)
    no_train = base / "no_train"
    _empty_split(fake_root / "train", no_train / "train")
    shutil.copytree(fake_root / "val", no_train / "val")
    res40 = base / "res40"
    for split in ("train", "val"):
        write_fake_split(res40 / split, ["seg", "depth_z"], n=4, res=40)
    return {"empty": empty, "big": big, "no_train": no_train, "res40": res40}


# --------------------------------------------------------------------------------------------- train
TRAIN_BAD = [
    (["--lr", "inf"], r"--lr: expected a finite number > 0, got inf"),
    (["--lr", "nan"], r"--lr: expected a finite number > 0"),
    (["--lr", "0"], r"--lr: expected a finite number > 0, got 0.0"),
    (["--lr", "-1e-3"], r"--lr: expected"),
    (["--lr-gamma", "nan"], r"--lr-gamma: expected a number in \(0, 1\]"),
    (["--lr-gamma", "-1"], r"--lr-gamma: expected a number in \(0, 1\]"),
    (["--batch-size", "1"], r"--batch-size: expected an integer >= 2 \(BatchNorm"),
    (["--epochs", "0"], r"--epochs: expected an integer >= 1"),
    (["--seed", "-1"], r"--seed: expected an integer >= 0"),
    (["--optimizer", "sgd", "--momentum", "1"], r"--momentum: expected a number in \[0, 1\)"),
    (["--lr-milestones", "a,b"], r"argument --lr-milestones: expected integers joined by ','"),
    (["--lr-milestones=0,10"], r"--lr-milestones: expected epochs >= 1"),
    (["--weights-json", "{seg"], r"argument --weights-json: not valid JSON"),
    (["--weights-json", "[1]"], r"argument --weights-json: expected a JSON object"),
    (["--tasks", "sx"], r"argument --tasks: unknown task 'x'"),
    (["--arch", "vgg"], r"argument --arch: invalid choice: 'vgg'"),
    (["--epochs", "two"], r"argument --epochs: expected int, got 'two'"),
    (
        ["--device", "cuda"] if not torch.cuda.is_available() else ["--threads", "0"],
        r"--(device cuda|threads)",
    ),
    (["--threads", "0"], r"--threads: expected an integer >= 1"),
    (["--val-limit", "-1"], r"--val-limit: expected an integer >= 0"),
    (["--pretrained", "/no/such/weights.pt"], r"--pretrained /no/such/weights.pt: no such file"),
    (["--resume-from", "/no/such/epoch50.pt"], r"checkpoint /no/such/epoch50.pt does not exist"),
    (["--weighting", "paper", "--main", "n"], r"main task"),
]


@pytest.mark.parametrize("extra, match", TRAIN_BAD, ids=[" ".join(a) for a, _ in TRAIN_BAD])
def test_train_rejects_bad_flags_before_work(capsys, fake_root, tmp_path, extra, match):
    out = tmp_path / "m" / "epoch1.pt"
    argv = ["--data", fake_root, "--arch", "xception", "--tasks", "sd", "--epochs", "1", "--out", out]
    _fails(capsys, "train", *argv, *extra, match=match)
    assert not out.parent.exists()  # nothing written, not even the log


def test_train_rejects_unusable_data(capsys, fake_root, odd_data, tmp_path):
    out = tmp_path / "m" / "epoch1.pt"
    common = ["--arch", "xception", "--tasks", "sd", "--epochs", "1", "--out", out]
    _fails(capsys, "train", "--data", odd_data["no_train"], *common, match=r"no_train/train holds 0 views")
    _fails(capsys, "train", "--data", odd_data["res40"], *common, match=r"40 px images; .* multiple of 32")
    _fails(capsys, "train", "--data", tmp_path / "nowhere", *common, match=r"nowhere/train does not exist")
    _fails(capsys, "train", "--data", fake_root, *common[:-1], tmp_path, match=r"is a folder")
    assert not out.parent.exists()


def test_diverged_training_writes_no_checkpoint(capsys, fake_root, tmp_path):
    out = tmp_path / "m" / "epoch1.pt"
    argv = ["--data", fake_root, "--arch", "xception", "--tasks", "sd", "--epochs", "1", "--out", out]
    argv += ["--lr", "1e30", "--batch-size", "6", "--threads", "1", "--no-progress"]
    _fails(capsys, "train", *argv, match=r"non-finite|NaN.*no checkpoint written, lower --lr")
    assert not out.exists() and not out.with_name(out.name + ".partial").exists()
    _no_temp_files(tmp_path)


def test_debug_shows_the_traceback(fake_root, tmp_path):
    argv = ["train", "--data", fake_root, "--arch", "xception", "--tasks", "sd", "--epochs", "1"]
    argv += ["--out", tmp_path / "x.pt", "--lr", "0"]
    with pytest.raises(ValueError, match="--lr"):
        cli.main(["--debug", *map(str, argv)])


# ------------------------------------------------------------------------------------------ evaluate
def _eval_argv(checkpoint, data, out, spec=None, attacked="sd"):
    spec = spec or {"name": "pgd", "method": "pgd", "norm": "linf", "eps": 8 / 255, "steps": 1}
    return ["--checkpoint", checkpoint, "--data", data, "--attack-json", json.dumps(spec)] + [
        "--attacked",
        attacked,
        "--device",
        "cpu",
        "--out",
        out,
    ]


def test_evaluate_rejects_bad_inputs(capsys, checkpoint, fake_root, odd_data, tmp_path):
    out = tmp_path / "e" / "pgd.csv"
    val = fake_root / "val"
    pgd = {"name": "pgd", "method": "pgd", "norm": "linf", "eps": 8 / 255, "steps": 1}
    cases = [
        (_eval_argv(checkpoint, odd_data["empty"], out), r"empty holds no sample \(empty split\)"),
        (_eval_argv(checkpoint, odd_data["big"], out), r"big holds 64 px images but checkpoint .* 32 px"),
        (_eval_argv(tmp_path / "none.pt", val, out), r"checkpoint .*none.pt does not exist"),
        (_eval_argv(checkpoint, tmp_path / "nowhere", out), r"nowhere/meta.json not found"),
        (_eval_argv(checkpoint, val, out, attacked="n"), r"--attacked 'n': task\(s\) \['normal'\] are not"),
        (_eval_argv(checkpoint, val, out, spec={"method": "pgd"}), r"--attack-json lacks key"),
        (_eval_argv(checkpoint, val, out) + ["--batch-size", "0"], r"--batch-size must be >= 1"),
        (_eval_argv(checkpoint, val, out) + ["--limit", "0"], r"--limit must be >= 1"),
        (_eval_argv(checkpoint, val, tmp_path), r"is a folder"),
        (_eval_argv(checkpoint, val, out, spec={**pgd, "eps": 8}), r"eps.*got eps=8"),  # 8 meant as 8/255
        (_eval_argv(checkpoint, val, out, spec={**pgd, "eps": float("nan")}), r"eps"),
    ]
    bad = tmp_path / "corrupt.pt"
    bad.write_bytes(checkpoint.read_bytes()[:500])
    cases.append((_eval_argv(bad, val, out), r"corrupt.pt is corrupt or unreadable"))
    for argv, match in cases:
        _fails(capsys, "evaluate", *argv, match=match)
    assert not out.exists()
    _no_temp_files(tmp_path)


# ----------------------------------------------------------------------------------------- aggregate
def _eval_rows(n_samples=2, tasks=("seg", "depth_z"), attacked=("seg", "seg+depth_z")):
    from mtlrobust.evaluate import COLUMNS

    rows = []
    for a in attacked:
        for i in range(n_samples):
            for t in tasks:
                r = dict.fromkeys(COLUMNS, "")
                r.update(model_id="xception-uniform-seg+depth_z-s0", arch="xception", weighting="uniform")
                r.update(tasks="+".join(tasks), epoch="1", attack="pgd", method="pgd", options="{}")
                r.update(attacked=a, sample=str(i), view=f"b/{i}/0", task=t)
                r.update(clean_loss="1", adv_loss="2", clean_error="1", adv_error="2")
                rows.append([r[c] for c in COLUMNS])
    return rows


def test_aggregate_refuses_incomplete_evaluations(capsys, tmp_path):
    good = tmp_path / "good.csv"
    write_eval_csv(_eval_rows(), good)
    out = tmp_path / "res" / "vulnerability.csv"
    assert cli.main(["aggregate", "--inputs", str(good), "--out", str(out)]) == 0
    lines = good.read_text().splitlines(keepends=True)
    cut_mid_row = tmp_path / "cut_mid_row.csv"
    cut_mid_row.write_text("".join(lines[:5]) + lines[5][:12])
    cut_at_row = tmp_path / "cut_at_row.csv"
    cut_at_row.write_text("".join(lines[:5]))
    no_trailer = tmp_path / "no_trailer.csv"
    no_trailer.write_text("".join(lines[:-1]))
    lying = tmp_path / "lying.csv"
    lying.write_text("".join(lines[:5]) + lines[-1])
    holey = tmp_path / "holey.csv"
    write_eval_csv(_eval_rows()[:-1], holey)  # complete file, one (sample, task) row missing
    (tmp_path / "index.txt").write_text(f"{good}\n{tmp_path / 'gone.csv'}\n")
    cases = [
        (["--inputs", cut_mid_row], r"cut_mid_row.csv: incomplete evaluation CSV"),
        (["--inputs", cut_at_row], r"cut_at_row.csv: incomplete evaluation CSV"),
        (["--inputs", no_trailer], r"no_trailer.csv: incomplete evaluation CSV"),
        (["--inputs", lying], r"lying.csv: incomplete evaluation CSV, 4 rows but written with 8"),
        (["--inputs", holey], r"holey.csv: incomplete evaluation CSV, attacked subset 'seg\+depth_z' has 3"),
        (["--inputs", tmp_path / "gone.csv"], r"gone.csv: cannot read"),
        (["--inputs-from", tmp_path / "index.txt"], r"gone.csv: cannot read"),
        (["--inputs-from", tmp_path / "nolist.txt"], r"--inputs-from .*nolist.txt"),
        ([], r"no evaluation CSV given"),
    ]
    before = out.read_bytes()
    for argv, match in cases:
        _fails(capsys, "aggregate", *argv, "--out", out, match=match)
    assert out.read_bytes() == before  # the earlier result stays as it was
    _fails(capsys, "aggregate", "--inputs", good, "--out", tmp_path, match=r"is a folder")
    _no_temp_files(tmp_path)


# -------------------------------------------------------------------------------------------- theory
def test_theory_rejects_bad_inputs(capsys, checkpoint, fake_root, odd_data, tmp_path):
    out = tmp_path / "theory.csv"
    base = ["--checkpoint", checkpoint, "--norm", "linf", "--out", out]
    val = ["--data", fake_root / "val"]
    cases = [
        (
            base + val + ["--eps", "8"],
            r"argument --eps: expected a number or a fraction like 8/255 .* got '8'",
        ),
        (base + val + ["--eps", "nan"], r"argument --eps: expected"),
        (base + val + ["--eps", "-1/255"], r"argument --eps: expected"),
        (base + val + ["--eps", "8/0"], r"argument --eps: expected"),
        (base + ["--data", odd_data["big"], "--eps", "8/255"], r"64 px images but checkpoint"),
        (base + ["--data", odd_data["empty"], "--eps", "8/255"], r"holds no sample"),
        (base + val + ["--eps", "8/255", "--orders", "sx"], r"--orders 'sx'"),
        (base + val + ["--eps", "8/255", "--batch-size", "0"], r"--batch-size must be >= 1"),
    ]
    for argv, match in cases:
        _fails(capsys, "theory", *argv, match=match)
    assert not out.exists()


# ------------------------------------------------------------------------------------ data stages
def test_data_stages_reject_bad_inputs(capsys, fake_root, tmp_path):
    full = tmp_path / "full"
    full.mkdir()
    (full / "x").write_text("")
    _fails(capsys, "synthesize", "--out", tmp_path / "s", "--points", "0", match=r"points, views >= 1")
    _fails(capsys, "synthesize", "--out", tmp_path / "s", "--resolution", "4", match=r"resolution >= 8")
    _fails(capsys, "synthesize", "--out", full, match=r"full exists and is not empty")
    prep = ["--out", tmp_path / "p", "--tasks", "sd", "--resolution", "32"]
    _fails(capsys, "prepare", "--raw", tmp_path / "noraw", *prep, match=r"noraw.*not found")
    _fails(capsys, "prepare", "--raw", tmp_path, *prep[:-1], "x", match=r"argument --resolution")
    _fails(capsys, "prepare", "--raw", tmp_path, *prep[:3], "q", *prep[4:], match=r"unknown task 'q'")
    _no_temp_files(tmp_path)


def test_file_errors_read_path_then_reason(capsys, tmp_path):
    _fails(
        capsys,
        "aggregate",
        "--inputs-from",
        tmp_path / "none.txt",
        "--out",
        tmp_path / "v.csv",
        match=r"none.txt",
    )
    missing = tmp_path / "nope.pt"
    argv = [
        "--checkpoint",
        missing,
        "--data",
        tmp_path,
        "--norm",
        "linf",
        "--eps",
        "0.03",
        "--out",
        tmp_path / "t",
    ]
    line = _fails(capsys, "theory", *argv, match=r"nope.pt")
    assert "Errno" not in line
