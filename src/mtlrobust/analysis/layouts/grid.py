"""Layout ``grid`` (Tables 1, 2, table_sets): rows = label columns (attack kind or attack, main task);
columns = weighting:aux. Each comparison the table invites is marked only when its paired interval
excludes 0."""

from __future__ import annotations

import math

import pandas as pd

from .. import stats as S
from ..evaluations import CELL_COLUMNS, NAN, Evaluations, per_seed, table_of
from ..layout import Layout, cells_under
from ..markdown import FRAGILE_MARK, interval_note, legend, mark, md_table, title

GRID_SUFFIXES = ("", "_lo", "_hi", "_n", "_rom", "_rom_lo", "_rom_hi", "_median", "_top_share")


def grid_records(ev: Evaluations, spec: dict) -> list[dict]:
    """One record per grid cell: labels, the cell, its interval, ratio of means, shape, and its comparisons
    (dicts: ``vs``, per-comparison and family-wise intervals under both statistics)."""
    out = []
    columns = spec["columns"]
    for i, r in enumerate(spec["rows"]):
        main = r["labels"][-1]
        by_col = dict(zip(columns, r["cells"], strict=True))
        pgd = dict(zip(columns, r.get("pgd_cells") or [None] * len(columns), strict=True))
        std = dict(zip(columns, r.get("std_cells") or [None] * len(columns), strict=True))
        for col in columns:
            weighting, aux = col.split(":", 1)
            cell = by_col[col]
            iv = NAN if cell is None else ev.interval(cell)
            rom = NAN if cell is None else ev.interval(cell, "rom")
            shape = (math.nan, math.nan) if cell is None else ev.shape(cell)
            comps = []
            if cell is not None and ev.has(cell):
                other = []
                diag = by_col.get(f"{weighting}:{main}")
                if aux != main and diag is not None and ev.has(diag):
                    other.append(("single_task", diag))
                uni = by_col.get(f"uniform:{aux}")
                if weighting != "uniform" and aux != main and uni is not None and ev.has(uni):
                    other.append(("uniform", uni))
                if pgd[col] is not None and ev.has(pgd[col]):
                    other.append(("pgd", pgd[col]))
                if std[col] is not None and ev.has(std[col]):
                    other.append(("standard", std[col]))
                comps = [
                    {"vs": vs, **{s: ev.diff_boot(cell, o, s) for s in S.CellDraws.STATS}} for vs, o in other
                ]
                for c, (vs, o) in zip(comps, other, strict=True):
                    if vs == "pgd":  # "stronger than PGD" is also judged on what the attacks maximise
                        c["obj_iv"] = ev.objective_diff(cell, o)
            out.append({"row": i, "column": col, "labels": r["labels"], "weighting": weighting, "aux": aux,
                        "main": main, "kind": r.get("kind", ""), "attack": r.get("attack", ""), "cell": cell,
                        "iv": iv, "rom": rom, "median": shape[0], "top_share": shape[1],
                        "fragile": cell is not None and shape[1] > ev.fragile_share,
                        "comparisons": comps})  # fmt: skip
    comps = [c for rec in out for c in rec["comparisons"]]
    if comps:  # (no cell found: the caller's check names the missing cells)
        _family_wise(comps, ev.draws.level)
    return out


def _family_wise(comps: list[dict], level: float) -> None:
    """Per-comparison intervals and, per kind of comparison (``vs``) in the table, family-wise ones
    (``stats.simultaneous`` over the kind's ``fw_k`` comparisons, under each statistic), added in place."""
    for vs in dict.fromkeys(c["vs"] for c in comps):
        fam = [c for c in comps if c["vs"] == vs]
        for s in S.CellDraws.STATS:
            boots = [c[s] for c in fam]
            live = [b for b in boots if b is not None]
            fw = iter(S.simultaneous(live, level))
            for c, b in zip(fam, boots, strict=True):
                c[f"{s}_iv"] = NAN if b is None else b.interval(level)
                c[f"{s}_fw"] = NAN if b is None else next(fw)
        for c in fam:
            c["fw_k"] = len(fam)


def grid(ev: Evaluations, spec: dict, records=None) -> pd.DataFrame:
    """Tables 1 and 2: one row per row label; per cell column its value, then _lo, _hi, _n, the ratio of
    means (_rom, _rom_lo, _rom_hi), the median of the ratios (_median) and the largest one's share."""
    records = grid_records(ev, spec) if records is None else records
    rows = [dict(zip(spec["label_columns"], r["labels"], strict=True)) for r in spec["rows"]]
    for rec in records:
        iv, rom = rec["iv"], rec["rom"]
        c = rec["column"]
        rows[rec["row"]].update({c: iv.value, f"{c}_lo": iv.lo, f"{c}_hi": iv.hi, f"{c}_n": iv.n,
                                 f"{c}_rom": rom.value, f"{c}_rom_lo": rom.lo, f"{c}_rom_hi": rom.hi,
                                 f"{c}_median": rec["median"],
                                 f"{c}_top_share": rec["top_share"]})  # fmt: skip
    cols = [f"{c}{s}" for c in spec["columns"] for s in GRID_SUFFIXES]
    return pd.DataFrame(rows, columns=[*spec["label_columns"], *cols])


