"""``mtlrobust tables``: render one table of the study plan from the evaluation CSVs of its cells.

The plan (``mtlrobust.study``) gives each output a spec: its layout, labels and cells, a cell being
``[model_id, epoch, attack, attacked, task]`` (or a list of such cells, one per training seed, merged by
``stats.seed_aggregate``). This module reads the per-sample evaluation CSVs of those cells, reduces them
(``aggregate.reduce_eval``) and fills the layout; it never recomputes model ids. Every table is a CSV plus a
Markdown rendering next to it (``NAME.md``) and a long "cell" CSV (``results/cells/NAME.csv``, the input
contract of ``analysis/claims.py``). Missing cells are left empty with a warning; a table with no cell at
all is an error.

Every number carries n and a 95 % studentized bootstrap interval over the test samples (``stats.CellDraws``:
all cells on one set of draws, so differences are paired); a comparison the table invites (multi-task cell
vs its single-task model, weighted vs uniform, an adaptive attack vs PGD, adversarially vs standard trained:
``std_cells``) is marked in the Markdown only when its paired interval excludes 0 (``MARKS``).

Heavy tails: the value is the paper's mean of per-sample ratios; every cell also carries the ratio of means
(``rom``, with its delta-method interval), the median of the ratios and the share of the largest |ratio| in
the sum of |ratios| (``top_share``). A cell whose top share exceeds ``fragile_share`` (config key, default
0.3) is marked ``FRAGILE_MARK`` in the Markdown: its value rests on one test sample. Each comparison also
carries its ratio-of-means difference and family-wise intervals (``diff_fw_lo``/``diff_fw_hi``:
``stats.simultaneous`` over the ``fw_k`` comparisons of the same kind in the table), which ``claims`` uses
for "for each pair" and "at least one" claims.

Layouts:

* ``grid`` (Tables 1, 2): rows = label columns (attack kind or attack, main task); columns = weighting:aux.
* ``correlations`` (Table 3): per row, Pearson r of two series of cells (a proxy and its target).
* ``sweep`` (RQ1): one row per (setting, main, aux, attack kind) with the single-task model's value; the
  Markdown adds the fraction of less vulnerable pairs per setting and attack kind.
* ``bars`` (Figure 1's numbers): per order, E[dL] of each attacked prefix and its marginal change, for the
  summed objective and the 1/N weighting, and the share of the change carried by the largest step.
"""

from __future__ import annotations

import argparse
import json
import math
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from .. import files, values
from . import stats as S
from .aggregate import KEY, read_eval, reduce_eval
from .claims import MIN_CELLS

SWEEP_COLUMNS = ["sweep", "value", "attack", "arch", "epoch", "main", "aux", "kind",
                 "rel_vuln", "rel_vuln_lo", "rel_vuln_hi", "n",
                 "rom", "rom_lo", "rom_hi", "median", "top_share",
                 "single_task_rel_vuln", "single_task_rel_vuln_lo", "single_task_rel_vuln_hi",
                 "diff", "diff_lo", "diff_hi", "rom_diff", "rom_diff_lo", "rom_diff_hi",
                 "less_vulnerable", "significantly"]  # fmt: skip
CORRELATION_COLUMNS = ["proxy", "target", "n", "pearson_r", "pearson_r_lo", "pearson_r_hi", "p_value",
                       "fisher_lo", "fisher_hi", "pearson_r_rom", "pearson_r_rom_lo", "pearson_r_rom_hi",
                       "excluded"]  # fmt: skip
BAR_COLUMNS = ["order", "step", "task", "attacked",
               "E_dL", "E_dL_lo", "E_dL_hi", "n", "marginal", "marginal_lo", "marginal_hi",
               "E_dL_1N", "E_dL_1N_lo", "E_dL_1N_hi",
               "marginal_1N", "marginal_1N_lo", "marginal_1N_hi"]  # fmt: skip
CELL_COLUMNS = ["output", "attack", "method", "norm", "kind", "weighting", "main", "aux", "setting", "arch",
                "epoch", "model_id", "value", "lo", "hi", "n", "n_seeds", "rom", "rom_lo", "rom_hi", "median",
                "top_share", "fragile", "vs", "diff", "diff_lo", "diff_hi", "rom_diff", "rom_diff_lo",
                "rom_diff_hi", "diff_fw_lo", "diff_fw_hi", "rom_diff_fw_lo", "rom_diff_fw_hi",
                "fw_k", "obj_diff", "obj_diff_lo", "obj_diff_hi", "variant"]  # fmt: skip
