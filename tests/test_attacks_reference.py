"""Our attacks against torchattacks 3.5.1 on a small CNN classifier with cross-entropy.

Sharing the random start: torchattacks draws from the *global* CPU RNG (PGD: ``empty_like.uniform_``,
PGDL2: ``normal_`` then ``uniform_``, APGD: ``torch.rand``/``randn`` after reseeding it with its
``seed``); we draw the same calls from a local CPU ``torch.Generator``. Both are the same Mersenne
Twister, so ``torch.manual_seed(s)`` before torchattacks and ``generator=s`` for us give the same start.

Loss scale: torchattacks' PGD/FGSM/MIFGSM use the batch-mean CE, we differentiate the sum of a per-sample
loss; giving ours ``CE / B`` makes the gradients bit-identical (sign steps would match for any scale).
"""

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from mtlrobust.attacks import apgd, checkpoints, fgsm, mim, pgd

torchattacks = pytest.importorskip("torchattacks")

B = 32


class TinyCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1, stride=2),
            nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1, stride=2),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(32 * 4 * 4, 10),
        )

    def forward(self, x):
        return self.body(x * 2 - 1)


@pytest.fixture(scope="module")
def clf():
    torch.manual_seed(0)
    net = TinyCNN().eval()
    x = torch.rand(B, 3, 16, 16)
    with torch.no_grad():
        y = net(x).argmax(1)  # labels = clean predictions: every point starts correctly classified
    return net, x, y


def ce_mean_scale(out, y):
    return F.cross_entropy(out, y, reduction="none") / out.shape[0]


def ce(out, y):
    return F.cross_entropy(out, y, reduction="none")


def fooled(out, y):
    return out.argmax(1) != y


@pytest.mark.parametrize(
    "norm, eps, cls, start", [("linf", 8 / 255, "PGD", True), ("l2", 0.5, "PGDL2", "radius")]
)
def test_pgd_bit_identical_to_torchattacks(clf, norm, eps, cls, start):
    net, x, y = clf
    torch.manual_seed(5)
    ref = getattr(torchattacks, cls)(net, eps=eps, alpha=eps / 4, steps=10)(x, y)
    ours = pgd(
        net,
        ce_mean_scale,
        x,
        y,
        eps=eps,
        norm=norm,
        steps=10,
        step_size=eps / 4,
        random_start=start,
        generator=5,
    )
    assert torch.equal(ours, ref)


def test_fgsm_and_mim_bit_identical_to_torchattacks(clf):
    net, x, y = clf
    assert torch.equal(fgsm(net, ce_mean_scale, x, y, eps=8 / 255), torchattacks.FGSM(net, eps=8 / 255)(x, y))
    ref = torchattacks.MIFGSM(net, eps=8 / 255, alpha=2 / 255, steps=10, decay=1.0)(x, y)
    # our mean|g| + 1e-12 differs from theirs only when the gradient vanishes
    assert torch.equal(mim(net, ce_mean_scale, x, y, eps=8 / 255, steps=10, step_size=2 / 255), ref)


# eps fooling almost every point and eps fooling only some (where "returned clean" matters)
@pytest.mark.parametrize(
    "norm, eps, partial",
    [("Linf", 8 / 255, False), ("Linf", 1 / 255, True), ("L2", 0.5, False), ("L2", 0.1, True)],
)
@pytest.mark.parametrize("restarts", [1, 2])
def test_apgd_matches_torchattacks_default_mode(clf, norm, eps, partial, restarts):
    net, x, y = clf
    ref = torchattacks.APGD(net, norm=norm, eps=eps, steps=25, n_restarts=restarts, seed=3)(x, y)
    state = torch.get_rng_state()
    ours = apgd(
        net, ce, x, y, eps=eps, norm=norm.lower(), steps=25, restarts=restarts, success_fn=fooled, generator=3
    )
    assert torch.equal(torch.get_rng_state(), state)  # torchattacks reseeds the global RNG, we do not
    assert (ours - ref).abs().max().item() <= 1e-6
    robust = (net(ours).argmax(1) == y).float().mean().item()
    assert (robust > 0.5) == partial  # many points unfooled: they come back as clean x in both


@pytest.mark.parametrize("norm, eps", [("Linf", 1 / 255), ("L2", 0.1)])
def test_apgd_loss_mode_matches_torchattacks_best_loss(clf, norm, eps):
    net, x, y = clf
    atk = torchattacks.APGD(net, norm=norm, eps=eps, steps=25, n_restarts=2)
    torch.manual_seed(7)  # the best_loss path does not reseed: it uses the global RNG as is
    loss_ref, ref = atk.perturb(x, y, best_loss=True)
    ours = apgd(net, ce, x, y, eps=eps, norm=norm.lower(), steps=25, restarts=2, generator=7)
    assert (ours - ref).abs().max().item() <= 1e-6
    assert torch.allclose(ce(net(ours), y), loss_ref, atol=1e-6)


def test_apgd_checkpoint_schedules():
    assert checkpoints(100) == [22, 41, 57, 70, 80, 87, 93, 99]
    assert checkpoints(25) == [5, 9, 12, 14, *range(15, 26)]
    assert checkpoints(10) == list(range(2, 11))
    assert checkpoints(25, "paper") == [6, 11, 15, 18, 20, 22, 24, 25]
    assert checkpoints(100, "paper") == [22, 41, 57, 70, 80, 87, 93, 99]
    with pytest.raises(ValueError, match="schedule"):
        checkpoints(10, "cosine")
