"""Our SegPGD and CosPGD against the reference functions of the ``cospgd`` package (0.1.3, MIT) on the same
segmentation model and inputs: the package gives the init, step and loss-scaling functions, the loop
below is the one its README describes.

Shared start: the package draws the L-inf start from the *global* CPU RNG (``FloatTensor.uniform_``), we
draw the same call from a local generator, so ``torch.manual_seed(s)`` and ``generator=s`` match.
"Correct" pixel: the package takes the argmax over all channels; ours (the metric's) over the real classes
1..17, so the package gets the logits with channel 0 (label "uncertain") masked out for its argmax.
Loss reduction: the package's losses are means over all pixels of the batch, ours per-sample means over
labelled pixels: a positive factor per sample, which leaves L-inf sign steps identical and L2 steps
equal up to rounding.
"""

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from mtlrobust import tasks as T
from mtlrobust.attacks import MultiTaskObjective, cospgd, segpgd
from mtlrobust.attacks.cospgd import _weight as cos_weight

cp = pytest.importorskip("cospgd")
REF = cp.functions

B, SIZE, STEPS = 4, 16, 6


class TinySeg(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 18, 3, padding=1))

    def forward(self, x):
        return {"seg": self.body(x * 2 - 1)}


@pytest.fixture(scope="module")
def seg():
    torch.manual_seed(0)
    net = TinySeg().eval()
    g = torch.Generator().manual_seed(1)
    x = torch.rand(B, 3, SIZE, SIZE, generator=g)
    with torch.no_grad():
        label = net(x)["seg"][:, 1:].argmax(1) + 1  # the clean prediction: every labelled pixel correct
    keep = torch.rand(B, SIZE, SIZE, generator=g) > 0.5  # half of them relabelled at random: wrong pixels
    label = torch.where(keep, label, torch.randint(0, 18, label.shape, generator=g))  # 0 = unlabelled
    return net, x, label


def reference(net, x, label, eps, alpha, norm, scale, seed):
    """The package's attack loop: init, then per step the scaled pixel loss, its gradient and a step."""
    torch.manual_seed(seed)
    x_adv = REF.init_linf(x, eps) if norm == "linf" else x.clone()
    for t in range(STEPS):
        x_adv = x_adv.detach().requires_grad_(True)
        out = net(x_adv)["seg"]
        ce = F.cross_entropy(out, label, reduction="none", ignore_index=0)
        loss = scale(out, ce, t)
        (grad,) = torch.autograd.grad(loss, x_adv)
        step = REF.step_inf if norm == "linf" else REF.step_l2
        x_adv = step(x_adv, eps, grad, x, alpha, targeted=False)
    return x_adv


def segpgd_scale(out, ce, t, label):
    real = out.detach().clone()
    real[:, 0] = -float("inf")
    return REF.segpgd_scale(real, label, ce, t, STEPS)


def cospgd_scale(out, ce, t, label):
    return REF.cospgd_scale(out, label, ce, num_classes=18, one_hot=True).mean()


@pytest.mark.parametrize("name", ["segpgd", "cospgd"])
@pytest.mark.parametrize("norm, eps", [("linf", 8 / 255), ("l2", 0.5)])
def test_matches_the_cospgd_package(seg, name, norm, eps):
    net, x, label = seg
    scale = {"segpgd": segpgd_scale, "cospgd": cospgd_scale}[name]
    ref = reference(net, x, label, eps, eps / 4, norm, lambda o, c, t: scale(o, c, t, label), seed=3)
    fn = {"segpgd": segpgd, "cospgd": cospgd}[name]
    y = ({"seg": label}, {})
    ours = fn(net, MultiTaskObjective("seg"), x, y, eps=eps, norm=norm, steps=STEPS, step_size=eps / 4,
              random_start=norm == "linf", generator=3)  # fmt: skip
    if norm == "linf":
        assert torch.equal(ours, ref)
    else:  # their g / max(||g||, 1e-12) against our g / (||g|| + 1e-10), and the reduction's rounding
        assert (ours - ref).abs().max().item() <= 1e-6
    assert not torch.equal(ours, x)


def test_cospgd_weights_equal_the_package_scale():
    g = torch.Generator().manual_seed(0)
    for task, shape in (("seg", (2, 18, 5, 5)), ("normal", (2, 3, 5, 5)), ("depth_z", (2, 1, 5, 5))):
        out = torch.randn(shape, generator=g)
        if task == "seg":
            target = torch.randint(0, 18, (2, 5, 5), generator=g)
            ref = REF.cospgd_scale(out, target, torch.ones(2, 5, 5), num_classes=18, one_hot=True)
        else:
            target = torch.randn(shape, generator=g)
            ref = REF.cospgd_scale(out, target, torch.ones(2, 5, 5), one_hot=False)
        ours = cos_weight(T.get(task), out, target, None)
        assert torch.allclose(ours, ref, atol=1e-6), task
        if task == "depth_z":  # one channel: both softmaxes are 1, the weight is the constant 1
            assert torch.equal(ours, torch.ones_like(ours))
