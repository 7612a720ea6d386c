"""Tables rendered outside ``tables.py``: the supplementary's per-encoder tables and ``recommend``.

``TABLES`` maps a spec layout to its writer ``(name, spec, inputs, out_csv)``, which writes ``NAME.csv``
and ``NAME.md`` from the evaluation CSVs of the output's cells and returns its cell table
(``tables.CELL_COLUMNS``); ``tables.write`` hands these layouts over, so the workflow's table rule and
``mtlrobust tables`` render them like any other table.

Layout ``supplementary`` (supplementary Tables 2-6): per encoder, three blocks of rows main task x columns
auxiliary task: ``clean`` (the main task's clean error), ``single`` (relative vulnerability, only the main
task attacked) and ``multi`` (main and auxiliary task attacked); the diagonal is the single-task model. The
CSV has one row per (arch, block, main); the Markdown one table per encoder, as in the supplementary.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import pandas as pd

from .. import files
from . import recommend
from . import stats as S
from .aggregate import read_eval, reduce_eval
from .tables import CELL_COLUMNS

# The supplementary's table number of each encoder (Tables 2-6).
PAPER_TABLE = {"resnet18": 2, "resnet50": 3, "xception": 4, "wide_resnet50_2": 5, "resnet152": 6}
NAN = S.Interval(math.nan, math.nan, math.nan, 0)


class Cells:
    """Reduced values and bootstrap intervals (``stats.CellDraws``) of the cells in some evaluation CSVs."""

    def __init__(self, paths):
        frames = [read_eval(Path(p)) for p in paths]
        self.rows = pd.concat(frames, ignore_index=True) if frames else None
        reduced = pd.concat([reduce_eval(f) for f in frames]) if frames else pd.DataFrame()
        self.values = {
            (r.model_id, int(r.epoch), r.attack, r.attacked, r.task): r for r in reduced.itertuples()
        }
        self.draws = S.CellDraws(self.rows) if frames else None
        self.missing: list[tuple] = []
        self.asked = 0

    def interval(self, cell, value: str) -> S.Interval:
        """``value`` (rel_vuln or clean_error) of a cell with its interval; NaN (recorded) when missing."""
        self.asked += 1
        key = (cell[0], int(cell[1]), *cell[2:])
        if key not in self.values:
            self.missing.append(key)
            return NAN
        rv = self.draws.interval(key)
        if value == "rel_vuln":
            return rv
        v = float(getattr(self.values[key], value))
        return S.interval(v, self.draws.clean_error_draws(key), rv.n, self.draws.level)

    def check(self, name: str) -> None:
        """Warn about missing cells; fail when none was found."""
        if not self.missing:
            return
        shown = "; ".join("/".join(map(str, k)) for k in self.missing[:5])
        if len(self.missing) == self.asked:
            raise ValueError(
                f"{name}: none of its {self.asked} cell(s) is in the evaluation CSVs given, e.g. {shown}; "
                "expected the evaluations of the models and attacks the spec names"
            )
        warnings.warn(f"{name}: {len(self.missing)} cell(s) missing (left empty), e.g. {shown}", stacklevel=2)


def supplementary(cells: Cells, spec: dict) -> tuple[pd.DataFrame, list[list[S.Interval]]]:
    """One row per (arch, block, main task); per auxiliary task its value, then _lo, _hi, _n."""
    rows, ivs = [], []
    for t in spec["tables"]:
        for b in t["blocks"]:
            for r in b["rows"]:
                row_ivs = [NAN if c is None else cells.interval(c, b["value"]) for c in r["cells"]]
                ivs.append(row_ivs)
                rows.append(
                    [
                        t["arch"],
                        b["block"],
                        r["main"],
                        *(x for iv in row_ivs for x in (iv.value, iv.lo, iv.hi, iv.n)),
                    ]
                )
    cols = [f"{c}{s}" for c in spec["columns"] for s in ("", "_lo", "_hi", "_n")]
    return pd.DataFrame(rows, columns=["arch", "block", "main", *cols]), ivs


def supplementary_markdown(table: pd.DataFrame, ivs, spec: dict) -> str:
    """The supplementary's layout: a section per encoder, the single-task model's cells in italics."""
    out = [f"# {spec['title']}\n"]
    head = ["block", "main", *spec["columns"]]
    for arch in dict.fromkeys(table["arch"]):
        number = PAPER_TABLE.get(arch)
        ref = f" (the supplementary's Table {number})" if number else ""
        lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
        for i in (i for i, a in enumerate(table["arch"]) if a == arch):
            block, main = table["block"].iat[i], table["main"].iat[i]
            texts = [S.format_interval(iv) for iv in ivs[i]]
            texts = [
                f"*{x}*" if c == main and x != "-" else x for c, x in zip(spec["columns"], texts, strict=True)
            ]
            lines.append("| " + " | ".join([block, main, *texts]) + " |")
        out.append(f"## {arch}{ref}\n\n" + "\n".join(lines) + "\n")
    out.append(
        f"{spec['note']}\n\nEach value: point estimate [95 % interval], percentile bootstrap over the test "
        f"samples of a cell ({S.RESAMPLES} resamples, seed {S.SEED}).\n"
    )
    return "\n".join(out)


def supplementary_cells(name: str, spec: dict, ivs) -> pd.DataFrame:
    """The long cell table (``tables.CELL_COLUMNS``): one row per relative-vulnerability cell."""
    out, i = [], 0
    for t in spec["tables"]:
        for b in t["blocks"]:
            for r in b["rows"]:
                for aux, cell, iv in zip(spec["columns"], r["cells"], ivs[i], strict=True):
                    if cell is not None and b["value"] == "rel_vuln":
                        out.append({"output": name, "attack": cell[2], "kind": b["block"], "main": r["main"],
                                    "aux": aux, "arch": t["arch"], "epoch": cell[1], "model_id": cell[0],
                                    "value": iv.value, "lo": iv.lo, "hi": iv.hi, "n": iv.n})  # fmt: skip
                i += 1
    return pd.DataFrame(out, columns=CELL_COLUMNS)


def write_supplementary(name: str, spec: dict, inputs, out: Path) -> pd.DataFrame:
    """Write NAME.csv and NAME.md; return the cell table."""
    cells = Cells(inputs)
    table, ivs = supplementary(cells, spec)
    cells.check(name)
    files.write_frame(out, table, float_format="%.6g")
    files.write_text(Path(out).with_suffix(".md"), supplementary_markdown(table, ivs, spec))
    return supplementary_cells(name, spec, ivs)


def write_recommend(name: str, spec: dict, inputs, out: Path) -> pd.DataFrame:
    """``mtlrobust recommend`` on the plan's spec (every cell must be evaluated); returns the cell table:
    the proxy's and the target's value of each (main, aux) candidate (``setting`` proxy / target)."""
    t = recommend.table(recommend.write(spec, list(inputs), Path(out))).set_index(["main", "aux"])
    rows = []
    for pair in spec["pairs"]:
        r = t.loc[(pair["main"], pair["aux"])]
        for side in ("proxy", "target"):
            cell = pair[side]
            rows.append({"output": name, "attack": cell[2], "main": pair["main"], "aux": pair["aux"],
                         "setting": side, "epoch": cell[1], "model_id": cell[0], "value": r[f"{side}_value"],
                         "lo": r[f"{side}_lo"], "hi": r[f"{side}_hi"], "n": r[f"{side}_n"]})  # fmt: skip
    return pd.DataFrame(rows, columns=CELL_COLUMNS)


TABLES = {"supplementary": write_supplementary, "recommend": write_recommend}
