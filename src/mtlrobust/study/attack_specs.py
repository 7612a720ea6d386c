"""The study's attacks as job specs, and what the plan asks of their methods (``attacks.METHODS``)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from .checks import L2_MAX, StudyError, budget

if TYPE_CHECKING:
    from .plan import Plan


def attack_spec(name: str, a: dict) -> dict:
    """The ``--attack-json`` spec: only the keys the study sets (options flattened), budgets as floats.

    Every method keeps its own defaults for the rest; ``attacks.check_spec`` rejects what it cannot use.
    """
    from ..attacks import METHODS, check_spec

    options = a.get("options") or {}
    clash = sorted(set(options) & (set(a) | {"name"}))
    if clash:
        raise StudyError(f"config key attacks.{name}.options: {clash} must be set outside options (or once)")
    spec = {"name": name, **{k: v for k, v in a.items() if k != "options"}, **options}
    known = spec["method"] in METHODS  # an unknown method: check_spec names it below
    l2 = (spec.get("norm") or (method_default(spec["method"], "norm") if known else None)) == "l2"
    for k in ("eps", "step_size"):
        if k in spec:
            spec[k] = budget(spec[k], f"attacks.{name}.{k}", L2_MAX if l2 else 1.0)
    if (not known or method_of(spec).perturbs) and "eps" not in spec:
        raise StudyError(
            f"config key attacks.{name}.eps: method {spec['method']!r} needs a perturbation budget, "
            "e.g. eps: 8/255"
        )
    try:
        check_spec(spec)
    except ValueError as e:
        raise StudyError(f"config key attacks.{name}: {e}") from None
    return spec


def method_default(method: str, key: str):
    """The default of an attack method's keyword (None when it has none, e.g. fgsm's steps)."""
    from ..attacks import METHODS

    return METHODS[method].options().get(key)


def method_steps(spec: dict) -> int:
    """The steps one run of an attack spec takes (``Method.steps``: fgsm 1, none 0)."""
    from ..attacks import METHODS

    return METHODS[spec["method"]].steps(spec)


def check_eps_sweep(attacks: dict, names: list[str], key: str) -> None:
    """An eps sweep compares budgets only: one method and norm, a different eps per attack."""
    models = {(attacks[a]["method"], attacks[a].get("norm") or method_default(attacks[a]["method"], "norm"))
              for a in names}  # fmt: skip
    if len(models) > 1:
        raise StudyError(
            f"config key {key}: attacks {names} mix methods/norms {sorted(models, key=str)}; an eps sweep "
            "needs one method and norm"
        )
    eps = [attacks[a].get("eps") for a in names]
    if len(set(eps)) < len(eps):
        raise StudyError(f"config key {key}: attacks {names} repeat a budget (eps {eps}); expected one each")


def matched_l2_eps(eps_inf: float, resolution: int) -> float:
    """The budget-matched L2 radius of an L-inf budget: eps_inf * sqrt(d), the L2 norm of the L-inf ball's
    corners at the model's input size d = 3 x resolution^2 (the smallest L2 ball holding the L-inf one)."""
    return eps_inf * math.sqrt(3 * resolution * resolution)


def method_captions(specs: dict[str, dict]) -> str:
    """What a table's note adds for its attacks (name -> spec), one ``Method.caption`` per method shown."""
    from ..attacks import METHODS

    named = {}
    for name, spec in specs.items():
        named.setdefault(spec["method"], []).append((name, spec))
    captions = [METHODS[m].caption(pairs) for m, pairs in named.items() if METHODS[m].caption]
    return "".join(f" {c}" for c in captions)


def method_of(spec: dict):
    """The ``attacks.Method`` entry of an attack spec."""
    from ..attacks import METHODS

    return METHODS[spec["method"]]


def methods_with(flag: str) -> str:
    """The methods whose ``Method`` entry sets ``flag``, for messages ("pgd", "apgd")."""
    from ..attacks import METHODS

    return " or ".join(m for m, entry in METHODS.items() if getattr(entry, flag))


def is_reference(spec: dict) -> bool:
    """Whether an attack spec runs the method (PGD) others are compared with (``Method.reference``)."""
    from ..attacks import METHODS

    return METHODS[spec["method"]].reference


def equal_pgd(plan: Plan, attack: str, prefer: str | None = None) -> str | None:
    """A PGD attack of the study at the same norm, eps and steps as ``attack`` (``prefer`` first)."""
    a = plan.attacks[attack]

    def key(spec):
        m = spec["method"]
        return (spec.get("norm") or method_default(m, "norm"), spec.get("eps"),
                spec.get("steps") or method_default(m, "steps"))  # fmt: skip

    same = [n for n, p in plan.attacks.items() if is_reference(p) and key(p) == key(a)]
    return prefer if prefer in same else (sorted(same)[0] if same else None)


def adversarial_settings(config: dict, attacks: dict) -> dict:
    """``training.adversarial`` checked: name -> {attack: the attack's spec, tasks, share}."""
    out = {}
    for name, a in sorted((config["training"].get("adversarial") or {}).items()):
        key = f"config key training.adversarial.{name}.attack"
        if a["attack"] not in attacks:
            raise StudyError(
                f"{key}: attack {a['attack']!r} is not defined; expected one of the names under attacks: "
                f"{sorted(attacks)}"
            )
        spec = attacks[a["attack"]]
        if not method_of(spec).perturbs:
            raise StudyError(
                f"{key}: attack {a['attack']!r} (method {spec['method']}) crafts no adversarial example"
            )
        out[name] = {"attack": attacks[a["attack"]], "tasks": a["tasks"], "share": float(a["share"])}
    return out
