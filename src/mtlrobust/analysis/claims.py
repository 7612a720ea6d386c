"""``mtlrobust claims``: a verdict on each claim the paper makes from Tables 1-3 and Figure 1.

Input: one or more "cell" CSVs (concatenated), one row per table cell or per cell and comparison:

===============  ======================================================================================
column           meaning
===============  ======================================================================================
output           ``table1``, ``table2``, ``table3`` or ``figure1`` (required, all rows; ``mtlrobust claims``
                 drops the rows of the study's other outputs first, so results/cells/*.csv can be given)
value, lo, hi    the cell's value and 95 % interval (``stats``); lo/hi empty when unknown
n                test samples behind the cell (cells for ``table3``, samples for ``figure1``)
attack, method   table1/2: the attack's name in the study and its method (pgd, apgd, wgd, ...)
norm             table1 (optional): linf or l2; claims about L-inf use only ``linf`` rows when present
kind             table1/2: ``single`` (only the main task attacked) or ``multi`` (main and auxiliary)
weighting        table1/2: ``uniform`` or the name of the non-uniform weighting (e.g. ``paper``)
main, aux        table1/2: task letters; aux = main for the single-task model
vs, diff,        table1/2: a paired comparison of this cell with another one evaluated on the same test
diff_lo,         samples: diff = value - the other cell's value, diff_lo/diff_hi its paired interval
diff_hi          (``stats.rel_vuln_diffs``). ``vs`` names the other cell: ``single_task`` (the single-task
                 model of the main task under the same attack and kind), ``uniform`` (same main, aux,
                 kind and attack, uniform weighting) or ``pgd`` (same model and attacked tasks under the
                 study's PGD at the same eps and steps). One row per comparison; empty ``vs`` = no diff
proxy            table3: ``epochs`` (early-stopped vs fully trained), ``arch`` (surrogate vs target
                 encoder) or ``clean`` (clean error vs relative vulnerability); value = Pearson r with
                 its interval (``stats.pearson_interval``), n = cells
order, stat,     figure1: ``order`` = letters of the enabled order; rows with ``stat`` = ``dominance``
task             carry ``stats.dominance_share`` of that order with its interval, ``task`` the letter of
                 the largest step (reported only); other stats are ignored
rom, rom_lo,     optional: the cell under the ratio of means (sum adv - sum clean) / sum clean with its
rom_hi           interval (table3: r over the cells' ratios of means); rom_diff, rom_diff_lo, rom_diff_hi:
                 the comparison under it. Without them the ratio-of-means verdict is ``n/a``
diff_fw_lo,      optional: family-wise 95 % bounds of the comparison (``stats.simultaneous`` over the
diff_fw_hi,      ``fw_k`` comparisons of the same ``vs`` in the table; rom_diff_fw_lo/hi likewise); without
fw_k             them family-wise claims use Holm on p-values implied by each paired interval
median,          optional, reported by the tables (median of the per-sample ratios, largest ratio's share,
top_share,       fragile mark); not used by the verdicts
fragile
seed             optional: several seeds of one cell are merged by ``stats.seed_aggregate_intervals``
===============  ======================================================================================

Verdicts. Each claim is a statement "statistic >= threshold" (or "< threshold") about a statistic with an
interval; it is **supported** when the whole interval lies on the claim's side of the threshold,
**contradicted** when it lies on the other side, **unresolved** when it contains the threshold (or no
cell measures it). Claims over many cells ("for each pair ...") use the share of cells (pairs, orders)
for which the comparison goes the claimed way: each cell counts for the claim when its paired interval
excludes 0 in the claimed direction, against it when it excludes 0 the other way, and is undetermined
otherwise. The share's interval runs from "undetermined cells all against" to "all for"; "reliably" /
"for each" means a share of at least ``--reliable-share`` (0.9).

Several comparisons: claims that say "for each pair" (``rq3_weights_lower_pgd``) or "at least one auxiliary
task" (``rq3_some_auxiliary_helps``) decide each comparison with family-wise 95 % intervals (``FAMILY``):
the max-statistic bootstrap over the shared draws when the cells carry ``diff_fw_lo``/``diff_fw_hi``, else
Holm. The other share claims use each comparison's own 95 % interval (their 0.9 share absorbs a few chance
exclusions). ``procedure`` names what each claim used.

Two statistics: every claim is decided under the paper's mean of per-sample ratios (``value``, ``diff``) and
again under the ratio of means (``rom`` columns); a claim whose two verdicts differ is "metric-sensitive".
Figure 1's dominance share is not a ratio statistic: it is the same under both. A correlation over fewer
than ``MIN_CELLS`` (10) cells is judged "too few cells".
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from . import stats as S

OUTPUTS = ("table1", "table2", "table3", "figure1")
NEEDS = {
    "table1": ("attack", "kind", "weighting", "main", "aux", "vs", "diff", "diff_lo", "diff_hi"),
    "table2": ("attack", "method", "weighting", "main", "aux", "vs", "diff", "diff_lo", "diff_hi"),
    "table3": ("proxy",),
    "figure1": ("order", "stat"),
}
NUMERIC = ("value", "lo", "hi", "n", "diff", "diff_lo", "diff_hi", "rom", "rom_lo", "rom_hi", "rom_diff",
           "rom_diff_lo", "rom_diff_hi", "diff_fw_lo", "diff_fw_hi", "rom_diff_fw_lo", "rom_diff_fw_hi",
           "fw_k", "median", "top_share")  # fmt: skip
# the paper's statistic's column -> the ratio of means' column (``as_ratio_of_means``)
ROM_COLUMNS = {"value": "rom", "lo": "rom_lo", "hi": "rom_hi", "diff": "rom_diff", "diff_lo": "rom_diff_lo",
               "diff_hi": "rom_diff_hi", "diff_fw_lo": "rom_diff_fw_lo",
               "diff_fw_hi": "rom_diff_fw_hi"}  # fmt: skip
MIN_CELLS = 10  # fewer cells: a correlation claim is "too few cells"
PER_COMPARISON = "per comparison: each paired 95 % interval on its own"
KEY_COLUMNS = (
    "output", "attack", "method", "norm", "kind", "weighting", "main", "aux", "vs", "proxy", "order", "stat",
)  # fmt: skip
CLAIM_COLUMNS = [
    "claim",
    "paper",
    "source",
    "statistic",
    "value",
    "lo",
    "hi",
    "n",
    "rule",
    "verdict",
    "detail",
    "value_rom",
    "lo_rom",
    "hi_rom",
    "verdict_rom",
    "detail_rom",
    "metric_sensitive",
    "procedure",
]
PROXIES = {
    "epochs": "early stopping (50 epochs) correlates with the fully trained model's vulnerability (r = 0.55)",
    "arch": "a ResNet18 surrogate correlates with the ResNet50 target (r = 0.94)",
    "clean": "clean performance correlates with robustness (r = 0.98)",
}


@dataclass(frozen=True)
class Thresholds:
    """The pre-stated thresholds of the verdicts (``--reliable-share`` and friends)."""

    reliable: float = 0.9  # share of cells for "reliably" / "for each"
    min_r: float = 0.3  # smallest Pearson r that counts as "correlates" (a medium correlation)
    margin: float = 0.2  # relative reduction that "as vulnerable" tolerates
    dominance: float = 0.5  # share of the change that one step must carry to "dominate"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--cells",
        nargs="+",
        required=True,
        type=Path,
        help="cell CSVs, e.g. results/cells/*.csv (see the module docstring); the claims judge the rows of "
        f"{', '.join(OUTPUTS)} and ignore those of the study's other outputs (rq1_*, figure1_orders, ...)",
    )
    p.add_argument(
        "--out", required=True, type=Path, help="results/claims.csv (claims.md is written next to it)"
    )
    d = Thresholds()
    p.add_argument("--reliable-share", type=float, default=d.reliable, help="share for 'reliably'/'for each'")
    p.add_argument("--min-correlation", type=float, default=d.min_r, help="smallest r that 'correlates'")
    p.add_argument("--margin", type=float, default=d.margin, help="relative reduction 'as vulnerable' allows")
    p.add_argument("--dominance-share", type=float, default=d.dominance, help="share one step must carry")


# ------------------------------------------------------------------------------------------ input
def read_cells(path: Path, ignore=()) -> pd.DataFrame:
    """One cell CSV, checked against the contract of the module docstring; rows whose output is in
    ``ignore`` are dropped first."""
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as e:
        raise ValueError(f"{path}: cannot read the cell CSV: {e}") from None
    if ignore and "output" in df.columns:
        df = df[~df["output"].isin(ignore)]
    return check_cells(df, str(path))


def check_cells(df: pd.DataFrame, where: str = "cells") -> pd.DataFrame:
    """Validate columns and values; numeric columns become floats (empty = NaN)."""
    missing = [c for c in ("output", "value", "lo", "hi", "n") if c not in df.columns]
    if missing:
        raise ValueError(f"{where}: not a cell table, missing column(s) {missing}")
    df = df.copy()
    bad = sorted(set(df["output"]) - set(OUTPUTS))
    if bad:
        raise ValueError(
            f"{where}: unknown output(s) {bad} in column 'output'; expected one of {list(OUTPUTS)}"
        )
    for out in sorted(set(df["output"])):
        lack = [c for c in NEEDS[out] if c not in df.columns]
        if lack:
            raise ValueError(f"{where}: {out} rows need column(s) {lack}")
    for c in NUMERIC:
        if c not in df.columns:
            continue
        raw = df[c].astype(str).str.strip()
        blank = raw.isna() | raw.str.lower().isin(["", "nan"])
        num = pd.to_numeric(raw.where(~blank), errors="coerce")
        wrong = num.isna() & ~blank
        if wrong.any():
            raise ValueError(f"{where}: column {c!r} has a non-number {raw[wrong].iloc[0]!r}")
        df[c] = num.astype(float)
    for c in df.columns:
        if c not in NUMERIC:
            df[c] = df[c].fillna("").astype(str)
    return df


def merge_seeds(df: pd.DataFrame) -> pd.DataFrame:
    """One row per cell (and comparison): several seeds are merged by ``stats.seed_aggregate_intervals``
    (two-level: seeds resampled, each with the sample noise its interval implies), under both statistics.
    Family-wise bounds cannot be merged from intervals: they are dropped (Holm decides instead)."""
    if "seed" not in df.columns or df.empty:
        return df
    keys = [c for c in KEY_COLUMNS if c in df.columns]
    dup = df.duplicated([*keys, "seed"])
    if dup.any():
        first = df.loc[dup, [*keys, "seed"]].iloc[0].to_dict()
        raise ValueError(f"the same cell and seed appear twice in the cell table: {first}")
    bounds = {"value": "", "diff": "diff_", "rom": "rom_", "rom_diff": "rom_diff_"}
    triples = [(v, f"{b}lo", f"{b}hi") for v, b in bounds.items() if v in df.columns]
    rows = []
    for _, g in df.groupby(keys, sort=False, dropna=False):
        if len(g) == 1:
            rows.append(g.iloc[0].to_dict())
            continue
        row = g.iloc[0].to_dict()
        n = [int(x) if x == x else 0 for x in g["n"]]
        for v, lo, hi in triples:
            if g[v].notna().any():
                ivs = [S.Interval(a, b, c, k) for a, b, c, k in zip(g[v], g[lo], g[hi], n, strict=True)]
                agg = S.seed_aggregate_intervals(ivs)
                row.update({v: agg.value, lo: agg.lo, hi: agg.hi})
                if v == "value":
                    row.update(n=agg.n, seed=f"{agg.n_seeds} seeds")
        for c in ("diff_fw_lo", "diff_fw_hi", "rom_diff_fw_lo", "rom_diff_fw_hi"):
            if c in row:
                row[c] = math.nan
        if "task" in g.columns:
            row["task"] = "/".join(dict.fromkeys(t for t in g["task"] if t))
        rows.append(row)
    return pd.DataFrame(rows, columns=df.columns)


def as_ratio_of_means(df: pd.DataFrame) -> pd.DataFrame | None:
    """The cell table with the ratio of means in the paper's statistic's columns (Tables 1-3; Figure 1's
    rows unchanged); None when no Table 1-3 row has a ratio-of-means value."""
    ratio = df["output"].isin(["table1", "table2", "table3"])
    if "rom" not in df.columns or not df.loc[ratio, "rom"].notna().any():
        return None
    out = df.copy()
    for col, rom in ROM_COLUMNS.items():
        out.loc[ratio, col] = out.loc[ratio, rom] if rom in out.columns else np.nan
    return out


# ------------------------------------------------------------------------------------------ verdicts
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


def claim_rq1(df: pd.DataFrame, th: Thresholds) -> dict:
    g = _pairs(_rows(df, "table1", weighting="uniform", vs="single_task"))
    if "norm" in g.columns:
        g = g[g["norm"].isin(["linf", ""])]
    g, _ = decide(g)
    return share_claim(
        "rq1_not_reliably_less_vulnerable",
        "Under L-inf attacks, multi-task models are not reliably less vulnerable than single-task models "
        "(single- and multi-task attacks)",
        "table1 (uniform models vs the single-task diagonal)",
        "share of (main, aux, attack kind) pairs whose multi-task model is less vulnerable on the main task",
        [_down(r) for r in g.itertuples()],
        th.reliable,
        above=False,
        units="pairs",
        prop="less vulnerable than the single-task model",
    )


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


def claims_adaptive(df: pd.DataFrame, th: Thresholds) -> list[dict]:
    """Per adaptive attack of Table 2: stronger than PGD; weighting no longer lowers the vulnerability."""
    t2 = df[(df["output"] == "table2") & (df["method"] != "pgd")]
    out = []
    for attack in dict.fromkeys(t2["attack"]):
        g = t2[(t2["attack"] == attack) & (t2["vs"] == "pgd") & t2["diff"].notna()]
        if (g["method"] == "wgd").any():
            g = _pairs(g)  # with one attacked task WGD is PGD
        g, _ = decide(g)
        out.append(
            share_claim(
                f"rq3_stronger_than_pgd:{attack}",
                f"{attack} is (much) stronger than PGD: higher relative vulnerability on the same model",
                f"table2 ({attack}) vs table1 (pgd), uniform and weighted models",
                f"share of cells where {attack} gives a higher relative vulnerability than PGD",
                [_up(r) for r in g.itertuples()],
                th.reliable,
                above=True,
                units="cells",
                prop=f"more vulnerable under {attack}",
            )
        )
        w = _pairs(t2[(t2["attack"] == attack) & (t2["vs"] == "uniform")])
        w = w[w["weighting"] != "uniform"]
        votes = []
        for r in w.itertuples():
            band = th.margin * abs(r.value - r.diff)  # the uniform model's value
            votes.append((bool(r.diff >= -band), bool(r.diff_lo >= -band), bool(r.diff_hi < -band)))
        out.append(
            share_claim(
                f"rq3_weights_negated:{attack}",
                f"Under {attack}, the weighted model is as vulnerable as the uniform one (adaptive attacks "
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


def claims_proxies(df: pd.DataFrame, th: Thresholds) -> list[dict]:
    t3 = _rows(df, "table3")
    out = []
    for proxy, paper in PROXIES.items():
        g = t3[t3["proxy"] == proxy]
        rule = (
            f"r >= {th.min_r:g}: supported if the interval of r lies at or above it, contradicted if below; "
            f"'too few cells' below {MIN_CELLS} cells"
        )
        if g.empty:
            v, lo, hi, n, det = math.nan, math.nan, math.nan, 0, "no table3 row for this proxy"
        else:
            r = g.iloc[0]
            v, lo, hi, n, det = r.value, r.lo, r.hi, int(r.n) if r.n == r.n else 0, f"over {r.n:.0f} cells"
        decided = verdict(lo, hi, th.min_r, True) if n >= MIN_CELLS or g.empty else "too few cells"
        out.append(
            _claim(
                f"rq4_proxy:{proxy}",
                paper,
                "table3",
                "Pearson r of the proxy with its target",
                v,
                lo,
                hi,
                n,
                rule,
                decided,
                det,
                "two-level bootstrap of r (cells and their test samples resampled together)",
            )
        )
    return out


def claim_dominance(df: pd.DataFrame, th: Thresholds) -> dict:
    g = _rows(df, "figure1", stat="dominance")
    g = g[g["value"].notna()]
    votes = [(bool(r.value >= th.dominance), bool(r.lo >= th.dominance), bool(r.hi < th.dominance))
             for r in g.itertuples()]  # fmt: skip
    c = share_claim(
        "rq2_one_task_dominates",
        "The increase of the adversarial vulnerability mostly occurs at one task (s in the paper): the most "
        "marginally vulnerable task dominates",
        "figure1",
        f"share of orders in which one step carries at least {th.dominance:g} of the total absolute "
        "change of E[dL] (stats.dominance_share)",
        votes,
        th.reliable,
        above=True,
        units="orders",
        prop="dominated by one step",
    )
    if "task" in g.columns and len(g):
        tasks = ", ".join(f"{o}: +{t}" for o, t in zip(g["order"], g["task"], strict=True) if t)
        c["detail"] += f"; largest step per order: {tasks}" if tasks else ""
    c["procedure"] = "per order: percentile bootstrap of the dominance share"
    return c


def claims(df: pd.DataFrame, th: Thresholds | None = None) -> pd.DataFrame:
    """The claims table (``CLAIM_COLUMNS``) of a checked cell table."""
    th = th or Thresholds()
    df = merge_seeds(df)
    for c in ("attack", "method", "kind", "weighting", "main", "aux", "vs", "proxy", "order", "stat", "task"):
        if c not in df.columns:
            df[c] = ""
    for c in NUMERIC:
        if c not in df.columns:
            df[c] = np.nan
    paper = _judge(df, th)
    rom_df = as_ratio_of_means(df)
    rom = _judge(rom_df, th) if rom_df is not None else [None] * len(paper)
    for p, r in zip(paper, rom, strict=True):
        if r is None or (r["n"] == 0 and p["n"] > 0):  # its cells carry no ratio of means
            none = "its cells carry no ratio-of-means columns"
            p.update(value_rom=math.nan, lo_rom=math.nan, hi_rom=math.nan, verdict_rom="n/a",
                     detail_rom=none, metric_sensitive=False)  # fmt: skip
        else:
            assert r["claim"] == p["claim"]
            p.update(value_rom=r["value"], lo_rom=r["lo"], hi_rom=r["hi"], verdict_rom=r["verdict"],
                     detail_rom=r["detail"], metric_sensitive=r["verdict"] != p["verdict"])  # fmt: skip
    return pd.DataFrame(paper, columns=CLAIM_COLUMNS)


def _judge(df: pd.DataFrame, th: Thresholds) -> list[dict]:
    """Every claim's row under the statistic in the cell table's value/diff columns."""
    rows = [claim_rq1(df, th), claim_weights_pgd(df, th)]
    rows += claims_adaptive(df, th) + claim_selection(df, th) + claims_proxies(df, th)
    rows.append(claim_dominance(df, th))
    return rows


# ------------------------------------------------------------------------------------------ output
def _md_escape(s: str) -> str:
    return str(s).replace("|", "\\|")


def render_claims(cells: pd.DataFrame, th: Thresholds | None = None) -> tuple[pd.DataFrame, str]:
    """(claims CSV table, Markdown text) from a cell table (``check_cells`` applied here)."""
    th = th or Thresholds()
    table = claims(check_cells(cells), th)
    lines = [
        "# The paper's claims, checked against this study",
        "",
        "Each claim is turned into a statistic with a 95 % interval (studentized bootstrap over test "
        "samples, paired where two cells share samples). **supported**: the whole interval is on the claim's "
        "side of the threshold; **contradicted**: on the other side; **unresolved**: the interval contains "
        "the threshold or no cell measures it; **too few cells**: a correlation over fewer than "
        f"{MIN_CELLS} cells.",
        "",
        "Two statistics: each claim is decided under the paper's relative vulnerability (the mean of "
        "per-sample ratios, which one sample with a tiny clean error can dominate) and under the ratio of "
        "means (sum adv - sum clean) / sum clean. **metric-sensitive**: the two verdicts differ, so the "
        "conclusion depends on the metric. Figure 1's dominance share is not a ratio: the same under both.",
        "",
        f"Thresholds: 'reliably' / 'for each' = a share of at least {th.reliable:g} of the pairs (cells, "
        f"orders); 'correlates' = Pearson r >= {th.min_r:g}; 'as vulnerable' tolerates a reduction of at "
        f"most {th.margin:.0%} of the uniform model's value; 'dominates' = one step carries at least "
        f"{th.dominance:g} of the total change. A pair counts for or against a claim only when its interval "
        "excludes 0 (the margin for 'as vulnerable'); the share's interval counts the undetermined pairs as "
        "lacking (lower end) or having (upper end) the property. Procedure: 'for each pair' and 'at least "
        "one auxiliary task' claims decide each comparison with family-wise 95 % intervals (named per "
        "claim); the other share claims use each comparison's own 95 % interval.",
        "",
        "| claim | the paper's claim (paraphrased) | source | statistic | value [interval] | ratio of means "
        "[interval] | n | verdict | verdict, ratio of means | procedure |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in table.itertuples(index=False):
        iv = S.Interval(r.value, r.lo, r.hi, r.n)
        rom = S.Interval(r.value_rom, r.lo_rom, r.hi_rom, r.n)
        sensitive = " (metric-sensitive)" if r.metric_sensitive else ""
        lines.append(
            f"| {r.claim} | {_md_escape(r.paper)} | {_md_escape(r.source)} | {_md_escape(r.statistic)} | "
            f"{S.format_interval(iv)} | {S.format_interval(rom)} | {r.n} | **{r.verdict}** | "
            f"**{r.verdict_rom}**{sensitive} | {_md_escape(r.procedure)} |"
        )
    lines += ["", "## Rules and details", ""]
    lines += [
        f"- `{r.claim}`: {r.rule}. {r.detail}. Under the ratio of means: {r.detail_rom}."
        for r in table.itertuples(index=False)
    ]
    return table, "\n".join(lines) + "\n"


def run(args) -> int:
    from ..files import write_frame, write_text
    from ..study import OUTPUTS as STUDY_OUTPUTS

    # results/cells/ holds the cell table of every output of the study; only OUTPUTS' rows are judged
    other = [n for n in STUDY_OUTPUTS if n not in OUTPUTS]
    frames = [read_cells(p, ignore=other) for p in args.cells]
    cells = pd.concat([f for f in frames if len(f)] or frames[:1], ignore_index=True)
    th = Thresholds(args.reliable_share, args.min_correlation, args.margin, args.dominance_share)
    for name, v in (("--reliable-share", th.reliable), ("--dominance-share", th.dominance)):
        if not 0 < v <= 1:
            raise ValueError(f"{name} must be in (0, 1], got {v}")
    if not -1 <= th.min_r <= 1:
        raise ValueError(f"--min-correlation must be in [-1, 1], got {th.min_r}")
    if not 0 <= th.margin < float("inf"):
        raise ValueError(f"--margin must be a finite number >= 0, got {th.margin}")
    table, md = render_claims(cells, th)
    write_frame(args.out, table, float_format="%.6g")
    md_path = args.out.with_suffix(".md")
    write_text(md_path, md)
    judged = ", ".join(o for o in OUTPUTS if o in set(cells["output"])) or "none"
    print(f"wrote {args.out} and {md_path} (cells judged: {judged})")
    return 0
