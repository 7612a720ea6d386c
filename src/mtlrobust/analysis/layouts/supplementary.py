"""Layout ``supplementary`` (supplementary Tables 2-6): per encoder, three blocks of rows main task x columns
auxiliary task: ``clean`` (the main task's clean error), ``single`` (relative vulnerability, only the main
task attacked) and ``multi`` (main and auxiliary task attacked); the diagonal is the single-task model. The
CSV has one row per (arch, block, main); the Markdown one table per encoder, as in the supplementary.
Relative-vulnerability cells also carry the ratio of means (``_rom``), the median of the per-sample
ratios (``_median``) and the largest ratio's share (``_top_share``), and are marked fragile in the Markdown
as in the grid layout.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import pandas as pd

from .. import stats as S
from ..aggregate import read_eval, reduce_eval
from ..evaluations import CELL_COLUMNS, FRAGILE_SHARE
from ..layout import Layout, cells_under
from ..markdown import FRAGILE_MARK, legend

# The supplementary's table number of each encoder (Tables 2-6).
PAPER_TABLE = {"resnet18": 2, "resnet50": 3, "xception": 4, "wide_resnet50_2": 5, "resnet152": 6}
NAN = S.Interval(math.nan, math.nan, math.nan, 0)
SUFFIXES = ("", "_lo", "_hi", "_n", "_rom", "_rom_lo", "_rom_hi", "_median", "_top_share")


class Cells:
    """Reduced values and bootstrap intervals (``stats.CellDraws``) of the cells in some evaluation CSVs."""

    def __init__(self, paths, fragile_share: float = FRAGILE_SHARE):
        self.fragile_share = fragile_share
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
        """``value`` (rel_vuln, rom: the ratio of means, or clean_error) of a cell with its interval; NaN
        (recorded) when missing."""
        self.asked += 1
        key = (cell[0], int(cell[1]), *cell[2:])
        if key not in self.values:
            self.missing.append(key)
            return NAN
        if value == "rom":
            return self.draws.interval(key, "rom")
        rv = self.draws.interval(key)
        if value == "rel_vuln":
            return rv
        v = float(getattr(self.values[key], value))
        return S.interval(v, self.draws.clean_error_draws(key), rv.n, self.draws.level)

    def shape(self, cell) -> tuple[float, float]:
        """(median, largest share) of a cell's per-sample ratios (``stats.shape``); NaN when missing."""
        key = (cell[0], int(cell[1]), *cell[2:])
        return self.draws.shape(key) if key in self.values else (math.nan, math.nan)

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


def supplementary(cells: Cells, spec: dict) -> tuple[pd.DataFrame, list[list[dict]]]:
    """One row per (arch, block, main task); per auxiliary task its value, _lo, _hi, _n and, for relative
    vulnerabilities, the ratio of means, median and largest share (``SUFFIXES``)."""
    rows, recs = [], []
    for t in spec["tables"]:
        for b in t["blocks"]:
            for r in b["rows"]:
                row_recs = [_record(cells, c, b["value"]) for c in r["cells"]]
                recs.append(row_recs)
                rows.append([t["arch"], b["block"], r["main"], *(x for rec in row_recs for x in _flat(rec))])
    cols = [f"{c}{s}" for c in spec["columns"] for s in SUFFIXES]
    return pd.DataFrame(rows, columns=["arch", "block", "main", *cols]), recs


def _record(cells: Cells, cell, value: str) -> dict:
    if cell is None:
        return {"iv": NAN, "rom": NAN, "median": math.nan, "top_share": math.nan, "fragile": False}
    iv = cells.interval(cell, value)
    if value != "rel_vuln" or not math.isfinite(iv.value):
        return {"iv": iv, "rom": NAN, "median": math.nan, "top_share": math.nan, "fragile": False}
    median, top = cells.shape(cell)
    rom = cells.interval(cell, "rom")
    return {
        "iv": iv,
        "rom": rom,
        "median": median,
        "top_share": top,
        "fragile": bool(top > cells.fragile_share),
    }


def _flat(rec: dict) -> tuple:
    iv, rom = rec["iv"], rec["rom"]
    return (iv.value, iv.lo, iv.hi, iv.n, rom.value, rom.lo, rom.hi, rec["median"], rec["top_share"])


def supplementary_markdown(table: pd.DataFrame, recs, spec: dict, cells: Cells) -> str:
    """The supplementary's layout: a section per encoder, the single-task model's cells in italics."""
    out = [f"# {spec['title']}\n"]
    head = ["block", "main", *spec["columns"]]
    for arch in dict.fromkeys(table["arch"]):
        number = PAPER_TABLE.get(arch)
        ref = f" (the supplementary's Table {number})" if number else ""
        lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
        for i in (i for i, a in enumerate(table["arch"]) if a == arch):
            block, main = table["block"].iat[i], table["main"].iat[i]
            texts = []
            for c, rec in zip(spec["columns"], recs[i], strict=True):
                x = S.format_interval(rec["iv"])
                x = f"*{x}*" if c == main and x != "-" else x
                texts.append(f"{x} {FRAGILE_MARK}" if rec["fragile"] else x)
            lines.append("| " + " | ".join([block, main, *texts]) + " |")
        out.append(f"## {arch}{ref}\n\n" + "\n".join(lines) + "\n")
    fragile = any(rec["fragile"] for row in recs for rec in row)
    out.append(
        f"{spec['note']}\n\nEach value: point estimate [95 % interval], studentized bootstrap over the test "
        f"samples of a cell ({S.RESAMPLES} resamples, seed {S.SEED}). {legend((), fragile, cells)}\n"
    )
    return "\n".join(out)


def supplementary_cells(name: str, spec: dict, recs) -> pd.DataFrame:
    """The long cell table (``evaluations.CELL_COLUMNS``): one row per relative-vulnerability cell."""
    out, i = [], 0
    for t in spec["tables"]:
        for b in t["blocks"]:
            for r in b["rows"]:
                for aux, cell, rec in zip(spec["columns"], r["cells"], recs[i], strict=True):
                    if cell is not None and b["value"] == "rel_vuln":
                        iv, rom = rec["iv"], rec["rom"]
                        out.append({"output": name, "attack": cell[2], "kind": b["block"], "main": r["main"],
                                    "aux": aux, "arch": t["arch"], "epoch": cell[1], "model_id": cell[0],
                                    "value": iv.value, "lo": iv.lo, "hi": iv.hi, "n": iv.n, "rom": rom.value,
                                    "rom_lo": rom.lo, "rom_hi": rom.hi, "median": rec["median"],
                                    "top_share": rec["top_share"], "fragile": rec["fragile"]})  # fmt: skip
                i += 1
    return pd.DataFrame(out, columns=CELL_COLUMNS)


def table(name: str, spec: dict, inputs, *, fragile_share=FRAGILE_SHARE, models=None):
    """(CSV table, Markdown, cell table); every cell is shown (``models`` unused)."""
    found = Cells(inputs, fragile_share)
    t, recs = supplementary(found, spec)
    found.check(name)
    return t, supplementary_markdown(t, recs, spec, found), supplementary_cells(name, spec, recs)


def cells(spec: dict) -> list[list]:
    return cells_under([r for t in spec["tables"] for b in t["blocks"] for r in b["rows"]], "cells")


LAYOUT = Layout(cells, table=table)
