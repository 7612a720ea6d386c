"""Adversarial training: the training attack of one batch (``mtlrobust train --adversarial NAME``).

Madry et al. (ICLR 2018) minimise the loss at the worst point of the eps-ball: every example of a batch is
replaced by its attacked version (``share`` 1). Mixed batches (Goodfellow et al. 2015; Mao et al., ECCV 2020,
for multi-task models) replace only a share of it, e.g. 0.5: half clean, half adversarial. The attack is
any attack spec of the study (``attacks.run_attack``) and maximises the main task's loss or the sum of the
model's tasks' losses (``tasks``: main | all); the model is then trained on the mixed batch as usual.

BatchNorm: the examples are crafted with the model in eval mode (``run_attack`` does so; training mode is
restored after). Reference code (Madry's, Mao et al.'s) crafts them in training mode. We chose eval mode
because (1) the attack then sees the function that evaluations attack, (2) the k attack forwards do not
update the running statistics (in training mode they would weigh adversarial batches k more times than the
training step does, and those statistics are what validation and evaluation use), and (3) one sample's
perturbation does not change another sample's output through batch statistics. The training step itself
runs in training mode on the mixed batch, so its running statistics follow what the model trains on.
Validation reads the clean val split only; no adversarial example is ever stored.

Determinism: which samples are attacked and the attack's random start are pure functions of
(seed, epoch, batch), like the data order, so exact resume holds.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import torch

TASKS = ("main", "all")


@dataclass(frozen=True)
class Setting:
    """One adversarial-training setting: its name (in the model id), attack spec, attacked tasks, share."""

    name: str
    attack: dict
    tasks: str = "main"
    share: float = 1.0

    def check(self) -> None:
        """ValueError naming the flag of the first value no training can use."""
        from .attacks import METHODS, check_spec

        if self.tasks not in TASKS:
            raise ValueError(f"--adv-tasks: expected one of {TASKS}, got {self.tasks!r}")
        if not (isinstance(self.share, float | int) and 0 < self.share <= 1):
            raise ValueError(f"--adv-share: expected a number in (0, 1], got {self.share!r}")
        try:
            check_spec(self.attack)
        except ValueError as e:
            raise ValueError(f"--adv-attack-json: {e}") from None
        if not METHODS[self.attack["method"]].perturbs:
            raise ValueError(
                f"--adv-attack-json: method {self.attack['method']!r} crafts no adversarial example"
            )

    def hparams(self) -> dict:
        """What the checkpoint records (and resuming must match)."""
        return {"name": self.name, "attack": json.loads(json.dumps(self.attack, sort_keys=True)),
                "tasks": self.tasks, "share": float(self.share)}  # fmt: skip

    def attacked(self, model_tasks) -> list[str]:
        """The tasks whose (summed) loss the attack maximises; the main task comes first."""
        return list(model_tasks) if self.tasks == "all" else [model_tasks[0]]

    def examples(self, model, x, y, model_tasks, key, reduction: str = "valid") -> torch.Tensor:
        """The batch with ``round(share x B)`` samples (at least one), chosen by ``key``, attacked."""
        from .attacks import run_attack

        rng = np.random.default_rng([*key, 2])
        n = max(1, round(self.share * x.shape[0]))
        rows = torch.from_numpy(np.sort(rng.permutation(x.shape[0])[:n])).to(x.device)
        targets, masks = y
        sub = ({k: v[rows] for k, v in targets.items()}, {k: v[rows] for k, v in masks.items()})
        seed = int(rng.integers(2**62))
        x_adv = run_attack(self.attack, model, x[rows], sub, self.attacked(model_tasks), seed,
                           reduction=reduction)  # fmt: skip
        out = x.clone()
        out[rows] = x_adv.detach()
        return out
