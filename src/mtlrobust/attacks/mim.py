"""MIM (MI-FGSM), the momentum iterative attack: ``mim`` (its docstring has the details)."""

from __future__ import annotations

import torch

from . import _common as C


def check(*, decay) -> None:
    """Checks of mim's own option."""
    if not C.is_real(decay) or decay < 0:
        raise ValueError(f"decay must be a finite number >= 0, got {decay!r}")


def mim(
    model,
    loss,
    x,
    y,
    *,
    eps,
    norm="linf",
    steps=10,
    step_size=None,
    decay=1.0,
    random_start=False,
    generator=None,
    trace=None,
) -> torch.Tensor:
    """MIM (MI-FGSM): iterative gradient attack with momentum on L1-normalised gradients.

    Dong et al., "Boosting Adversarial Attacks with Momentum", CVPR 2018, https://arxiv.org/abs/1710.06081

    Distance: L-inf or L2. Each step: ``g = grad / (mean|grad| + 1e-12)`` per sample (the paper's
    ||grad||_1 up to a constant), ``m = g + decay * m``, ``x += step_size * sign(m)`` (L2:
    ``m / (||m||_2 + 1e-10)``), then projection onto the eps-ball and clipping to [0, 1]. This is
    torchattacks ``MIFGSM`` except for the 1e-12, which keeps a zero gradient from making NaN momentum.

    Arguments:
        model: callable, x -> tensor or dict of task outputs; run in eval mode, mode restored after.
        loss: (outputs, y) -> per-sample loss [B] to increase.
        x: [B, ...] inputs in [0, 1] (not modified); y: anything ``loss`` understands.
        eps (required): ball radius in input units. eps = 0 returns x.
        norm: "linf" | "l2". (Default: "linf")
        steps: number of steps. (Default: 10, as torchattacks)
        step_size: None -> eps / 4 (2/255 at eps = 8/255, torchattacks' alpha). (Default: None)
        decay: momentum factor mu. (Default: 1.0)
        random_start: False (start at x, as the paper and torchattacks) or a kind as in ``pgd``.
            (Default: False)
        generator: torch.Generator, int seed or None; used only for a random start.
        trace: None or a list to which the per-sample loss [B] after each step is appended (as in ``pgd``).

    Returns x_adv (the last iterate), same shape/dtype/device as x.

    Example::
        >>> x_adv = mim(model, MultiTaskObjective("seg"), x, (targets, masks), eps=8 / 255, decay=1.0)
    """
    eps, norm, step_size = C.check_args(
        eps, norm, steps=steps, step_size=step_size, random_start=random_start
    )
    check(decay=decay)
    x = C.begin(x, eps, norm, trace)
    if eps == 0:
        return C.unmoved(trace, steps, model, loss, x, y)
    alpha = eps / 4 if step_size is None else step_size
    x_adv = C.Start(eps, norm, random_start, generator, x.device).draw(x)
    momentum, after = torch.zeros_like(x), []
    with C.eval_mode(model):
        for i in range(steps):
            value, grad, _ = C.loss_and_grad(model, loss, x_adv, y)
            if i:
                after.append(value)
            grad = grad / C.bview(grad.abs().flatten(1).mean(1) + 1e-12, grad)
            momentum = grad + momentum * decay
            x_adv = C.ascend(x_adv, C.normalized_step(momentum, norm), alpha, x, eps, norm)
        if trace is not None:
            C.extend_trace(trace, [[*after, C.loss_at(model, loss, x_adv, y)]])
    return x_adv
