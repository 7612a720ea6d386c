"""Checkpoints on disk: weights only by default, the resume state only where a later milestone needs it,
non-finite weights refused on load, a full disk as one line with nothing half-written, the log written after
its checkpoint, progress lines in the job's log, and what ``mtlrobust plan`` says about time and disk."""

from __future__ import annotations

import errno
import json
import re
from pathlib import Path

import pytest
import torch
from test_train import _cfg

from mtlrobust import checkpoint as C
from mtlrobust import commands, cost, files, study
from mtlrobust import train as TR
from mtlrobust.cli import main as cli_main
from mtlrobust.models import MultiTaskNet
from mtlrobust.train import train

REPO = Path(__file__).resolve().parents[1]
KW = dict(tasks=["depth_z"], epochs=1, batch_size=2, checkpoint_every=0, val_limit=0)


pytestmark = pytest.mark.usefixtures("one_thread")


def _train_argv(root, out, *extra):
    return ["train", "--data", str(root), "--arch", "xception", "--tasks", "d", "--batch-size", "2",
            "--val-limit", "0", "--threads", "1", "--no-progress", "--out", str(out), *extra]  # fmt: skip


# ---------------------------------------------------------------------------------- weights vs resume
def test_resume_state_is_written_only_when_asked_and_must_belong_to_its_weights(fake_root, tmp_path):
    plain, kept = tmp_path / "plain/epoch1.pt", tmp_path / "kept/epoch1.pt"
    train(_cfg(fake_root, plain, **KW))
    train(_cfg(fake_root, kept, keep_resume=True, **KW))
    assert sorted(p.name for p in plain.parent.iterdir()) == ["epoch1.csv", "epoch1.pt"]
    assert sorted(p.name for p in kept.parent.iterdir()) == ["epoch1.csv", "epoch1.pt", "epoch1.resume.pt"]
    assert plain.read_bytes() == kept.read_bytes()  # the weights file does not depend on --keep-resume
    # Adam keeps two moments per weight: the weights file is about a third of the whole state
    assert plain.stat().st_size < 0.4 * (plain.stat().st_size + C.resume_path(kept).stat().st_size)

    with pytest.raises(FileNotFoundError, match=r"plain/epoch1.resume.pt does not exist.*--keep-resume"):
        train(_cfg(fake_root, tmp_path / "plain/epoch2.pt", resume_from=str(plain), **{**KW, "epochs": 2}))
    other = tmp_path / "other/epoch1.pt"  # another seed: other weights, same model id but for the seed
    train(_cfg(fake_root, other, keep_resume=True, seed=0, lr=2e-3, **KW))
    C.resume_path(kept).write_bytes(C.resume_path(other).read_bytes())  # a stale resume file
    with pytest.raises(
        ValueError, match=r"resume state .*kept/epoch1.resume.pt does not belong to .*weights_sha256"
    ):
        C.load_training_state(kept)


def test_float16_weights_halve_the_file_and_resuming_stays_exact(fake_root, tmp_path):
    """--weights-dtype float16 stores rounded weights for evaluations, while the resume file carries the
    float32 ones: milestone 1 -> 2 resumed gives the bits of an uninterrupted float32 run, rounded once
    at the end."""
    kw = {**KW, "epochs": 2}
    full = tmp_path / "f32/epoch2.pt"
    train(_cfg(fake_root, full, **kw))
    half1, half2 = tmp_path / "f16/epoch1.pt", tmp_path / "f16/epoch2.pt"
    train(_cfg(fake_root, half1, keep_resume=True, weights_dtype="float16", **KW))
    train(_cfg(fake_root, half2, resume_from=str(half1), weights_dtype="float16", **kw))
    want = torch.load(full, weights_only=True)["model"]
    got = torch.load(half2, weights_only=True)["model"]
    assert list(got) == list(want)
    for k, v in want.items():
        assert got[k].dtype == (torch.float16 if v.is_floating_point() else v.dtype), k
        assert torch.equal(got[k], v.to(got[k].dtype)), k  # float32 training resumed exactly, rounded once
    assert half2.stat().st_size < 0.55 * full.stat().st_size
    model, meta = C.load_model(half2)  # evaluations read it as float32 weights
    assert meta["epoch"] == 2 and all(p.dtype == torch.float32 for p in model.parameters())
    with pytest.raises(OverflowError, match=r"epoch9.pt: tensor w holds values beyond float16's range"):
        C.stored_weights(tmp_path / "epoch9.pt", {"w": torch.tensor([1e6])}, "float16")


def test_the_study_key_reaches_the_train_command():
    config = study.load(REPO / "config.yaml").config
    assert config["training"]["weights_dtype"] == "float16"
    assert "--weights-dtype float16" in commands.training(config)
    assert "--weights-dtype" not in commands.training(
        {**config, "training": {**config["training"], "weights_dtype": "float32"}}
    )


