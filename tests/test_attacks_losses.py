"""Task-loss reductions (tasks.py, MultiTaskObjective): "valid" (mean over each sample's valid pixels, the
default) against "reference" (the original code's mean over all pixels, with seg class rebalancing), on
hand-computed 2 x 2 examples; and the per-pixel weights the dense attacks use."""

import math

import pytest
import torch

from mtlrobust import tasks as T
from mtlrobust.attacks import MultiTaskObjective


def depth_example():
    """2 samples, 1 channel, 2 x 2 pixels; |out - target| = 1, 2, 3, 4 (sample 0), all 2 (sample 1)."""
    target = torch.zeros(2, 1, 2, 2)
    out = torch.tensor([[1.0, 2.0], [3.0, 4.0]]).expand(2, 1, 2, 2).clone()
    out[1] = 2.0
    mask = torch.tensor([[[[1.0, 1.0], [0.0, 0.0]]], [[[1.0, 0.0], [0.0, 0.0]]]])
    return out, target, mask


def test_masked_l1_reductions_by_hand():
    out, target, mask = depth_example()
    # valid: sample 0 (1 + 2) / 2 valid pixels, sample 1 2 / 1; reference: the masked sums over 4 pixels
    assert T.masked_l1(out, target, mask).tolist() == [1.5, 2.0]
    assert T.masked_l1(out, target, mask, reduction="reference").tolist() == [0.75, 0.5]
    w = torch.tensor([[[2.0, 0.5], [9.0, 9.0]], [[0.0, 1.0], [1.0, 1.0]]])
    assert T.masked_l1(out, target, mask, pixel_weight=w).tolist() == [(2 + 1) / 2, 0.0]
    # channels count as elements in both reductions (normals: 3 per pixel)
    out3, t3 = out.expand(2, 3, 2, 2), target.expand(2, 3, 2, 2)
    assert T.masked_l1(out3, t3, mask, reduction="reference").tolist() == [0.75, 0.5]
    with pytest.raises(ValueError, match="reduction must be one of"):
        T.masked_l1(out, target, mask, reduction="mean")


def seg_example():
    """1 sample, 2 x 2 pixels, labels 0 (ignored), 1, 1, 2; logits give p = 1/2 on the label everywhere."""
    target = torch.tensor([[[0, 1], [1, 2]]])
    out = torch.full((1, 18, 2, 2), -1e4)
    for i, j in [(0, 0), (0, 1), (1, 0), (1, 1)]:
        lab = int(target[0, i, j])
        out[0, lab, i, j] = out[0, 3, i, j] = 0.0  # two equal logits: CE = log 2
    return out, target


def test_seg_cross_entropy_reductions_by_hand():
    out, target = seg_example()
    ln2 = math.log(2)
    assert T.seg_cross_entropy(out, target, None).item() == pytest.approx(ln2)  # 3 labelled pixels
    assert T.seg_cross_entropy(out, target, None, reduction="reference").item() == pytest.approx(3 * ln2 / 4)
    cw = torch.ones(18)
    cw[2] = 5.0  # rebalancing: class 2's pixel counts 5 times
    ref = T.seg_cross_entropy(out, target, None, reduction="reference", class_weights=cw).item()
    assert ref == pytest.approx((1 + 1 + 5) * ln2 / 4)
    valid = T.seg_cross_entropy(out, target, None, class_weights=cw).item()
    assert valid == pytest.approx((1 + 1 + 5) * ln2 / 3)
    pw = torch.tensor([[[7.0, 0.5], [0.5, 0.0]]])  # pixel (0, 0) is unlabelled: its weight is irrelevant
    assert T.seg_cross_entropy(out, target, None, pixel_weight=pw).item() == pytest.approx(ln2 / 3)
    with pytest.raises(ValueError, match=r"class_weights must have shape \[18\]"):
        T.seg_cross_entropy(out, target, None, class_weights=torch.ones(17))


def test_objective_reduction_changes_the_balance_of_tasks():
    """For one task the reductions differ by a per-sample factor; in a sum they change the task balance."""
    d_out, d_target, d_mask = depth_example()
    s_out, s_target = seg_example()
    s_out, s_target = s_out.expand(2, -1, -1, -1), s_target.expand(2, -1, -1)
    outs = {"seg": s_out, "depth_z": d_out}
    y = ({"seg": s_target, "depth_z": d_target}, {"depth_z": d_mask})
    ln2 = math.log(2)
    valid = MultiTaskObjective("sd")(outs, y)
    ref = MultiTaskObjective("sd", reduction="reference")(outs, y)
    assert valid.tolist() == pytest.approx([ln2 + 1.5, ln2 + 2.0])
    assert ref.tolist() == pytest.approx([3 * ln2 / 4 + 0.75, 3 * ln2 / 4 + 0.5])
    cw = torch.ones(18)
    cw[2] = 5.0
    rebalanced = MultiTaskObjective("sd", reduction="reference", seg_class_weights=cw)(outs, y)
    assert rebalanced.tolist() == pytest.approx([7 * ln2 / 4 + 0.75, 7 * ln2 / 4 + 0.5])
    assert "reduction='reference'" in repr(MultiTaskObjective("s", reduction="reference"))
    with pytest.raises(ValueError, match="objective reduction must be one of"):
        MultiTaskObjective("s", reduction="sum")
