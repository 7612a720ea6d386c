"""RQ3: the task weights lower the vulnerability under PGD (Table 1); adaptive attacks are stronger than PGD
and negate the weights, yet some auxiliary task helps each main task (Table 2).
"""

from __future__ import annotations

import pandas as pd

from .verdicts import Thresholds, _down, _once, _pairs, _rows, _up, decide, share_claim


def claim_weights_pgd(df: pd.DataFrame, th: Thresholds) -> dict:
    g = _pairs(_rows(df, "table1", vs="uniform"))
    g, procedure = decide(g[g["weighting"] != "uniform"], family=True)
    c = share_claim(
        "rq3_weights_lower_pgd",
        "For each pair of tasks, the weighted model is less vulnerable than the uniform one under PGD",
        "table1 (weighted vs uniform models)",
        "share of (main, aux, attack kind) pairs whose weighted model is less vulnerable",
        [_down(r) for r in g.itertuples()],
        th.reliable,
        above=True,
        units="pairs",
        prop="less vulnerable with the weights",
    )
    return c | {"procedure": procedure}


def _attack_name(g: pd.DataFrame, attack: str) -> str:
    """The attack as a claim names it: WGD attacks with the variant they ran (``attacks/wgd.py``)."""
    variants = [v for v in g["variant"] if v]
    return f"{attack} (WGD, {variants[0]} variant)" if variants else attack


def _on_objective(g: pd.DataFrame) -> pd.DataFrame:
    """The comparison rows with the attacked objective's paired difference as their ``diff``."""
    g = g[g["obj_diff"].notna()]
    return g.assign(diff=g["obj_diff"], diff_lo=g["obj_diff_lo"], diff_hi=g["obj_diff_hi"])


def _has(methods: pd.Series, flag: str) -> pd.Series:
    """Whether each row's attack method has ``flag`` set on its ``attacks.METHODS`` entry."""
    from ...attacks import METHODS

    return methods.map(lambda m: bool(m in METHODS and getattr(METHODS[m], flag)))


def claims_adaptive(df: pd.DataFrame, th: Thresholds) -> list[dict]:
    """Per adaptive attack of Table 2: stronger than PGD, judged on the attacked objective (what the attacks
    maximise) and on the main task's relative vulnerability; weighting no longer lowers the vulnerability."""
    t2 = df[(df["output"] == "table2") & ~_has(df["method"], "reference")]
    out = []
    for attack in dict.fromkeys(t2["attack"]):
        a = t2[t2["attack"] == attack]
        name = _attack_name(a, attack)
        g = _once(a[(a["vs"] == "pgd") & a["diff"].notna()])
        if _has(g["method"], "per_task_losses").any():
            g = _pairs(g)  # with one attacked task, weighting the task losses (WGD) is the reference attack
        for suffix, rows, what in (
            ("", _on_objective(g), "a higher attacked objective (the summed losses of the attacked tasks)"),
            ("_main_error", g, "a higher relative vulnerability of the main task"),
        ):
            rows, _ = decide(rows)
            out.append(
                share_claim(
                    f"rq3_stronger_than_pgd{suffix}:{attack}",
                    f"{name} is (much) stronger than PGD: {what} on the same model and attacked tasks",
                    f"table2 ({attack}) vs PGD at the same eps and steps, uniform and weighted models "
                    "(each single-task model once)",
                    f"share of cells where {attack} gives {what} than PGD",
                    [_up(r) for r in rows.itertuples()],
                    th.reliable,
                    above=True,
                    units="cells",
                    prop=f"more vulnerable under {attack}",
                )
            )
        w = _pairs(a[a["vs"] == "uniform"])
        w = w[w["weighting"] != "uniform"]
        votes = []
        for r in w.itertuples():
            band = th.margin * abs(r.value - r.diff)  # the uniform model's value
            votes.append((bool(r.diff >= -band), bool(r.diff_lo >= -band), bool(r.diff_hi < -band)))
        out.append(
            share_claim(
                f"rq3_weights_negated:{attack}",
                f"Under {name}, the weighted model is as vulnerable as the uniform one (adaptive attacks "
                "negate the benefit of the weights)",
                f"table2 ({attack}, weighted vs uniform models)",
                f"share of pairs whose weighted model is NOT less vulnerable by more than {th.margin:.0%} of "
                "the uniform model's value (for: the interval excludes such a reduction; against: it "
                "shows one)",
                votes,
                th.reliable,
                above=True,
                units="pairs",
                prop=f"at most {th.margin:.0%} less vulnerable than the uniform model under {attack}",
            )
        )
    return out


def claim_selection(df: pd.DataFrame, th: Thresholds) -> list[dict]:
    """Table 2: each single-task model has a less vulnerable multi-task model with the same main task."""
    t2, procedure = decide(_pairs(df[(df["output"] == "table2") & (df["vs"] == "single_task")]), family=True)
    votes = []
    for _, g in t2.groupby(["attack", "main"], sort=False):
        point, sure, against = (g["diff"] < 0).any(), g["lower"].any(), g["higher"].all()
        votes.append((bool(point), bool(sure), bool(against)))
    c = share_claim(
        "rq3_some_auxiliary_helps",
        "For each single-task model there is at least one multi-task model with the same main task that "
        "is less vulnerable, even under adaptive attacks",
        "table2 (multi-task cells vs the single-task diagonal)",
        "share of (attack, main task) rows with at least one less vulnerable multi-task model",
        votes,
        th.reliable,
        above=True,
        units="rows",
        prop="helped by some auxiliary task",
    )
    return [c | {"procedure": procedure}]
