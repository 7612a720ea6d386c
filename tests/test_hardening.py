"""Shared helpers every stage relies on: atomic writes, budget parsing, device resolution."""

from __future__ import annotations

import argparse
import errno
import os

import pytest

from mtlrobust import device as D
from mtlrobust import files as F
from mtlrobust import values as V


def _leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if ".tmp" in p.name)


# ------------------------------------------------------------------------------------------ files
def test_atomic_write_replaces_only_on_success(tmp_path):
    out = tmp_path / "sub" / "a.txt"
    F.write_text(out, "old")
    with pytest.raises(RuntimeError), F.atomic_path(out) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash mid-write")
    assert out.read_text() == "old"
    assert _leftovers(out.parent) == []
    F.write_csv(out, ["a", "b"], [[1, 2]])
    assert out.read_text() == "a,b\n1,2\n"


def test_atomic_write_on_a_folder_names_it_and_leaves_no_temp(tmp_path):
    (tmp_path / "out.csv").mkdir()
    with pytest.raises(IsADirectoryError, match="out.csv: it is a folder"):
        F.write_text(tmp_path / "out.csv", "x")
    assert _leftovers(tmp_path) == []


def test_disk_full_is_one_line_naming_the_target(tmp_path, monkeypatch):
    real_open = open

    class Full:
        def __init__(self, f):
            self.f = f

        def write(self, _):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        def __getattr__(self, k):
            return getattr(self.f, k)

        def __enter__(self):
            return self

        def __exit__(self, *a):
            self.f.close()

    monkeypatch.setattr("builtins.open", lambda *a, **k: Full(real_open(*a, **k)))
    out = tmp_path / "table.csv"
    with pytest.raises(F.DiskFullError) as e:
        F.write_csv(out, ["a"], [[1]])
    assert str(e.value) == f"disk full while writing {out}"
    monkeypatch.undo()
    assert not out.exists() and _leftovers(tmp_path) == []


def test_torch_save_is_atomic(tmp_path):
    import torch

    out = tmp_path / "m.pt"
    F.torch_save(out, {"w": torch.ones(2)})
    assert torch.equal(torch.load(out, weights_only=True)["w"], torch.ones(2))
    assert _leftovers(tmp_path) == []


# ------------------------------------------------------------------------------------------ values
@pytest.mark.parametrize(
    "text, want", [("8/255", 8 / 255), ("8 / 255", 8 / 255), (0.03, 0.03), ("0", 0.0), (1, 1.0)]
)
def test_budget_accepts_numbers_and_fractions(text, want):
    assert V.budget(text, "eps") == pytest.approx(want)


@pytest.mark.parametrize(
    "bad", ["8", 8, 1.5, "-0.1", "nan", "inf", float("nan"), "1/0", "eight", True, None, [1]]
)
def test_budget_rejects_naming_the_key(bad):
    with pytest.raises(ValueError, match=r"^attacks\.pgd\.eps: expected a number or a fraction like 8/255"):
        V.budget(bad, "attacks.pgd.eps")


def test_budget_positive_rejects_zero():
    with pytest.raises(ValueError, match="0 < value"):
        V.budget("0", "step_size", positive=True)


