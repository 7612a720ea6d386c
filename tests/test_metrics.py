"""Metric reductions against hand computations, and the registry-based per-sample metrics."""

import math

import numpy as np
import pytest
import torch

from mtlrobust import metrics as M
from mtlrobust import tasks as T


def test_relative_vulnerability_mean_of_ratios_by_hand():
    clean = [1.0, 2.0, 4.0]
    adv = [2.0, 3.0, 4.0]
    # ratios: 1, 0.5, 0 -> mean 0.5
    rv = M.relative_vulnerability(clean, adv)
    assert rv.value == pytest.approx(0.5)
    assert (rv.n, rv.n_skipped) == (3, 0)


def test_ratio_of_means_differs_from_mean_of_ratios():
    clean = [1.0, 3.0]
    adv = [3.0, 3.0]
    # mean of ratios: (2 + 0) / 2 = 1 ; ratio of means: (3 - 2) / 2 = 0.5
    assert M.relative_vulnerability(clean, adv).value == pytest.approx(1.0)
    assert M.relative_vulnerability_ratio_of_means(clean, adv).value == pytest.approx(0.5)


def test_zero_and_nan_clean_errors_are_skipped_and_counted():
    clean = [0.0, float("nan"), 2.0, 1.0]
    adv = [5.0, 1.0, 3.0, float("nan")]
    rv = M.relative_vulnerability(clean, adv)
    assert rv.value == pytest.approx(0.5)
    assert (rv.n, rv.n_skipped) == (1, 3)
    # ratio of means keeps the zero-error sample: (mean(5, 3) - mean(0, 2)) / mean(0, 2) = 3
    rr = M.relative_vulnerability_ratio_of_means(clean, adv)
    assert rr.value == pytest.approx(3.0)
    assert (rr.n, rr.n_skipped) == (2, 2)
    assert math.isnan(M.relative_vulnerability([0.0], [1.0]).value)


def test_adversarial_vulnerability_sums_attacked_tasks_only():
    clean = {"seg": [1.0, 1.0], "depth_z": [1.0, 2.0], "normal": [0.0, 0.0]}
    adv = {"seg": [2.0, 0.5], "depth_z": [1.5, 1.0], "normal": [100.0, 100.0]}
    # attacked seg+depth_z: |1 + 0.5| = 1.5, |-0.5 - 1| = 1.5 -> 1.5 (normal ignored)
    assert M.adversarial_vulnerability(clean, adv, ["seg", "depth_z"]) == pytest.approx(1.5)
    # the sum is taken before the absolute value: seg alone gives (1 + 0.5) / 2
    assert M.adversarial_vulnerability(clean, adv, ["seg"]) == pytest.approx(0.75)
    with pytest.raises(KeyError, match="edge3d"):
        M.adversarial_vulnerability(clean, adv, ["edge3d"])


def test_task_metrics_and_dataset_miou_match_the_registry():
    g = torch.Generator().manual_seed(0)
    out = {
        "seg": torch.randn(2, T.SEG_CLASSES, 4, 4, generator=g),
        "depth_z": torch.randn(2, 1, 4, 4, generator=g),
    }
    tgt = {"seg": torch.randint(0, 3, (2, 4, 4), generator=g), "depth_z": torch.zeros(2, 1, 4, 4)}
    msk = {"seg": torch.ones(2, 1, 4, 4), "depth_z": torch.ones(2, 1, 4, 4)}
    res = M.task_metrics(out, tgt, msk, ["seg", "depth_z"])
    loss, err = res["depth_z"]
    assert torch.allclose(loss, out["depth_z"].abs().mean((1, 2, 3)))
    assert torch.allclose(err, out["depth_z"].square().mean((1, 2, 3)))
    conf = M.seg_confusion_sum(out["seg"], tgt["seg"])
    pred, lab = out["seg"].argmax(1).numpy().ravel(), tgt["seg"].numpy().ravel()
    valid = lab > 0
    ious = []
    for c in range(T.SEG_CLASSES):
        p, l_ = (pred == c) & valid, (lab == c) & valid
        if (p | l_).any():
            ious.append((p & l_).sum() / (p | l_).sum())
    assert M.miou(conf) == pytest.approx(float(np.mean(ious)))
