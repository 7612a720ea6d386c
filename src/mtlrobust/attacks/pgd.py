"""PGD, projected gradient ascent on any per-sample loss: ``pgd`` (its docstring has the details)."""

from __future__ import annotations

import torch

from . import _common as C


def check(*, restarts, random_start, return_best) -> None:
    """Checks of pgd's own options (the shared ones are ``_common.check_args``'s)."""
    if restarts > 1 and not random_start:
        raise ValueError("restarts > 1 needs a random_start: every restart would be the same run")
    C.check_bool("return_best", return_best)


def pgd(
    model,
    loss,
    x,
    y,
    *,
    eps,
    norm="linf",
    steps=25,
    step_size=None,
    random_start=True,
    restarts=1,
    return_best=False,
    generator=None,
    trace=None,
) -> torch.Tensor:
    """PGD: projected gradient descent (ascent on the loss) with random start and restarts.

    Madry et al., "Towards Deep Learning Models Resistant to Adversarial Attacks", ICLR 2018,
    https://arxiv.org/abs/1706.06083

    Distance: L-inf (``x += step_size * sign(g)``) or L2 (``x += step_size * g / (||g||_2 + 1e-10)``),
    then per-sample projection onto the eps-ball and clipping to [0, 1]. The arithmetic is torchattacks'
    ``PGD`` / ``PGDL2`` (3.5.1), so with the same start the output is bit-identical to theirs.

    Arguments:
        model: callable, x -> tensor or dict of task outputs; run in eval mode, mode restored after.
        loss: (outputs, y) -> per-sample loss [B] to increase (e.g. a ``MultiTaskObjective``).
        x: [B, ...] inputs in [0, 1] (not modified); y: anything ``loss`` understands.
        eps (required): ball radius in input units (8/255 in the paper, not 8): in [0, 1] for L-inf, at most
            sqrt(x[0].numel()) for L2; eps = 0 returns x.
        norm: "linf" | "l2". (Default: "linf")
        steps: number of steps. (Default: 25, the paper's)
        step_size: > 0 (at most 1 for L-inf); None -> eps / 4 (2/255 at eps = 8/255, the paper's).
            (Default: None)
        random_start: True/"uniform" (uniform over the ball: cube for L-inf, volume for L2), "radius"
            (torchattacks PGDL2's uniform radius), "sphere" (auto-attack's), False (start at x).
            (Default: True)
        restarts: independent random starts; per sample the result with the highest loss is kept. (Default: 1)
        return_best: return each sample's highest-loss iterate (start included, strict ``>``) instead of the
            last one; costs one extra forward. (Default: False)
        generator: torch.Generator, int seed or None (fresh OS seed); the global RNG is never used.
        trace: None or a list to which the per-sample attacked loss [B] after each step is appended
            (``steps`` entries; with restarts, the maximum over them). It reuses each step's forward, plus one
            at the end. Without ``return_best`` the last entry is the loss at x_adv, and entry t is the loss
            the same attack with t + 1 steps would reach. (Default: None)

    Returns x_adv, same shape/dtype/device as x. Raises ValueError naming the argument and its expected
    range for a value out of range (eps = 8 instead of 8/255, inputs outside [0, 1], steps < 1, ...).

    Example::
        >>> obj = MultiTaskObjective("seg+depth_z")
        >>> x_adv = pgd(model, obj, x, (targets, masks), eps=8 / 255, steps=25, generator=0)
    """
    eps, norm, step_size = C.check_args(
        eps, norm, steps=steps, step_size=step_size, restarts=restarts, random_start=random_start
    )
    check(restarts=restarts, random_start=random_start, return_best=return_best)
    x = C.begin(x, eps, norm, trace)
    if eps == 0:
        return C.unmoved(trace, steps, model, loss, x, y)
    alpha = eps / 4 if step_size is None else step_size
    start = C.Start(eps, norm, random_start, generator, x.device)
    best, runs = (None, None), []  # best (x, loss) per sample over restarts; losses after each step
    with C.eval_mode(model):
        for _ in range(restarts):
            x_adv = start.draw(x)
            run, after = (None, None), []  # best iterate of this run; its loss after each step
            for i in range(steps):
                value, grad, _ = C.loss_and_grad(model, loss, x_adv, y)
                if i:
                    after.append(value)  # the loss after step i - 1, from this step's forward
                if return_best:
                    run = C.keep_better(*run, x_adv, value)
                x_adv = C.ascend(x_adv, C.normalized_step(grad, norm), alpha, x, eps, norm)
            if not return_best and restarts == 1 and trace is None:
                return x_adv
            final = C.loss_at(model, loss, x_adv, y)
            runs.append([*after, final])
            run = C.keep_better(*run, x_adv, final)
            best = C.keep_better(*best, *run)
    C.extend_trace(trace, runs)
    return best[0]
