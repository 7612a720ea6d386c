"""``mtlrobust claims``: a verdict on each claim the paper makes from Tables 1-3, Figure 1 and the RQ1 sweeps.

Input: one or more "cell" CSVs (concatenated), one row per table cell or per cell and comparison:

===============  ======================================================================================
column           meaning
===============  ======================================================================================
output           ``table1``, ``table2``, ``table3``, ``figure1``, ``rq1_norm``, ``rq1_eps``, ``rq1_arch``
                 (``OUTPUTS``; required, all rows; ``mtlrobust claims`` drops the rows of the study's other
                 outputs first, so results/cells/*.csv can be given)
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
                 study's PGD at the same eps and steps); table_at also ``standard`` (the same model trained
                 without adversarial examples). One row per comparison; empty ``vs`` = no diff.
                 The rq1_* sweeps: one ``single_task`` comparison per (setting, main, aux, kind)
setting, arch    rq1_*: the sweep's setting label (rq1_norm: ``linf``/``l2``/``l2_matched``; rq1_eps: the
                 eps, e.g. ``8/255``; rq1_arch: the encoder) and the encoder; table3: what it compared
obj_diff,        table2 ``pgd`` comparisons: the paired difference of the attacked objective (summed adv
obj_diff_lo/hi   losses of the attacked tasks, what the attacks maximise); ``rq3_stronger_than_pgd:*``
variant          table2: the WGD variant an attack ran (``balanced``/``paper``; '' for other methods)
proxy            table3: ``epochs`` (early-stopped vs fully trained), ``arch`` (surrogate vs target
                 encoder) or ``clean`` (clean error vs relative vulnerability); value = Pearson r with
                 its interval (``stats.pearson_interval``), n = cells
order, stat,     figure1: ``order`` = letters of the enabled order; rows with ``stat`` = ``dominance``
task, step       carry ``stats.dominance_share`` of that order (steps after the first task) with its
                 interval, ``task`` the letter of the largest step; ``step``/``step_1N`` rows the change of
                 E[dL] when task ``task`` is added at ``step`` (1 = the first task alone, not a step)
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
Figure 1's steps and dominance share, Theorem 4's bound and the attacked objective are not ratio statistics:
the same under both. A correlation over fewer than ``stats.MIN_CELLS`` (10) cells is judged "too few cells".

One rule per claim, as the paper words it: RQ1 per attack kind; L2 per L2 attack of rq1_norm (the paper's
budget and the budget-matched one); eps > 4/255 per attack kind; ResNet50/152 pairs under single-task
attacks; "stronger than PGD" on the attacked objective and on the main task's error, each single-task cell
once; Figure 1 on the steps after the first task; Theorem 4 against results/theory.csv (``--theory``).
Thresholds: ``Thresholds``, from the config's ``claims:`` section (``--config``), the flags overriding.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from . import stats as S

OUTPUTS = ("table1", "table2", "table3", "figure1", "rq1_norm", "rq1_eps", "rq1_arch", "table_at")
_SWEEP = ("attack", "kind", "main", "aux", "setting", "vs", "diff", "diff_lo", "diff_hi")
NEEDS = {
    "table1": ("attack", "kind", "weighting", "main", "aux", "vs", "diff", "diff_lo", "diff_hi"),
    "table2": ("attack", "method", "weighting", "main", "aux", "vs", "diff", "diff_lo", "diff_hi"),
    "table3": ("proxy",),
    "figure1": ("order", "stat"),
    "rq1_norm": (*_SWEEP, "norm"),
    "rq1_eps": _SWEEP,
    "rq1_arch": (*_SWEEP, "arch"),
    "table_at": ("attack", "kind", "main", "aux", "setting", "vs", "diff", "diff_lo", "diff_hi"),
}
NUMERIC = ("value", "lo", "hi", "n", "diff", "diff_lo", "diff_hi", "rom", "rom_lo", "rom_hi", "rom_diff",
           "rom_diff_lo", "rom_diff_hi", "diff_fw_lo", "diff_fw_hi", "rom_diff_fw_lo", "rom_diff_fw_hi",
           "fw_k", "median", "top_share", "obj_diff", "obj_diff_lo", "obj_diff_hi")  # fmt: skip
STRING_COLUMNS = ("attack", "method", "norm", "kind", "weighting", "main", "aux", "vs", "proxy", "order",
                  "stat", "task", "setting", "arch", "variant", "step")  # fmt: skip
# the paper's statistic's column -> the ratio of means' column (``as_ratio_of_means``)
ROM_COLUMNS = {"value": "rom", "lo": "rom_lo", "hi": "rom_hi", "diff": "rom_diff", "diff_lo": "rom_diff_lo",
               "diff_hi": "rom_diff_hi", "diff_fw_lo": "rom_diff_fw_lo",
               "diff_fw_hi": "rom_diff_fw_hi"}  # fmt: skip
PER_COMPARISON = "per comparison: each paired 95 % interval on its own"
KEY_COLUMNS = (
    "output", "attack", "method", "norm", "kind", "weighting", "main", "aux", "vs", "proxy", "order", "stat",
    "step", "setting", "arch",
)  # fmt: skip
KINDS = ("single", "multi")  # attack kinds: only the main task attacked, or main and auxiliary task
EPS_WEAK = 4 / 255  # "for eps > 4/255 multi-task learning does not provide reliable robustness"
DEEP_ARCHS = ("resnet50", "resnet152")  # "80 % of the multi-task models using Resnet50 and Resnet152"
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
# the paper's text per proxy; {setting}: what the study compared (its own epochs and encoders)
PROXIES = {
    "epochs": "early stopping {how} with the fully trained model's vulnerability (here {setting}; the "
    "paper: 50 "
    "vs 150 epochs, r = 0.55)",
    "arch": "a surrogate encoder {how} with the target encoder (here {setting}; the paper: ResNet18 vs "
    "ResNet50, "
    "r = 0.94)",
    "clean": "clean performance {how} with robustness (here {setting}; the paper: r = 0.98)",
}
VERY_STRONG = (
    "arch",
    "clean",
)  # "the surrogate encoder and the clean performance achieve a very strong correlation"


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


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--cells",
        nargs="+",
        required=True,
        type=Path,
        help="cell CSVs, e.g. results/cells/*.csv (see the module docstring); the claims judge the rows of "
        f"{', '.join(OUTPUTS)} and ignore those of the study's other outputs (figure1_orders, ...)",
    )
    p.add_argument(
        "--out", required=True, type=Path, help="results/claims.csv (claims.md is written next to it)"
    )
    p.add_argument("--theory", type=Path, help="results/theory.csv: Theorem 4's bounds (rq2_theorem4_bound)")
    p.add_argument(
        "--config",
        type=Path,
        help="a study config whose claims: section gives the thresholds (flags override)",
    )
    p.add_argument(
        "--data-source", choices=("synthetic", "taskonomy"), help="the study's dataset.source (claims.md "
        "says "
        "that verdicts on synthetic data say nothing about Taskonomy)",
    )  # fmt: skip
    d = Thresholds()
    helps = {"reliable_share": "share for 'reliably'/'for each'", "min_correlation": "smallest r that "
             "'correlates'", "margin": "relative reduction 'as vulnerable' allows", "dominance_share":
             "share one step must carry", "very_strong_correlation": "smallest r of a 'very strong' "
             "correlation", "often_share": "share of cases for 'often'", "more_vulnerable_share": "share of "
             "ResNet50/152 pairs for '80 % are more vulnerable'"}  # fmt: skip
    for key, field in CONFIG_KEYS.items():
        p.add_argument(
            f"--{key.replace('_', '-')}", type=float, default=None,
            help=f"{helps[key]} (default: the config's claims.{key}, else {getattr(d, field):g})",
        )  # fmt: skip


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
    ratio = df["output"].isin(["table1", "table2", "table3"]) | _at_vulnerability(df)
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


def _once(g: pd.DataFrame) -> pd.DataFrame:
    """Each cell once: a grid repeats the single-task model (aux = main) in every weighting column."""
    single = g["aux"] == g["main"]
    return g[~single | ~g.duplicated(["attack", "main", "aux", "kind", "vs"])]


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
    from ..attacks import METHODS

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


def claims_proxies(df: pd.DataFrame, th: Thresholds) -> list[dict]:
    """Table 3: each proxy correlates (r >= min_r); the surrogate encoder and the clean error correlate
    'very strongly' (r >= very_strong_r), as the paper states for its 0.94 and 0.98."""
    t3 = _rows(df, "table3")
    out = []
    for proxy, paper in PROXIES.items():
        checks = [("", th.min_r, "correlates")]
        if proxy in VERY_STRONG:
            checks.append(("_very_strong", th.very_strong_r, "correlates very strongly"))
        g = t3[t3["proxy"] == proxy]
        setting = g["setting"].iloc[0] if len(g) and g["setting"].iloc[0] else "not in this study"
        for suffix, t, how in checks:
            rule = (
                f"r >= {t:g}: supported if the interval of r lies at or above it, contradicted if below; "
                f"'too few cells' below {S.MIN_CELLS} cells"
            )
            if g.empty:
                v, lo, hi, n, det = math.nan, math.nan, math.nan, 0, "no table3 row for this proxy"
            else:
                r = g.iloc[0]
                v, lo, hi = r.value, r.lo, r.hi
                n, det = int(r.n) if r.n == r.n else 0, f"over {r.n:.0f} cells"
            decided = verdict(lo, hi, t, True) if n >= S.MIN_CELLS or g.empty else "too few cells"
            out.append(
                _claim(
                    f"rq4_proxy{suffix}:{proxy}",
                    paper.format(setting=setting, how=how),
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


# ------------------------------------------------------------------------------------------ table_at
def _at_vulnerability(df: pd.DataFrame) -> pd.Series:
    """table_at's relative-vulnerability rows (not its clean error, cost or masking-check rows)."""
    kind = df["kind"] if "kind" in df.columns else pd.Series("", index=df.index)
    return (df["output"] == "table_at") & kind.isin(KINDS)


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