_PER_SAMPLE = ["sample", "view", "clean_loss", "adv_loss", "clean_error", "adv_error"]
BARS_NOTE = (
    "E[dL] summed: L = the sum of the attacked tasks' losses (Definition 1); 1/N: the paper's 1/N weighting "
    "of Theorems 2 and 4, i.e. the summed value / N with N the number of attacked tasks. Marginal: the "
    "change when the task is added (paired interval); ↑ / ↓ only where that interval excludes 0. "
    "Dominance: max step / sum of |steps| over the steps that add a task after the first (the first task's "
    "own bar is not a step; 1 = one added task makes the whole change)."
)
NAN = S.Interval(math.nan, math.nan, math.nan, 0, 0)
GRID_SUFFIXES = ("", "_lo", "_hi", "_n", "_rom", "_rom_lo", "_rom_hi", "_median", "_top_share")
FRAGILE_SHARE = 0.3  # default of config key fragile_share
FRAGILE_MARK = "†"

# comparison -> (mark when significantly lower, when significantly higher), and what it compares with
MARKS = {
    "single_task": ("↓st", "↑st", "the single-task model of the same main task (italic diagonal)"),
    "uniform": ("↓uni", "↑uni", "the uniformly weighted model with the same tasks"),
    "pgd": ("↓pgd", "↑pgd", "PGD at the same eps and steps on the same model and attacked tasks"),
    "standard": ("↓std", "↑std", "the same model trained without adversarial examples (table_at)"),
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--spec", required=True, help="the table's spec from the plan: a JSON file or JSON text")
    p.add_argument("--inputs", nargs="+", required=True, type=Path, help="evaluation CSVs of its cells")
    p.add_argument("--out", required=True, type=Path, help="results/NAME.csv (NAME.md is written next to it)")
    p.add_argument("--cells", type=Path, help="also write the long cell CSV (claims.py's input) here")
    p.add_argument(
        "--fragile-share", type=float, default=FRAGILE_SHARE,
        help="mark a cell fragile when its largest |per-sample ratio| carries more than this share of all",
    )  # fmt: skip
    p.add_argument(
        "--models", type=Path,
        help="results/models.csv: proxies (Table 3, recommend) leave out cells of models with beats_trivial "
        "false on the cell's task",
    )  # fmt: skip


# ------------------------------------------------------------------------------------------ the cells
def _key(cell) -> tuple:
    model_id, epoch, attack, attacked, task = cell
    return (model_id, int(epoch), attack, attacked, task)


def per_seed(cell) -> list:
    """The cells of one table cell: itself, or its per-seed cells when it is a list of cells."""
    return list(cell) if cell and isinstance(cell[0], list | tuple) else [cell]


class Evaluations:
    """The evaluation CSVs of an output: reduced values, per-sample rows and bootstrap draws, by cell."""

    def __init__(self, paths, *, fragile_share: float = FRAGILE_SHARE, untrained=frozenset()):
        if not 0 < fragile_share <= 1:
            raise ValueError(f"fragile_share must be in (0, 1], got {fragile_share}")
        self.fragile_share = fragile_share
        self.untrained = frozenset(untrained)  # (model_id, epoch, task) not beating the constant predictor
        self.samples = {}
        reduced, frames = [], []
        for p in paths:
            df = read_eval(Path(p))
            frames.append(df)
            reduced.append(reduce_eval(df))
            for key, g in df.groupby(KEY, sort=False):
                self.samples[_key(key)] = g
        self.reduced = pd.concat(reduced, ignore_index=True) if reduced else pd.DataFrame(columns=KEY)
        self.frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=KEY)
        keys = self.reduced[KEY].itertuples(index=False, name=None)
        self.rows = {_key(k): i for i, k in enumerate(keys)}
        self.missing: list[tuple] = []
        self.asked = 0
        self._draws = None

    @property
    def draws(self) -> S.CellDraws:
        """Every cell of the output on one set of bootstrap draws (built on first use)."""
        if self._draws is None:
            self._draws = S.CellDraws(self.frame)
        return self._draws

    def has(self, cell) -> bool:
        return all(_key(c) in self.rows for c in per_seed(cell))

    def value(self, cell, column: str = "rel_vuln") -> float:
        """The reduced ``column`` of one cell (NaN, recorded as missing, when it was not evaluated);
        the mean over seeds of a per-seed cell list."""
        vals = [self._value(c, column) for c in per_seed(cell)]
        if len(vals) == 1:
            return vals[0]
        ok = [v for v in vals if math.isfinite(v)]
        return float(np.mean(ok)) if ok else math.nan

    def _value(self, cell, column: str) -> float:
        self.asked += 1
        i = self.rows.get(_key(cell))
        if i is None:
            self.missing.append(_key(cell))
            return float("nan")
        v = self.reduced[column].iat[i]
        return float(v) if v == v else float("nan")

    def boot(self, cell, stat: str = "mean") -> S.Boot | None:
        """A cell's statistic (``mean``: the table's value; ``rom``: the ratio of means) with its draws; over
        several seeds, ``stats.seed_aggregate`` (two-level). None when the cell was not evaluated."""
        boots = [
            self.draws.boot(_key(c), stat)
            for c in per_seed(cell)
            if math.isfinite(self._value(c, "rel_vuln"))
        ]
        return S.seed_aggregate(boots) if boots else None

    def interval(self, cell, stat: str = "mean") -> S.Interval:
        """Relative vulnerability of a cell (the table's value, or ``rom``) with n and its interval."""
        b = self.boot(cell, stat)
        return NAN if b is None else b.interval(self.draws.level)

    def diff_boot(self, cell_a, cell_b, stat: str = "mean") -> S.Boot | None:
        """v(a) - v(b) on the same test samples; per seed, then ``stats.seed_aggregate``."""
        a, b = per_seed(cell_a), per_seed(cell_b)
        if len(a) != len(b):
            raise ValueError(f"cells {cell_a} and {cell_b} have different numbers of seeds")
        boots = [
            self.draws.diff_boot(_key(x), _key(y), stat)
            for x, y in zip(a, b, strict=True)
            if self.has(x) and self.has(y)
        ]
        return S.seed_aggregate(boots) if boots else None

    def diff(self, cell_a, cell_b, stat: str = "mean") -> S.Interval:
        """Paired interval of v(a) - v(b) (same test samples)."""
        b = self.diff_boot(cell_a, cell_b, stat)
        return NAN if b is None else b.interval(self.draws.level)

    def shape(self, cell) -> tuple[float, float]:
        """(median of the per-sample ratios, share of the largest one): mean / largest over seeds."""
        got = [self.draws.shape(_key(c)) for c in per_seed(cell) if _key(c) in self.rows]
        if not got:
            return math.nan, math.nan
        med, top = np.array(got).T
        med, top = med[np.isfinite(med)], top[np.isfinite(top)]
        return float(med.mean()) if med.size else math.nan, float(top.max()) if top.size else math.nan

    def trained(self, cell) -> bool:
        """False when a model of the cell does not beat the constant predictor on the cell's task."""
        return not any((c[0], int(c[1]), c[4]) in self.untrained for c in per_seed(cell))

    def series_draws(self, cells, value: str) -> np.ndarray:
        """[draws, cells] of a series of cells (``rel_vuln``, ``rel_vuln_ratio_of_means`` or ``clean_error``;
        NaN where missing; the mean over seeds of per-seed cells), for ``stats.pearson_interval``."""
        cols = []
        for cell in cells:
            per = [c for c in per_seed(cell) if _key(c) in self.rows]
            if not per:
                cols.append(np.full(self.draws.draws.shape[0], np.nan))
                continue
            if value == "clean_error":
                per_draws = [self.draws.clean_error_draws(_key(c)) for c in per]
            else:
                stat = "mean" if value == "rel_vuln" else "rom"
                per_draws = [self.draws.rel_vuln_draws(_key(c), stat) for c in per]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # a draw without any valid seed: NaN
                cols.append(np.nanmean(np.stack(per_draws), axis=0))
        return np.stack(cols, axis=1)

    def dl(self, cells) -> np.ndarray:
        """[samples, cells] |L(x + d) - L(x)| per test sample, L = the summed losses of each cell's attacked
        tasks (``stats.prefix_dl``); the cells may come from different models (aligned by sample)."""
        cols = []
        for c in cells:
            mid, epoch, attack, attacked, _ = _key(c)
            f = self.frame
            g = f[(f["model_id"] == mid) & (f["epoch"] == epoch) & (f["attack"] == attack)]
            index = pd.Index(sorted(g["sample"].unique()), name="sample")
            cols.append(pd.Series(S.prefix_dl(g, [attacked.split("+")])[:, 0], index=index))
        return pd.concat(cols, axis=1).sort_index().to_numpy(np.float64)

    def objective(self, cell) -> pd.Series:
        """Per test sample, the attacked objective at the adversarial input: the summed losses of the cell's
        attacked tasks (what the attacks maximise), the mean over seeds; NaN where a loss is missing."""
        per = []
        for c in per_seed(cell):
            mid, epoch, attack, attacked, _ = _key(c)
            losses = [self.samples.get((mid, epoch, attack, attacked, t)) for t in attacked.split("+")]
            if any(g is None for g in losses):
                continue
            per.append(sum(g.set_index("sample")["adv_loss"].astype(float) for g in losses))
        return pd.concat(per, axis=1).mean(axis=1, skipna=False) if per else pd.Series(dtype=float)

    def objective_diff(self, cell_a, cell_b) -> S.Interval:
        """Paired interval of the mean attacked objective of ``cell_a`` minus ``cell_b`` (same model and
        attacked tasks under two attacks: the clean objective cancels), studentized like the cells."""
        both = pd.concat([self.objective(cell_a), self.objective(cell_b)], axis=1).dropna()
        if len(both) == 0:
            return NAN
        x = both.to_numpy(np.float64)
        st = S.mean_stat(x, S.resample_counts(len(x)))
        value = float(x[:, 0].mean() - x[:, 1].mean())
        return st.diff_boot(0, 1, value, len(x)).interval(self.draws.level)

    def variant(self, attack: str) -> str:
        """The WGD variant an attack ran (its evaluation CSVs' options; '' for other methods)."""
        g = self.frame[self.frame["attack"] == attack]
        if not len(g) or str(g["method"].iat[0]) != "wgd":
            return ""
        from ..attacks import METHODS

        raw = g["options"].iat[0] if "options" in g.columns else ""
        options = json.loads(raw) if isinstance(raw, str) and raw.strip().startswith("{") else {}
        return str(options.get("variant") or METHODS["wgd"].options()["variant"])

    def attack_info(self, attack: str) -> tuple[str, str]:
        """(method, norm) of an attack as its evaluation CSVs record them ('' when not evaluated)."""
        g = self.frame[self.frame["attack"] == attack]
        return (str(g["method"].iat[0]), str(g["norm"].iat[0])) if len(g) else ("", "")

    def per_sample(self, cell) -> pd.DataFrame:
        """Per-sample rows of one cell (sample index, view, clean/adv losses and errors), by sample."""
        g = self.samples.get(_key(cell))
        if g is None:
            return pd.DataFrame(columns=_PER_SAMPLE)
        return g[_PER_SAMPLE].sort_values("sample", kind="stable").reset_index(drop=True)

    def sample_counts(self) -> str:
        """The distinct test-sample counts n behind this output's cells, for captions."""
        ns = sorted(self.frame.groupby(KEY)["sample"].nunique().unique()) if len(self.frame) else []
        return "/".join(str(n) for n in ns) or "0"

    def check(self, name: str) -> None:
        """Warn about missing cells; fail when none of the asked cells was found."""
        if not self.missing:
            return
        missing = list(dict.fromkeys(self.missing))
        shown = "; ".join("/".join(map(str, k)) for k in missing[:5])
        if len(self.missing) == self.asked:
            raise ValueError(
                f"{name}: none of its {len(missing)} cell(s) is in the evaluation CSVs given, e.g. {shown}; "
                "expected the evaluations of the models and attacks the spec names"
            )
        warnings.warn(
            f"{name}: {len(missing)} cell(s) missing from the evaluation CSVs (left empty), e.g. {shown}",
            stacklevel=2,
        )


