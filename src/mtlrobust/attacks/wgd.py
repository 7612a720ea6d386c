"""WGD, the AAAI 2022 paper's multi-task Weighted Gradient attack: ``wgd`` (its docstring has the details)."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from . import _common as C

VARIANTS = {"balanced": (-1.0, True), "paper": (1.0, False)}  # (gamma, normalize_task_gradients)
DEFAULT_VARIANT = "balanced"


def check(*, variant, gamma, normalize_task_gradients) -> tuple[float, bool]:
    """Checks of wgd's own options; returns the (gamma, normalize_task_gradients) to use."""
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {sorted(VARIANTS)}, got {variant!r}")
    if gamma is not None and not C.is_real(gamma):
        raise ValueError(f"gamma must be a finite number, got {gamma!r}")
    if normalize_task_gradients is not None:
        C.check_bool("normalize_task_gradients", normalize_task_gradients)
    preset = VARIANTS[variant]
    if variant == "paper":
        for name, value, fixed in (
            ("gamma", gamma, 1),
            ("normalize_task_gradients", normalize_task_gradients, False),
        ):
            if value is not None and value != fixed:
                raise ValueError(
                    f"variant 'paper' fixes {name}={fixed}, got {value!r} (leave it out, or set it with "
                    "variant 'balanced')"
                )
    return (
        float(preset[0] if gamma is None else gamma),
        preset[1] if normalize_task_gradients is None else normalize_task_gradients,
    )


def variant_of(spec: Mapping) -> str:
    """The WGD variant an attack spec runs, with its overrides."""
    variant = spec.get("variant") or DEFAULT_VARIANT
    extra = [f"{k} {spec[k]}" for k in ("gamma", "normalize_task_gradients") if spec.get(k) is not None]
    return f"{variant} ({', '.join(extra)})" if extra else variant


