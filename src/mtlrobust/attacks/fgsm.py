"""FGSM, the fast gradient sign method: ``fgsm`` (its docstring has the details)."""

from __future__ import annotations

import torch

from . import _common as C


def fgsm(model, loss, x, y, *, eps, norm="linf", trace=None) -> torch.Tensor:
    """FGSM: the fast gradient sign method, one step of size eps.

    Goodfellow et al., "Explaining and Harnessing Adversarial Examples", ICLR 2015,
    https://arxiv.org/abs/1412.6572

    Distance: L-inf (``x + eps * sign(g)``, torchattacks ``FGSM`` arithmetic) or L2 (the fast gradient
    method, ``x + eps * g / (||g||_2 + 1e-10)``), clipped to [0, 1]. Deterministic: no random start,
    steps or generator. To first order the loss rises by eps * ||g||_1 (L-inf) or eps * ||g||_2 (L2).

    Arguments:
        model: callable, x -> tensor or dict of task outputs; run in eval mode, mode restored after.
        loss: (outputs, y) -> per-sample loss [B] to increase.
        x: [B, ...] inputs in [0, 1] (not modified); y: anything ``loss`` understands.
        eps (required): step and ball radius in input units. eps = 0 returns x.
        norm: "linf" | "l2". (Default: "linf")
        trace: None or a list; gets one entry, the per-sample loss [B] at x_adv (one extra forward).

    Returns x_adv, same shape/dtype/device as x.

    Example::
        >>> x_adv = fgsm(model, MultiTaskObjective("seg"), x, (targets, masks), eps=8 / 255)
    """
    eps, norm, _ = C.check_args(eps, norm)
    x = C.begin(x, eps, norm, trace)
    if eps == 0:
        return C.unmoved(trace, 1, model, loss, x, y)
    with C.eval_mode(model):
        _, grad, _ = C.loss_and_grad(model, loss, x, y)
        x_adv = torch.clamp(x + eps * C.normalized_step(grad, norm), min=0, max=1)
        if trace is not None:
            trace.append(C.loss_at(model, loss, x_adv, y))
    return x_adv
