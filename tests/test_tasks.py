"""The task registry: decoding on known raw values, masks, losses/errors by hand, weights, ids."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mtlrobust import tasks as T

LOG16 = math.log(2.0**16)


def test_registry_ids_letters_and_domains():
    assert T.letters(T.TASKS) == "sdDnkKeEprA"
    ids = [t.id for t in T.TASKS]
    assert len({i.lower() for i in ids}) == len(ids) == 11  # path-safe on case-insensitive file systems
    assert all(i.replace("_", "").isalnum() and i.islower() for i in ids)
    assert len({t.letter for t in T.TASKS}) == 11
    assert T.get("seg") is T.get("s") and T.get("depth_e").letter == "D" and T.get("d").id == "depth_z"
    assert T.get("s").tag == "segmentsemantic" and T.get("n").tag == "normal"
    assert [t.id for t in T.parse("sdD")] == [t.id for t in T.parse("seg+depth_z+depth_e")]
    assert [t.letter for t in T.canonical(["E", "s", "n"])] == ["s", "n", "E"]
    with pytest.raises(KeyError, match="unknown task 'x'"):
        T.get("x")
    with pytest.raises(ValueError, match="repeats"):
        T.parse("ss")


def test_domains_needed():
    assert T.domains_needed(T.parse("s")) == ["rgb", "segment_semantic"]
    assert T.domains_needed(T.parse("D")) == ["rgb", "depth_euclidean"]
    assert T.domains_needed(T.parse("nA")) == ["rgb", "normal", "depth_euclidean"]


def _dec(letter, raw, valid=None):
    return T.get(letter).decode(np.asarray(raw), valid)


def test_decode_segmentation():
    target, mask = _dec("s", np.array([[0, 1], [17, 5]], np.uint8))
    assert target.dtype == np.int64
    np.testing.assert_array_equal(target, [[0, 1], [17, 5]])
    np.testing.assert_array_equal(mask, [[False, True], [True, True]])


def test_decode_depth_and_int16_wrap_regression():
    raw = np.array([[0, 511, 32767, 32768], [40000, 64499, 64500, 65535]], np.uint16)
    for letter in "dD":
        target, mask = _dec(letter, raw)
        np.testing.assert_allclose(target[0], np.log1p(raw.astype(np.float64)) / LOG16, rtol=1e-6)
        assert target[0, 1, 3] == pytest.approx(1.0, abs=1e-6) and (target >= 0).all()
        np.testing.assert_array_equal(mask, raw < 64500)  # 65535 (the hole code) is invalid, 40000 valid
    np.testing.assert_array_equal(T.depth_valid(raw), raw < 64500)
    wrapped = raw.astype(np.int16)  # what int16 decoding of an I;16 PNG gives: 65535 -> -1
    with pytest.raises(ValueError, match="expected a gray16 array"):
        _dec("d", wrapped)
    with pytest.raises(ValueError, match="expected a gray16 array"):
        _dec("d", wrapped.astype(np.int32))  # negative values are refused too
    kp3d, _ = _dec("K", raw, np.ones(raw.shape, bool))
    assert kp3d[0, 0, 3] > 0 and kp3d[0, 1, 3] == pytest.approx(1.0)  # >= 32768 stays in the upper half


def test_decode_gray16_scalings():
    raw = np.array([[0, 100, 327, 2000, 65535]], np.uint16)
    k, km = _dec("k", raw)
    np.testing.assert_allclose(k[0], np.clip(raw / 65535, 0, 0.005) / 0.005 * 2 - 1, rtol=1e-6)
    assert k[0, 0, 0] == -1 and k[0, 0, 4] == 1 and km.all()
    e, _ = _dec("e", raw)
    assert e[0, 0, 3] == pytest.approx(2000 / 65535 / 0.08 * 2 - 1, abs=1e-5) and e[0, 0, 4] == 1
    valid = np.array([[True, True, False, True, True]])
    K, Km = _dec("K", raw, valid)
    assert K[0, 0, 0] == -1 and K[0, 0, 4] == 1
    np.testing.assert_array_equal(Km, valid)


def test_decode_occlusion_edges_blurred_over_valid_pixels():
    """E = raw/65535/0.00625*2-1 (no clip), Gaussian-blurred with sigma = side/64 (4 px at 256) over valid
    pixels only: the zeros stored where depth is invalid must not leak into valid pixels."""
    raw = np.full((64, 64), 300, np.uint16)
    valid = np.ones((64, 64), bool)
    valid[:, :20] = False
    raw[~valid] = 0
    E, Em = _dec("E", raw, valid)
    np.testing.assert_array_equal(Em, valid)
    np.testing.assert_allclose(E[0][valid], 300 / 65535 / 0.00625 * 2 - 1, rtol=1e-5)
    spike = np.zeros((64, 64), np.uint16)
    spike[32, 32] = 60000
    S, _ = _dec("E", spike, np.ones((64, 64), bool))
    peak = 60000 / 65535 / 0.00625 * 2  # above the -1 floor, before the blur
    assert S[0, 32, 32] + 1 == pytest.approx(peak / (2 * np.pi), rel=0.02)  # sigma 1: peak / (2 pi)
    assert (S[0] + 1).sum() == pytest.approx(peak, rel=1e-3)  # mass kept
    assert S[0, 32, 32] > 1  # no clip


def test_decode_rgb8_tasks():
    px = np.array([[[0, 128, 255], [200, 100, 0]]], np.uint8)  # 1 x 2 x 3
    valid = np.array([[True, False]])
    n, nm = _dec("n", px, valid)
    assert n.shape == (3, 1, 2)
    np.testing.assert_allclose(n[:, 0, 0], [-1, 128 / 255 * 2 - 1, 1], atol=1e-6)
    np.testing.assert_array_equal(nm, valid)
    p, _ = _dec("p", px, valid)
    assert p.shape == (2, 1, 2)
    np.testing.assert_allclose(p[:, 0, 1], [(200 - 123.572) / 31.922, (100 - 120.1) / 21.658], rtol=1e-5)
    r, _ = _dec("r", np.array([[[51, 51, 51]]], np.uint8), np.ones((1, 1), bool))
    assert r.shape == (1, 1, 1) and r[0, 0, 0] == pytest.approx(51 / 255 * 2 - 1)
    a, am = _dec("A", px)
    np.testing.assert_allclose(a[:, 0, 1], [200 / 255 * 2 - 1, 100 / 255 * 2 - 1, -1], atol=1e-6)
    assert am.all()
    with pytest.raises(ValueError, match="needs the depth validity"):
        _dec("n", px)
    with pytest.raises(ValueError, match="expected a rgb8 array"):
        _dec("n", px[..., 0], valid)


def test_masked_l1_and_mse_by_hand():
    out = torch.zeros(2, 2, 1, 2)
    target = torch.tensor([[[[1.0, 3.0]], [[2.0, 5.0]]], [[[1.0, 1.0]], [[1.0, 1.0]]]])
    mask = torch.tensor([[[[1.0, 0.0]]], [[[0.0, 0.0]]]])
    l1 = T.get("n").loss(out, target, mask)  # sample 0: (|1| + |2|) / 2 valid elements
    assert l1.shape == (2,) and l1[0].item() == pytest.approx(1.5) and l1[1].item() == 0.0
    mse = T.get("n").error(out, target, mask)
    assert mse[0].item() == pytest.approx((1 + 4) / 2) and math.isnan(mse[1].item())


def test_segmentation_loss_error_and_miou():
    target = torch.tensor([[[1, 1, 2, 0]]])  # [B=1, H=1, W=4]; label 0 is ignored
    perfect = torch.nn.functional.one_hot(torch.tensor([[[1, 1, 2, 5]]]), 18).permute(0, 3, 1, 2).float() * 50
    seg = T.get("s")
    assert seg.loss(perfect, target, None).item() == pytest.approx(0.0, abs=1e-6)
    assert seg.error(perfect, target, None).item() == pytest.approx(0.0)
    assert T.miou_from_confusion(T.seg_confusion(perfect, target)).item() == pytest.approx(1.0)
    pred = torch.nn.functional.one_hot(torch.tensor([[[1, 2, 2, 2]]]), 18).permute(0, 3, 1, 2).float()
    # class 1: inter 1, union 2; class 2: inter 1, union 2 (the label-0 pixel is not counted) -> mIoU 0.5
    assert seg.error(pred, target, None).item() == pytest.approx(0.5)
    uniform = torch.zeros(1, 18, 1, 4)
    assert seg.loss(uniform, target, None).item() == pytest.approx(math.log(18), rel=1e-6)
    assert math.isnan(seg.error(pred, torch.zeros_like(target), None).item())  # no labelled pixel


def test_task_weights_paper_rows():
    """Supplementary Appendix B: main task 1, auxiliary weights depend on the main task."""
    w = T.task_weights(T.parse("sdDnE"), "paper", main="s")
    assert w == {"seg": 1.0, "depth_z": 0.01, "depth_e": 0.1, "normal": 0.1, "edge3d": 0.1}
    assert T.task_weights(T.parse("dn"), "paper", main="d") == {"depth_z": 1.0, "normal": 0.01}
    assert T.task_weights(T.parse("dE"), "paper", main="d") == {"depth_z": 1.0, "edge3d": 0.1}
    assert T.task_weights(T.parse("nd"), "paper", main="n") == {"normal": 1.0, "depth_z": 0.01}
    assert T.task_weights(T.parse("ns"), "paper", main="n") == {"normal": 1.0, "seg": 0.1}
    assert T.task_weights(T.parse("Ds"), "paper", main="D") == {"depth_e": 1.0, "seg": 0.1}
    assert T.task_weights(T.parse("Dn"), "paper", main="D") == {"depth_e": 1.0, "normal": 0.01}
    assert T.task_weights(T.parse("Esd"), "paper", main="E") == {"edge3d": 1.0, "seg": 0.1, "depth_z": 0.1}
    assert T.task_weights(T.parse("sd"), "uniform") == {"seg": 0.5, "depth_z": 0.5}
    # the supplementary's unweighted models (Fig. 12): every task 1, whatever the main task
    assert T.task_weights(T.parse("sdn"), "sum", main="n") == {"seg": 1.0, "depth_z": 1.0, "normal": 1.0}
    with pytest.raises(ValueError, match="needs a main task"):
        T.task_weights(T.parse("sd"), "paper")
    with pytest.raises(ValueError, match="not among the tasks"):
        T.task_weights(T.parse("sd"), "paper", main="n")
    with pytest.raises(ValueError, match="only for main tasks"):
        T.task_weights(T.parse("ks"), "paper", main="k")
    assert T.task_weights(T.parse("sd"), "mine", explicit={"s": 2, "depth_z": 0.5}) == {
        "seg": 2.0,
        "depth_z": 0.5,
    }
    with pytest.raises(ValueError, match="missing weights"):
        T.task_weights(T.parse("sd"), "mine", explicit={"s": 1})
    with pytest.raises(ValueError, match="finite and >= 0"):
        T.task_weights(T.parse("sd"), "mine", explicit={"s": 1, "d": -1})


def test_hflip_negation_only_for_normals():
    assert {t.id: t.hflip_negate for t in T.TASKS if t.hflip_negate} == {"normal": (0,)}
