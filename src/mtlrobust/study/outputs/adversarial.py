"""Table 1 for adversarially trained models, with their gradient-masking checks."""

from __future__ import annotations

import itertools

from ..attack_specs import check_eps_sweep, is_reference, method_default, method_of, methods_with
from ..checks import StudyError, letter
from ..plan import Section, merged, seeds_of


def _budget_of(s: Section, attack: str) -> tuple[str, float]:
    spec = s.plan.attacks[attack]
    return spec.get("norm") or method_default(spec["method"], "norm"), spec["eps"]


def _setting(s: Section) -> str:
    """The ``training.adversarial`` setting the table shows (default: the first by name)."""
    names = sorted(s.plan.adversarial)
    if not names:
        raise StudyError("config key study.table_at: needs a setting under training.adversarial (none given)")
    setting = s.cfg["setting"] or names[0]
    if setting not in names:
        raise StudyError(
            f"config key study.table_at.setting: {setting!r} is not under training.adversarial {names}"
        )
    return setting


def _check_attacks(s: Section, attacks: list[str]) -> tuple[str, str, list[str], str | None]:
    """The masking checks' attacks: (the reference one, the one set against it, the eps sweep in eps order,
    the unbounded one or None)."""
    plan, c = s.plan, s.cfg
    pgd = next((a for a in attacks if is_reference(plan.attacks[a])), None)
    apgd = next((a for a in attacks if method_of(plan.attacks[a]).masking_check), None)
    if pgd is None or apgd is None:
        raise StudyError(
            f"config key study.table_at.attacks: {attacks} must include a {methods_with('reference')} and an "
            f"{methods_with('masking_check')} attack (the masking check compares them)"
        )
    sweep = [s.attack(a, "eps_attacks") for a in c["eps_attacks"]]
    if sweep:
        check_eps_sweep(plan.attacks, sweep, "study.table_at.eps_attacks")
        sweep.sort(key=lambda a: _budget_of(s, a)[1])
    unbounded = s.attack(c["unbounded"], "unbounded") if c["unbounded"] else None
    if unbounded and _budget_of(s, unbounded) != ("linf", 1.0):
        raise StudyError(
            f"config key study.table_at.unbounded: attack {unbounded!r} has norm/eps "
            f"{_budget_of(s, unbounded)}; expected an L-inf attack with eps 1 (the whole input range)"
        )
    return pgd, apgd, sweep, unbounded


def table_at(s: Section) -> dict:
    """Table 1's layout for the models adversarially trained under one ``training.adversarial`` setting
    next to the standard models with the same tasks (rows: training x attack x kind x main, plus the clean
    error of each main task), and per adversarially trained model the cells of its gradient-masking
    checks (``analysis/layouts/adversarial.py``): PGD's loss after each step (traced), APGD vs PGD, the eps
    sweep and the unbounded attack."""
    c, plan = s.cfg, s.plan
    setting = _setting(s)
    tasks = s.tasks()
    mains = s.mains(tasks)
    arch, epoch, seeds = s.arch(c["arch"]), s.epoch(c["epoch"]), seeds_of(s)
    weightings = [s.weighting(w) for w in c["weightings"]]
    attacks = [s.attack(a, "attacks") for a in c["attacks"]]
    pgd, apgd, sweep, unbounded = _check_attacks(s, attacks)

    def cells(attack, m, kind, adversarial):
        return [merged([s.pair(arch, w, sd, epoch, attack, m, a, kind, adversarial) for sd in seeds])
                for w in weightings for a in tasks]  # fmt: skip

    def row(training, adv, attack, kind, m):
        out = {"labels": [training, attack, kind, letter(m)], "training": training, "attack": attack,
               "kind": kind, "main": m, "cells": cells(attack, m, kind, adv),
               "emphasize": [f"{w}:{letter(m)}" for w in weightings]}  # fmt: skip
        return {**out, "std_cells": cells(attack, m, kind, None)} if adv else out

    rows = [row(training, adv, attack, kind, m)
            for training, adv in (("standard", None), ("adversarial", setting))
            for attack in attacks for kind in c["kinds"] for m in mains]  # fmt: skip
    checks = {}  # model id -> its checks (a single-task model appears once per weighting)
    for m, w, a, sd in itertools.product(mains, weightings, tasks, seeds):

        def one(attack, m=m, w=w, a=a, sd=sd):
            return s.pair(arch, w, sd, epoch, attack, m, a, "single", setting)

        checks.setdefault(one(pgd)[0], {
            "model_id": one(pgd)[0], "main": letter(m), "steps": {"cell": one(pgd)},
            "apgd": {"cells": [one(apgd), one(pgd)]}, "eps": {"cells": [one(at) for at in sweep]},
            "unbounded": {"cells": [one(unbounded)] if unbounded else []},
        })  # fmt: skip
    a_spec = plan.adversarial[setting]
    return {
        "layout": "adversarial",
        "title": f"Adversarial training ({setting}): relative task vulnerability, {', '.join(attacks)} "
        f"({arch}, epoch {epoch})",
        "setting": setting,
        "setting_text": f"training attack {a_spec['attack']['name']} on the {a_spec['tasks']} task(s), "
        f"share {a_spec['share']:g} of each batch",
        "label_columns": ["training", "attack", "kind", "main"],
        "columns": [f"{w}:{letter(a)}" for w in weightings for a in tasks],
        "rows": rows,
        "checks": list(checks.values()),
    }
