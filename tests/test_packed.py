"""Packed splits: contract shapes/dtypes, values equal to per-view decoding, PackedDataset, CLI."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

from mtlrobust import cli
from mtlrobust import tasks as T
from mtlrobust.data import taskonomy as tx
from mtlrobust.data.packed import PackedDataset, prepare, resize_view

ALL = list(T.TASKS)


def test_packed_layout_shapes_and_dtypes(packed_dir):
    for split, building in zip(tx.SPLITS, ("alder", "birch", "cedar"), strict=True):
        d = packed_dir / split
        views = pd.read_csv(d / "views.csv")
        assert list(views.columns) == ["building", "point", "view"] and set(views.building) == {building}
        n = len(views)
        assert n == 6
        rgb = np.load(d / "rgb.npy", mmap_mode="r")
        assert rgb.dtype == np.uint8 and rgb.shape == (n, 3, 32, 32)
        for t in ALL:
            a = np.load(d / f"{t.id}.npy", mmap_mode="r")
            m = np.load(d / f"{t.id}.mask.npy", mmap_mode="r")
            want = (n, 32, 32) if t.is_segmentation else (n, t.channels, 32, 32)
            assert a.shape == want and a.dtype == (np.uint8 if t.is_segmentation else np.float32), t.id
            assert m.shape == (n, 32, 32) and m.dtype == np.uint8 and set(np.unique(m)) <= {0, 1}
        meta = json.loads((d / "meta.json").read_text())
        assert meta["resolution"] == 32 and meta["tasks"] == [t.id for t in ALL] and meta["n"] == n
        assert meta["split"] == split and meta["version"]["format"] == 1 and meta["source"]
        assert not list(packed_dir.glob(".*tmp*"))


def test_packed_values_equal_per_view_decoding(packed_dir, synthetic_raw):
    index = tx.scan(synthetic_raw, ALL)
    for split in tx.SPLITS:
        d = packed_dir / split
        views = pd.read_csv(d / "views.csv")
        arrays = {
            name: np.load(d / f"{name}.npy")
            for name in ["rgb"] + [f"{t.id}{m}" for t in ALL for m in ("", ".mask")]
        }
        for i, row in enumerate(views.itertuples(index=False)):
            x, targets, masks = resize_view(index.read(tx.View(*row), ALL), ALL, 32)
            np.testing.assert_array_equal(arrays["rgb"][i], x)
            for t in ALL:
                np.testing.assert_array_equal(arrays[t.id][i], targets[t.id])
                np.testing.assert_array_equal(arrays[t.id + ".mask"][i], masks[t.id])


def test_native_resolution_is_exact_decoding(synthetic_raw, tmp_path):
    (out,) = prepare(synthetic_raw, tmp_path / "p", "sdnpK", 64, ["val"], progress=False)
    ds = PackedDataset(out)
    index = tx.scan(synthetic_raw, T.parse("sdnpK"))
    x, targets, masks = ds.batch(np.arange(len(ds)))
    for i, view in enumerate(ds.views):
        vd = index.read(view, T.parse("sdnpK"))
        np.testing.assert_array_equal(x[i].numpy(), vd.raw["rgb"].transpose(2, 0, 1) / np.float32(255))
        for tid in ("seg", "depth_z", "normal", "curv", "kp3d"):
            np.testing.assert_array_equal(targets[tid][i].numpy(), vd.targets[tid])
            np.testing.assert_array_equal(masks[tid][i, 0].numpy(), vd.masks[tid])


def test_resize_keeps_invalid_pixels_out_of_valid_ones(packed_dir):
    limit = math.log1p(T.DEPTH_INVALID_FROM - 1) / math.log(2**16)
    for split in tx.SPLITS:
        depth = np.load(packed_dir / split / "depth_e.npy")[:, 0]
        mask = np.load(packed_dir / split / "depth_e.mask.npy").astype(bool)
        assert (depth[mask] <= limit).all() and (depth[mask] > 0.5).all()  # > 0.5: beyond ~0.25 m
        assert (depth[~mask] == 0).all()
        seg = np.load(packed_dir / split / "seg.npy")
        assert seg.max() <= 17
        np.testing.assert_array_equal(np.load(packed_dir / split / "seg.mask.npy"), seg > 0)


def test_packed_dataset_items_and_batches(packed_dir):
    ds = PackedDataset(packed_dir / "train", ["s", "depth_z", "n"])
    assert len(ds) == 6 and ds.resolution == 32 and ds.views[0]._fields == ("building", "point", "view")
    x, targets, masks = ds.batch([4, 1, 4])
    assert x.dtype == torch.float32 and x.shape == (3, 3, 32, 32) and 0 <= x.min() and x.max() <= 1
    assert targets["seg"].dtype == torch.int64 and targets["seg"].shape == (3, 32, 32)
    assert targets["normal"].shape == (3, 3, 32, 32) and masks["depth_z"].shape == (3, 1, 32, 32)
    assert set(targets) == {"seg", "depth_z", "normal"} and masks["seg"].dtype == torch.float32
    xi, ti, mi = ds[1]
    assert torch.equal(xi, x[1]) and torch.equal(ti["normal"], targets["normal"][1])
    assert torch.equal(mi["seg"], masks["seg"][1]) and torch.equal(x[0], x[2])
    with pytest.raises(FileNotFoundError, match="meta.json"):
        PackedDataset(packed_dir)


def test_prepare_cli_threshold_and_replace(synthetic_raw, tmp_path):
    args = ["prepare", "--raw", str(synthetic_raw), "--out", str(tmp_path / "p"), "--tasks", "seg+depth_z"]
    assert cli.main([*args, "--resolution", "16", "--threshold", "1"]) == 0
    train = PackedDataset(tmp_path / "p" / "train")
    test = PackedDataset(tmp_path / "p" / "test")
    assert {v.point for v in train.views} == {0} and {v.point for v in test.views} == {1} and len(train) == 9
    with pytest.raises(ValueError, match=r"tasks \[.normal.\] were not prepared"):
        PackedDataset(tmp_path / "p" / "train", ["n"])
    assert json.loads((tmp_path / "p" / "val" / "meta.json").read_text())["split_rule"] == "threshold:1"
    assert cli.main([*args, "--resolution", "8", "--split", "test"]) == 0  # default: RAW's split CSV
    assert PackedDataset(tmp_path / "p" / "test").resolution == 8
    assert {v.building for v in PackedDataset(tmp_path / "p" / "test").views} == {"cedar"}
    assert sorted(p.name for p in (tmp_path / "p").iterdir()) == ["test", "train", "val"]


def test_prepare_without_split_rule_is_a_clear_error(tmp_path, synthetic_raw):
    with pytest.raises(FileNotFoundError, match="--split-csv FILE or --threshold"):
        prepare(synthetic_raw / "rgb", tmp_path / "p", "s", 16, progress=False)
    with pytest.raises(ValueError, match="has no views"):
        prepare(synthetic_raw, tmp_path / "p", "s", 16, ["val"], threshold=5, progress=False)
