"""CosPGD, PGD with a per-pixel cosine-weighted loss: ``cospgd`` (its docstring has the details)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ._dense import weighted_pgd


def _weight(task, out, target, mask):
    if task.is_segmentation:
        dist = F.one_hot(target, out.shape[1]).permute(0, 3, 1, 2).to(out.dtype)
    else:
        dist = F.softmax(target, dim=1)
    return F.cosine_similarity(F.softmax(out, dim=1), dist, dim=1)


def cospgd(
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
    """CosPGD: PGD on a per-pixel loss weighted by how well each pixel is still predicted.

    Agnihotri, Jung, Keuper, "CosPGD: a unified white-box adversarial attack for pixel-wise prediction
    tasks", 2023, https://arxiv.org/abs/2302.02213 (reference functions: the ``cospgd`` package's
    ``cospgd_scale``).

    Each pixel's loss is multiplied by the detached cosine similarity, over the channel dimension, between
    softmax(prediction) and the target's distribution: for segmentation the one-hot label, so the weight is
    p_y / ||p||_2, high while the pixel is still right and falling as it is fooled; the attack thus spends
    its budget on the pixels not yet fooled. The reduction is the task loss's (``tasks.py``).

    Regression tasks, as the package's regression branch: the target's distribution is softmax(target) over
    channels. On a 1-channel output (depth, edges, keypoints, reshading) both softmaxes are identically 1, so
    the weight is the constant 1 and CosPGD on those tasks is PGD. On 3-channel normals and 2-channel
    curvature the weight does vary, but it compares softmaxes of regression values, a heuristic without the
    segmentation meaning.

    Arguments:
        model: callable, x -> dict of task outputs; run in eval mode, mode restored after.
        loss: a ``MultiTaskObjective`` (any loss accepting ``pixel_weight=``, see ``_dense``).
        x: [B, ...] inputs in [0, 1] (not modified); y: (targets, masks) dicts keyed by task id.
        eps (required): ball radius in input units. eps = 0 returns x.
        norm: "linf" | "l2". (Default: "linf")
        steps: number of steps. (Default: 25)
        step_size: None -> eps / 4. (Default: None)
        random_start: as in ``pgd``. (Default: True)
        generator: torch.Generator, int seed or None; used only for a random start.
        trace: None or a list to which the per-sample *unweighted* objective [B] after each step is appended
            (comparable across attacks; one extra forward at the end). (Default: None)

    Returns x_adv (the last iterate), same shape/dtype/device as x.

    Example::
        >>> x_adv = cospgd(model, MultiTaskObjective("seg"), x, (targets, masks), eps=8 / 255, generator=0)
    """
    return weighted_pgd(
        model, loss, x, y, lambda t, steps: _weight, eps=eps, norm=norm, steps=steps, step_size=step_size,
        random_start=random_start, generator=generator, trace=trace,
    )  # fmt: skip