def grid_markdown(spec: dict, records: list[dict]) -> tuple[str, set, bool]:
    """The grid as Markdown (value [interval], fragile mark and comparison marks per cell), the
    comparisons used and whether a cell is marked fragile."""
    rows = [list(r["labels"]) for r in spec["rows"]]
    used = set()
    for rec in records:
        text = S.format_interval(rec["iv"])
        marks = [mark(c["vs"], c["mean_iv"]) for c in rec["comparisons"]]
        used.update(c["vs"] for c in rec["comparisons"])
        if text != "-" and rec["column"] in spec["rows"][rec["row"]].get("emphasize", ()):
            text = f"*{text}*"
        if text != "-" and rec["fragile"]:
            text += f" {FRAGILE_MARK}"
        rows[rec["row"]].append(" ".join([text, *[m for m in marks if m]]))
    head = [*spec["label_columns"], *spec["columns"]]
    return md_table(head, rows), used, any(r["fragile"] for r in records)


def _cell_stats(iv: S.Interval, rom: S.Interval, median: float, top: float, fragile: bool) -> dict:
    return {"value": iv.value, "lo": iv.lo, "hi": iv.hi, "n": iv.n, "n_seeds": iv.n_seeds, "rom": rom.value,
            "rom_lo": rom.lo, "rom_hi": rom.hi, "median": median, "top_share": top,
            "fragile": fragile}  # fmt: skip


def _comparison(c: dict | None) -> dict:
    if c is None:
        return {"vs": ""}
    d, r, fw, rfw = c["mean_iv"], c["rom_iv"], c["mean_fw"], c["rom_fw"]
    obj = c.get("obj_iv", NAN)
    return {"vs": c["vs"], "diff": d.value, "diff_lo": d.lo, "diff_hi": d.hi, "rom_diff": r.value,
            "rom_diff_lo": r.lo, "rom_diff_hi": r.hi, "diff_fw_lo": fw.lo, "diff_fw_hi": fw.hi,
            "rom_diff_fw_lo": rfw.lo, "rom_diff_fw_hi": rfw.hi, "fw_k": c["fw_k"], "obj_diff": obj.value,
            "obj_diff_lo": obj.lo, "obj_diff_hi": obj.hi}  # fmt: skip


def grid_cells(name: str, ev: Evaluations, records: list[dict]) -> pd.DataFrame:
    """The long cell table of a grid: one row per cell and comparison (empty ``vs``: no comparison)."""
    out = []
    for rec in records:
        cell = rec["cell"]
        if cell is None:
            continue
        first = per_seed(cell)[0]
        method, norm = ev.attack_info(first[2])
        base = {"output": name, "attack": first[2], "method": method, "norm": norm,
                "kind": rec["kind"] or ("multi" if "+" in first[3] else "single"),
                "weighting": rec["weighting"], "main": rec["main"], "aux": rec["aux"], "epoch": first[1],
                "model_id": first[0], "variant": ev.variant(first[2]),
                **_cell_stats(rec["iv"], rec["rom"], rec["median"], rec["top_share"],
                              rec["fragile"])}  # fmt: skip
        for c in rec["comparisons"] or [None]:
            out.append({**base, **_comparison(c)})
    return pd.DataFrame(out, columns=CELL_COLUMNS)


def render(name: str, ev: Evaluations, spec: dict) -> tuple[pd.DataFrame, str, pd.DataFrame]:
    """(CSV table, Markdown, cell table) of a grid spec."""
    records = grid_records(ev, spec)
    t = grid(ev, spec, records)
    body, used, fragile = grid_markdown(spec, records)
    extra = spec.get("pgd_note", "")
    md = f"# {title(spec)}\n\n{body}\n{spec['note']}\n\n{interval_note(ev)} {legend(used, fragile, ev)}\n"
    md += f"\n{extra}\n" if extra else ""
    cells = grid_cells(name, ev, records)
    ev.check(name)
    return t, md, cells


def cells(spec: dict) -> list[list]:
    """Every cell of a grid: its rows' cells and those they are compared with."""
    return cells_under(spec["rows"], "cells", "pgd_cells", "std_cells")


LAYOUT = Layout(cells, table=table_of(render))