# ---------------------------------------------------------------------------------- non-finite weights
@pytest.fixture
def nan_checkpoint(packed_dir, tmp_path):
    """A checkpoint of the evaluate tests' format whose second weight tensor holds a NaN."""
    out = tmp_path / "m/epoch1.pt"
    train(
        _cfg(packed_dir, out, arch="resnet18", tasks=["seg", "depth_z"], epochs=1, batch_size=4, val_limit=0)
    )
    ckpt = torch.load(out, weights_only=True)
    name = list(ckpt["model"])[1]
    ckpt["model"][name].view(-1)[0] = float("nan")
    torch.save(ckpt, out)  # written behind save()'s back, as a broken or tampered file would be
    return out, name


def test_evaluate_theory_and_resume_refuse_non_finite_weights(nan_checkpoint, packed_dir, tmp_path, capsys):
    path, name = nan_checkpoint
    common = ["--data", str(packed_dir / "test"), "--device", "cpu", "--out", str(tmp_path / "o.csv")]
    evaluate = ["evaluate", "--checkpoint", str(path), "--attack-json", '{"name": "none", "method": "none"}',
                "--attacked", "s", *common]  # fmt: skip
    theory = [
        "theory",
        "--checkpoint",
        str(path),
        "--norm",
        "linf",
        "--eps",
        "8/255",
        "--orders",
        "sd",
        *common,
    ]
    resume = _train_argv(packed_dir, tmp_path / "m2/epoch2.pt", "--epochs", "2", "--resume-from", str(path))
    resume[resume.index("d")] = "sd"
    resume[resume.index("xception")] = "resnet18"
    for argv in (evaluate, theory, resume):
        capsys.readouterr()
        assert cli_main(argv) == 2, argv[0]
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1, err
        assert re.fullmatch(
            rf"mtlrobust {argv[0]}: error: checkpoint {re.escape(str(path))}: the weights hold NaN or inf "
            rf"\(tensor {re.escape(name)}\); .* retrain it",
            err[0],
        ), err[0]
    assert not (tmp_path / "o.csv").exists() and not (tmp_path / "m2").exists()


