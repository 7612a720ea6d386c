"""RQ1: multi-task models are not reliably less vulnerable under L-inf attacks (Table 1, per attack kind), and
the sweeps over the norm, eps and encoder (the ``rq1_*`` cells).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from .cells import KINDS
from .verdicts import Thresholds, _down, _pairs, _rows, _up, decide, share_claim

EPS_WEAK = 4 / 255  # "for eps > 4/255 multi-task learning does not provide reliable robustness"
DEEP_ARCHS = ("resnet50", "resnet152")  # "80 % of the multi-task models using Resnet50 and Resnet152"


def claims_rq1(df: pd.DataFrame, th: Thresholds) -> list[dict]:
    """RQ1 as the paper states it: under L-inf attacks multi-task models are not reliably less vulnerable
    'against neither single-task nor multi-task attacks': one verdict per attack kind, not pooled."""
    g = _pairs(_rows(df, "table1", weighting="uniform", vs="single_task"))
    if "norm" in g.columns:
        g = g[g["norm"].isin(["linf", ""])]
    out = []
    for kind in KINDS:
        k, _ = decide(g[g["kind"] == kind])
        out.append(
            share_claim(
                f"rq1_not_reliably_less_vulnerable:{kind}",
                f"Under L-inf {kind}-task attacks, multi-task models are not reliably less vulnerable than "
                "single-task models",
                f"table1 ({kind}-task attack; uniform models vs the single-task diagonal)",
                "share of (main, aux) pairs whose multi-task model is less vulnerable on the main task",
                [_down(r) for r in k.itertuples()],
                th.reliable,
                above=False,
                units="pairs",
                prop="less vulnerable than the single-task model",
            )
        )
    return out


def _eps(label: str) -> float:
    """The eps of an rq1_eps setting label (``8/255`` or a number; NaN when it is neither)."""
    try:
        a, _, b = str(label).partition("/")
        return float(a) / float(b) if b else float(a)
    except (ValueError, ZeroDivisionError):
        return math.nan


def claims_sweeps(df: pd.DataFrame, th: Thresholds) -> list[dict]:
    """RQ1's sweeps: L2 confirms Mao et al. (per L2 attack, e.g. the paper's budget and the budget-matched
    one); above eps 4/255 no reliable robustness (per attack kind); 80 % of the ResNet50/152 pair models
    more vulnerable under single-task attacks."""
    less = "less vulnerable than the single-task model"
    norm = _pairs(_rows(df, "rq1_norm", vs="single_task"))
    norm = norm[norm["norm"] == "l2"]
    out = []
    for attack in list(dict.fromkeys(norm["attack"])) or [""]:
        g, _ = decide(norm[norm["attack"] == attack])
        label = f"{g['setting'].iloc[0]}: {attack}" if len(g) else "none in this study"
        out.append(
            share_claim(
                f"rq1_l2_confirms_mao:{attack}" if attack else "rq1_l2_confirms_mao",
                f"Under L2 attacks ({label}) the conclusion of Mao et al. is confirmed: multi-task models "
                f"are "
                "reliably less vulnerable than single-task models",
                f"rq1_norm ({attack or 'no L2 attack'}; single- and multi-task attacks)",
                "share of (main, aux, attack kind) pairs whose multi-task model is less vulnerable on the "
                "main "
                "task",
                [_down(r) for r in g.itertuples()],
                th.reliable,
                above=True,
                units="pairs",
                prop=less,
            )
        )
    eps = _pairs(_rows(df, "rq1_eps", vs="single_task"))
    eps = eps[np.array([_eps(x) > EPS_WEAK for x in eps["setting"]], dtype=bool)]
    settings = ", ".join(dict.fromkeys(eps["setting"])) or "none"
    for kind in KINDS:
        g, _ = decide(eps[eps["kind"] == kind])
        out.append(
            share_claim(
                f"rq1_eps_not_reliable:{kind}",
                "For eps > 4/255, multi-task learning does not provide reliable robustness against "
                f"{kind}-task "
                "attacks",
                f"rq1_eps (eps {settings}; {kind}-task attack)",
                "share of (eps, main, aux) cells whose multi-task model is less vulnerable on the main task",
                [_down(r) for r in g.itertuples()],
                th.reliable,
                above=False,
                units="cells",
                prop=less,
            )
        )
    arch = _pairs(_rows(df, "rq1_arch", vs="single_task", kind="single"))
    g, _ = decide(arch[arch["arch"].isin(DEEP_ARCHS)])
    archs = ", ".join(dict.fromkeys(g["arch"])) or "none of " + "/".join(DEEP_ARCHS)
    out.append(
        share_claim(
            "rq1_deep_more_vulnerable",
            "When one task is attacked, 80 % of the multi-task models with ResNet50 and ResNet152 "
            "encoders are "
            "more vulnerable than their single-task counterparts",
            f"rq1_arch ({archs}; single-task attack)",
            "share of (encoder, main, aux) pairs whose multi-task model is more vulnerable on the main task",
            [_up(r) for r in g.itertuples()],
            th.more_vulnerable,
            above=True,
            units="pairs",
            prop="more vulnerable than the single-task model",
        )
    )
    return out