def claims(
    df: pd.DataFrame, th: Thresholds | None = None, theory: pd.DataFrame | None = None
) -> pd.DataFrame:
    """The claims table (``CLAIM_COLUMNS``) of a checked cell table (``theory``: results/theory.csv)."""
    th = th or Thresholds()
    df = merge_seeds(df)
    for c in STRING_COLUMNS:
        if c not in df.columns:
            df[c] = ""
    for c in NUMERIC:
        if c not in df.columns:
            df[c] = np.nan
    paper = _judge(df, th, theory)
    rom_df = as_ratio_of_means(df)
    rom = _judge(rom_df, th, theory) if rom_df is not None else [None] * len(paper)
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


def _judge(df: pd.DataFrame, th: Thresholds, theory: pd.DataFrame | None = None) -> list[dict]:
    """Every claim's row under the statistic in the cell table's value/diff columns."""
    rows = claims_rq1(df, th) + claims_sweeps(df, th) + [claim_weights_pgd(df, th)]
    rows += claims_adaptive(df, th) + claim_selection(df, th) + claims_proxies(df, th)
    rows += claims_figure1(df, th, theory)
    rows += claims_adversarial(df, th) if (df["output"] == "table_at").any() else []
    return rows


# ------------------------------------------------------------------------------------------ output
def _md_escape(s: str) -> str:
    return str(s).replace("|", "\\|")


