"""The Taskonomy reader: layouts, view intersection, strict PNG decoding, bad files, splits, buildings."""

from __future__ import annotations

import logging
import shutil

import numpy as np
import pytest
from PIL import Image

from mtlrobust import tasks as T
from mtlrobust.data import synthetic as syn
from mtlrobust.data import taskonomy as tx
from mtlrobust.data.packed import PackedDataset, prepare

ALL = list(T.TASKS)


@pytest.fixture
def raw_copy(synthetic_raw, tmp_path):
    """A writable copy of the synthetic dataset (tests below damage it)."""
    return shutil.copytree(synthetic_raw, tmp_path / "raw")


def _png16(path, arr):
    Image.fromarray(np.asarray(arr, dtype=np.uint16)).save(path)


def test_three_layouts_read_the_same_views(tmp_path):
    kw = {"buildings": 2, "points": 1, "views": 2, "resolution": 16, "seed": 5, "progress": False}
    roots = {lay: syn.synthesize(tmp_path / lay, layout=lay, **kw) for lay in syn.LAYOUTS}
    assert (roots["domain_building"] / "rgb" / "alder" / "point_0_view_1_domain_rgb.png").is_file()
    indexes = {lay: tx.scan(r, ALL) for lay, r in roots.items()}
    views = indexes["omnitools"].views
    assert len(views) == 4 and all(ix.views == views for ix in indexes.values())
    for v in views:
        ref = indexes["omnitools"].read(v, ALL)
        for ix in indexes.values():
            got = ix.read(v, ALL)
            for d in ref.raw:
                np.testing.assert_array_equal(got.raw[d], ref.raw[d])


def test_view_missing_in_one_domain_is_dropped_and_reported(raw_copy, caplog):
    gone = raw_copy / "normal" / "taskonomy" / "alder" / "point_1_view_2_domain_normal.png"
    gone.unlink()
    with caplog.at_level(logging.WARNING, logger="mtlrobust.data.taskonomy"):
        index = tx.scan(raw_copy, ALL)
    view = tx.View("alder", 1, 2)
    assert view not in index.views and len(index.views) == 17
    assert index.missing == [(view, ["normal"])]
    assert (
        "1 of 18 views are missing in some domain" in caplog.text and "alder/1/2 lacks normal" in caplog.text
    )
    assert view in tx.scan(raw_copy, T.parse("sd")).views  # tasks that do not need normals keep it


def test_truncated_png_error_names_the_file(raw_copy):
    path = raw_copy / "depth_zbuffer" / "taskonomy" / "birch" / "point_0_view_1_domain_depth_zbuffer.png"
    path.write_bytes(path.read_bytes()[:-40])
    index = tx.scan(raw_copy, ALL)
    with pytest.raises(tx.TaskonomyFileError, match="truncated or corrupt") as err:
        index.read(tx.View("birch", 0, 1), ALL)
    assert err.value.path == path and str(path) in str(err.value)


def test_corrupt_crc_png_is_an_error(raw_copy):
    path = raw_copy / "rgb" / "taskonomy" / "alder" / "point_0_view_0_domain_rgb.png"
    data = bytearray(path.read_bytes())
    i = data.index(b"IDAT") + 20
    data[i] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(tx.TaskonomyFileError, match=str(path)):
        tx.read_png(path, "rgb8")


def test_skip_bad_lists_the_view_and_keeps_the_others(raw_copy, tmp_path):
    path = raw_copy / "segment_semantic" / "taskonomy" / "alder" / "point_1_view_0_domain_segmentsemantic.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(tx.TaskonomyFileError, match="segmentsemantic"):
        prepare(raw_copy, tmp_path / "p", "seg+depth_z", 16, ["train"], progress=False)
    assert not (tmp_path / "p" / "train").exists()  # nothing half-written left behind
    assert [p.name for p in (tmp_path / "p").iterdir()] == []
    (out,) = prepare(raw_copy, tmp_path / "p", "seg+depth_z", 16, ["train"], skip_bad=True, progress=False)
    ds = PackedDataset(out)
    assert len(ds) == 5 and ("alder", 1, 0) not in set(ds.views)
    bad = (out / "bad_views.csv").read_text().splitlines()
    assert bad[0] == "building,point,view,path,reason" and len(bad) == 2
    assert bad[1].startswith(f"alder,1,0,{path},")
    assert tx.read_split_csv(raw_copy / syn.SPLIT_CSV_NAME)["train"] == ["alder"]


def test_wrong_png_mode_names_found_and_expected(tmp_path):
    path = tmp_path / "point_0_view_0_domain_depth_zbuffer.png"
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(path)
    with pytest.raises(tx.TaskonomyFileError, match=r"mode 'L' found, expected I;16") as err:
        tx.read_png(path, "gray16")
    assert str(path) in str(err.value)
    with pytest.raises(tx.TaskonomyFileError, match="file not found"):
        tx.read_png(tmp_path / "nope.png", "rgb8")