def mark(vs: str, iv: S.Interval) -> str:
    """The Markdown mark of a comparison: only when its paired interval excludes 0."""
    if not S.significant(iv):
        return ""
    down, up, _ = MARKS[vs]
    return down if iv.hi < 0 else up


def legend(used, fragile: bool = False, ev: Evaluations | None = None) -> str:
    """What the marks in a Markdown table mean (``fragile``: the table shows the fragile mark)."""
    parts = [f"{MARKS[v][0]} / {MARKS[v][1]}: lower / higher than {MARKS[v][2]}" for v in MARKS if v in used]
    out = ""
    if parts:
        out = (
            "Marks (only where the paired 95 % interval of the difference excludes 0; no mark = not "
            "resolved): " + "; ".join(parts) + "."
        )
    if fragile:
        share = FRAGILE_SHARE if ev is None else ev.fragile_share
        out += (
            f"\n\n{FRAGILE_MARK} fragile: the largest single test sample carries more than {share:.0%} of "
            "the sum of |per-sample ratios| of the cell, so its mean of ratios rests on that sample; the "
            "CSVs give the ratio of means (`_rom`), the median (`_median`) and that share (`_top_share`) of "
            "every cell."
        )
    return out.strip()


def interval_note(ev: Evaluations) -> str:
    return (
        f"Each value: the paper's mean of per-sample ratios [95 % interval], studentized bootstrap "
        f"(bootstrap-t) over the n = {ev.sample_counts()} test samples of a cell ({S.RESAMPLES} resamples, "
        f"seed {S.SEED}; several training seeds: two-level bootstrap over seeds and samples)."
    )


