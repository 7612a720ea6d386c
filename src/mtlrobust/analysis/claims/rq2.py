"""RQ2: Figure 1 (adding tasks often increases the vulnerability; one task, and the same one across orders,
carries most of it) and Theorem 4's bound against results/theory.csv.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .verdicts import Thresholds, _rows, share_claim


def _steps(df: pd.DataFrame, stat: str = "step") -> pd.DataFrame:
    """Figure 1's steps that add a task after the first (step >= 2: step 1 is the first task alone)."""
    g = _rows(df, "figure1", stat=stat)
    step = pd.to_numeric(g["step"], errors="coerce") if "step" in g.columns else pd.Series(np.nan, g.index)
    return g.assign(step=step)[(step >= 2) & g["value"].notna()]


def claims_figure1(df: pd.DataFrame, th: Thresholds, theory: pd.DataFrame | None = None) -> list[dict]:
    """Figure 1 as the paper reads it: adding tasks often increases the vulnerability; in some orders one
    added task carries most of the increase (its cases 1 and 4); across orders the same task does (s);
    and Theorem 4's bound holds for every measured step."""
    g = _rows(df, "figure1", stat="dominance")
    g = g[g["value"].notna()]
    procedure = "per order: percentile bootstrap of the dominance share"
    dom = share_claim(
        "rq2_one_task_dominates",
        "The increase of the vulnerability mostly occurs at one specific point: in some orders (the paper: "
        "cases 1 and 4 of 4) one added task carries most of it",
        "figure1",
        f"share of orders in which one step after the first task carries at least {th.dominance:g} of the "
        "total absolute change of E[dL] (stats.dominance_share)",
        [(bool(r.value >= th.dominance), bool(r.lo >= th.dominance), bool(r.hi < th.dominance))
         for r in g.itertuples()],
        th.often,
        above=True,
        units="orders",
        prop="dominated by one added task",
    ) | {"procedure": procedure}  # fmt: skip
    tasks = [t for t in g["task"] if t]
    top = max(dict.fromkeys(tasks), key=tasks.count) if tasks else ""
    eligible = g[[bool(top) and not str(o).startswith(top) for o in g["order"]]]
    same = share_claim(
        "rq2_same_task_dominates",
        f"Across orders the same task (here {top or '-'}; the paper: s) is the main factor: its step carries "
        "the largest increase",
        "figure1",
        f"share of orders not starting with {top or 'it'} whose largest step after the first task adds "
        f"{top or 'the most frequent such task'} (surely: that step's dominance share is at least "
        f"{th.dominance:g}; surely not: another task's is)",
        [(r.task == top, r.task == top and r.lo >= th.dominance, r.task != top and r.lo >= th.dominance)
         for r in eligible.itertuples()],
        th.reliable,
        above=True,
        units="orders",
        prop=f"dominated by {top or 'the most frequent task'}",
    ) | {"procedure": procedure}  # fmt: skip
    if tasks:
        per_order = ", ".join(f"{o}: +{t}" for o, t in zip(g["order"], g["task"], strict=True) if t)
        same["detail"] += f"; largest step per order: {per_order}"
    steps = _steps(df)
    increases = share_claim(
        "rq2_adding_tasks_increases",
        "Increasing the number of tasks often increases the vulnerability of the model",
        "figure1",
        "share of steps after the first task (all orders) whose E[dL] (summed objective) increases",
        [(bool(r.value > 0), bool(r.lo > 0), bool(r.hi < 0)) for r in steps.itertuples()],
        th.often,
        above=True,
        units="steps",
        prop="increasing the vulnerability",
    ) | {"procedure": "per step: paired studentized bootstrap interval of the change of E[dL]"}
    return [dom, same, increases, claim_theorem4(df, theory)]


def claim_theorem4(df: pd.DataFrame, theory: pd.DataFrame | None) -> dict:
    """Theorem 4's bound (theory.csv, at clean inputs) against every measured step of Figure 1: the summed
    objective's step with the ``sum`` bound, the 1/N step with the ``mean`` one (the paper's case)."""
    bounds = {}
    first_order = []
    if theory is not None and len(theory):
        b = theory[theory["quantity"] == "first_order_marginal"]
        for r in b.itertuples():
            bounds[(str(r.order), int(float(r.step)), str(r.weighting))] = float(r.bound)
            first_order.append(float(r.value) <= float(r.bound) + 1e-12)
    votes = []
    for stat, weighting in (("step", "sum"), ("step_1N", "mean")):
        for r in _steps(df, stat).itertuples():
            bound = bounds.get((r.order, int(r.step), weighting))
            if bound is not None:
                votes.append((bool(r.value <= bound), bool(r.hi <= bound), bool(r.lo > bound)))
    c = share_claim(
        "rq2_theorem4_bound",
        "Theorem 4: the marginal vulnerability of adding a task is bounded by eps ((N+1) w_N+1 E||r_N+1|| + "
        "N max_i w_i E||r_i||)",
        "figure1 steps vs theory.csv bounds",
        "share of measured steps after the first task (summed objective vs the w = 1 bound, 1/N vs the "
        "paper's w = 1/N bound) whose E[dL] change lies below the bound",
        votes,
        1.0,
        above=True,
        units="steps",
        prop="below the bound",
    )
    c["detail"] += (
        f"; first-order marginals (theory.csv) within their bound: {sum(first_order)} of {len(first_order)}"
        if first_order
        else "; no theory.csv rows (give --theory results/theory.csv)"
    )
    return c | {"procedure": "per step: paired studentized interval against the bound (every step must hold)"}
