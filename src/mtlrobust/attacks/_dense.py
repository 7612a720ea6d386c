"""The loop shared by the dense-prediction attacks (SegPGD, CosPGD): PGD on a loss whose pixels are
re-weighted at every step by detached weights computed from the current prediction.

``loss`` must accept ``pixel_weight=`` (``MultiTaskObjective`` does): a function
(task, out, target, mask) -> [B, H, W] weights of that task's pixels, or None to leave a task unweighted.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from . import _common as C
from .objective import PixelWeight


def weighted_pgd(
    model,
    loss,
    x,
    y,
    weight_at: Callable[[int, int], PixelWeight],
    *,
    eps,
    norm,
    steps,
    step_size,
    random_start,
    generator,
    trace,
) -> torch.Tensor:
    """PGD (``pgd``'s start, step and projection arithmetic) whose step t in 0..steps-1 ascends
    ``loss(out, y, pixel_weight=weight_at(t, steps))``; the trace records the unweighted ``loss(out, y)``."""
    eps, norm, step_size = C.check_args(
        eps, norm, steps=steps, step_size=step_size, random_start=random_start
    )
    x = C.begin(x, eps, norm, trace)
    if eps == 0:
        return C.unmoved(trace, steps, model, loss, x, y)
    alpha = eps / 4 if step_size is None else step_size
    x_adv = C.Start(eps, norm, random_start, generator, x.device).draw(x)
    after = []
    with C.eval_mode(model):
        for t in range(steps):
            x_req = x_adv.detach().requires_grad_(True)
            out = model(x_req)
            value = C.per_sample(loss(out, y, pixel_weight=weight_at(t, steps)), x.shape[0])
            if t and trace is not None:  # the unweighted loss after step t - 1, from this forward
                with torch.no_grad():
                    after.append(C.per_sample(loss(C.detach(out), y), x.shape[0]))
            grad = C.grad_of(value, x_req)
            x_adv = C.ascend(x_adv, C.normalized_step(grad, norm), alpha, x, eps, norm)
        if trace is not None:
            C.extend_trace(trace, [[*after, C.loss_at(model, loss, x_adv, y)]])
    return x_adv
