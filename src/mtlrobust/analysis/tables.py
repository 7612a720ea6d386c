"""``mtlrobust tables``: render one table of the study plan from the evaluation CSVs of its cells.

The plan (``mtlrobust.study``) gives each output a spec: its layout, labels and cells, a cell being
``[model_id, epoch, attack, attacked, task]``. This module reads the per-sample evaluation CSVs of those
cells, reduces them (``aggregate.reduce_eval``) and fills the layout; it never recomputes model ids. Every
table is a CSV plus a Markdown rendering next to it (``NAME.md``). Missing cells are left empty with a
warning; a table with no cell at all is an error.

Layouts:

* ``grid`` (Tables 1, 2): rows = label columns (attack kind or attack, main task); columns = weighting:aux.
* ``correlations`` (Table 3): per row, Pearson r of two series of cells (a proxy and its target).
* ``sweep`` (RQ1): one row per (setting, main, aux, attack kind) with the single-task model's value; the
  Markdown adds the fraction of less vulnerable pairs per setting and attack kind.
"""

from __future__ import annotations

import argparse
import json
import math
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from .. import files
from .aggregate import KEY, read_eval, reduce_eval

SWEEP_COLUMNS = ["sweep", "value", "attack", "arch", "epoch", "main", "aux", "kind", "rel_vuln",
                 "single_task_rel_vuln", "less_vulnerable"]  # fmt: skip
