"""Thresholds and the machinery every rule shares: how a statistic with an interval becomes a verdict, the
share of cells that go the claimed way, and how each paired comparison is decided (alone or family-wise).

Verdicts. Each claim is a statement "statistic >= threshold" (or "< threshold") about a statistic with an
interval; it is **supported** when the whole interval lies on the claim's side of the threshold,
**contradicted** when it lies on the other side, **unresolved** when it contains the threshold (or no
cell measures it). Claims over many cells ("for each pair ...") use the share of cells (pairs, orders)
for which the comparison goes the claimed way: each cell counts for the claim when its paired interval
excludes 0 in the claimed direction, against it when it excludes 0 the other way, and is undetermined
otherwise. The share's interval runs from "undetermined cells all against" to "all for"; "reliably" /
"for each" means a share of at least ``--reliable-share`` (0.9).

Several comparisons: claims that say "for each pair" (``rq3_weights_lower_pgd``) or "at least one auxiliary
task" (``rq3_some_auxiliary_helps``) decide each comparison with family-wise 95 % intervals
(``decide(family=True)``): the max-statistic bootstrap over the shared draws when the cells carry
``diff_fw_lo``/``diff_fw_hi``, else Holm. The other share claims use each comparison's own 95 % interval
(their 0.9 share absorbs a few chance exclusions). ``procedure`` names what each claim used.

Two statistics: every claim is decided under the paper's mean of per-sample ratios (``value``, ``diff``) and
again under the ratio of means (``rom`` columns); a claim whose two verdicts differ is "metric-sensitive".
Figure 1's steps and dominance share, Theorem 4's bound and the attacked objective are not ratio statistics:
the same under both. A correlation over fewer than ``stats.MIN_CELLS`` (10) cells is judged "too few cells".

Thresholds: ``Thresholds``, from the config's ``claims:`` section (``--config``), the flags overriding.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .. import stats as S

PER_COMPARISON = "per comparison: each paired 95 % interval on its own"


@dataclass(frozen=True)
class Thresholds:
    """The pre-stated thresholds of the verdicts: the study config's ``claims:`` section (``CONFIG_KEYS``),
    which the command's flags override."""

    reliable: float = 0.9  # share of cells for "reliably" / "for each"
    min_r: float = 0.3  # smallest Pearson r that counts as "correlates" (a medium correlation)
    margin: float = 0.2  # relative reduction that "as vulnerable" tolerates
    dominance: float = 0.5  # share of the change that one step must carry to "dominate"
    very_strong_r: float = 0.8  # smallest r of a "very strong" correlation (the paper's 0.94)
    often: float = 0.5  # share of cases for "often" / "in some cases" (the paper: 2 of its 4 orders)
    more_vulnerable: float = 0.8  # share of deep-encoder pairs "more vulnerable" (the paper's 80 %)

    def check(self) -> Thresholds:
        """Self, after checking each value's range (the error names the flag and the config key)."""
        for key, field in CONFIG_KEYS.items():
            v = getattr(self, field)
            if field == "margin":
                ok, want = math.isfinite(v) and v >= 0, "a finite number >= 0"
            elif field in ("min_r", "very_strong_r"):
                ok, want = -1 <= v <= 1, "in [-1, 1]"
            else:
                ok, want = 0 < v <= 1, "in (0, 1]"
            if not ok:
                raise ValueError(
                    f"--{key.replace('_', '-')} must be {want} (config key claims.{key}), got {v}"
                )
        return self


# config key of the ``claims:`` section (flag --KEY with dashes) -> Thresholds field
CONFIG_KEYS = {"reliable_share": "reliable", "min_correlation": "min_r", "margin": "margin",
               "dominance_share": "dominance", "very_strong_correlation": "very_strong_r",
               "often_share": "often", "more_vulnerable_share": "more_vulnerable"}  # fmt: skip


def thresholds(config: dict | None = None, overrides: dict | None = None) -> Thresholds:
    """Thresholds from a ``claims:`` config section, then ``overrides`` (same keys; None = not given)."""
    values = {**(config or {}), **{k: v for k, v in (overrides or {}).items() if v is not None}}
    unknown = sorted(set(values) - set(CONFIG_KEYS))
    if unknown:
        raise ValueError(f"claims thresholds: unknown key(s) {unknown}; expected some of {list(CONFIG_KEYS)}")
    return Thresholds(**{CONFIG_KEYS[k]: float(v) for k, v in values.items()}).check()


