"""Attack specs (as in a study file) -> attack calls: the method registry, ``check_spec`` and ``run_attack``.

A spec is a flat dict: ``method``, the shared keys (norm, eps, step_size, steps, restarts, random_start),
the method's own options, and optionally ``name`` (ignored) and ``weights`` {task: w} for the objective.
A key left out (or None) takes the attack function's default, so each method keeps its own defaults
(APGD: eta0 = 2 eps and a start on the sphere, as Croce & Hein); a key the method has no use for is an
error. Adding an attack: its file, plus one ``Method`` line in ``METHODS``.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch

from .. import tasks as T
from . import _common as C
from .apgd import apgd
from .apgd import check as check_apgd
from .cospgd import cospgd
from .fgsm import fgsm
from .mim import check as check_mim
from .mim import mim
from .objective import MultiTaskObjective
from .pgd import check as check_pgd
from .pgd import pgd
from .segpgd import segpgd
from .wgd import caption as caption_wgd
from .wgd import check as check_wgd
from .wgd import wgd

SHARED = ("norm", "eps", "step_size", "steps", "restarts", "random_start")
NOT_FROM_SPEC = frozenset({"model", "loss", "task_losses", "x", "y", "generator", "success_fn", "trace"})


@dataclass(frozen=True)
class Method:
    """One attack method and all the rest of the package needs to know of it, so that code outside attacks/
    need not test a method's name.

    ``fn(model, loss, x, y, *, eps, ...)``; with ``per_task_losses`` it takes {task: per-sample loss}
    (``MultiTaskObjective.task_losses()``) instead of one loss. ``check`` validates the method's own options
    (keyword-only, named as ``fn``'s); the shared keys are checked for all. ``summary``: one line naming the
    attack, for captions and claims. ``best_iterate``: the attack returns each sample's highest-loss iterate
    rather than its last one (a method with a ``return_best`` option leaves it to the spec). ``fixed_steps``:
    the steps every run takes, for a method without a ``steps`` option (fgsm: 1). ``reference``: the plain
    attack others are compared with at the same norm, eps and steps (Table 2's marks against PGD).
    ``masking_check``: the attack the gradient-masking check of adversarially trained models sets against
    the reference one (APGD tunes its own step size, so a bad step size cannot pass for robustness).
    ``variant_option``: the option naming which variant of the method ran, shown in tables and claims.
    ``caption``: (name, spec) pairs of a table's attacks of this method -> a sentence for the table's note."""

    fn: Callable | None
    summary: str
    per_task_losses: bool = False
    check: Callable[..., object] | None = None
    best_iterate: bool = False
    fixed_steps: int | None = None
    reference: bool = False
    masking_check: bool = False
    variant_option: str | None = None
    caption: Callable[[list[tuple[str, Mapping]]], str] | None = None

    @property
    def perturbs(self) -> bool:
        """Whether the method changes the inputs at all ("none" evaluates the clean ones)."""
        return self.fn is not None

    def options(self) -> dict[str, object]:
        """The spec keys this method takes, with ``fn``'s defaults."""
        if self.fn is None:
            return {}
        params = inspect.signature(self.fn).parameters.values()
        return {p.name: p.default for p in params if p.kind is p.KEYWORD_ONLY and p.name not in NOT_FROM_SPEC}

    def steps(self, spec: Mapping) -> int:
        """The steps (gradient iterations) one run of ``spec`` takes: 0 for no attack."""
        if self.fixed_steps is not None:
            return self.fixed_steps
        return int(spec.get("steps") or self.options()["steps"])

    def returns_best(self, spec: Mapping) -> bool:
        """Whether a run of ``spec`` returns each sample's best iterate (by attacked loss) or its last one."""
        return self.best_iterate or bool(spec.get("return_best"))


METHODS: dict[str, Method] = {
    "none": Method(None, "no attack (the clean inputs)", fixed_steps=0),
    "fgsm": Method(fgsm, "FGSM, one gradient step of size eps (Goodfellow et al. 2015)", fixed_steps=1),
    "pgd": Method(pgd, "PGD, projected gradient ascent (Madry et al. 2018)", check=check_pgd, reference=True),
    "mim": Method(mim, "MIM, iterative attack with momentum (Dong et al. 2018)", check=check_mim),
    "apgd": Method(
        apgd,
        "APGD, PGD with a self-tuned step (Croce & Hein 2020)",
        check=check_apgd,
        best_iterate=True,
        masking_check=True,
    ),
    "wgd": Method(
        wgd,
        "WGD, PGD on weighted task gradients (Ghamizi et al. 2022)",
        per_task_losses=True,
        check=check_wgd,
        variant_option="variant",
        caption=caption_wgd,
    ),
    "segpgd": Method(segpgd, "SegPGD, PGD on a per-pixel re-weighted segmentation loss (Gu et al. 2022)"),
    "cospgd": Method(cospgd, "CosPGD, PGD on a cosine-weighted per-pixel loss (Agnihotri et al. 2023)"),
}


def check_spec(spec: Mapping) -> None:
    """Raise ValueError naming the key, its value and what was expected if ``spec`` is not a valid attack."""
    if not isinstance(spec, Mapping):
        raise ValueError(f"attack spec must be a mapping, got {type(spec).__name__}")
    where = f"attack spec {spec.get('name')!r}" if spec.get("name") is not None else "attack spec"
    method = spec.get("method")
    if method not in METHODS:
        raise ValueError(f"{where}: method must be one of {sorted(METHODS)}, got {method!r}")
    m = METHODS[method]
    options = m.options()
    given = {k: v for k, v in spec.items() if v is not None and k not in ("method", "name")}
    if "name" in spec and not isinstance(spec["name"], str):
        raise ValueError(f"{where}: name must be a string, got {spec['name']!r}")
    for key in given:
        if key == "weights" and m.fn is not None:
            continue
        if key not in options:
            shared = key in (*SHARED, "weights")
            close = [] if shared else difflib.get_close_matches(key, options, n=1)
            what = "has no" if shared else "got an unknown option"
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(
                f"{where}: method {method!r} {what} {key!r}{hint}; it takes {sorted(options) or 'no keys'}"
            )
    if m.fn is None:
        return
    if "eps" not in given:
        raise ValueError(f"{where}: method {method!r} needs 'eps' (e.g. eps: 8/255 as a number)")
    try:
        _check_values(m, {**options, **given})
    except ValueError as e:
        raise ValueError(f"{where} (method {method!r}): {e}") from None


def _check_values(m: Method, kw: dict) -> None:
    eps, norm = kw["eps"], kw["norm"]
    hi = 1 if str(norm).lower() == "linf" else float("inf")
    if not C.is_real(eps) or not 0 < eps <= hi:
        expected = "in (0, 1] ([0, 1] images)" if hi == 1 else "> 0"
        raise ValueError(f"eps must be a finite number {expected}, got eps={eps!r}")
    C.check_args(**{k: kw[k] for k in SHARED if k in kw})
    if m.check is not None:
        m.check(**{k: kw[k] for k in inspect.signature(m.check).parameters})
    if "weights" in kw:
        _check_weights(kw["weights"])


def _check_weights(weights) -> None:
    if not isinstance(weights, Mapping) or not weights:
        raise ValueError(f"weights must be a mapping task -> weight, got {weights!r}")
    for k, v in weights.items():
        try:
            T.get(k)
        except KeyError as e:
            raise ValueError(f"weights: {e.args[0]}") from None
        if not C.is_real(v) or v < 0:
            raise ValueError(f"weights: the weight of task {k!r} must be a finite number >= 0, got {v!r}")
    if not any(weights.values()):
        raise ValueError(f"weights must not all be 0, got {dict(weights)}")


def run_attack(
    spec: Mapping,
    model,
    x: torch.Tensor,
    y,
    tasks_attacked,
    generator=None,
    *,
    trace: list | None = None,
    reduction: str = "valid",
    seg_class_weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Attack the tasks ``tasks_attacked`` ("seg+depth_z", ["s", "d"], ...) of ``model`` on one batch.

    ``spec`` is checked by ``check_spec``; only the keys it sets are passed, the method's defaults apply
    otherwise. ``y = (targets, masks)`` dicts keyed by task id; ``generator``: torch.Generator or int seed;
    ``trace``: a list for the per-sample attacked loss after each step (see each attack; method none leaves
    it empty); ``reduction`` / ``seg_class_weights``: the objective's loss reduction (``tasks.py``).
    """
    check_spec(spec)
    m = METHODS[spec["method"]]
    kwargs = {k: v for k, v in spec.items() if v is not None and k not in ("method", "name", "weights")}
    objective = MultiTaskObjective(
        tasks_attacked, spec.get("weights"), reduction=reduction, seg_class_weights=seg_class_weights
    )
    if m.fn is None:
        return x.detach().clone()
    loss = objective.task_losses() if m.per_task_losses else objective
    if "generator" in inspect.signature(m.fn).parameters:
        kwargs["generator"] = generator
    return m.fn(model, loss, x, y, trace=trace, **kwargs)
