"""The paper's Tables 1-3 and Figure 1."""

from __future__ import annotations

from ... import tasks as T
from ..attack_specs import equal_pgd, is_reference, method_captions, method_default
from ..checks import StudyError, letter, task_list
from ..plan import KINDS, Section, merged, seeds_of


def _grid(s: Section, title: str, note: str, row_keys, attack_of, kind_of, pgd_of=lambda rk: None) -> dict:
    """Rows: row key x main task; columns: weighting:aux; the diagonal is the single-task model.

    ``pgd_of(row key)``: the PGD attack each cell of the row is compared with (same model and attacked
    tasks), or None."""
    tasks = s.tasks()
    mains = s.mains(tasks)
    arch, epoch, seeds = s.arch(s.cfg["arch"]), s.epoch(s.cfg["epoch"]), seeds_of(s)
    weightings = [s.weighting(w) for w in s.cfg["weightings"]]
    columns = [f"{w}:{letter(a)}" for w in weightings for a in tasks]
    rows = []
    for rk in row_keys:
        for m in mains:
            cells = [
                merged([s.pair(arch, w, sd, epoch, attack_of(rk), m, a, kind_of(rk)) for sd in seeds])
                for w in weightings
                for a in tasks
            ]
            emph = [f"{w}:{letter(m)}" for w in weightings]
            row = {"labels": [rk, letter(m)], "cells": cells, "emphasize": emph, "kind": kind_of(rk),
                   "attack": attack_of(rk)}  # fmt: skip
            pgd = pgd_of(rk)
            if pgd is not None:
                row["pgd_cells"] = [
                    merged([s.pair(arch, w, sd, epoch, pgd, m, a, kind_of(rk)) for sd in seeds])
                    for w in weightings
                    for a in tasks
                ]
            rows.append(row)
    title = title.format(arch=arch, epoch=epoch)
    return {"layout": "grid", "title": title, "note": note, "label_columns": ["attack", "main"],
            "columns": columns, "value": "rel_vuln", "rows": rows}  # fmt: skip


def table1(s: Section) -> dict:
    attack = s.attack(s.cfg["attack"])
    return _grid(
        s,
        f"Table 1: relative task vulnerability, {attack} ({{arch}}, epoch {{epoch}})",
        "Rows: attack kind (single = only the main task attacked, multi = main and auxiliary task) and "
        "main task; columns: weighting:auxiliary task. Lower is more robust. Italic diagonal: the "
        "single-task model under the single-task attack. '-' = not evaluated.",
        KINDS,
        lambda kind: attack,
        lambda kind: kind,
    )


def table2(s: Section) -> dict:
    attacks = [s.attack(a, "attacks") for a in s.cfg["attacks"]]
    t1 = s.plan.config["study"]["table1"]
    prefer = t1["attack"] if t1["enabled"] else None
    pgd = {a: None if is_reference(s.plan.attacks[a]) else equal_pgd(s.plan, a, prefer) for a in attacks}
    lacking = [a for a in attacks if pgd[a] is None and not is_reference(s.plan.attacks[a])]
    spec = _grid(
        s,
        "Table 2: relative task vulnerability, adaptive attacks ({arch}, epoch {epoch})",
        "Rows: attack and main task (main and auxiliary task attacked together); columns: "
        "weighting:auxiliary task. Lower is more robust. Italic diagonal: the single-task model under the "
        "same attack.",
        attacks,
        lambda attack: attack,
        lambda attack: "multi",
        lambda attack: pgd[attack],
    )
    spec["note"] += method_captions({a: s.plan.attacks[a] for a in attacks})
    compared = ", ".join(f"{a} with {p}" for a, p in pgd.items() if p)
    spec["pgd_note"] = " ".join(
        [f"Compared with PGD at the same norm, eps and steps: {compared}." if compared else "",
         f"No PGD attack at the same norm, eps and steps in this study for {', '.join(lacking)}: no mark "
         "against PGD there." if lacking else ""]
    ).strip()  # fmt: skip
    return spec


