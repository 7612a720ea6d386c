"""The attacked objective: per-sample loss of a subset of a multi-task model's tasks.

As the paper's attack, the default is the unweighted sum of the attacked tasks' training losses from the
registry (``tasks.py``: masked CE for seg, masked L1 otherwise, each a per-sample mean over valid pixels),
so masked pixels contribute nothing. Explicit non-negative weights are optional. ``reduction="reference"``
(and ``seg_class_weights``) use the original code's loss reduction instead (``tasks.py`` explains both);
attack with the reduction the model was trained with.

Example::
    >>> obj = MultiTaskObjective("seg+depth_z")            # or ["s", "d"], weights={"s": 1, "d": 0.1}
    >>> obj(model(x), (targets, masks))                    # -> [B]
    >>> wgd(model, obj.task_losses(), x, (targets, masks), eps=8 / 255)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

import torch

from .. import tasks as T
from ._common import is_real

PixelWeight = Callable[[T.Task, torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor | None]


class MultiTaskObjective:
    """Callable ``(outputs: dict, y=(targets: dict, masks: dict)) -> per-sample loss [B]``."""

    def __init__(
        self,
        tasks_attacked: str | Iterable[str | T.Task],
        weights: Mapping[str, float] | None = None,
        *,
        reduction: str = "valid",
        seg_class_weights: torch.Tensor | None = None,
    ):
        if reduction not in T.REDUCTIONS:
            raise ValueError(f"objective reduction must be one of {T.REDUCTIONS}, got {reduction!r}")
        self.reduction, self.seg_class_weights = reduction, seg_class_weights
        if not isinstance(tasks_attacked, str):
            tasks_attacked = [t.id if isinstance(t, T.Task) else t for t in tasks_attacked]
        self.tasks = T.parse(tasks_attacked)
        ids = [t.id for t in self.tasks]
        if weights is None:
            self.weights = dict.fromkeys(ids, 1.0)
        else:
            w = {T.get(k).id: v for k, v in weights.items()}
            if sorted(w) != sorted(ids):
                raise ValueError(f"attack weights {dict(weights)} must name exactly the attacked tasks {ids}")
            bad = {k: v for k, v in w.items() if not is_real(v) or v < 0}
            if bad or not any(w.values()):
                raise ValueError(f"attack weights must be finite, >= 0 and not all 0, got {dict(weights)}")
            self.weights = {k: float(w[k]) for k in ids}

    def __repr__(self) -> str:
        return (
            f"MultiTaskObjective({T.letters(self.tasks)!r}, weights={self.weights}, "
            f"reduction={self.reduction!r})"
        )

    def task_loss(self, task_id: str, outputs, y, pixel_weight: PixelWeight | None = None) -> torch.Tensor:
        """Unweighted per-sample registry loss of one attacked task [B].

        ``pixel_weight(task, out, target, mask)`` -> detached [B, H, W] weights of the task's pixels, or
        None for none (the dense attacks' hook).
        """
        task = T.get(task_id)
        targets, masks = y
        out = (
            outputs if isinstance(outputs, torch.Tensor) and len(self.tasks) == 1 else _pick(outputs, task.id)
        )
        mask = masks.get(task.id) if task.is_segmentation else _pick(masks, task.id, "masks")
        target = _pick(targets, task.id, "targets")
        kw = {"reduction": self.reduction}
        if pixel_weight is not None:
            kw["pixel_weight"] = pixel_weight(task, out.detach(), target, mask)
        if task.is_segmentation and self.seg_class_weights is not None:
            kw["class_weights"] = self.seg_class_weights
        return task.loss(out, target, mask, **kw)

    def __call__(self, outputs, y, pixel_weight: PixelWeight | None = None) -> torch.Tensor:
        total = None
        for task_id, w in self.weights.items():
            if w:
                term = w * self.task_loss(task_id, outputs, y, pixel_weight)
                total = term if total is None else total + term
        return total

    def task_losses(self) -> dict:
        """{task_id: (outputs, y) -> weight * per-sample loss} for the tasks with a nonzero weight (wgd)."""
        return {k: _Weighted(self, k, w) for k, w in self.weights.items() if w}


class _Weighted:
    def __init__(self, objective: MultiTaskObjective, task_id: str, weight: float):
        self.objective, self.task_id, self.weight = objective, task_id, weight

    def __call__(self, outputs, y) -> torch.Tensor:
        return self.weight * self.objective.task_loss(self.task_id, outputs, y)


def _pick(d, key: str, what: str = "model outputs"):
    if not isinstance(d, Mapping) or key not in d:
        have = sorted(d) if isinstance(d, Mapping) else type(d).__name__
        raise KeyError(f"attacked task {key!r} not found in the {what} (have {have})")
    return d[key]
