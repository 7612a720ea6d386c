"""Per-step errors of one attack run, for the steps ablation (supplementary Figs. 14-15).

``run_attack(..., trace=)`` gives the attacked loss after each step, but a task's vulnerability needs its
error at each step, i.e. the model's outputs at each iterate. ``Recorder`` wraps the model and keeps, for
every forward the attack makes, the attacked loss and each task's per-sample error (computed without
gradients from the same outputs, so x_adv is unchanged). The gradient attacks make ``restarts x (steps + 1)``
forwards when traced, forward t of a restart being at its iterate after step t (t = 0: its start);
``per_step`` checks that layout against the trace (same count, same losses) and refuses what does not fit
rather than mislabel a step.

What step t reports is what the same attack stopped after step t would return: the iterate, or the running
best by attacked loss, start included, for a spec whose ``Method.returns_best`` (apgd, pgd with
``return_best``), and with restarts the restart of highest loss (earlier wins ties), as the attacks keep
it. So the last step's errors are the evaluation CSV's ``adv_error``. (APGD's step-size schedule depends on
its total steps, so its step t is the t-th step of the longer run, not a t-step APGD.)
"""

from __future__ import annotations

import csv
from pathlib import Path

import torch

from . import tasks as T
from .attacks import METHODS, MultiTaskObjective
from .files import atomic_path
from .steps_format import COLUMNS, TRAILER


class Recorder(torch.nn.Module):
    """``model`` as the attack sees it, recording (attacked loss [B], {task: error [B]}) per forward."""

    def __init__(self, model, targets, masks, tasks, attacked, weights=None, reduction="valid"):
        super().__init__()
        self.model = model
        self.y = (targets, masks)
        self.tasks = list(tasks)
        self.objective = MultiTaskObjective(attacked, weights, reduction=reduction)
        self.losses: list[torch.Tensor] = []
        self.errors: list[dict[str, torch.Tensor]] = []

    def forward(self, x):
        out = self.model(x)
        with torch.no_grad():
            det = {k: v.detach() for k, v in out.items()}
            self.losses.append(self.objective(det, self.y).float().cpu())
            tg, mk = self.y
            self.errors.append(
                {t: T.get(t).error(det[t].float(), tg[t], mk.get(t)).float().cpu() for t in self.tasks}
            )
        return out

    def per_step(self, trace: list, spec: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(attacked loss [steps, B], {task: error [steps, B]}) after each step, aligned with ``trace``."""
        steps, forwards = len(trace), len(self.losses)
        where = f"steps trace of attack {spec.get('name')!r} (method {spec['method']!r})"
        if steps == 0 or forwards % (steps + 1):
            raise ValueError(
                f"{where}: {forwards} forwards do not split into restarts of {steps} + 1; per-step errors "
                "need the layout described in mtlrobust.steptrace"
            )
        restarts = forwards // (steps + 1)
        loss = torch.stack(self.losses).view(restarts, steps + 1, -1)
        err = {t: torch.stack([e[t] for e in self.errors]).view(restarts, steps + 1, -1) for t in self.tasks}
        traced = torch.stack([v.float().cpu() for v in trace])
        if not torch.allclose(loss[:, 1:].amax(0), traced, rtol=1e-5, atol=1e-6, equal_nan=True):
            raise ValueError(f"{where}: the recorded losses differ from the attack's trace")
        if METHODS[spec["method"]].returns_best(spec):  # running best over the iterates (strict >)
            idx = torch.zeros_like(loss, dtype=torch.long)
            for t in range(1, steps + 1):
                better = loss[:, t] > loss.gather(1, idx[:, t - 1 : t]).squeeze(1)
                idx[:, t] = torch.where(better, t, idx[:, t - 1])
            loss = loss.gather(1, idx)
            err = {t: e.gather(1, idx) for t, e in err.items()}
        # per sample the restart of highest loss (strict >: the earlier one wins ties)
        best = torch.zeros(loss.shape[1:], dtype=torch.long)
        for r in range(1, restarts):
            best = torch.where(loss[r] > loss.gather(0, best[None])[0], r, best)
        pick = best[None]
        return loss.gather(0, pick)[0, 1:], {t: e.gather(0, pick)[0, 1:] for t, e in err.items()}


def rows(head: list[str], attacked: str, first: int, clean: tuple, steps: tuple) -> list[list[str]]:
    """Rows of one batch and attacked subset: ``head`` = [model_id, epoch, attack, method]; ``clean`` and
    ``steps`` are (attacked loss, {task: error}) at x ([B]) and after each step ([steps, B]); step 0 = x."""
    loss = torch.cat([clean[0][None], steps[0]])
    out = []
    for b in range(loss.shape[1]):
        for t, err in steps[1].items():
            errors = torch.cat([clean[1][t][None], err])[:, b].tolist()
            out.extend(
                [*head, attacked, str(first + b), t, str(k), _num(v), _num(e)]
                for k, (v, e) in enumerate(zip(loss[:, b].tolist(), errors, strict=True))
            )
    return out


def _num(v: float) -> str:
    return "nan" if v != v else f"{v:.9g}"


def write_csv(table: list[list[str]], out) -> None:
    """Write the rows under ``COLUMNS`` and the trailer line, atomically."""
    with atomic_path(Path(out)) as tmp, open(tmp, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(COLUMNS)
        w.writerows(table)
        f.write(f"{TRAILER}{len(table)} rows\n")