def verdict(lo: float, hi: float, threshold: float, above: bool) -> str:
    """supported / contradicted / unresolved for the claim "statistic >= t" (above) or "< t"."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return "unresolved"
    if above:
        return "supported" if lo >= threshold else "contradicted" if hi < threshold else "unresolved"
    return "supported" if hi < threshold else "contradicted" if lo >= threshold else "unresolved"


def _claim(cid, paper, source, statistic, value, lo, hi, n, rule, verdict_, detail,
           procedure: str = PER_COMPARISON) -> dict:  # fmt: skip
    keys = ["claim", "paper", "source", "statistic", "value", "lo", "hi", "n", "rule", "verdict", "detail"]
    row = dict(
        zip(keys, [cid, paper, source, statistic, value, lo, hi, n, rule, verdict_, detail], strict=True)
    )
    return row | {"procedure": procedure}


def share_claim(cid, paper, source, statistic, votes, t: float, above: bool, units: str, prop: str) -> dict:
    """A claim "share >= t" (above) or "share < t" about the share of cells with a property.

    ``votes`` = [(has it at the point values, surely has it, surely lacks it)] per cell, "surely" meaning
    the cell's paired interval decides; ``prop`` names the property. The share's interval counts the
    undetermined cells as lacking (lo) or having (hi) it.
    """
    n = len(votes)
    side = ">=" if above else "<"
    rule = (
        f"claim: share {side} {t:g}; supported if the share's whole interval is {side} {t:g}, contradicted "
        f"if none of it is (the interval counts each undetermined {units[:-1]} first as not {prop}, then as "
        f"{prop})"
    )
    if not n:
        return _claim(cid, paper, source, statistic, math.nan, math.nan, math.nan, 0, rule, "unresolved",
                      f"no {units} in the inputs")  # fmt: skip
    point = sum(v[0] for v in votes) / n
    k_in, k_out = sum(v[1] for v in votes), sum(v[2] for v in votes)
    lo, hi = k_in / n, 1 - k_out / n
    rest = n - k_in - k_out
    detail = f"{k_in} of {n} {units} surely {prop}, {k_out} surely not, {rest} undetermined"
    return _claim(cid, paper, source, statistic, point, lo, hi, n, rule, verdict(lo, hi, t, above), detail)


def _rows(df, output, **eq) -> pd.DataFrame:
    g = df[df["output"] == output]
    for c, v in eq.items():
        g = g[g[c] == v]
    return g


def _pairs(g: pd.DataFrame) -> pd.DataFrame:
    """Multi-task cells (aux != main) that carry a comparison; cells without one are not measured."""
    return g[(g["aux"] != g["main"]) & g["diff"].notna()]


def _once(g: pd.DataFrame) -> pd.DataFrame:
    """Each cell once: a grid repeats the single-task model (aux = main) in every weighting column."""
    single = g["aux"] == g["main"]
    return g[~single | ~g.duplicated(["attack", "main", "aux", "kind", "vs"])]


def _down(r) -> tuple[bool, bool, bool]:
    """(point lower, significantly lower, significantly higher) for a paired diff (``decide``'s columns)."""
    return bool(r.diff < 0), bool(r.lower), bool(r.higher)


def _up(r) -> tuple[bool, bool, bool]:
    return bool(r.diff > 0), bool(r.higher), bool(r.lower)


def decide(g: pd.DataFrame, family: bool = False, level: float = S.LEVEL) -> tuple[pd.DataFrame, str]:
    """``g`` with boolean columns ``lower``/``higher`` (the comparison is decided that way) and the
    procedure used. ``family``: family-wise over the rows of ``g``, by the max-statistic bootstrap bounds
    ``diff_fw_lo``/``diff_fw_hi`` when every row has them, else Holm's step-down on the p-values implied by
    each paired interval (normal approximation: se = (hi - lo) / 2z). Otherwise each row's own interval."""
    g = g.copy()
    if not family or g.empty:
        g["lower"], g["higher"] = g["diff_hi"] < 0, g["diff_lo"] > 0
        return g, PER_COMPARISON
    fw = [c for c in ("diff_fw_lo", "diff_fw_hi") if c in g.columns]
    if len(fw) == 2 and g[fw].notna().all().all():
        g["lower"], g["higher"] = g["diff_fw_hi"] < 0, g["diff_fw_lo"] > 0
        k = int(g["fw_k"].max()) if "fw_k" in g.columns and g["fw_k"].notna().any() else len(g)
        return g, (
            f"family-wise 95 %: max-statistic bootstrap-t over the {k} comparisons of this kind in the table "
            "(one critical value from the maximum |t| over them in each of the shared draws)"
        )
    from scipy.stats import norm

    z = norm.ppf(1 - (1 - level) / 2)
    se = (g["diff_hi"] - g["diff_lo"]).to_numpy(float) / (2 * z)
    d = g["diff"].to_numpy(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = np.where(se > 0, 2 * norm.sf(np.abs(d) / se), np.where(d != 0, 0.0, 1.0))
    p = np.where(np.isfinite(p), p, 1.0)
    reject = np.zeros(len(p), bool)
    for i, j in enumerate(np.argsort(p, kind="stable")):
        if p[j] > (1 - level) / (len(p) - i):
            break
        reject[j] = True
    g["lower"], g["higher"] = reject & (d < 0), reject & (d > 0)
    return g, (
        f"family-wise 95 %: Holm over the {len(g)} comparisons (p-values from each paired interval, normal "
        "approximation)"
    )