# ------------------------------------------------------------------------------------------ grid
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
    return _md_table(head, rows), used, any(r["fragile"] for r in records)


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


# ------------------------------------------------------------------------------------------ correlations
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
        few = " (too few cells)" if r.n < MIN_CELLS else ""
        rows.append([r.proxy, r.target, f"{r.n}{few}", boot, fz.split(" ", 1)[-1] if "[" in fz else "-", rom,
                     S.format_number(r.p_value)])  # fmt: skip
    head = ["proxy", "target", "n cells", "r [95 % two-level bootstrap]", "Fisher-z interval",
            "r, ratio of means [interval]", "p_value"]  # fmt: skip
    out = [_md_table(head, rows), spec["note"], ""]
    out.append(
        f"The interval of r: a two-level bootstrap ({S.RESAMPLES} resamples, seed {S.SEED}): in each draw "
        "the cells are resampled with replacement and each cell is recomputed on the same draw of its test "
        "samples, so it covers the choice of cells as well as the test-sample noise; the Fisher-z interval "
        "tanh(atanh(r) +- 1.96 / sqrt(n - 3)) is the cell-level interval for bivariate normal cells. n here "
        f"is the number of cells; below {MIN_CELLS} cells a correlation says little (too few cells). Ratio "
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


# ------------------------------------------------------------------------------------------ sweeps
def sweep(ev: Evaluations, spec: dict) -> pd.DataFrame:
    """Long table of one RQ1 sweep: each pair model's cell next to its single-task model's, with the
    paired interval of their difference (``significantly``: less / more when it excludes 0)."""
    rows = []
    for r in spec["rows"]:
        v, base, rom = ev.interval(r["cell"]), ev.interval(r["base"]), ev.interval(r["cell"], "rom")
        both = ev.has(r["cell"]) and ev.has(r["base"])
        d = ev.diff(r["cell"], r["base"]) if both else NAN
        rd = ev.diff(r["cell"], r["base"], "rom") if both else NAN
        med, top = ev.shape(r["cell"])
        less = "" if math.isnan(v.value) or math.isnan(base.value) else bool(v.value < base.value)
        sig = {"↓st": "less", "↑st": "more"}.get(mark("single_task", d), "")
        rows.append({"sweep": spec["sweep"], "value": r["value"], "attack": r["attack"], "arch": r["arch"],
                     "epoch": int(r["epoch"]), "main": r["main"], "aux": r["aux"], "kind": r["kind"],
                     "rel_vuln": v.value, "rel_vuln_lo": v.lo, "rel_vuln_hi": v.hi, "n": v.n,
                     "rom": rom.value, "rom_lo": rom.lo, "rom_hi": rom.hi, "median": med, "top_share": top,
                     "single_task_rel_vuln": base.value, "single_task_rel_vuln_lo": base.lo,
                     "single_task_rel_vuln_hi": base.hi, "diff": d.value, "diff_lo": d.lo, "diff_hi": d.hi,
                     "rom_diff": rd.value, "rom_diff_lo": rd.lo, "rom_diff_hi": rd.hi,
                     "less_vulnerable": less, "significantly": sig})  # fmt: skip
    return pd.DataFrame(rows, columns=SWEEP_COLUMNS)


def sweep_summary(long: pd.DataFrame) -> pd.DataFrame:
    """Per setting and attack kind: pairs compared, fraction whose multi-task model is less vulnerable, and
    how many are significantly less / more vulnerable (paired interval excludes 0)."""
    rows = []
    for (value, kind), g in long.groupby(["value", "kind"], sort=False):
        known = g[g["less_vulnerable"] != ""]
        n = len(known)
        frac = float(np.mean(known["less_vulnerable"].astype(bool))) if n else float("nan")
        rows.append({"value": value, "kind": kind, "pairs": n, "fraction_less_vulnerable": frac,
                     "significantly_less": int((g["significantly"] == "less").sum()),
                     "significantly_more": int((g["significantly"] == "more").sum())})  # fmt: skip
    return pd.DataFrame(rows, columns=["value", "kind", "pairs", "fraction_less_vulnerable",
                                       "significantly_less", "significantly_more"])  # fmt: skip


def sweep_wide(long: pd.DataFrame, fragile_share: float = FRAGILE_SHARE) -> pd.DataFrame:
    """Markdown view: one row per (main, aux) pair; per setting the single-task model, single- and
    multi-task attacks as value [interval] with the fragile mark and the mark against the single-task
    model."""
    rows = {}
    for r in long.itertuples(index=False):
        row = rows.setdefault((r.main, r.aux), {"main": r.main, "aux": r.aux})
        base = S.Interval(r.single_task_rel_vuln, r.single_task_rel_vuln_lo, r.single_task_rel_vuln_hi, r.n)
        row[f"single-task model {r.value}"] = S.format_interval(base)
        m = mark("single_task", S.Interval(r.diff, r.diff_lo, r.diff_hi, r.n))
        iv = S.format_interval(S.Interval(r.rel_vuln, r.rel_vuln_lo, r.rel_vuln_hi, r.n))
        frag = FRAGILE_MARK if r.top_share > fragile_share else ""
        row[f"{r.kind} {r.value}"] = " ".join(x for x in (iv, frag, m) if x)
    return pd.DataFrame(list(rows.values()))


def sweep_cells(name: str, ev: Evaluations, long: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for r in long.itertuples(index=False):
        method, norm = ev.attack_info(r.attack)
        rows.append({"output": name, "attack": r.attack, "method": method, "norm": norm, "kind": r.kind,
                     "weighting": "uniform", "main": r.main, "aux": r.aux, "setting": r.value,
                     "arch": r.arch, "epoch": r.epoch, "value": r.rel_vuln, "lo": r.rel_vuln_lo,
                     "hi": r.rel_vuln_hi, "n": r.n, "rom": r.rom, "rom_lo": r.rom_lo, "rom_hi": r.rom_hi,
                     "median": r.median, "top_share": r.top_share,
                     "fragile": bool(r.top_share > ev.fragile_share), "vs": "single_task", "diff": r.diff,
                     "diff_lo": r.diff_lo, "diff_hi": r.diff_hi, "rom_diff": r.rom_diff,
                     "rom_diff_lo": r.rom_diff_lo, "rom_diff_hi": r.rom_diff_hi})  # fmt: skip
    return pd.DataFrame(rows, columns=CELL_COLUMNS)


# ------------------------------------------------------------------------------------------ bars
def bars(ev: Evaluations, spec: dict) -> tuple[pd.DataFrame, list[tuple[str, S.Marginal, str]]]:
    """Figure 1's numbers: per order and attacked prefix, E[dL] of the summed objective and of the 1/N
    weighting (the summed value / N, N = tasks attacked) with their marginal changes (paired intervals),
    and per order the dominance share of the summed objective's largest step."""
    value = spec.get("value", "adv_vulnerability")
    rows, marginals = [], []
    for p in spec["panels"]:
        cells = p["cells"]
        vals = [ev.value(c, value) for c in cells]
        if not all(ev.has(c) for c in cells):
            for k, v in enumerate(vals):
                rows.append({"order": p["order"], "step": k + 1, "task": p["letters"][k],
                             "attacked": "".join(p["letters"][: k + 1]), "E_dL": v})  # fmt: skip
            continue
        dl = ev.dl(cells)
        summed = S.marginal_intervals(dl)
        per_n = S.marginal_intervals(dl / np.arange(1, dl.shape[1] + 1))
        top = p["letters"][summed.dominant_step] if summed.dominant_step > 0 else ""
        marginals.append((p["order"], summed, top))
        for k, v in enumerate(vals):
            b, st, b1, st1 = summed.bars[k], summed.steps[k], per_n.bars[k], per_n.steps[k]
            rows.append({"order": p["order"], "step": k + 1, "task": p["letters"][k],
                         "attacked": "".join(p["letters"][: k + 1]), "E_dL": v, "E_dL_lo": b.lo,
                         "E_dL_hi": b.hi, "n": b.n, "marginal": st.value, "marginal_lo": st.lo,
                         "marginal_hi": st.hi, "E_dL_1N": v / (k + 1), "E_dL_1N_lo": b1.lo,
                         "E_dL_1N_hi": b1.hi, "marginal_1N": st1.value, "marginal_1N_lo": st1.lo,
                         "marginal_1N_hi": st1.hi})  # fmt: skip
    return pd.DataFrame(rows, columns=BAR_COLUMNS), marginals


def bar_cells(name: str, t: pd.DataFrame, marginals) -> pd.DataFrame:
    """Figure 1's cell table: per order and step the bars and steps (stat bar/step/bar_1N/step_1N) and
    one ``dominance`` row per order (claims.py's input)."""
    rows = []
    for r in t.itertuples(index=False):
        for stat, col in (
            ("bar", "E_dL"),
            ("step", "marginal"),
            ("bar_1N", "E_dL_1N"),
            ("step_1N", "marginal_1N"),
        ):
            rows.append({"output": name, "order": r.order, "stat": stat, "step": r.step, "task": r.task,
                         "value": getattr(r, col), "lo": getattr(r, f"{col}_lo"),
                         "hi": getattr(r, f"{col}_hi"), "n": r.n})  # fmt: skip
    for order, m, task in marginals:
        d = m.dominance
        rows.append({"output": name, "order": order, "stat": "dominance", "step": m.dominant_step + 1,
                     "task": task, "value": d.value, "lo": d.lo, "hi": d.hi, "n": d.n})  # fmt: skip
    return pd.DataFrame(rows, columns=["output", "order", "stat", "step", "task", "value", "lo", "hi", "n"])


def bars_markdown(t: pd.DataFrame, marginals) -> str:
    def iv(r, col):
        return S.format_interval(
            S.Interval(getattr(r, col), getattr(r, f"{col}_lo"), getattr(r, f"{col}_hi"), 0)
        )

    def step(r, col):
        i = S.Interval(getattr(r, col), getattr(r, f"{col}_lo"), getattr(r, f"{col}_hi"), 0)
        m = "" if not S.significant(i) else (" ↑" if i.lo > 0 else " ↓")
        return S.format_interval(i) + m

    rows = [[r.order, f"+{r.task}", r.attacked, iv(r, "E_dL"), step(r, "marginal"), iv(r, "E_dL_1N"),
             step(r, "marginal_1N")] for r in t.itertuples(index=False)]  # fmt: skip
    head = ["order", "task added", "attacked", "E[dL] summed", "marginal (summed)", "E[dL] 1/N",
            "marginal (1/N)"]  # fmt: skip
    dom = [[o, S.format_interval(m.dominance), task] for o, m, task in marginals]
    return (
        _md_table(head, rows)
        + "\n## Dominance: share of the change after the first task carried by the largest step\n\n"
        + _md_table(["order", "dominance share", "largest step"], dom)
    )


# ------------------------------------------------------------------------------------------ rendering
def _title(spec: dict) -> str:
    return " ".join(spec["title"].split("\n"))


def _fmt(v) -> str:
    if isinstance(v, float | np.floating):
        return S.format_number(float(v))
    return str(v)


def _md_table(head, rows) -> str:
    lines = ["| " + " | ".join(map(str, head)) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join(_fmt(v) for v in r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def markdown(df: pd.DataFrame) -> str:
    """A GitHub Markdown table of a frame (numbers by ``stats.format_number``)."""
    return _md_table(list(df.columns), list(df.itertuples(index=False)))


def render_all(name: str, ev: Evaluations, spec: dict) -> tuple[pd.DataFrame, str, pd.DataFrame]:
    """(CSV table, Markdown text, cell table) of one output's spec."""
    layout = spec.get("layout")
    note = interval_note(ev)
    if layout == "grid":
        records = grid_records(ev, spec)
        t = grid(ev, spec, records)
        body, used, fragile = grid_markdown(spec, records)
        extra = spec.get("pgd_note", "")
        md = f"# {_title(spec)}\n\n{body}\n{spec['note']}\n\n{note} {legend(used, fragile, ev)}\n"
        md += f"\n{extra}\n" if extra else ""
        cells = grid_cells(name, ev, records)
    elif layout == "correlations":
        t = correlations(ev, spec)
        md = f"# {_title(spec)}\n\n{correlations_markdown(spec, t)}"
        cells = correlation_cells(name, spec, t)
    elif layout == "sweep":
        t = sweep(ev, spec)
        md = (
            f"# {_title(spec)}\n\n## Fraction of (main, auxiliary) pairs whose multi-task model is less "
            f"vulnerable on the main task than the single-task model\n\n{markdown(sweep_summary(t))}\n"
            "significantly_less / significantly_more: pairs whose paired 95 % interval of the difference "
            "excludes 0.\n\n"
            "## Relative vulnerability of the main task\n\n"
            f"{markdown(sweep_wide(t, ev.fragile_share))}\n{note} "
            f"{legend({'single_task'}, bool((t['top_share'] > ev.fragile_share).any()), ev)}\n"
        )
        cells = sweep_cells(name, ev, t)
    elif layout == "bars":
        t, marginals = bars(ev, spec)
        md = f"# {_title(spec)}\n\n{bars_markdown(t, marginals)}\n{BARS_NOTE}\n\n{note}\n"
        cells = bar_cells(name, t, marginals)
    else:
        raise ValueError(
            f"{name}: spec layout {layout!r} is not a table; expected grid, correlations, sweep or bars"
        )
    ev.check(name)
    return t, md, cells


def render(name: str, ev: Evaluations, spec: dict) -> tuple[pd.DataFrame, str]:
    """(CSV table, Markdown text) of one output's spec."""
    t, md, _ = render_all(name, ev, spec)
    return t, md


def load_spec(value: str) -> dict:
    """A spec given as a JSON file or as JSON text (``--spec``)."""
    return values.json_object(value, "--spec", files=True)


def untrained_models(path: Path | None) -> frozenset:
    """(model_id, epoch, task) rows of ``results/models.csv`` with ``beats_trivial`` false (none: empty)."""
    if path is None:
        return frozenset()
    try:
        df = pd.read_csv(path, dtype={"model_id": str, "task": str}, keep_default_na=False)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as e:
        raise ValueError(f"{path}: cannot read the model summary: {e}") from None
    missing = [c for c in ("model_id", "epoch", "task", "beats_trivial") if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: not a model summary (results/models.csv), missing column(s) {missing}")
    beats = df["beats_trivial"].astype(str).str.strip().str.lower()
    bad = sorted(set(beats) - {"true", "false"})
    if bad:
        raise ValueError(f"{path}: column 'beats_trivial' must be True or False, got {bad[0]!r}")
    out = df[beats == "false"]
    return frozenset(zip(out["model_id"], out["epoch"].astype(int), out["task"], strict=True))


def write(
    name: str,
    spec: dict,
    inputs,
    out: Path,
    cells: Path | None = None,
    *,
    fragile_share: float = FRAGILE_SHARE,
    models: Path | None = None,
) -> None:
    """Render the table ``name`` of ``spec`` from the evaluation CSVs ``inputs`` into out (.csv and .md)
    and, if given, its cell table into ``cells``. ``fragile_share``: the fragile mark's threshold;
    ``models``: results/models.csv, whose models not beating the constant predictor the proxies
    (Table 3, recommend) leave out.

    Layouts with their own renderer (``supplementary.TABLES``: recommend, supplementary tables) write the
    CSV and Markdown themselves and may return their cell table; none = a cell table with no row."""
    from . import steps, supplementary, table_at

    out = Path(out)
    untrained = untrained_models(models)
    layout = spec.get("layout")
    if layout in supplementary.TABLES or layout in steps.TABLES or layout in table_at.TABLES:
        if layout in supplementary.TABLES:
            long = supplementary.TABLES[layout](
                name, spec, list(inputs), out, fragile_share=fragile_share, untrained=untrained
            )
        elif layout in table_at.TABLES:
            long = table_at.TABLES[layout](
                name, spec, list(inputs), out, fragile_share=fragile_share, models=models
            )
        else:
            long = steps.TABLES[layout](name, spec, list(inputs), out)
        if cells is not None:
            long = pd.DataFrame(columns=CELL_COLUMNS) if long is None else long
            files.write_frame(Path(cells), long, float_format="%.6g")
        return
    ev = Evaluations(inputs, fragile_share=fragile_share, untrained=untrained)
    table, md, long = render_all(name, ev, spec)
    files.write_frame(out, table, float_format="%.6g")
    files.write_text(out.with_suffix(".md"), md)
    if cells is not None:
        files.write_frame(Path(cells), long, float_format="%.6g")


def run(args) -> int:
    write(
        args.out.stem, load_spec(args.spec), args.inputs, args.out, args.cells,
        fragile_share=args.fragile_share, models=args.models,
    )  # fmt: skip
    extra = f" and {args.cells}" if args.cells else ""
    print(f"wrote {args.out}, {args.out.with_suffix('.md')}{extra}")
    return 0