# ---------------------------------------------------------------------------------- full disk, kills
class _FullDisk:
    """A file whose writes fail with ENOSPC once ``room`` bytes are written, as on a full disk."""

    def __init__(self, f, room):
        self.f, self.room = f, room

    def write(self, b):
        self.room -= len(b)
        if self.room < 0:
            raise OSError(errno.ENOSPC, "No space left on device")
        return self.f.write(b)

    def __getattr__(self, name):
        return getattr(self.f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()


def test_full_disk_during_torch_save_is_one_line_and_leaves_nothing(fake_root, tmp_path, monkeypatch, capsys):
    real_open = open
    monkeypatch.setattr(
        files, "open", lambda p, *a, **k: _FullDisk(real_open(p, *a, **k), 5000), raising=False
    )
    out = tmp_path / "m/epoch1.pt"
    assert cli_main(_train_argv(fake_root, out, "--epochs", "1", "--checkpoint-every", "0")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    # torch itself says "RuntimeError: [enforce fail at inline_container.cc] unexpected pos"
    assert err[-1] == f"mtlrobust train: error: disk full while writing {out}"
    assert sorted(p.name for p in out.parent.iterdir()) == []  # no checkpoint, no temp file, no log


def test_a_short_write_without_an_os_error_is_one_line_too(fake_root, tmp_path, monkeypatch):
    def short(obj, f):
        f.write(b"PK")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")

    monkeypatch.setattr(torch, "save", short)
    out = tmp_path / "m/epoch1.pt"
    with pytest.raises(
        OSError, match=rf"^could not write {re.escape(str(out))}: .*unexpected pos.*disk full\?$"
    ):
        train(_cfg(fake_root, out, **KW))
    assert sorted(p.name for p in out.parent.iterdir()) == []


@pytest.mark.parametrize("kill_at", ["log", "weights"])
def test_killed_between_writes_never_leaves_a_log_without_its_checkpoint(
    fake_root, tmp_path, monkeypatch, kill_at
):
    ref = tmp_path / "ref/epoch1.pt"
    train(_cfg(fake_root, ref, keep_resume=True, **KW))
    out = tmp_path / "run/epoch1.pt"
    real = C._write

    def killed(*args):  # the process ends here, as under SIGKILL (no cleanup of what is in place)
        raise KeyboardInterrupt

    def weights_killed(path, obj):
        if not Path(path).name.endswith(".resume.pt"):
            killed()
        real(path, obj)

    if kill_at == "log":
        monkeypatch.setattr(TR, "_write_log", killed)
    else:  # after the resume file, before the weights file
        monkeypatch.setattr(C, "_write", weights_killed)
    with pytest.raises(KeyboardInterrupt):
        train(_cfg(fake_root, out, keep_resume=True, **KW))
    left = sorted(p.name for p in out.parent.iterdir())
    assert left == (["epoch1.pt", "epoch1.resume.pt"] if kill_at == "log" else ["epoch1.resume.pt"])
    monkeypatch.undo()
    train(_cfg(fake_root, out, keep_resume=True, **KW))  # the same command again
    for name in ("epoch1.pt", "epoch1.resume.pt", "epoch1.csv"):
        a, b = (ref.parent / name).read_bytes(), (out.parent / name).read_bytes()
        assert a == b or name.endswith(".csv"), name  # the log differs in its timings only
    assert (out.parent / "epoch1.csv").read_text().splitlines()[0] == ref.with_suffix(
        ".csv"
    ).read_text().splitlines()[0]


# ---------------------------------------------------------------------------------- progress lines
def test_train_writes_a_progress_line_per_epoch_and_the_log_csv_is_unchanged(fake_root, tmp_path, capsys):
    out = tmp_path / "m/epoch2.pt"
    assert cli_main(_train_argv(fake_root, out, "--epochs", "2", "--val-limit", "2")) == 0
    captured = capsys.readouterr()
    lines = [ln for ln in captured.err.splitlines() if ": epoch " in ln]
    assert len(lines) == 2, captured.err
    for e, ln in enumerate(lines, 1):
        assert re.fullmatch(
            rf"xception-uniform-depth_z-s0: epoch {e}/2 in \d+\.\d s, train loss \S+, val error depth_z \S+; "
            r"elapsed \d+:\d\d:\d\d, ETA \d+:\d\d:\d\d",
            ln,
        ), ln
    assert lines[1].endswith("ETA 0:00:00")
    assert len(captured.out.strip().splitlines()) == 1  # stdout: the JSON summary only
    header = out.with_suffix(".csv").read_text().splitlines()[0]
    assert header == "epoch,lr,time_s,train_loss,train_loss_depth_z,val_error_depth_z,trivial_error_depth_z"


def test_evaluate_writes_a_line_per_batch_and_subset_when_no_bar_is_shown(capsys):
    from test_evaluate import META, PGD, VIEWS, Data, Tiny

    from mtlrobust import evaluate as EV

    rows = EV.evaluate(
        Tiny(), META, Data(), VIEWS, PGD, [["seg"], ["seg", "depth_z"]], batch_size=2, progress=False
    )
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 3 * 2  # 3 batches of 5 samples x 2 attacked subsets
    assert re.fullmatch(
        r"resnet18-uniform-seg\+depth_z-s0 epoch 3 pgd: batch 1/3 \(samples 1-2 of 5\), attacked seg: "
        r"1/6 done; elapsed \d+:\d\d:\d\d, ETA \d+:\d\d:\d\d",
        err[0],
    ), err[0]
    assert "batch 3/3 (samples 5-5 of 5), attacked seg+depth_z: 6/6 done" in err[-1]
    assert err[-1].endswith("ETA 0:00:00")
    again = EV.evaluate(
        Tiny(), META, Data(), VIEWS, PGD, [["seg"], ["seg", "depth_z"]], batch_size=2, progress=True
    )
    assert again == rows  # the lines change no output


# ---------------------------------------------------------------------------------- plan: time and disk
def test_plan_estimates_at_the_model_resolution_and_says_so(capsys):
    per_epoch = {"resnet18": 256.0, "resnet50": 512.0}
    at32 = cost.at_resolution(per_epoch, 32)
    assert at32 == {"resnet18": 4.0, "resnet50": 8.0}  # (32/256)^2 of the 256 px seconds
    assert cost.at_resolution(per_epoch, 64)["resnet18"] == 4 * at32["resnet18"]
    assert cost.at_resolution(per_epoch, 256) == per_epoch
    assert cli_main(["plan", "--configfile", str(REPO / "studies" / "test.yaml")]) == 0
    out = capsys.readouterr().out
    res = study.load(REPO / "studies" / "test.yaml").config["model"]["resolution"]
    assert f"The study's models see {res}x{res} px (model.resolution)" in out
    assert f"({res}/256)^2 = {(res / 256) ** 2:.4g}" in out


def test_plan_disk_estimate_matches_real_checkpoints(tmp_path, capsys):
    p = study.load(REPO / "studies" / "test.yaml")
    weights = cost.weights_bytes(p)
    for model_id in sorted(p.models)[:2]:
        m = p.models[model_id]
        net = MultiTaskNet(m.arch, list(m.tasks), decoder=p.config["model"]["decoder"])
        path = tmp_path / f"{model_id}.pt"
        torch.save({"model": net.state_dict()}, path)
        assert weights[model_id] == pytest.approx(path.stat().st_size, rel=0.01), model_id
    disk = cost.disk_estimate(p, 100, 20, 10)
    assert disk["checkpoints"] == sum(weights[m] for m, es in p.epochs.items() for _ in es)
    assert cli_main(["plan", "--configfile", str(REPO / "studies" / "test.yaml"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out["disk_bytes"]) == {"checkpoints", "evaluations", "packed data"}
    assert out["jobs"]["train_resumable"] == sum(len(es) - 1 for es in p.epochs.values())
