"""Adversarial training (table_at): its claims are judged only when the cell table has table_at rows."""

from __future__ import annotations

import pandas as pd

from .cells import KINDS
from .verdicts import Thresholds, _down, _once, _pairs, decide, share_claim


def claims_adversarial(df: pd.DataFrame, th: Thresholds) -> list[dict]:
    """Adversarial training (table_at): it lowers vulnerability (a sanity check), per attack; an auxiliary
    task lowers the vulnerability of an adversarially trained model (GAT's claim), per attack; the clean error
    adversarial training costs is smaller with an auxiliary task. Each: share of cells >= ``often``."""
    at = df[(df["output"] == "table_at") & (df["setting"] == "adversarial")]
    vuln = at[at["kind"].isin(KINDS)]
    out = []
    for attack in dict.fromkeys(vuln["attack"]):
        a = vuln[vuln["attack"] == attack]
        lower, _ = decide(_once(a[(a["vs"] == "standard") & a["diff"].notna()]))
        out.append(share_claim(
            f"at_lowers_vulnerability:{attack}",
            "Adversarial training lowers the vulnerability of the main task (sanity check)",
            f"table_at ({attack}): each adversarially trained model vs the same model trained without "
            "adversarial examples (each single-task model once)",
            "share of models less vulnerable than their standard counterpart",
            [_down(r) for r in lower.itertuples()], th.often, above=True, units="models",
            prop="less vulnerable than the standard model",
        ))  # fmt: skip
        aux, _ = decide(_pairs(a[a["vs"] == "single_task"]))
        out.append(share_claim(
            f"at_auxiliary_lowers_vulnerability:{attack}",
            "An auxiliary task lowers the vulnerability of an adversarially trained model (GAT, ICML 2023)",
            f"table_at ({attack}, adversarially trained models): each (main, aux) model vs the single-task "
            "model of the main task",
            "share of (main, aux) pairs whose model is less vulnerable on the main task",
            [_down(r) for r in aux.itertuples()], th.often, above=True, units="pairs",
            prop="less vulnerable than the single-task model",
        ))  # fmt: skip
    cost, _ = decide(_pairs(df[(df["output"] == "table_at") & (df["kind"] == "clean_cost")
                               & (df["vs"] == "single_task")]))  # fmt: skip
    out.append(share_claim(
        "at_clean_cost_smaller_with_auxiliary",
        "The clean error cost of adversarial training is smaller with an auxiliary task",
        "table_at: clean error of the main task, adversarial minus standard training, of each (main, aux) "
        "model vs that of the single-task model (paired over the test samples)",
        "share of (main, aux) pairs whose clean error cost is smaller than the single-task model's",
        [_down(r) for r in cost.itertuples()], th.often, above=True, units="pairs",
        prop="paying a smaller clean error cost",
    ))  # fmt: skip
    return out
