"""The supplement's outputs: per-encoder tables, Figure 1 per order or retrained, larger task sets."""

from __future__ import annotations

import itertools
import math

from ... import tasks as T
from ..checks import StudyError, letter, task_list
from ..plan import KINDS, Section, setting_of


def supp_tables(s: Section) -> dict:
    """Supplementary Tables 2-6: per encoder, clean error and single/multi-task attack blocks (main x aux)."""
    c = s.cfg
    tasks = s.tasks()
    mains = s.mains(tasks)
    archs = [s.arch(a, "archs") for a in (c["archs"] or s.plan.config["architectures"])]
    epoch, seed, attack = s.epoch(c["epoch"]), s.seed(c["seed"]), s.attack(c["attack"])
    w = s.weighting(c["weighting"])
    tables = []
    for arch in archs:
        rows = {
            kind: [{"main": letter(m), "cells": [s.pair(arch, w, seed, epoch, attack, m, a, kind)
                                                 for a in tasks]} for m in mains]
            for kind in KINDS
        }  # fmt: skip
        blocks = [("clean", "clean_error", rows["single"]), ("single", "rel_vuln", rows["single"]),
                  ("multi", "rel_vuln", rows["multi"])]  # fmt: skip
        tables.append({"arch": arch, "blocks": [{"block": b, "value": v, "rows": r} for b, v, r in blocks]})
    return {
        "layout": "supplementary",
        "title": f"Relative task vulnerability per encoder ({attack}, epoch {epoch}, {w} models)",
        "note": "Rows: main task evaluated; columns: auxiliary task (italic diagonal: the single-task "
        "model). clean: clean error of the main task (1 - mIoU for s, MSE otherwise); single: relative "
        "vulnerability when only the main task is attacked; multi: main and auxiliary task attacked. Lower "
        "is better. '-' = not evaluated.",
        "columns": [letter(a) for a in tasks],
        "tables": tables,
    }


def figure1_orders(s: Section) -> dict:
    """Figure 1 for every order in which a task set of one model is enabled (capped at max_orders)."""
    c = s.cfg
    model = s.tasks("model")
    chosen = model if c["tasks"] is None else s.tasks("tasks")
    outside = [t for t in chosen if t not in model]
    if outside or len(set(chosen)) != len(chosen):
        raise StudyError(
            f"config key study.figure1_orders.tasks: {T.letters(chosen)!r} must be distinct tasks of the "
            f"model {T.letters(model)!r} (study.figure1_orders.model)"
        )
    arch, epoch, seed, attack = setting_of(s)
    spec = s.model(arch, "uniform", model, seed, model[0])
    total = math.factorial(len(chosen))
    orders = list(itertools.islice(itertools.permutations(chosen), c["max_orders"]))
    panels = [
        {"order": T.letters(o), "letters": [letter(t) for t in o],
         "cells": [s.cell(spec, epoch, attack, o[: i + 1], o[0]) for i in range(len(o))]}
        for o in orders
    ]  # fmt: skip
    shown = "every order" if len(orders) == total else f"the first {len(orders)} of {total} orders"
    return {
        "layout": "bars",
        "value": "adv_vulnerability",
        "title": f"Marginal adversarial vulnerability, {shown} of {T.letters(chosen)}\n{spec.id}, epoch "
        f"{epoch}, {attack}"
        "\nwhiskers: 95 % intervals; in brackets: change when the task is added,\n"
        "red/green = significantly more/less vulnerable",
        "ncols": min(len(orders), max(2, math.ceil(math.sqrt(len(orders))))),
        "panels": panels,
    }


def table_sets(s: Section) -> dict:
    """Tables 1-2 over models with more than two tasks: columns = auxiliary task sets of the given sizes."""
    c = s.cfg
    tasks = s.tasks()
    mains = s.mains(tasks)
    arch, epoch, seed = setting_of(s)[:3]
    attacks = [s.attack(a, "attacks") for a in c["attacks"]]
    weightings = [s.weighting(w) for w in c["weightings"]]
    sizes = sorted(set(c["sizes"]))
    if sizes[-1] > len(tasks):
        raise StudyError(
            f"config key study.table_sets.sizes: a model of {sizes[-1]} tasks cannot be formed from the "
            f"{len(tasks)} task(s) {T.letters(tasks)!r} (study.table_sets.tasks)"
        )
    # auxiliary sets as Tables 1-2's columns: {main} alone is the single-task model (the diagonal)
    combos = [a for k in sizes for a in itertools.combinations(tasks, k - 1)]
    combos = combos if 2 in sizes else [(m,) for m in mains] + combos
    aux_sets = [a for a in dict.fromkeys(combos) if any(m not in a or a == (m,) for m in mains)]

    def cell(w, attack, kind, m, aux):
        if aux == (m,):
            return s.pair(arch, w, seed, epoch, attack, m, m, kind)
        if m in aux or len(aux) + 1 not in sizes:
            return None
        spec = s.model(arch, w, [m, *aux], seed, m)
        return s.cell(spec, epoch, attack, [m] if kind == "single" else [m, *aux], m)

    columns = [f"{w}:{T.letters(a)}" for w in weightings for a in aux_sets]
    rows = [
        {"labels": [attack, kind, letter(m)], "kind": kind, "attack": attack,
         "emphasize": [f"{w}:{letter(m)}" for w in weightings],
         "cells": [cell(w, attack, kind, m, a) for w in weightings for a in aux_sets]}
        for attack in attacks
        for kind in c["kinds"]
        for m in mains
    ]  # fmt: skip
    return {
        "layout": "grid",
        "title": f"Relative task vulnerability of models with {', '.join(map(str, sizes))} tasks ({arch}, "
        f"epoch {epoch})",
        "note": "Rows: attack, attack kind (single = only the main task attacked, multi = every task of the "
        "model) and main task; columns: weighting:auxiliary tasks trained with the main task. Lower is more "
        "robust. Italic diagonal: the single-task model under the same attack. '-' = the main task is among "
        "the auxiliary tasks, or not evaluated.",
        "label_columns": ["attack", "kind", "main"],
        "columns": columns,
        "value": "rel_vuln",
        "rows": rows,
    }


def figure1_retrained(s: Section) -> dict:
    """Supplementary section 3.3: one model trained per prefix of an order (tasks added one by one)."""
    c = s.cfg
    key = "study.figure1_retrained.orders"
    orders = []
    for raw in c["orders"]:
        o = task_list(raw, key)
        if any(t not in s.plan.tasks for t in o):
            raise StudyError(
                f"config key {key}: order {raw!r} uses tasks outside the study's tasks "
                f"{T.letters(s.plan.tasks)!r} (config key tasks)"
            )
        orders.append(o)
    arch, epoch, seed, attack = setting_of(s)
    panels = [
        {"order": f"{T.letters(o)}, {w}", "letters": [letter(t) for t in o],
         "cells": [s.cell(s.model(arch, w, o[: i + 1], seed, o[0]), epoch, attack, o[: i + 1], o[0])
                   for i in range(len(o))]}
        for w in (s.weighting(w) for w in c["weightings"])
        for o in orders
    ]  # fmt: skip
    return {
        "layout": "bars",
        "value": "adv_vulnerability",
        "title": f"Tasks added one by one, one model trained per prefix\n{arch}, epoch {epoch}, {attack}"
        "\nwhiskers: 95 % intervals; in brackets: change when the task is added,\n"
        "red/green = significantly more/less vulnerable",
        "xlabel": "tasks trained and attacked (one model per bar)",
        "panels": panels,
    }
