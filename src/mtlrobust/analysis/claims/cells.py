"""The cell table ``mtlrobust claims`` judges: its contract, read and checked here so that no rule meets a
malformed row, its seeds merged and its ratio-of-means view; and results/theory.csv.

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
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from .. import stats as S

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
KEY_COLUMNS = (
    "output", "attack", "method", "norm", "kind", "weighting", "main", "aux", "vs", "proxy", "order", "stat",
    "step", "setting", "arch",
)  # fmt: skip
KINDS = ("single", "multi")  # attack kinds: only the main task attacked, or main and auxiliary task


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


def _at_vulnerability(df: pd.DataFrame) -> pd.Series:
    """table_at's relative-vulnerability rows (not its clean error, cost or masking-check rows)."""
    kind = df["kind"] if "kind" in df.columns else pd.Series("", index=df.index)
    return (df["output"] == "table_at") & kind.isin(KINDS)


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
