"""Theory quantities on a linear model whose input gradients have a closed form."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from mtlrobust.analysis import theory as TH

H = W = 4
TASKS = ["depth_z", "depth_e", "edge2d"]
WEIGHTS = {"depth_z": [1.0, -2.0, 0.5], "depth_e": [0.5, 1.0, 3.0], "edge2d": [-1.0, 0.25, 0.0]}
SIGN = {"depth_z": 1.0, "depth_e": 1.0, "edge2d": -1.0}  # sign of the residual out - target everywhere


class Linear(nn.Module):
    """out_t = w_t . x per pixel (a 1x1 convolution without bias)."""

    def __init__(self):
        super().__init__()
        self.w = {t: torch.tensor(v, dtype=torch.float32).view(1, 3, 1, 1) for t, v in WEIGHTS.items()}

    def forward(self, x):
        return {t: (x * w).sum(1, keepdim=True) for t, w in self.w.items()}


class Data:
    def __init__(self, n=5):
        g = torch.Generator().manual_seed(0)
        self.x = torch.rand(n, 3, H, W, generator=g)

    def __len__(self):
        return len(self.x)

    def batch(self, idx):
        x = self.x[idx]
        b = len(idx)
        # targets far from the outputs so the L1 residual has a known sign at every pixel
        targets = {t: torch.full((b, 1, H, W), -100.0 * SIGN[t]) for t in TASKS}
        masks = {t: torch.ones(b, 1, H, W) for t in TASKS}
        return x, targets, masks


def closed_form_grad(t):
    """d/dx mean_p |w.x_p - y_p| = sign * w / (H W) at every pixel, as a flat [3 H W] vector."""
    w = np.asarray(WEIGHTS[t]) * SIGN[t] / (H * W)
    return np.repeat(w, H * W)


def test_input_gradients_match_closed_form():
    x, targets, masks = Data().batch([0, 1])
    g = TH.input_gradients(Linear(), x, targets, masks, TASKS)
    for t in TASKS:
        assert np.allclose(g[t].numpy(), np.tile(closed_form_grad(t), (2, 1)), atol=1e-7)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_statistics_theorem2_and_first_order_match_closed_form(norm):
    eps = 8 / 255
    orders = [["depth_z", "depth_e", "edge2d"], ["edge2d", "depth_z", "depth_e"]]
    stats, rows = TH.compute(Linear(), Data(5), TASKS, orders, norm, eps, batch_size=2)
    assert stats.n == 5
    q = 1 if norm == "linf" else 2
    r = {t: closed_form_grad(t) for t in TASKS}
    for t in TASKS:
        assert stats.mean_norm(t) == pytest.approx(np.linalg.norm(r[t], q))
    cov = {(a, b): np.cov(r[a], r[b])[0, 1] for a in TASKS for b in TASKS}
    for a in TASKS:
        for b in TASKS:
            assert stats.mean_cov(a, b) == pytest.approx(cov[(a, b)])
            if a != b:
                wa, wb = np.asarray(WEIGHTS[a]) * SIGN[a], np.asarray(WEIGHTS[b]) * SIGN[b]
                assert stats.mean_cos(a, b) == pytest.approx(
                    wa @ wb / np.linalg.norm(wa) / np.linalg.norm(wb)
                )
    # eq. (4) for the three tasks by hand: i > j pairs (1,0), (2,0), (2,1), each over Cov(r_i, r_i)
    a, b, c = TASKS
    s = cov[(b, a)] / cov[(b, b)] + cov[(c, a)] / cov[(c, c)] + cov[(c, b)] / cov[(c, c)]
    th2 = {(x["order"], x["step"]): x["value"] for x in rows if x["quantity"] == "theorem2"}
    assert th2[("", "")] == pytest.approx(math.sqrt((1 + 2 / 3 * s) / 3))
    assert th2[("dDe", 1)] == pytest.approx(1.0)  # one task: sqrt(1 / 1)

    def by(quantity, weighting, col="value"):
        return {
            (x["order"], x["step"]): x[col]
            for x in rows
            if x["quantity"] == quantity and x["weighting"] == weighting
        }

    fo, fo_mean = by("first_order_vuln", "sum"), by("first_order_vuln", "mean")
    assert fo[("edD", 2)] == pytest.approx(eps * np.linalg.norm(r["edge2d"] + r["depth_z"], q))
    assert fo[("dDe", 3)] == pytest.approx(eps * np.linalg.norm(r[a] + r[b] + r[c], q))
    # 1/N weighting (Theorems 2 and 4): the same joint gradient scaled by 1/N
    assert fo_mean[("dDe", 3)] == pytest.approx(fo[("dDe", 3)] / 3)
    assert fo_mean[("dDe", 1)] == pytest.approx(fo[("dDe", 1)])
    marg, marg_mean = by("first_order_marginal", "sum"), by("first_order_marginal", "mean")
    assert marg[("dDe", 2)] == pytest.approx(fo[("dDe", 2)] - fo[("dDe", 1)])
    assert marg_mean[("dDe", 3)] == pytest.approx(fo[("dDe", 3)] / 3 - fo[("dDe", 2)] / 2)
    n = {t: np.linalg.norm(r[t], q) for t in TASKS}
    bound, bound_mean = (
        by("first_order_marginal", "sum", "bound"),
        by("first_order_marginal", "mean", "bound"),
    )
    # adding D (step 3) after e, d: N = 2; the bound sits next to the marginal it bounds
    assert bound_mean[("edD", 3)] == pytest.approx(eps * (n[b] + max(n[c], n[a])))
    assert bound[("edD", 3)] == pytest.approx(eps * (3 * n[b] + 2 * max(n[c], n[a])))
    # the first-order marginal never exceeds its bound (triangle inequality), under either weighting
    for m, bd in ((marg, bound), (marg_mean, bound_mean)):
        assert set(m) == set(bd) and len(m) == 4
        for k, v in m.items():
            assert v <= bd[k] + 1e-12


def test_theorem2_uncorrelated_equal_variance_tasks():
    cov = {("a", "a"): 2.0, ("b", "b"): 2.0, ("a", "b"): 0.0, ("b", "a"): 0.0}
    assert TH.theorem2(lambda i, j: cov[(i, j)], ["a", "b"]) == pytest.approx(math.sqrt(0.5))
    cov[("b", "a")] = 2.0  # perfectly correlated: no gain from the second task
    assert TH.theorem2(lambda i, j: cov[(i, j)], ["a", "b"]) == pytest.approx(1.0)


def test_parse_orders_checks_model_tasks():
    assert TH.parse_orders(None, TASKS) == [TASKS]
    assert TH.parse_orders(["eDd"], TASKS) == [["edge2d", "depth_e", "depth_z"]]
    with pytest.raises(ValueError, match="seg"):
        TH.parse_orders(["sd"], TASKS)