def caption(named: list[tuple[str, Mapping]]) -> str:
    """The sentence a table's note adds for its WGD attacks ((name, spec) pairs): their variants, and why
    a single-task cell repeats PGD."""
    variants = ", ".join(f"{name} = {variant_of(spec)}" for name, spec in named)
    return (
        f"WGD variants: {variants} (balanced: each task's gradient normalised and weighted by 1 / r_i, our "
        "default; paper: the paper's literal rule, weighted by r_i, no normalisation). With one attacked "
        "task r_i = 1 and WGD equals PGD, so its single-task diagonal repeats PGD under another name."
    )


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
    variant=DEFAULT_VARIANT,
    gamma=None,
    normalize_task_gradients=None,
    generator=None,
    trace=None,
) -> torch.Tensor:
    """WGD: the multi-task Weighted Gradient attack, PGD whose task gradients are weighted per step.

    Ghamizi et al., "Adversarial Robustness in Multi-Task Learning: Promises and Illusions", AAAI 2022,
    https://arxiv.org/abs/2110.15053 (RQ3, Definition 5; the paper's Appendix D and code do not contain the
    algorithm, so only its sentence "the gradient of each task is weighted by the relative inverse task attack
    rate" is given).

    Per sample and attacked task i at step t: Lt_i = L_i(t) / L_i(0) (L_i(0) at the start point),
    r_i = Lt_i / mean_j Lt_j (the relative inverse task attack rate), weight w_i = r_i ** gamma. The step
    direction is g = sum_i w_i * g_i with g_i = grad L_i, each first divided by its per-sample L2 norm if
    ``normalize_task_gradients``; then a PGD step (sign for L-inf, L2-normalised for L2), projection onto the
    eps-ball and clipping to [0, 1].

    Variants. ``variant="paper"`` is the paper's rule as written: gamma = +1, no normalisation, so
    g = sum_i r_i g_i, which favours the task whose loss has already risen most. ``variant="balanced"`` (the
    default) is our reading of the paper's aim, an attack that "affects all targeted tasks, including those
    that have a smaller contribution to the joint loss": normalised task gradients remove the scale difference
    (a segmentation CE gradient can dwarf a depth L1 gradient), and gamma = -1 gives more weight to the tasks
    whose loss rose least so far, as GradNorm does for tasks lagging in training. ``gamma`` and
    ``normalize_task_gradients`` override the balanced preset (gamma = 0 without normalisation is plain PGD on
    sum_i L_i); the paper variant fixes both. Task losses must be >= 0 (they are ratios); a loss that is 0 at
    the start and stays 0 (a sample without valid pixels) gets Lt_i = 1.

    With one attacked task r_1 = 1, so WGD equals PGD with the same settings and generator (bit-identical for
    the paper variant in both norms and for the balanced one in L-inf, where normalising does not change the
    sign); Table 2's single-task rows therefore repeat PGD under another name.

    Arguments:
        model: callable, x -> dict of task outputs (or tensor); run in eval mode, mode restored after.
        task_losses: {task: (outputs, y) -> per-sample loss [B]}, e.g. ``MultiTaskObjective.task_losses()``.
        x: [B, ...] inputs in [0, 1] (not modified); y: anything the losses understand.
        eps (required): ball radius in input units. eps = 0 returns x.
        norm: "linf" | "l2". (Default: "linf")
        steps: number of steps. (Default: 25)
        step_size: None -> eps / 4. (Default: None)
        random_start: as in ``pgd``. (Default: True)
        variant: "balanced" or "paper", as above. (Default: "balanced")
        gamma: exponent of r_i in the weights; None -> the variant's (-1 balanced, +1 paper). (Default: None)
        normalize_task_gradients: divide each g_i by its per-sample L2 norm first; None -> the variant's
            (true balanced, false paper). (Default: None)
        generator: torch.Generator, int seed or None; used only for a random start.
        trace: None or a list to which the per-sample attacked loss sum_i L_i [B] after each step is appended
            (``steps`` entries; one extra forward at the end). (Default: None)

    Returns x_adv (the last iterate), same shape/dtype/device as x.

    Example::
        >>> obj = MultiTaskObjective("seg+depth_z")
        >>> x_adv = wgd(model, obj.task_losses(), x, (targets, masks), eps=8 / 255, variant="paper",
        ...             generator=0)
    """
    eps, norm, step_size = C.check_args(
        eps, norm, steps=steps, step_size=step_size, random_start=random_start
    )
    gamma, normalize = check(variant=variant, gamma=gamma, normalize_task_gradients=normalize_task_gradients)
    x = C.begin(x, eps, norm, trace)
    if not isinstance(task_losses, Mapping) or not task_losses:
        raise ValueError(
            f"task_losses must be a non-empty mapping task -> per-sample loss, got {task_losses!r}"
        )
    fns = list(task_losses.values())

    def total(out, y):
        return sum(C.per_sample(fn(out, y), x.shape[0]) for fn in fns)

    if eps == 0:
        return C.unmoved(trace, steps, model, total, x, y)
    alpha = eps / 4 if step_size is None else step_size
    x_adv = C.Start(eps, norm, random_start, generator, x.device).draw(x)
    loss0, after = None, []
    with C.eval_mode(model):
        for i in range(steps):
            x_req = x_adv.detach().requires_grad_(True)
            out = model(x_req)
            values = [C.per_sample(fn(out, y), x.shape[0]) for fn in fns]  # one forward, T losses [B]
            losses = torch.stack([v.detach() for v in values])  # [T, B]
            if i:
                after.append(sum(losses.unbind(0)))  # in task order, as the objective
            losses = losses.clamp_min(0)
            loss0 = losses if loss0 is None else loss0
            rate = (losses + 1e-12) / (loss0 + 1e-12)
            w = (rate / rate.mean(0, keepdim=True)) ** gamma
            if normalize:
                grad = torch.zeros_like(x)
                for j, v in enumerate(values):
                    g = C.grad_of(v, x_req, retain_graph=j < len(values) - 1)
                    grad = grad + C.bview(w[j], x) * g / C.bview(C.l2_norm(g) + 1e-12, x)
            else:
                grad = C.grad_of((w * torch.stack(values)).sum(0), x_req)
            x_adv = C.ascend(x_adv, C.normalized_step(grad, norm), alpha, x, eps, norm)
        if trace is not None:
            C.extend_trace(trace, [[*after, C.loss_at(model, total, x_adv, y)]])
    return x_adv