def test_budget_arg_reports_through_argparse(capsys):
    p = argparse.ArgumentParser(prog="mtlrobust theory")
    p.add_argument("--eps", type=V.budget_arg("--eps"))
    assert p.parse_args(["--eps", "8/255"]).eps == pytest.approx(8 / 255)
    with pytest.raises(SystemExit) as e:
        p.parse_args(["--eps", "8"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("mtlrobust theory: error: argument --eps: expected a number or a fraction")
    assert err.endswith("got '8'")


# ------------------------------------------------------------------------------------------ device
def test_device_resolver(monkeypatch):
    import torch

    assert D.resolve("cpu").type == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert D.resolve("auto").type == "cpu"
    with pytest.raises(ValueError, match=r"^--device cuda: CUDA is not available"):
        D.resolve("cuda")
    with pytest.raises(ValueError, match="expected one of auto, cpu, cuda"):
        D.resolve("gpu")


def _enospc(*_a, **_k):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_synthesize_disk_full_names_the_output_and_cleans_up(tmp_path, monkeypatch):
    from mtlrobust.data import synthetic

    monkeypatch.setattr(synthetic, "_save_png", _enospc)
    out = tmp_path / "raw"
    with pytest.raises(F.DiskFullError, match=f"^disk full while writing {out}$"):
        synthetic.synthesize(out, 1, 1, 1, 16, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_prepare_disk_full_names_the_split_and_cleans_up(synthetic_raw, tmp_path, monkeypatch):
    from mtlrobust.data import packed

    monkeypatch.setattr(packed, "_write_rows", _enospc)
    out = tmp_path / "packed"
    with pytest.raises(F.DiskFullError, match=f"^disk full while writing {out / 'train'}$"):
        packed.prepare(synthetic_raw, out, ["seg"], 32, ["train"], progress=False)
    assert list(out.iterdir()) == []


# ------------------------------------------------------------------------------------------ start-up
@pytest.mark.parametrize("arch", ["resnet18", "resnet50", "resnet152", "wide_resnet50_2"])
def test_resnet_trunk_equals_torchvision(arch):
    """The same weights for the same seed, the same keys and the same outputs as torchvision's builder."""
    import torch
    import torchvision

    from mtlrobust.resnet import ResNetTrunk

    torch.manual_seed(3)
    ref = getattr(torchvision.models, arch)(weights=None).eval()
    after_ref = torch.rand(1)
    torch.manual_seed(3)
    ours = ResNetTrunk(arch).eval()
    assert torch.equal(torch.rand(1), after_ref)  # the same random draws, so what follows is unchanged
    want = {k: v for k, v in ref.state_dict().items() if not k.startswith("fc.")}
    have = ours.state_dict()
    assert list(have) == list(want)
    assert all(torch.equal(have[k], want[k]) for k in want)
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        feats = ref.layer4(ref.layer3(ref.layer2(ref.layer1(ref.maxpool(ref.relu(ref.bn1(ref.conv1(x))))))))
        mine = ours.layer4(
            ours.layer3(ours.layer2(ours.layer1(ours.maxpool(ours.relu(ours.bn1(ours.conv1(x)))))))
        )
    assert torch.equal(feats, mine)


def _heavy_modules(code: str, *args) -> list[str]:
    import subprocess
    import sys

    code += "\nimport sys; print(*sorted(k for k in HEAVY if k in sys.modules))"
    code = "HEAVY = ('torch', 'torchvision', 'torch._dynamo', 'pandas', 'matplotlib')\n" + code
    out = subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return out.stdout.split()


def test_a_torch_job_imports_neither_torchvision_nor_dynamo(packed_dir):
    """What evaluate imports to read data, build a ResNet and take input gradients: torchvision alone cost
    ~2 CPU-s a job, pandas ~0.4. (Training still imports torch._dynamo: torch's optimizers import it.)"""
    code = (
        "import torch, mtlrobust.train, mtlrobust.evaluate, mtlrobust.attacks\n"
        "from mtlrobust.checkpoint import build_model\n"
        "from mtlrobust.data.packed import PackedDataset\n"
        "x, _, _ = PackedDataset(sys.argv[1], ['seg']).batch([0, 1])\n"
        "meta = {'arch': 'resnet18', 'tasks': ['seg'], 'normalization': None, 'decoder': 'reference'}\n"
        "build_model(meta)(x.requires_grad_())['seg'].sum().backward()"
    )
    assert _heavy_modules("import sys\n" + code, packed_dir / "train") == ["torch"]


def test_data_stages_do_not_import_torch():
    assert _heavy_modules("import mtlrobust.data.packed, mtlrobust.data.synthetic, mtlrobust.cli") == []
