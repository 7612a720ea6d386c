"""Robustness metrics: per-sample task losses/errors, relative task vulnerability, adversarial vulnerability.

Two families, kept apart so that the aggregation path needs only numpy:

* per-sample measurements on model outputs (torch; the registry in ``tasks.py`` defines each task's
  loss and error f_i): ``task_metrics``, ``seg_confusion_sum``, ``miou``; torch is imported lazily;
* reductions over samples (numpy arrays, e.g. columns of the evaluation CSV):
  ``relative_vulnerability`` (the paper's mean of per-sample ratios),
  ``relative_vulnerability_ratio_of_means`` (what the authors' scripts computed), and
  ``adversarial_vulnerability`` (Definition 1: E|L_T'(x+d) - L_T'(x)|, L_T' = sum over attacked tasks).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np


# ------------------------------------------------------------------------------ per-sample (torch)
def task_metrics(
    outputs: Mapping, targets: Mapping, masks: Mapping, task_ids: Iterable[str], reduction: str = "valid"
) -> dict:
    """{task_id: (loss [B], error [B])} from the registry, detached float32 CPU tensors; ``reduction`` is the
    loss's (``tasks.REDUCTIONS``).

    ``outputs``/``targets``/``masks`` are keyed by task id (as ``MultiTaskNet``/``PackedDataset`` give them).
    """
    from . import tasks as T

    res = {}
    for tid in task_ids:
        task = T.get(tid)
        if tid not in outputs:
            raise KeyError(f"task {tid!r} not in the model outputs (have {sorted(outputs)})")
        out, tgt, msk = outputs[tid], targets[tid], masks.get(tid)
        loss = task.loss(out, tgt, msk, reduction=reduction).detach().float().cpu()
        err = task.error(out, tgt, msk).detach().float().cpu()
        res[tid] = (loss, err)
    return res


def seg_confusion_sum(out, target):
    """Confusion matrix [C, C] (int64, CPU) summed over a batch; rows = label, cols = prediction."""
    from . import tasks as T

    return T.seg_confusion(out.detach(), target).sum(0).cpu()


def miou(confusion) -> float:
    """Dataset-level mIoU from an accumulated confusion matrix (classes present in label or prediction)."""
    from . import tasks as T

    return float(T.miou_from_confusion(confusion))


# ---------------------------------------------------------------------------- reductions (numpy)
@dataclass(frozen=True)
class RelVuln:
    """A relative vulnerability with the number of samples used and skipped."""

    value: float
    n: int
    n_skipped: int


def _pair(clean, adv) -> tuple[np.ndarray, np.ndarray]:
    c = np.asarray(clean, dtype=np.float64).ravel()
    a = np.asarray(adv, dtype=np.float64).ravel()
    if c.shape != a.shape:
        raise ValueError(f"clean and adversarial values differ in length: {c.size} vs {a.size}")
    for name, v in (("clean", c), ("adversarial", a)):
        bad = np.isinf(v) | (v < 0)  # NaN (no valid pixel) is skipped by the reductions, these are not
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(f"{name} value {float(v[i])!r} of sample {i}: expected a number >= 0 or NaN")
    return c, a


def relative_vulnerability(clean: Sequence[float], adv: Sequence[float]) -> RelVuln:
    """The paper's v_i = E_k[(f(x_k + d) - f(x_k)) / f(x_k)].

    Samples whose clean error is 0 or whose clean/adversarial error is NaN (no valid pixel) have no ratio:
    they are skipped and counted in ``n_skipped``. NaN value when no sample is left.
    """
    c, a = _pair(clean, adv)
    ok = np.isfinite(c) & np.isfinite(a) & (c != 0)
    n = int(ok.sum())
    value = float(np.mean((a[ok] - c[ok]) / c[ok])) if n else float("nan")
    return RelVuln(value, n, int(c.size - n))


def relative_vulnerability_ratio_of_means(clean: Sequence[float], adv: Sequence[float]) -> RelVuln:
    """The authors' scripts' v_i = (mean f(x + d) - mean f(x)) / mean f(x) (a ratio of means).

    Only NaN samples are skipped (a zero clean error is a valid term of the mean); NaN if the clean mean is 0.
    """
    c, a = _pair(clean, adv)
    ok = np.isfinite(c) & np.isfinite(a)
    n = int(ok.sum())
    mc = float(np.mean(c[ok])) if n else float("nan")
    value = (float(np.mean(a[ok])) - mc) / mc if n and mc != 0 else float("nan")
    return RelVuln(value, n, int(c.size - n))


def adversarial_vulnerability(
    clean_losses: Mapping[str, Sequence[float]],
    adv_losses: Mapping[str, Sequence[float]],
    attacked: Iterable[str],
) -> float:
    """Definition 1: E_x |L_T'(x + d) - L_T'(x)| with L_T' the sum of the attacked tasks' per-sample losses.

    ``clean_losses``/``adv_losses``: {task_id: per-sample losses, same sample order}; tasks of the model that
    are not attacked are ignored. Samples with a NaN loss are dropped.
    """
    attacked = list(attacked)
    missing = [t for t in attacked if t not in clean_losses or t not in adv_losses]
    if missing:
        raise KeyError(f"attacked task(s) {missing} have no losses (have {sorted(clean_losses)})")
    delta = None
    for t in attacked:
        c, a = _pair(clean_losses[t], adv_losses[t])
        delta = a - c if delta is None else delta + (a - c)
    delta = np.abs(delta[np.isfinite(delta)])
    return float(delta.mean()) if delta.size else float("nan")
