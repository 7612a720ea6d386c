"""Gradient attacks on (multi-task) models with any per-sample loss: FGSM, PGD, MIM, APGD, WGD and the
dense-prediction attacks SegPGD and CosPGD.

Each attack lives in its own small file and takes ``(model, loss, x, y, *, eps, norm, ...)``, where
``model(x)`` returns a tensor or a dict of task outputs, ``loss(outputs, y)`` a per-sample loss [B] and
x is a batch in [0, 1]; it returns x_adv. ``wgd`` takes ``task_losses`` (a dict of such losses) instead
(``METHODS[name].per_task_losses``). eps and step sizes are in the units of x (8/255, not 8): a value out
of range raises ValueError naming the argument. ``help(pgd)`` etc. document each attack's arguments.
``MultiTaskObjective`` builds the loss of an attacked subset of tasks from the registry; ``check_spec``
checks an attack spec as in the workflow's config and ``run_attack`` runs one on a batch.

Example::
    >>> from mtlrobust.attacks import run_attack
    >>> spec = {"method": "pgd", "norm": "linf", "eps": 8 / 255, "step_size": 2 / 255, "steps": 25}
    >>> x_adv = run_attack(spec, model, x, (targets, masks), "seg+depth_z", generator=0)
"""

from __future__ import annotations

from .apgd import apgd, checkpoints
from .cospgd import cospgd
from .fgsm import fgsm
from .mim import mim
from .objective import MultiTaskObjective
from .pgd import pgd
from .segpgd import segpgd
from .spec import METHODS, Method, check_spec, run_attack
from .wgd import wgd

__all__ = [
    "METHODS",
    "Method",
    "MultiTaskObjective",
    "apgd",
    "check_spec",
    "checkpoints",
    "cospgd",
    "fgsm",
    "mim",
    "pgd",
    "run_attack",
    "segpgd",
    "wgd",
]
