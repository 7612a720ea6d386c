"""APGD (Auto-PGD): ``apgd`` and its step-size ``checkpoints`` (the docstrings have the details)."""

from __future__ import annotations

import math
from functools import partial

import torch

from . import _common as C

SCHEDULES = ("autoattack", "paper")


def checkpoints(steps: int, schedule: str = "autoattack") -> list[int]:
    """Iteration counts after which the step size is checked."""
    out, c = [], 0
    if schedule == "autoattack":
        k, k_min, decr = (max(int(f * steps), 1) for f in (0.22, 0.06, 0.03))
        while c + k <= steps:
            c += k
            out.append(c)
            k = max(k - decr, k_min)
    elif schedule == "paper":
        p_prev, p = 0.0, 0.22
        while p <= 1.0:
            c = math.ceil(round(p * steps, 9))  # exact decimals: float ceil would give 58 for 0.57 * 100
            if c > (out[-1] if out else 0):
                out.append(c)
            p_prev, p = p, p + max(p - p_prev - 0.03, 0.06)
    else:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
    return out


def check(*, rho, momentum, schedule, quirk_first_window) -> None:
    """Checks of apgd's own options."""
    for name, v in (("rho", rho), ("momentum", momentum)):
        if not C.is_real(v) or not 0 <= v <= 1:
            raise ValueError(f"{name} must be a number in [0, 1], got {v!r}")
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
    C.check_bool("quirk_first_window", quirk_first_window)


def _norm(t):  # auto-attack's per-sample L2 norm, [B, 1, ..., 1]
    return C.bview(t.square().flatten(1).sum(1).sqrt(), t)


def _proj(v, x, eps, norm, box, tiny_in_min=False):  # torchattacks' arithmetic, kept for equivalence
    if norm == "linf":  # box = (x - eps, x + eps)
        return torch.clamp(torch.min(torch.max(v, box[0]), box[1]), 0.0, 1.0)
    n = _norm(v - x)
    return torch.clamp(
        x + (v - x) / (n + 1e-12) * torch.clamp(n + 1e-12 if tiny_in_min else n, max=eps), 0.0, 1.0
    )


def _run(model, loss, x, y, *, eps, norm, steps, eta0, start, rho, mom, cps, quirk, success_fn):
    box = (x - eps, x + eps) if norm == "linf" else None
    x_adv = start.draw(x)
    x_best = x_best_adv = x_old = x_adv
    loss_cur, grad, out = C.loss_and_grad(model, loss, x_adv, y)
    grad_best, loss_best = grad, loss_cur
    ok = None if success_fn is None else ~_success(success_fn, out, y)
    hist = torch.zeros(steps + 1, x.shape[0], dtype=loss_cur.dtype, device=loss_cur.device)
    if not quirk:
        hist[0] = loss_cur
    eta = torch.full(C.bview(loss_cur, x).shape, eta0, dtype=x.dtype, device=x.device)
    best_at_check, reduced = loss_best, torch.ones_like(loss_cur, dtype=torch.bool)
    prev, after = 0, []
    for i in range(steps):
        a = mom if i > 0 else 1.0
        step_mom, x_old = x_adv - x_old, x_adv
        if norm == "linf":
            z = _proj(x_adv + eta * torch.sign(grad), x, eps, norm, box)
        else:
            z = _proj(x_adv + eta * grad / (_norm(grad) + 1e-12), x, eps, norm, box)
        x_adv = _proj(x_adv + (z - x_adv) * a + step_mom * (1 - a), x, eps, norm, box, tiny_in_min=True)
        loss_cur, grad, out = C.loss_and_grad(model, loss, x_adv, y)
        if ok is not None:
            fooled = _success(success_fn, out, y)
            ok = ok & ~fooled
            x_best_adv = torch.where(C.bview(fooled, x), x_adv, x_best_adv)
        hist[i + 1] = loss_cur
        after.append(loss_cur)
        up = loss_cur > loss_best
        x_best, grad_best = (
            torch.where(C.bview(up, x), new, old) for new, old in ((x_adv, x_best), (grad, grad_best))
        )
        loss_best = torch.where(up, loss_cur, loss_best)
        if i + 1 in cps:
            k, prev = i + 1 - prev, i + 1
            n_up = (hist[i + 2 - k : i + 2] > hist[i + 1 - k : i + 1]).sum(0)
            reduced = (n_up <= rho * k) | (~reduced & (best_at_check >= loss_best))
            best_at_check, red = loss_best, C.bview(reduced, x)
            eta = torch.where(red, eta / 2.0, eta)
            x_adv, grad = torch.where(red, x_best, x_adv), torch.where(red, grad_best, grad)
    return x_best, loss_best, ok, x_best_adv, after


def _success(success_fn, out, y):
    s = success_fn(out, y)
    if not isinstance(s, torch.Tensor) or s.dtype != torch.bool or s.dim() != 1:
        raise ValueError(f"success_fn(outputs, y) must return a bool tensor [B], got {s!r}")
    return s


