"""Gradient attacks on (multi-task) models with any per-sample loss: FGSM, PGD, MIM, APGD and WGD.

Each attack lives in its own small file and takes ``(model, loss, x, y, *, eps, norm, ...)``, where
``model(x)`` returns a tensor or a dict of task outputs, ``loss(outputs, y)`` a per-sample loss [B] and
x is a batch in [0, 1]; it returns x_adv. ``wgd`` takes ``task_losses`` (a dict of such losses) instead.
``MultiTaskObjective`` builds the loss of an attacked subset of tasks from the registry; ``run_attack``
runs one attack spec (as in the workflow's config) on a batch.

Example::
    >>> from mtlrobust.attacks import run_attack
    >>> spec = {"method": "pgd", "norm": "linf", "eps": 8 / 255, "step_size": 2 / 255, "steps": 25}
    >>> x_adv = run_attack(spec, model, x, (targets, masks), "seg+depth_z", generator=0)
"""

from __future__ import annotations

import inspect

import torch

from .apgd import apgd, checkpoints
from .fgsm import fgsm
from .mim import mim
from .objective import MultiTaskObjective
from .pgd import pgd
from .wgd import wgd

__all__ = ["MultiTaskObjective", "apgd", "checkpoints", "fgsm", "mim", "pgd", "run_attack", "wgd", "METHODS"]

METHODS = {"none": None, "fgsm": fgsm, "pgd": pgd, "mim": mim, "apgd": apgd, "wgd": wgd}
COMMON = ("method", "norm", "eps", "step_size", "steps", "restarts", "random_start")
# A method without one of the common keys accepts it only at this value (or None), e.g. fgsm with steps=1.
_NEUTRAL = {"steps": 1, "restarts": 1, "random_start": False}
_NOT_FROM_SPEC = {"model", "loss", "task_losses", "x", "y", "generator", "success_fn"}


def run_attack(spec: dict, model, x: torch.Tensor, y, tasks_attacked, generator=None) -> torch.Tensor:
    """Attack the tasks ``tasks_attacked`` ("seg+depth_z", ["s", "d"], ...) of ``model`` on one batch.

    ``spec``: method in METHODS, the common keys (missing or None = the method's default), method options
    (mim: decay; apgd: rho, momentum, schedule, quirk_first_window; pgd: return_best; wgd: gamma,
    normalize_task_gradients), optional ``weights`` {task: w} for the objective, and an ignored ``name``.
    ``y = (targets, masks)`` dicts keyed by task id; ``generator``: torch.Generator or int seed.
    """
    spec = dict(spec)
    spec.pop("name", None)
    method = spec.pop("method", None)
    if method not in METHODS:
        raise ValueError(f"attack spec {spec}: method must be one of {sorted(METHODS)}, got {method!r}")
    objective = MultiTaskObjective(tasks_attacked, spec.pop("weights", None))
    if method == "none":
        unknown = sorted(set(spec) - set(COMMON))
        if unknown:
            raise ValueError(f"attack spec for method 'none': unknown keys {unknown}")
        return x.detach().clone()
    fn = METHODS[method]
    params = inspect.signature(fn).parameters
    allowed = [k for k, p in params.items() if p.kind is p.KEYWORD_ONLY and k not in _NOT_FROM_SPEC]
    kwargs = {}
    for key, value in spec.items():
        if key in allowed:
            if value is not None:
                kwargs[key] = value
        elif key in COMMON:
            if value is not None and not _is_neutral(key, value, spec):
                raise ValueError(f"attack spec: method {method!r} has no {key!r}; got {key}={value!r}")
        else:
            raise ValueError(f"attack spec: unknown option {key!r} for method {method!r}; allowed: {allowed}")
    if "eps" not in kwargs:
        raise ValueError(f"attack spec for method {method!r} needs 'eps', got {spec}")
    if "generator" in params:
        kwargs["generator"] = generator
    loss = objective.task_losses() if method == "wgd" else objective
    return fn(model, loss, x, y, **kwargs)


def _is_neutral(key, value, spec) -> bool:
    if key == "step_size":  # fgsm: its step is eps
        return value == spec.get("eps")
    return key in _NEUTRAL and value == _NEUTRAL[key] and type(value) is type(_NEUTRAL[key])
