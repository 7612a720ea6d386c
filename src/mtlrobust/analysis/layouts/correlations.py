"""Layout ``correlations`` (Table 3): per row, Pearson r of two series of cells (a proxy and its target)."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd

from .. import stats as S
from ..evaluations import CELL_COLUMNS, Evaluations, per_seed, table_of
from ..layout import Layout, cells_under
from ..markdown import md_table, title

CORRELATION_COLUMNS = ["proxy", "target", "n", "pearson_r", "pearson_r_lo", "pearson_r_hi", "p_value",
                       "fisher_lo", "fisher_hi", "pearson_r_rom", "pearson_r_rom_lo", "pearson_r_rom_hi",
                       "excluded"]  # fmt: skip


def pearson(x, y, label: str = "") -> tuple[int, float, float]:
    """(n, r, p) over the pairs where both values are finite; NaN r/p (and a warning) when undefined."""
    from scipy.stats import pearsonr

    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    n = int(ok.sum())
    if n < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        why = f"only {n} cell(s)" if n < 3 else "a constant input"
        warnings.warn(f"Pearson correlation {label}: undefined with {why}; reported as NaN", stacklevel=2)
        return n, float("nan"), float("nan")
    res = pearsonr(x, y)
    return n, float(res.statistic), float(res.pvalue)


def _model(cell) -> str:
    return f"{cell[0]} at epoch {cell[1]} ({cell[4]})"


def correlations(ev: Evaluations, spec: dict) -> pd.DataFrame:
    """Table 3: Pearson r of each proxy series with its target series, under the paper's statistic and
    under the ratio of means, with two-level bootstrap intervals (cells and test samples resampled
    together, ``stats.pearson_interval``) and the cell-level Fisher-z interval. Cell pairs whose proxy or
    target model does not beat the constant predictor on the cell's task are left out (``excluded``)."""
    rows = []
    for r in spec["rows"]:
        pairs = list(zip(r["x"]["cells"], r["y"]["cells"], strict=True))
        kept = [(a, b) for a, b in pairs if ev.trained(a) and ev.trained(b)]
        out = [_model(c) for a, b in pairs for c in (*per_seed(a), *per_seed(b)) if not ev.trained(c)]
        row = {"proxy": r["proxy"], "target": r["target"], "excluded": "; ".join(dict.fromkeys(out))}
        for suffix, stat in (("", "rel_vuln"), ("_rom", "rel_vuln_ratio_of_means")):
            xv, yv = (stat if r[a]["value"] == "rel_vuln" else r[a]["value"] for a in ("x", "y"))
            xc, yc = [a for a, _ in kept], [b for _, b in kept]
            x, y = [ev.value(c, xv) for c in xc], [ev.value(c, yv) for c in yc]
            n, rho, p = pearson(
                x, y, f"{r['proxy']} vs {r['target']}" + (" (ratio of means)" if suffix else "")
            )
            iv = S.Interval(rho, math.nan, math.nan, n)
            if math.isfinite(rho):
                iv = S.pearson_interval(x, y, ev.series_draws(xc, xv), ev.series_draws(yc, yv))
            row.update(
                {f"pearson_r{suffix}": rho, f"pearson_r{suffix}_lo": iv.lo, f"pearson_r{suffix}_hi": iv.hi}
            )
            if not suffix:
                fz = S.fisher_interval(rho, n)
                row.update({"n": n, "p_value": p, "fisher_lo": fz.lo, "fisher_hi": fz.hi})
        rows.append(row)
    return pd.DataFrame(rows, columns=CORRELATION_COLUMNS)


def correlation_cells(name: str, spec: dict, t: pd.DataFrame) -> pd.DataFrame:
    rows = [{"output": name, "proxy": r.get("key", ""), "setting": f"{r['proxy']} vs {r['target']}",
             "value": v.pearson_r, "lo": v.pearson_r_lo, "hi": v.pearson_r_hi, "n": v.n, "n_seeds": 1,
             "rom": v.pearson_r_rom, "rom_lo": v.pearson_r_rom_lo, "rom_hi": v.pearson_r_rom_hi}
            for r, v in zip(spec["rows"], t.itertuples(index=False), strict=True)]  # fmt: skip
    return pd.DataFrame(rows, columns=[*CELL_COLUMNS, "proxy"])


def correlations_markdown(spec: dict, t: pd.DataFrame) -> str:
    """Table 3's Markdown: r with both intervals, r under the ratio of means, and the cells left out."""
    rows = []
    for r in t.itertuples(index=False):
        boot = S.format_interval(S.Interval(r.pearson_r, r.pearson_r_lo, r.pearson_r_hi, r.n))
        fz = S.format_interval(S.Interval(r.pearson_r, r.fisher_lo, r.fisher_hi, r.n))
        rom = S.format_interval(S.Interval(r.pearson_r_rom, r.pearson_r_rom_lo, r.pearson_r_rom_hi, r.n))
        few = " (too few cells)" if r.n < S.MIN_CELLS else ""
        rows.append([r.proxy, r.target, f"{r.n}{few}", boot, fz.split(" ", 1)[-1] if "[" in fz else "-", rom,
                     S.format_number(r.p_value)])  # fmt: skip
    head = ["proxy", "target", "n cells", "r [95 % two-level bootstrap]", "Fisher-z interval",
            "r, ratio of means [interval]", "p_value"]  # fmt: skip
    out = [md_table(head, rows), spec["note"], ""]
    out.append(
        f"The interval of r: a two-level bootstrap ({S.RESAMPLES} resamples, seed {S.SEED}): in each draw "
        "the cells are resampled with replacement and each cell is recomputed on the same draw of its test "
        "samples, so it covers the choice of cells as well as the test-sample noise; the Fisher-z interval "
        "tanh(atanh(r) +- 1.96 / sqrt(n - 3)) is the cell-level interval for bivariate normal cells. n here "
        f"is the number of cells; below {S.MIN_CELLS} cells a correlation says little (too few cells). Ratio "
        "of means: the same r with every relative vulnerability taken as (sum adv - sum clean) / sum clean."
    )
    dropped = [(f"{r.proxy} vs {r.target}", r.excluded) for r in t.itertuples(index=False) if r.excluded]
    if dropped:
        out += [
            "",
            "Left out (the model does not beat the constant predictor on that task, results/models.csv):",
        ]
        out += [f"- {p}: {e}" for p, e in dropped]
    return "\n".join(out) + "\n"


def render(name: str, ev: Evaluations, spec: dict) -> tuple[pd.DataFrame, str, pd.DataFrame]:
    """(CSV table, Markdown, cell table) of a correlations spec."""
    t = correlations(ev, spec)
    md = f"# {title(spec)}\n\n{correlations_markdown(spec, t)}"
    cells = correlation_cells(name, spec, t)
    ev.check(name)
    return t, md, cells


def cells(spec: dict) -> list[list]:
    return cells_under([s for r in spec["rows"] for s in (r["x"], r["y"])], "cells")


LAYOUT = Layout(cells, table=table_of(render))