def test_16bit_png_decodes_without_int16_wrap(tmp_path):
    path = tmp_path / "x.png"
    values = np.array([[0, 1, 32767, 32768], [40000, 64499, 64500, 65535]])
    _png16(path, values)
    with Image.open(path) as img:
        assert img.mode == "I;16"
    raw = tx.read_png(path, "gray16")
    assert raw.dtype == np.uint16
    np.testing.assert_array_equal(raw, values)
    target, mask = T.get("d").decode(raw)
    assert (target[0, 1] > target[0, 0, 3]).all()  # large raw -> large log-depth, never negative
    np.testing.assert_array_equal(mask, values < 64500)


def test_image_sizes_must_agree(raw_copy):
    path = raw_copy / "depth_euclidean" / "taskonomy" / "alder" / "point_0_view_0_domain_depth_euclidean.png"
    _png16(path, np.zeros((8, 8)))
    with pytest.raises(tx.TaskonomyFileError, match="differs from"):
        tx.scan(raw_copy, ALL).read(tx.View("alder", 0, 0), ALL)


def test_building_listed_but_absent(raw_copy, tmp_path, caplog):
    csv = tmp_path / "split.csv"
    csv.write_bytes(
        b"id,train,val,test\ralder,1,0,0\rghost,1,0,0\rwoodbine,1,0,0\rbirch,0,1,0\rcedar,0,0,1\r"
    )
    with pytest.raises(tx.MissingBuildingsError, match="ghost") as err:
        prepare(raw_copy, tmp_path / "p", "s", 16, ["train"], split_csv=csv, progress=False)
    assert "woodbine" not in str(err.value)  # forbidden: excluded, not "missing"
    with caplog.at_level(logging.WARNING):
        (out,) = prepare(
            raw_copy, tmp_path / "p", "s", 16, ["train"], split_csv=csv, allow_missing=True, progress=False
        )
    assert "ghost" in caplog.text and "woodbine" in caplog.text
    assert {v.building for v in PackedDataset(out).views} == {"alder"}
    meta = PackedDataset(out).meta
    assert meta["absent_buildings"] == ["ghost"] and meta["excluded_forbidden"] == ["woodbine"]


def test_forbidden_buildings_on_disk_are_excluded(raw_copy):
    shutil.copytree(raw_copy / "rgb" / "taskonomy" / "alder", raw_copy / "rgb" / "taskonomy" / "woodbine")
    assert "woodbine" in tx.buildings_on_disk(raw_copy)
    assert {v.building for v in tx.scan(raw_copy, ["rgb"]).views} == {"alder", "birch", "cedar"}
    assert set(tx.FORBIDDEN_BUILDINGS) == {
        "mosquito",
        "tansboro",
        "tomkins",
        "darnestown",
        "brinnon",
        "rough",
        "woodbine",
    }


@pytest.mark.parametrize("eol", [b"\r", b"\n", b"\r\n"])
def test_split_csv_line_endings(tmp_path, eol):
    path = tmp_path / "s.csv"
    path.write_bytes(
        eol.join([b"id,train,val,test", b"hanson,1,0,0", b"allensville,1,1,1", b"ihlen,0,0,1", b""])
    )
    assert tx.read_split_csv(path) == {
        "train": ["hanson", "allensville"],
        "val": ["allensville"],
        "test": ["allensville", "ihlen"],
    }


def test_split_csv_errors_name_file_and_line(tmp_path):
    path = tmp_path / "s.csv"
    path.write_bytes(b"id,train,val\rx,1,0\r")
    with pytest.raises(ValueError, match="expected header 'id,train,val,test'"):
        tx.read_split_csv(path)
    path.write_bytes(b"id,train,val,test\rx,1,0,0\ry,1,yes,0\r")
    with pytest.raises(ValueError, match=r"s\.csv, line 3"):
        tx.read_split_csv(path)


def test_point_threshold_split():
    views = [tx.View("b", p, 0) for p in (0, 1199, 1200, 3000)]
    assert tx.select_views(views, "train", threshold=1200) == views[:2]
    assert tx.select_views(views, "val", threshold=1200) == views[2:]
    assert tx.select_views(views, "test", threshold=1200) == views[2:]  # held-out set = val = test
    with pytest.raises(ValueError, match="exactly one"):
        tx.select_views(views, "train")


def test_read_view_decodes_with_depth_validity(synthetic_raw):
    index = tx.scan(synthetic_raw, T.parse("nE"))
    assert index.domains == ["rgb", "normal", "edge_occlusion", "depth_euclidean"]
    vd = index.read(index.views[0], T.parse("nE"))
    np.testing.assert_array_equal(vd.valid, vd.raw["depth_euclidean"] < T.DEPTH_INVALID_FROM)
    np.testing.assert_array_equal(vd.masks["normal"], vd.valid)
    assert vd.targets["normal"].shape == (3, 64, 64) and vd.targets["edge3d"].dtype == np.float32


def test_reader_and_generator_start_without_torch():
    import subprocess
    import sys

    code = "import sys, mtlrobust.data.taskonomy, mtlrobust.data.synthetic; print('torch' in sys.modules)"
    assert (
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
        == "False\n"
    )