def render_claims(
    cells: pd.DataFrame, th: Thresholds | None = None, theory: pd.DataFrame | None = None, source: str = ""
) -> tuple[pd.DataFrame, str]:
    """(claims CSV table, Markdown text) from a cell table (``check_cells`` applied here); ``theory`` =
    results/theory.csv, ``source`` = the study's dataset.source (``synthetic``: claims.md says so)."""
    th = th or Thresholds()
    table = claims(check_cells(cells), th, theory)
    lines = [
        "# The paper's claims, checked against this study",
        "",
    ]
    if source == "synthetic":
        lines += [
            "**Synthetic data.** These verdicts are on the study's synthetic scenes, not on Taskonomy: they "
            "check the pipeline and the statistics and say nothing about whether the paper's findings "
            "hold on "
            "Taskonomy.",
            "",
        ]
    lines += [
        "Each claim is turned into a statistic with a 95 % interval (studentized bootstrap over test "
        "samples, paired where two cells share samples). **supported**: the whole interval is on the claim's "
        "side of the threshold; **contradicted**: on the other side; **unresolved**: the interval contains "
        "the threshold or no cell measures it; **too few cells**: a correlation over fewer than "
        f"{S.MIN_CELLS} cells. n: the pairs (cells, orders, steps) behind a share, the cells behind a "
        "correlation.",
        "",
        "Two statistics: each claim is decided under the paper's relative vulnerability (the mean of "
        "per-sample ratios, which one sample with a tiny clean error can dominate) and under the ratio of "
        "means (sum adv - sum clean) / sum clean. **metric-sensitive**: the two verdicts differ, so the "
        "conclusion depends on the metric. Figure 1's steps and dominance, Theorem 4's bound and the "
        "attacked "
        "objective are not ratios: the same under both.",
        "",
        f"Thresholds (config section claims:): 'reliably' / 'for each' = a share of at least {th.reliable:g} "
        f"of the pairs (cells, orders); 'correlates' = Pearson r >= {th.min_r:g}, 'very strong' = r >= "
        f"{th.very_strong_r:g}; 'as vulnerable' tolerates a reduction of at most {th.margin:.0%} of the "
        f"uniform model's value; 'dominates' = one step after the first task carries at least "
        f"{th.dominance:g} of the total change; 'often' / 'in some orders' = a share of at least "
        f"{th.often:g}; "
        f"'80 % more vulnerable' = a share of at least {th.more_vulnerable:g}. A pair counts for or "
        f"against a "
        "claim only when its interval excludes 0 (the margin for 'as vulnerable', the bound for Theorem 4); "
        "the share's interval counts the undetermined pairs as lacking (lower end) or having (upper end) the "
        "property. Procedure: 'for each pair' and 'at least one auxiliary task' claims decide each "
        "comparison "
        "with family-wise 95 % intervals (named per claim); the other share claims use each comparison's own "
        "95 % interval.",
        "",
        "| claim | the paper's claim (paraphrased) | source | statistic | value [interval] | ratio of means "
        "[interval] | n | verdict | verdict, ratio of means | procedure |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    measured = table[table["n"] > 0]
    for r in measured.itertuples(index=False):
        iv = S.Interval(r.value, r.lo, r.hi, r.n)
        rom = S.Interval(r.value_rom, r.lo_rom, r.hi_rom, r.n)
        sensitive = " (metric-sensitive)" if r.metric_sensitive else ""
        lines.append(
            f"| {r.claim} | {_md_escape(r.paper)} | {_md_escape(r.source)} | {_md_escape(r.statistic)} | "
            f"{S.format_interval(iv)} | {S.format_interval(rom)} | {r.n} | **{r.verdict}** | "
            f"**{r.verdict_rom}**{sensitive} | {_md_escape(r.procedure)} |"
        )
    unmeasured = table.loc[table["n"] == 0, "claim"]
    if len(unmeasured):  # kept in the CSV (verdict unresolved, n = 0); a table row each would hide the rest
        lines += ["", "Not measured by this study (no cell of their source output): "
                  + ", ".join(f"`{c}`" for c in unmeasured) + "."]  # fmt: skip
    lines += ["", "## Rules and details", ""]
    lines += [
        f"- `{r.claim}`: {r.rule}. {r.detail}. Under the ratio of means: {r.detail_rom}."
        for r in measured.itertuples(index=False)
    ]
    return table, "\n".join(lines) + "\n"


def read_theory(path: Path | None) -> pd.DataFrame | None:
    """results/theory.csv (``mtlrobust theory``), or None when not given."""
    if path is None:
        return None
    try:
        df = pd.read_csv(path, dtype={"order": str, "weighting": str}, keep_default_na=False)
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as e:
        raise ValueError(f"{path}: cannot read the theory CSV: {e}") from None
    lack = [c for c in ("quantity", "order", "step", "weighting", "value", "bound") if c not in df.columns]
    if lack:
        raise ValueError(f"{path}: not a theory CSV (mtlrobust theory), missing column(s) {lack}")
    return df


def config_thresholds(path: Path | None) -> dict:
    """The ``claims:`` section of a study config (schema-checked, defaults filled), {} without one."""
    if path is None:
        return {}
    from .. import study

    return study.validated(study.read(path)[0])["claims"]


def run(args) -> int:
    from ..files import write_frame, write_text
    from ..study import OUTPUTS as STUDY_OUTPUTS

    # results/cells/ holds the cell table of every output of the study; only OUTPUTS' rows are judged
    other = [n for n in STUDY_OUTPUTS if n not in OUTPUTS]
    frames = [read_cells(p, ignore=other) for p in args.cells]
    cells = pd.concat([f for f in frames if len(f)] or frames[:1], ignore_index=True)
    flags = {k: getattr(args, k, None) for k in CONFIG_KEYS}
    th = thresholds(config_thresholds(getattr(args, "config", None)), flags)
    theory = read_theory(getattr(args, "theory", None))
    table, md = render_claims(cells, th, theory, getattr(args, "data_source", None) or "")
    write_frame(args.out, table, float_format="%.6g")
    md_path = args.out.with_suffix(".md")
    write_text(md_path, md)
    judged = ", ".join(o for o in OUTPUTS if o in set(cells["output"])) or "none"
    print(f"wrote {args.out} and {md_path} (cells judged: {judged})")
    return 0
