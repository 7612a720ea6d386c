"""Shared session fixtures: a tiny synthetic Taskonomy (raw layout) and its packed splits."""

from __future__ import annotations

import os

import pytest

from mtlrobust import tasks as T
from mtlrobust.data.packed import prepare
from mtlrobust.data.synthetic import synthesize

# 3 buildings (train / val / test one each) x 2 points x 3 views, all 11 domains, 64 px.
SYNTH = {"buildings": 3, "points": 2, "views": 3, "resolution": 64, "seed": 0}
PACKED_RESOLUTION = 32

# Tests call stages in-process (cli.main) to capture their output: never hand them to a warm-start worker.
os.environ.pop("MTLROBUST_WARM", None)


def pytest_collection_modifyitems(config, items):
    """MTLROBUST_NO_SLURM=1 skips the `slurm` tests, which install slurm-wlm with apt-get when run as root."""
    if os.environ.get("MTLROBUST_NO_SLURM", "") in ("", "0"):
        return
    skip = pytest.mark.skip(reason="MTLROBUST_NO_SLURM is set: no SLURM install, no test cluster")
    for item in items:
        if item.get_closest_marker("slurm"):
            item.add_marker(skip)


@pytest.fixture
def one_thread():
    """torch on one CPU thread for a test (byte-repeatable results, no oversubscription), restored after."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def synthetic_params():
    """The synthesize() arguments of ``synthetic_raw`` (buildings, points, views, resolution, seed)."""
    return dict(SYNTH)


@pytest.fixture(scope="session")
def synthetic_raw(tmp_path_factory):
    """Raw Taskonomy layout (omnitools) with train_val_test_split.csv at its root. Read-only."""
    return synthesize(tmp_path_factory.mktemp("synthetic") / "raw", **SYNTH, progress=False)


@pytest.fixture(scope="session")
def packed_dir(synthetic_raw, tmp_path_factory):
    """Packed root with train/ val/ test/ (6 views each) at 32 px for all 11 tasks. Read-only."""
    out = tmp_path_factory.mktemp("packed") / "packed"
    prepare(synthetic_raw, out, [t.id for t in T.TASKS], PACKED_RESOLUTION, progress=False)
    return out


@pytest.fixture(scope="session")
def fake_root(tmp_path_factory):
    """Small packed splits (seg + depth_z, 32 px) for CLI tests; test_train keeps larger ones of its own."""
    from test_train import write_fake_split

    root = tmp_path_factory.mktemp("fake")
    write_fake_split(root / "train", ["seg", "depth_z"], n=6, seed=0)
    write_fake_split(root / "val", ["seg", "depth_z"], n=2, seed=1)
    return root
