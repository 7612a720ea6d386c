"""SegPGD, PGD with a segmentation loss re-weighted per pixel: ``segpgd`` (its docstring has the details)."""

from __future__ import annotations

import torch

from ._dense import weighted_pgd


def _weights(t: int, steps: int):
    lam = t / (2 * steps)

    def weight(task, out, target, mask):
        if not task.is_segmentation:
            return None
        correct = out[:, 1:].argmax(1) + 1 == target
        return torch.where(correct, 1.0 - lam, lam).to(out.dtype)

    return weight


def segpgd(
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
    generator=None,
    trace=None,
) -> torch.Tensor:
    """SegPGD: PGD on a segmentation loss that shifts its weight from correctly to wrongly classified pixels.

    Gu et al., "SegPGD: An Effective and Efficient Adversarial Attack for Evaluating and Boosting Segmentation
    Robustness", ECCV 2022, https://arxiv.org/abs/2207.12391 (reference functions: the ``cospgd`` package's
    ``segpgd_scale``).

    At step t = 0 .. T-1 the segmentation task's per-pixel CE is weighted by 1 - l_t where the prediction is
    correct and by l_t where it is wrong, l_t = t / (2 T): early steps push the still-correct pixels, later
    ones also keep the fooled ones fooled. "Correct" uses the metric's prediction (argmax over the real
    classes 1..17); unlabelled pixels stay excluded. The reduction is the task loss's (``tasks.py``).

    Regression tasks. "Correct" is undefined for a regression output, so SegPGD leaves their losses
    unweighted: attacking only regression tasks is PGD, and in a mixed set only the segmentation term is
    re-weighted, by factors in [0, 1], so it weighs less against the regression terms than in PGD.

    Arguments:
        model: callable, x -> dict of task outputs; run in eval mode, mode restored after.
        loss: a ``MultiTaskObjective`` (any loss accepting ``pixel_weight=``, see ``_dense``).
        x: [B, ...] inputs in [0, 1] (not modified); y: (targets, masks) dicts keyed by task id.
        eps (required): ball radius in input units. eps = 0 returns x.
        norm: "linf" | "l2". (Default: "linf")
        steps: number of steps T. (Default: 25)
        step_size: None -> eps / 4. (Default: None)
        random_start: as in ``pgd``. (Default: True)
        generator: torch.Generator, int seed or None; used only for a random start.
        trace: None or a list to which the per-sample *unweighted* objective [B] after each step is appended
            (comparable across attacks; one extra forward at the end). (Default: None)

    Returns x_adv (the last iterate), same shape/dtype/device as x.

    Example::
        >>> x_adv = segpgd(model, MultiTaskObjective("seg"), x, (targets, masks), eps=8 / 255, generator=0)
    """
    return weighted_pgd(
        model, loss, x, y, _weights, eps=eps, norm=norm, steps=steps, step_size=step_size,
        random_start=random_start, generator=generator, trace=trace,
    )  # fmt: skip
