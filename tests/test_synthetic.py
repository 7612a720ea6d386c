"""Synthetic Taskonomy: the real reader decodes it back to the generator's float ground truth."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mtlrobust import tasks as T
from mtlrobust.data import synthetic as syn
from mtlrobust.data import taskonomy as tx


def _gt(view: tx.View, names: list[str], prm: dict) -> dict:
    return syn.render_view(prm["seed"], names.index(view.building), view.point, view.view, prm["resolution"])


@pytest.fixture(scope="module")
def decoded(synthetic_raw, synthetic_params):
    """(view, decoded ViewData, generator ground truth) for every view of the fixture."""
    index = tx.scan(synthetic_raw, list(T.TASKS))
    names = syn.building_names(synthetic_params["buildings"])
    return [(v, index.read(v, list(T.TASKS)), _gt(v, names, synthetic_params)) for v in index.views]


def test_fixture_is_complete(decoded, synthetic_params):
    n = math.prod(synthetic_params[k] for k in ("buildings", "points", "views"))
    assert len(decoded) == n
    invalid = [1 - gt["valid"].mean() for _, _, gt in decoded]
    assert max(invalid) > 0.01, "no view shows invalid (window) pixels"
    assert min(invalid) < 0.9
    labels = np.unique(np.concatenate([gt["raw"]["segment_semantic"].ravel() for _, _, gt in decoded]))
    assert {0, 1} <= set(labels.tolist()) and labels.max() >= 2 and labels.max() <= 17


def test_depths_decode_to_metres(decoded):
    for _, vd, gt in decoded:
        valid = gt["valid"]
        for tid, key in (("depth_z", "depth_z"), ("depth_e", "depth_e")):
            raw = np.expm1(vd.targets[tid][0].astype(np.float64) * math.log(2.0**16))
            err = np.abs(raw / 512.0 - gt[key])[valid]
            assert err.max() <= 0.51 / 512, (tid, err.max())
            np.testing.assert_array_equal(vd.masks[tid], valid)


def test_normals_curvature_reshading_labels(decoded):
    for _, vd, gt in decoded:
        valid = gt["valid"]
        n = vd.targets["normal"]
        assert np.abs(n - gt["normal"])[:, valid].max() <= 1.0 / 255 + 1e-6
        curv = vd.targets["curv"] * T._CURV_STD + T._CURV_MEAN  # back to the 8-bit values
        for c, k in enumerate(("k1", "k2")):
            want = (np.clip(gt[k], -1 / 0.03, 1 / 0.03) * 0.03 + 1) / 2 * 254
            assert np.abs(curv[c] - want)[valid].max() <= 0.5 + 1e-3
        shade = (vd.targets["reshade"][0] + 1) / 2 * 255
        assert np.abs(shade - gt["shade"] * 255)[valid].max() <= 0.5 + 1e-3
        for tid in ("normal", "curv", "reshade", "kp3d", "edge3d"):
            np.testing.assert_array_equal(vd.masks[tid], valid)
        seg = vd.targets["seg"]
        labelled = seg > 0
        np.testing.assert_array_equal(seg[labelled], gt["labels"][labelled])
        np.testing.assert_array_equal(vd.masks["seg"], labelled)
        assert (labelled | ~valid | (gt["labels"] >= 2) | _next_to_object(gt["labels"])).all()
        assert labelled[valid].mean() > 0.8


def _next_to_object(labels):
    obj = np.pad(labels >= 2, 1)
    return obj[:-2, 1:-1] | obj[2:, 1:-1] | obj[1:-1, :-2] | obj[1:-1, 2:]


def test_filter_domains_round_trip(decoded):
    """Domains without a float ground truth come back bit-exact and decode as the registry says."""
    for _, vd, gt in decoded:
        for d in ("rgb", "edge_texture", "edge_occlusion", "keypoints2d", "keypoints3d"):
            assert vd.raw[d].dtype == gt["raw"][d].dtype
            np.testing.assert_array_equal(vd.raw[d], gt["raw"][d])
        assert (vd.raw["edge_occlusion"][~gt["valid"]] == 0).all()
        np.testing.assert_allclose(
            vd.targets["auto"], gt["raw"]["rgb"].transpose(2, 0, 1) / 255 * 2 - 1, atol=1e-6
        )


def test_keypoints3d_exercise_int16_wrap(decoded):
    high = [vd.raw["keypoints3d"] >= 32768 for _, vd, _ in decoded]
    assert sum(h.sum() for h in high) > 0
    for (_, vd, _), h in zip(decoded, high, strict=True):
        assert (vd.targets["kp3d"][0][h] > 0).all()  # 32768 / 65535 * 2 - 1 > 0: no wrap to negative


def test_euclidean_vs_zbuffer_and_invalid_sets(synthetic_raw, decoded):
    res = decoded[0][1].raw["rgb"].shape[0]
    for v, vd, gt in decoded:
        fov = tx.read_point_info(synthetic_raw, v)["field_of_view_rads"]
        f = (res / 2) / math.tan(fov / 2)
        u = np.arange(res) + 0.5 - res / 2
        ratio = np.sqrt(1 + (u[None, :] ** 2 + u[:, None] ** 2) / f**2)
        valid = gt["valid"]
        np.testing.assert_allclose(gt["depth_e"][valid], (gt["depth_z"] * ratio)[valid], rtol=1e-12)
        z, e = vd.raw["depth_zbuffer"].astype(float), vd.raw["depth_euclidean"].astype(float)
        assert np.abs(e - z * ratio)[valid].max() <= 0.5 + 0.5 * ratio.max() + 1e-9
        np.testing.assert_array_equal(z == 65535, e == 65535)
        np.testing.assert_array_equal(z == 65535, ~valid)
        assert (vd.raw["normal"][~valid] == 128).all() and (vd.raw["principal_curvature"][~valid] == 0).all()
        assert (vd.raw["principal_curvature"][..., 2] == 0).all()
        r = vd.raw["reshading"]
        assert (r[..., 0] == r[..., 1]).all() and (r[..., 1] == r[..., 2]).all()


def test_normals_match_depth_gradients(synthetic_raw, decoded):
    """Normals from back-projected (quantised) z-buffer agree with the normal domain on planar pixels."""
    res = decoded[0][1].raw["rgb"].shape[0]
    errs, facing, forward = [], [], []
    for v, vd, gt in decoded:
        fov = tx.read_point_info(synthetic_raw, v)["field_of_view_rads"]
        f = (res / 2) / math.tan(fov / 2)
        u = np.arange(res) + 0.5 - res / 2
        z = vd.raw["depth_zbuffer"].astype(float) / 512
        pts = np.stack([u[None, :] * z / f, u[:, None] * z / f, z])
        dx = pts[:, 1:-1, 2:] - pts[:, 1:-1, :-2]
        dy = pts[:, 2:, 1:-1] - pts[:, :-2, 1:-1]
        nd = np.cross(dx, dy, axis=0)
        nd /= np.linalg.norm(nd, axis=0, keepdims=True) + 1e-12
        n = vd.targets["normal"][:, 1:-1, 1:-1]
        n = n / np.linalg.norm(n, axis=0, keepdims=True)
        lab, valid = gt["raw"]["segment_semantic"], gt["valid"]
        ok = np.ones_like(valid[1:-1, 1:-1])
        for a in (np.s_[:-2], np.s_[1:-1], np.s_[2:]):
            for b in (np.s_[:-2], np.s_[1:-1], np.s_[2:]):
                ok &= valid[a, b] & (lab[a, b] == lab[1:-1, 1:-1]) & (lab[a, b] > 0)
                ok &= (gt["k1"][a, b] == 0) & (
                    gt["raw"]["normal"][a, b] == gt["raw"]["normal"][1:-1, 1:-1]
                ).all(-1)
        cos = np.clip((nd * n).sum(0)[ok], -1, 1)
        errs.append(np.degrees(np.arccos(np.abs(cos))))
        ray = np.stack(
            [
                np.broadcast_to(u[None, :] / f, z.shape),
                np.broadcast_to(u[:, None] / f, z.shape),
                np.ones_like(z),
            ]
        )
        facing.append(((n * ray[:, 1:-1, 1:-1]).sum(0) < 0)[ok])
        forward.append(n[2][ok] < 0)
    errs = np.concatenate(errs)
    assert len(errs) > 1000
    assert np.median(errs) < 3.0 and np.quantile(errs, 0.9) < 10.0
    assert np.concatenate(facing).mean() > 0.99  # normals face the camera (n . ray < 0)
    assert np.concatenate(forward).mean() > 0.8  # so mostly B < 128, as in Taskonomy


def test_same_seed_same_bytes(tmp_path):
    kw = {"buildings": 1, "points": 1, "views": 2, "resolution": 24, "progress": False}
    a = syn.synthesize(tmp_path / "a", seed=3, **kw)
    b = syn.synthesize(tmp_path / "b", seed=3, **kw)
    c = syn.synthesize(tmp_path / "c", seed=4, **kw)
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert len(files) == 2 * 12 + 1  # 11 domains + point_info per view, split CSV
    assert files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    for rel in files:
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel
    assert any((a / r).read_bytes() != (c / r).read_bytes() for r in files if r.suffix == ".png")


def test_split_csv_has_cr_endings_and_covers_every_split(tmp_path):
    for n in (1, 2, 3, 7):
        path = tmp_path / f"s{n}.csv"
        syn.write_split_csv(path, syn.split_assignment(syn.building_names(n)))
        data = path.read_bytes()
        assert b"\n" not in data and data.startswith(b"id,train,val,test\r")
        splits = tx.read_split_csv(path)
        assert all(splits[s] for s in tx.SPLITS)
        assert not set(syn.building_names(n)) & set(tx.FORBIDDEN_BUILDINGS)
    names = syn.building_names(800)
    assert len(set(names)) == 800 and all(b.isalpha() and b.islower() for b in names)


def test_synthesize_refuses_non_empty_output(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not empty"):
        syn.synthesize(tmp_path / "x", 1, 1, 1, 16, progress=False)
    assert (tmp_path / "x" / "keep.txt").read_text() == "mine"
    assert [p.name for p in tmp_path.iterdir()] == ["x"]  # no temp folder left behind


def test_cli_synthesize(tmp_path):
    from mtlrobust import cli

    out = tmp_path / "raw"
    argv = ["synthesize", "--out", str(out), "--buildings", "2", "--points", "1", "--views", "1"]
    assert cli.main([*argv, "--resolution", "16", "--seed", "1", "--layout", "building_domain"]) == 0
    assert (out / "alder" / "segment_semantic" / "point_0_view_0_domain_segmentsemantic.png").is_file()
    assert tx.read_split_csv(out / syn.SPLIT_CSV_NAME)["test"] == ["birch"]


def test_generator_writes_every_registry_domain():
    assert set(syn.DOMAINS) == {t.domain for t in T.TASKS} | {T.DEPTH_MASK_DOMAIN}


def test_semantic_classes_are_recognisable_by_appearance():
    """Segmentation is learnable only if a class looks the same everywhere: across many rooms, every object
    of a class has the class's shape, texture pattern and hue (brightness may vary)."""
    assert len(syn.CLASS_LOOKS) == T.SEG_CLASSES - 2
    hues = {tuple(np.round(np.asarray(a) / np.linalg.norm(a), 6)) for _, a, _, _ in syn.CLASS_LOOKS}
    assert len(hues) == len(syn.CLASS_LOOKS)
    seen = set()
    for building in range(3):
        for point in range(20):
            for o in syn._scene(0, building, point)["objects"]:
                kind, albedo, pattern, _ = syn.CLASS_LOOKS[o["label"] - 2]
                assert o["kind"] == kind and o["pattern"] == pattern
                np.testing.assert_allclose(o["albedo"] / np.linalg.norm(o["albedo"]),
                                           np.asarray(albedo) / np.linalg.norm(albedo))  # fmt: skip
                seen.add(o["label"])
    assert seen == set(range(2, T.SEG_CLASSES))
