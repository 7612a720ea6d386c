"""The evaluation CSVs of one output, read once: reduced values, per-sample rows and bootstrap draws by cell.

A cell is ``[model_id, epoch, attack, attacked, task]`` (or a list of such cells, one per training seed,
merged by ``stats.seed_aggregate``). Shared by every layout that reads evaluation CSVs."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from . import stats as S
from .aggregate import KEY, read_eval, reduce_eval

CELL_COLUMNS = ["output", "attack", "method", "norm", "kind", "weighting", "main", "aux", "setting", "arch",
                "epoch", "model_id", "value", "lo", "hi", "n", "n_seeds", "rom", "rom_lo", "rom_hi", "median",
                "top_share", "fragile", "vs", "diff", "diff_lo", "diff_hi", "rom_diff", "rom_diff_lo",
                "rom_diff_hi", "diff_fw_lo", "diff_fw_hi", "rom_diff_fw_lo", "rom_diff_fw_hi",
                "fw_k", "obj_diff", "obj_diff_lo", "obj_diff_hi", "variant"]  # fmt: skip

_PER_SAMPLE = ["sample", "view", "clean_loss", "adv_loss", "clean_error", "adv_error"]

NAN = S.Interval(math.nan, math.nan, math.nan, 0, 0)

FRAGILE_SHARE = 0.3  # default of config key fragile_share


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
        """The variant an attack ran (its evaluation CSVs' options), for a method that has variants
        (``Method.variant_option``: WGD's); '' for the others."""
        from ..attacks import METHODS

        g = self.frame[self.frame["attack"] == attack]
        method = METHODS.get(str(g["method"].iat[0])) if len(g) else None
        if method is None or method.variant_option is None:
            return ""
        raw = g["options"].iat[0] if "options" in g.columns else ""
        options = json.loads(raw) if isinstance(raw, str) and raw.strip().startswith("{") else {}
        return str(options.get(method.variant_option) or method.options()[method.variant_option])

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


def table_of(render):
    """A layout's ``table`` from its ``render(name, ev, spec)`` on the Evaluations of the inputs (``models``:
    results/models.csv, whose models not beating the constant predictor the proxies leave out)."""

    def table(name: str, spec: dict, inputs, *, fragile_share=FRAGILE_SHARE, models: Path | None = None):
        return render(
            name, Evaluations(inputs, fragile_share=fragile_share, untrained=untrained_models(models)), spec
        )

    return table


def figure_of(draw):
    """A layout's ``figure`` from its ``draw(ev, spec)`` on the Evaluations of the inputs; missing cells are
    reported once it is drawn."""

    def figure(name: str, spec: dict, inputs):
        ev = Evaluations(inputs)
        fig = draw(ev, spec)
        ev.check(name)
        return fig

    return figure