_PER_SAMPLE = ["sample", "view", "clean_loss", "adv_loss", "clean_error", "adv_error"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--spec", required=True, help="the table's spec from the plan: a JSON file or JSON text")
    p.add_argument("--inputs", nargs="+", required=True, type=Path, help="evaluation CSVs of its cells")
    p.add_argument("--out", required=True, type=Path, help="results/NAME.csv (NAME.md is written next to it)")


# ------------------------------------------------------------------------------------------ the cells
def _key(cell) -> tuple:
    model_id, epoch, attack, attacked, task = cell
    return (model_id, int(epoch), attack, attacked, task)


class Evaluations:
    """The evaluation CSVs of an output: reduced values and per-sample rows, by cell."""

    def __init__(self, paths):
        self.samples = {}
        reduced = []
        for p in paths:
            df = read_eval(Path(p))
            reduced.append(reduce_eval(df))
            for key, g in df.groupby(KEY, sort=False):
                self.samples[_key(key)] = g
        self.reduced = pd.concat(reduced, ignore_index=True) if reduced else pd.DataFrame(columns=KEY)
        keys = self.reduced[KEY].itertuples(index=False, name=None)
        self.rows = {_key(k): i for i, k in enumerate(keys)}
        self.missing: list[tuple] = []
        self.asked = 0

    def value(self, cell, column: str = "rel_vuln") -> float:
        """The reduced ``column`` of one cell (NaN, recorded as missing, when it was not evaluated)."""
        self.asked += 1
        i = self.rows.get(_key(cell))
        if i is None:
            self.missing.append(_key(cell))
            return float("nan")
        v = self.reduced[column].iat[i]
        return float(v) if v == v else float("nan")

    def per_sample(self, cell) -> pd.DataFrame:
        """Per-sample rows of one cell (sample index, view, clean/adv losses and errors), by sample."""
        g = self.samples.get(_key(cell))
        if g is None:
            return pd.DataFrame(columns=_PER_SAMPLE)
        return g[_PER_SAMPLE].sort_values("sample", kind="stable").reset_index(drop=True)

    def check(self, name: str) -> None:
        """Warn about missing cells; fail when none of the asked cells was found."""
        if not self.missing:
            return
        shown = "; ".join("/".join(map(str, k)) for k in self.missing[:5])
        if len(self.missing) == self.asked:
            raise ValueError(
                f"{name}: none of its {self.asked} cell(s) is in the evaluation CSVs given, e.g. {shown}; "
                "expected the evaluations of the models and attacks the spec names"
            )
        warnings.warn(
            f"{name}: {len(self.missing)} cell(s) missing from the evaluation CSVs (left empty), "
            f"e.g. {shown}",
            stacklevel=2,
        )


# ------------------------------------------------------------------------------------------ layouts
def grid(ev: Evaluations, spec: dict) -> pd.DataFrame:
    """Tables 1 and 2: one row per row label, one column per cell column."""
    value = spec.get("value", "rel_vuln")
    rows = []
    for r in spec["rows"]:
        row = dict(zip(spec["label_columns"], r["labels"], strict=True))
        for col, cell in zip(spec["columns"], r["cells"], strict=True):
            row[col] = float("nan") if cell is None else ev.value(cell, value)
        rows.append(row)
    return pd.DataFrame(rows, columns=[*spec["label_columns"], *spec["columns"]])


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


def correlations(ev: Evaluations, spec: dict) -> pd.DataFrame:
    """Table 3: Pearson r of each proxy series with its target series."""
    rows = []
    for r in spec["rows"]:
        x = [ev.value(c, r["x"]["value"]) for c in r["x"]["cells"]]
        y = [ev.value(c, r["y"]["value"]) for c in r["y"]["cells"]]
        n, rho, p = pearson(x, y, f"{r['proxy']} vs {r['target']}")
        rows.append({"proxy": r["proxy"], "target": r["target"], "n": n, "pearson_r": rho, "p_value": p})
    return pd.DataFrame(rows, columns=["proxy", "target", "n", "pearson_r", "p_value"])


def sweep(ev: Evaluations, spec: dict) -> pd.DataFrame:
    """Long table of one RQ1 sweep: each pair model's cell next to its single-task model's."""
    rows = []
    for r in spec["rows"]:
        v, base = ev.value(r["cell"]), ev.value(r["base"])
        less = "" if math.isnan(v) or math.isnan(base) else bool(v < base)
        rows.append({"sweep": spec["sweep"], "value": r["value"], "attack": r["attack"], "arch": r["arch"],
                     "epoch": int(r["epoch"]), "main": r["main"], "aux": r["aux"], "kind": r["kind"],
                     "rel_vuln": v, "single_task_rel_vuln": base, "less_vulnerable": less})  # fmt: skip
    return pd.DataFrame(rows, columns=SWEEP_COLUMNS)


def sweep_summary(long: pd.DataFrame) -> pd.DataFrame:
    """Per setting and attack kind: pairs compared, fraction whose multi-task model is less vulnerable."""
    rows = []
    for (value, kind), g in long.groupby(["value", "kind"], sort=False):
        known = g[g["less_vulnerable"] != ""]
        n = len(known)
        frac = float(np.mean(known["less_vulnerable"].astype(bool))) if n else float("nan")
        rows.append({"value": value, "kind": kind, "pairs": n, "fraction_less_vulnerable": frac})
    return pd.DataFrame(rows, columns=["value", "kind", "pairs", "fraction_less_vulnerable"])


def sweep_wide(long: pd.DataFrame) -> pd.DataFrame:
    """One row per (main, aux) pair; per setting: the single-task model, single- and multi-task attacks."""
    rows = {}
    for r in long.itertuples(index=False):
        row = rows.setdefault((r.main, r.aux), {"main": r.main, "aux": r.aux})
        row[f"single-task model {r.value}"] = r.single_task_rel_vuln
        row[f"{r.kind} {r.value}"] = r.rel_vuln
    return pd.DataFrame(list(rows.values()))


# ------------------------------------------------------------------------------------------ rendering
def _fmt(v) -> str:
    if isinstance(v, float | np.floating):
        if math.isnan(v):
            return "-"
        return f"{v:.2f}" if v == 0 or 0.01 <= abs(v) < 1e4 else f"{v:.3g}"
    return str(v)


def markdown(df: pd.DataFrame, emphasize=None) -> str:
    """A GitHub Markdown table; ``emphasize(row_index, column)`` -> True puts that cell in italics."""
    cols = list(df.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for i, r in enumerate(df.itertuples(index=False)):
        cells = []
        for c, v in zip(cols, r, strict=True):
            s = _fmt(v)
            cells.append(f"*{s}*" if emphasize and emphasize(i, c) and s != "-" else s)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def render(name: str, ev: Evaluations, spec: dict) -> tuple[pd.DataFrame, str]:
    """(CSV table, Markdown text) of one output's spec."""
    layout = spec.get("layout")
    if layout == "grid":
        t = grid(ev, spec)
        emph = [set(r.get("emphasize", ())) for r in spec["rows"]]
        md = f"# {spec['title']}\n\n{markdown(t, lambda i, c: c in emph[i])}\n{spec['note']}\n"
    elif layout == "correlations":
        t = correlations(ev, spec)
        md = f"# {spec['title']}\n\n{markdown(t)}\n{spec['note']}\n"
    elif layout == "sweep":
        t = sweep(ev, spec)
        md = (
            f"# {spec['title']}\n\n## Fraction of (main, auxiliary) pairs whose multi-task model is less "
            f"vulnerable on the main task than the single-task model\n\n{markdown(sweep_summary(t))}\n"
            f"## Relative vulnerability of the main task\n\n{markdown(sweep_wide(t))}"
        )
    else:
        raise ValueError(
            f"{name}: spec layout {layout!r} is not a table; expected grid, correlations or sweep"
        )
    ev.check(name)
    return t, md


def load_spec(value: str) -> dict:
    """A spec given as a JSON file or as JSON text (``--spec``)."""
    text = Path(value).read_text() if not value.lstrip().startswith("{") else value
    try:
        spec = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"--spec {value[:200]!r}: not valid JSON ({e})") from None
    if not isinstance(spec, dict):
        raise ValueError(f"--spec {value[:200]!r}: expected a JSON object")
    return spec


def write(name: str, spec: dict, inputs, out: Path) -> None:
    """Render the table ``name`` of ``spec`` from the evaluation CSVs ``inputs`` into out (.csv and .md)."""
    out = Path(out)
    table, md = render(name, Evaluations(inputs), spec)
    files.write_frame(out, table, float_format="%.6g")
    files.write_text(out.with_suffix(".md"), md)


def run(args) -> int:
    write(args.out.stem, load_spec(args.spec), args.inputs, args.out)
    print(f"wrote {args.out} and {args.out.with_suffix('.md')}")
    return 0
