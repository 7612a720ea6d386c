"""The constant predictor every trained model must beat, and the training log columns that compare to it.

Training computes the training-set statistics once (``target_statistics``), starts each task head at them
and logs, per epoch and task, the validation error of the model (``val_error_{task}``) and of the constant
predictor (``trivial_error_{task}``). ``workflow/scripts/check_models.py`` reads those columns back with
``compare_last_epoch``; that part needs no torch (the analysis environment has none).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import numpy as np

from . import tasks as T

MAX_SAMPLES = 4096  # the statistics use at most this many training views, evenly spaced
VAL_COLUMN = "val_error_{}"
TRIVIAL_COLUMN = "trivial_error_{}"
_VAL = re.compile(r"^val_error_(?P<task>\w+)$")


def target_statistics(ds, task_ids, batch_size: int = 64) -> dict[str, list[float]]:
    """Training-set statistics per task: the mean target per channel over valid pixels, or for
    segmentation the frequency of each labelled class."""
    import torch

    n = len(ds)
    if n == 0:
        raise ValueError(f"{getattr(ds, 'dir', 'the training split')} holds no sample (empty split)")
    idx = np.unique(np.linspace(0, n - 1, min(n, MAX_SAMPLES)).round().astype(np.int64))
    sums: dict = {}
    counts: dict = {}
    for i in range(0, len(idx), batch_size):
        _, tg, mk = ds.batch(idx[i : i + batch_size])
        for tid in task_ids:
            if T.get(tid).is_segmentation:
                lab = tg[tid].flatten()
                s = torch.bincount(lab[lab > 0], minlength=T.SEG_CLASSES).double()
                c = s.sum()
            else:
                m = mk[tid].double()
                s = (tg[tid].double() * m).sum((0, 2, 3))
                c = m.sum()
            sums[tid] = sums.get(tid, 0) + s
            counts[tid] = counts.get(tid, 0) + c
    return {tid: (sums[tid] / counts[tid].clamp_min(1)).tolist() for tid in task_ids}


def constant_predictor(stats: Mapping[str, list[float]]) -> dict[str, list[float] | int]:
    """The constant predictor of ``target_statistics``: mean target, or majority class for segmentation."""
    return {tid: int(np.argmax(v)) if T.get(tid).is_segmentation else v for tid, v in stats.items()}


def trivial_predictor(ds, task_ids, batch_size: int = 64) -> dict[str, list[float] | int]:
    """The constant predictor of the training split ``ds``."""
    return constant_predictor(target_statistics(ds, task_ids, batch_size))


def trivial_output(tid: str, value, shape, device):
    """The constant predictor's output of shape [B, C, H, W] (one-hot majority class for segmentation)."""
    import torch

    b, _, h, w = shape
    task = T.get(tid)
    if task.is_segmentation:
        out = torch.zeros(b, task.channels, h, w, device=device)
        out[:, value] = 1.0
        return out
    return torch.tensor(value, dtype=torch.float32, device=device).view(1, -1, 1, 1).expand(b, -1, h, w)


def compare_last_epoch(log) -> list[dict]:
    """Per task of a training log (a DataFrame), the last epoch's validation and trivial errors and
    ``beats_trivial``. ValueError if the log is empty or lacks the columns."""
    if log.empty:
        raise ValueError("empty training log")
    last = log.iloc[-1]
    rows = []
    for col in log.columns:
        m = _VAL.match(col)
        if not m:
            continue
        task = m["task"]
        trivial = TRIVIAL_COLUMN.format(task)
        if trivial not in log.columns:
            raise ValueError(f"column {col} has no matching {trivial}")
        val, triv = float(last[col]), float(last[trivial])
        rows.append(
            dict(
                epoch=int(last["epoch"]),
                task=task,
                val_error=val,
                trivial_error=triv,
                beats_trivial=val < triv,
            )
        )
    if not rows:
        raise ValueError("no val_error_<task> columns (trained with --val-limit 0?)")
    return rows