def apgd(
    model,
    loss,
    x,
    y,
    *,
    eps,
    norm="linf",
    steps=100,
    step_size=None,
    random_start="sphere",
    restarts=1,
    rho=0.75,
    momentum=0.75,
    schedule="autoattack",
    quirk_first_window=True,
    success_fn=None,
    generator=None,
    trace=None,
) -> torch.Tensor:
    """APGD (Auto-PGD): PGD with momentum and a step size halved at checkpoints when progress stalls.

    Croce & Hein, "Reliable Evaluation of Adversarial Robustness with an Ensemble of Diverse Parameter-free
    Attacks", ICML 2020, https://arxiv.org/abs/2003.01690 (reference code: fra31/auto-attack).

    Distance: L-inf or L2. A port of auto-attack's ``attack_single_run`` with torchattacks 3.5.1's arithmetic
    (reproduced to <= 1e-6 on classifiers) for any per-sample loss: start on the eps-sphere, step size
    eta = 2 eps, momentum 0.75; at each checkpoint a sample whose loss rose in <= rho of the window's steps,
    or whose best loss and step size did not change since the last checkpoint, halves eta and restarts from
    its best point. All bookkeeping stays on x's device.

    Arguments:
        model: callable, x -> tensor or dict of task outputs; run in eval mode, mode restored after.
        loss: (outputs, y) -> per-sample loss [B] to increase (any sign, e.g. a regression loss).
        x: [B, ...] inputs in [0, 1] (not modified); y: anything ``loss`` understands.
        eps (required): ball radius in input units. eps = 0 returns x.
        norm: "linf" | "l2". (Default: "linf")
        steps: iterations N. (Default: 100, Croce & Hein's)
        step_size: initial eta; None -> 2 * eps. (Default: None)
        random_start: "sphere" (auto-attack's), False (start at x) or a kind as in ``pgd``.
            (Default: "sphere")
        restarts: runs from fresh random starts. (Default: 1)
        rho: checkpoint threshold on the fraction of loss increases. (Default: 0.75)
        momentum: weight of the new step, alpha in the paper. (Default: 0.75)
        schedule: "autoattack" (the reference's integer checkpoints: 5, 9, 12, 14, 15, ..., 25 for N = 25)
            or "paper" (p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06), ceil(p N): 6, 11, 15, 18, ... 25).
            (Default: "autoattack")
        quirk_first_window: the reference's first window compares L(1) with 0 (a wrap-around in its loss
            buffer), not with the start's loss; False compares with the start's loss. (Default: True)
        success_fn: None -> return, per sample, the highest-loss point over all iterates and restarts
            (strict >). Else (outputs, y) -> bool [B] "attack succeeded" (classifier: ``out.argmax(1) != y``):
            auto-attack's default mode, where restarts skip succeeded samples, a succeeded sample is returned
            at its last successful iterate and the others as clean x. (Default: None)
        generator: torch.Generator, int seed or None. A CPU generator seeded s reproduces torchattacks'
            ``APGD(seed=s)`` start without touching the global RNG (torchattacks reseeds it). (Default: None)
        trace: None or a list to which the per-sample loss [B] at the iterate after each step is appended
            (``steps`` entries, max over restarts; no extra forward). APGD returns its best point, whose loss
            is the running maximum of the start's loss and the trace. Needs ``success_fn=None``.
            (Default: None)

    Returns x_adv, same shape/dtype/device as x.

    Example::
        >>> obj = MultiTaskObjective("seg+depth_z")
        >>> x_adv = apgd(model, obj, x, (targets, masks), eps=8 / 255, steps=25, generator=0)
    """
    eps, norm, step_size = C.check_args(
        eps, norm, steps=steps, step_size=step_size, restarts=restarts, random_start=random_start
    )
    check(rho=rho, momentum=momentum, schedule=schedule, quirk_first_window=quirk_first_window)
    x = C.begin(x, eps, norm, trace)
    if trace is not None and success_fn is not None:
        raise ValueError("trace needs success_fn=None: with success_fn, restarts attack a shrinking subset")
    cps = set(checkpoints(steps, schedule))
    if eps == 0:
        return C.unmoved(trace, steps, model, loss, x, y)
    start = C.Start(eps, norm, random_start, generator, x.device)
    eta0 = 2 * eps if step_size is None else step_size
    run = partial(_run, model, loss, eps=eps, norm=norm, steps=steps, eta0=eta0, start=start, rho=rho,
                  mom=momentum, cps=cps, quirk=quirk_first_window, success_fn=success_fn)  # fmt: skip
    with C.eval_mode(model):
        if success_fn is None:
            best, runs = (None, None), []
            for _ in range(restarts):
                x_run, loss_run, _, _, after = run(x, y)
                best = C.keep_better(*best, x_run, loss_run)
                runs.append(after)
            C.extend_trace(trace, runs)
            return best[0]
        with torch.no_grad():
            ok = ~_success(success_fn, model(x), y)
        adv = x.clone()
        for _ in range(restarts):
            idx = ok.nonzero().flatten()
            if idx.numel() == 0:
                break
            _, _, ok_run, adv_run, _ = run(x[idx], C.index(y, idx))
            done = idx[~ok_run]
            ok[done] = False
            adv[done] = adv_run[~ok_run]
    return adv