def table3(s: Section) -> dict:
    c = s.cfg
    tasks = s.tasks()
    mains = s.mains(tasks)
    seed, attack, w = s.seed(c["seed"]), s.attack(c["attack"]), s.weighting(c["weighting"])
    ep, ar, cl = c["epochs"], c["archs"], c["clean"]
    e_arch, e_proxy = s.arch(ep["arch"], "epochs.arch"), s.epoch(ep["proxy"], "epochs.proxy")
    e_target = s.epoch(ep["target"], "epochs.target")
    a_proxy, a_target = s.arch(ar["proxy"], "archs.proxy"), s.arch(ar["target"], "archs.target")
    a_epoch = s.epoch(ar["epoch"], "archs.epoch")
    c_arch, c_epoch = s.arch(cl["arch"], "clean.arch"), s.epoch(cl["epoch"], "clean.epoch")
    kind = c["attacked"]
    pairs = [(m, a) for m in mains for a in tasks]

    def series(arch, epoch, value="rel_vuln"):
        return {"value": value, "cells": [s.pair(arch, w, seed, epoch, attack, m, a, kind) for m, a in pairs]}

    rows = [
        (f"{e_arch} at epoch {e_proxy}", f"{e_arch} at epoch {e_target}",
         series(e_arch, e_proxy), series(e_arch, e_target)),
        (f"{a_proxy} at epoch {a_epoch}", f"{a_target} at epoch {a_epoch}",
         series(a_proxy, a_epoch), series(a_target, a_epoch)),
        (f"clean error ({c_arch}, epoch {c_epoch})", f"relative vulnerability ({c_arch}, epoch {c_epoch})",
         series(c_arch, c_epoch, "clean_error"), series(c_arch, c_epoch)),
    ]  # fmt: skip
    return {
        "layout": "correlations",
        "title": f"Table 3: Pearson correlation of proxies with the relative vulnerability ({attack}, "
        f"{kind}-task attacks, {w} models)",
        "note": "n = number of (main, auxiliary) cells present in both settings; '-' = undefined "
        "(fewer than 3 cells or a constant input).",
        "rows": [
            {"key": k, "proxy": p, "target": t, "x": x, "y": y}
            for k, (p, t, x, y) in zip(("epochs", "arch", "clean"), rows, strict=True)
        ],
    }


def figure1(s: Section) -> dict:
    c = s.cfg
    orders = [task_list(o, "study.figure1.orders") for o in c["orders"]]
    for o, raw in zip(orders, c["orders"], strict=True):
        unknown = [t for t in o if t not in s.plan.tasks]
        if unknown:
            raise StudyError(
                f"config key study.figure1.orders: order {raw!r} uses task(s) {T.letters(unknown)!r} "
                f"that are not among the study's tasks {T.letters(s.plan.tasks)!r}"
            )
        if set(o) != set(orders[0]):
            raise StudyError(
                f"config key study.figure1.orders: order {raw!r} is not a permutation of {c['orders'][0]!r}; "
                "all orders must enable the same tasks (one model)"
            )
    arch, epoch, seed = s.arch(c["arch"]), s.epoch(c["epoch"]), s.seed(c["seed"])
    attack = s.attack(c["attack"])
    spec = s.model(arch, "uniform", orders[0], seed, orders[0][0])
    panels = [
        {"order": T.letters(o), "letters": [letter(t) for t in o],
         "cells": [s.cell(spec, epoch, attack, o[: i + 1], o[0]) for i in range(len(o))]}
        for o in orders
    ]  # fmt: skip
    if c["theory"]:
        a = s.plan.attacks[attack]
        if "eps" not in a:
            raise StudyError(
                f"config key study.figure1.theory: the theory needs an attack with eps; attack {attack!r} "
                f"(method {a['method']!r}) has none"
            )
        norm = a.get("norm") or method_default(a["method"], "norm")
        s.plan.theory = dict(model_id=spec.id, epoch=epoch, norm=norm, eps=a["eps"], orders=list(c["orders"]))
    return {
        "layout": "bars",
        "value": "adv_vulnerability",
        "title": f"Marginal adversarial vulnerability: {spec.id}, epoch {epoch}, {attack}\n"
        "(dark: summed objective, light: 1/N weighting; whiskers: 95 % intervals; in brackets: change when "
        "the task is added, red/green = significantly more/less vulnerable)",
        "panels": panels,
    }
