"""WGD: the multi-task Weighted Gradient attack, PGD whose task gradients are weighted per step.

Ghamizi et al., "Adversarial Robustness in Multi-Task Learning: Promises and Illusions", AAAI 2022,
https://arxiv.org/abs/2110.15053 (RQ3, Definition 5; the paper's Appendix D and code do not contain it,
this is a reconstruction).

Per sample and attacked task i at step t: Lt_i = L_i(t) / L_i(0) (L_i(0) at the start point),
r_i = Lt_i / mean_j Lt_j (the relative inverse task attack rate), weight w_i = r_i ** gamma. The step
direction is g = sum_i w_i * g_i with g_i = grad L_i, each first divided by its per-sample L2 norm if
``normalize_task_gradients``; then a PGD step (sign for L-inf, L2-normalised for L2), projection onto the
eps-ball and clipping to [0, 1].

Defaults and why. The paper's aim is that the attack "affects all targeted tasks, including those that
have a smaller contribution to the joint loss". Normalising the task gradients removes the scale
difference (a segmentation CE gradient can dwarf a depth L1 gradient); gamma = -1 then gives more weight
to the tasks whose loss rose least so far (small Lt_i), as GradNorm gives more to tasks lagging in
training. The literal "weighted by r_i" is gamma = +1, which favours the task already ahead;
gamma = 0 with normalisation is equal-norm PGD; gamma = 0 without normalisation is plain PGD on
sum_i L_i. Task losses must be >= 0 (they are ratios); a loss that is 0 at the start and stays 0
(e.g. a sample without valid pixels) gets Lt_i = 1.

Arguments:
    model: callable, x -> dict of task outputs (or tensor); run in eval mode, mode restored after.
    task_losses: {task: (outputs, y) -> per-sample loss [B]}, e.g. ``MultiTaskObjective.task_losses()``.
    x: [B, ...] inputs in [0, 1] (not modified); y: anything the losses understand.
    eps (required): ball radius in input units. eps = 0 returns x.
    norm: "linf" | "l2". (Default: "linf")
    steps: number of steps. (Default: 25)
    step_size: None -> eps / 4. (Default: None)
    random_start: as in ``pgd``. (Default: True)
    gamma: exponent of r_i in the weights. (Default: -1.0)
    normalize_task_gradients: divide each g_i by its per-sample L2 norm first. (Default: True)
    generator: torch.Generator, int seed or None; used only for a random start.

Returns x_adv (the last iterate), same shape/dtype/device as x.

Example::
    >>> obj = MultiTaskObjective("seg+depth_z")
    >>> x_adv = wgd(model, obj.task_losses(), x, (targets, masks), eps=8 / 255, generator=0)
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from . import _common as C


def wgd(
    model,
    task_losses: Mapping,
    x,
    y,
    *,
    eps,
    norm="linf",
    steps=25,
    step_size=None,
    random_start=True,
    gamma=-1.0,
    normalize_task_gradients=True,
    generator=None,
) -> torch.Tensor:
    eps, norm, step_size = C.check_args(
        eps, norm, steps=steps, step_size=step_size, random_start=random_start
    )
    if not C.is_real(gamma):
        raise ValueError(f"gamma must be a finite number, got {gamma!r}")
    if not isinstance(task_losses, Mapping) or not task_losses:
        raise ValueError(
            f"task_losses must be a non-empty mapping task -> per-sample loss, got {task_losses!r}"
        )
    x = x.detach()
    if eps == 0:
        return x.clone()
    alpha = eps / 4 if step_size is None else step_size
    kind = C.start_kind(random_start, norm)
    x_adv = C.random_start(x, eps, norm, kind, C.make_generator(generator, x.device)) if kind else x.clone()
    loss0, fns = None, list(task_losses.values())
    with C.eval_mode(model):
        for _ in range(steps):
            x_req = x_adv.detach().requires_grad_(True)
            out = model(x_req)
            values = [C.per_sample(fn(out, y), x.shape[0]) for fn in fns]  # one forward, T losses [B]
            losses = torch.stack([v.detach() for v in values]).clamp_min(0)  # [T, B]
            loss0 = losses if loss0 is None else loss0
            rate = (losses + 1e-12) / (loss0 + 1e-12)
            w = (rate / rate.mean(0, keepdim=True)) ** gamma
            if normalize_task_gradients:
                grad = torch.zeros_like(x)
                for j, v in enumerate(values):
                    g = C.grad_of(v, x_req, retain_graph=j < len(values) - 1)
                    grad = grad + C.bview(w[j], x) * g / C.bview(C.l2_norm(g) + 1e-12, x)
            else:
                grad = C.grad_of((w * torch.stack(values)).sum(0), x_req)
            x_adv = C.ascend(x_adv, C.normalized_step(grad, norm), alpha, x, eps, norm)
    return x_adv
