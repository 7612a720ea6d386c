"""Uncertainty of the study's numbers: bootstrap intervals over test samples, paired differences, seeds.

A table cell is a mean over a few hundred test samples, so two cells can differ by noise alone. Every
number gets a 95 % interval over the test samples, and a comparison between two cells (multi-task vs
single-task model, weighted vs uniform, APGD vs PGD) a PAIRED interval: both cells are recomputed on the
same resampled samples, so the noise they share cancels in the difference.

Conventions (one place, so every interval of the study is comparable):

* a draw is ``n`` sample positions taken with replacement from ``numpy.random.default_rng(seed)``;
  ``RESAMPLES`` (2000) draws, ``SEED`` 0, ``LEVEL`` 0.95. The draws depend only on (n, resamples, seed):
  cells whose per-sample arrays are aligned by sample index (``sample_matrix``) are resampled with the
  same indices however many calls compute them, which is what makes their differences paired;
* a cell's value is computed exactly as the tables compute it (``metrics.relative_vulnerability``:
  samples with a zero or NaN clean error, or a NaN adversarial error, are skipped; a sample missing from
  a cell is NaN, hence skipped too). Within a draw the cell is the mean over its valid drawn samples;
* cell means and paired differences get a STUDENTIZED bootstrap interval (bootstrap-t): in each draw
  t* = (value* - value) / se*, the interval is [value - q(1-a/2) se, value - q(a/2) se] with q the
  quantiles of t* and se the sample's standard error (sd with ddof 1; se* = the draw's plug-in sd* /
  sqrt(n), ddof 0); a paired difference gets the symmetric one, value +- q(|t*|) se (its question is
  the sign; equal-tailed, a skewed difference at n = 20 is covered only ~91 %). The se of a mean of
  ratios is sd / sqrt(n), that of
  the ratio of means (sum adv - sum clean) / sum clean its delta-method se, that of a difference the se
  of the two cells' linearised difference (their covariance over the shared samples included). A
  percentile interval of a mean of skewed ratios at n = 20 covers 88-92 %, this one >= 93 %
  (``tests/test_stats_robust.py``, ``bench/bench_coverage.py``). Nonlinear statistics (Pearson r,
  dominance share, ranking statistics) keep the percentile interval of their draws;
* ``simultaneous``: family-wise intervals of several comparisons from the maximum |t*| over them in each
  draw (a max-statistic bootstrap over the shared draws, Westfall-Young style);
* seeds: ``seed_aggregate`` resamples the seeds and, within each draw, uses the sample draw of every
  resampled seed (two-level bootstrap; percentile interval of the seed mean);
* ``n`` of an interval = the samples (or cells, for a correlation; the smallest per-seed count, for a
  seed aggregate, with ``n_seeds``) it rests on. Bounds are NaN when fewer than 2 remain;
* ``CellDraws`` puts every cell of the per-sample evaluation rows on one set of draws (the producer's
  entry point: ``interval(key)``, ``diff(key_a, key_b)``, ``boot``/``diff_boot`` under either statistic,
  draws for ``pearson_interval``); ``prefix_dl`` and ``marginal_intervals`` do the same for Figure 1;
* ``format_interval``: value and bounds share the decimal places that give the largest of the three
  absolute values 3 significant digits (``0.890 [0.850, 0.930]``, ``135 [120, 150]``,
  ``-0.0082 [-0.0120, -0.0040]``); scientific notation with 3 significant digits when that largest value
  is below 1e-3 or at least 1e5; NaN is ``-``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .. import metrics as M

MIN_CELLS = 10  # fewer cells: a correlation says little ("too few cells" in Table 3 and the claims)

RESAMPLES = 2000
SEED = 0
LEVEL = 0.95


@dataclass(frozen=True)
class Interval:
    """A point value with its interval; ``n`` samples (cells, seeds) behind it, ``n_seeds`` seeds."""

    value: float
    lo: float
    hi: float
    n: int
    n_seeds: int = 1


# ------------------------------------------------------------------------------------------ draws
def resample_indices(n: int, resamples: int = RESAMPLES, seed: int = SEED) -> np.ndarray:
    """[resamples, n] sample positions drawn with replacement (the same for the same n, resamples, seed)."""
    if n < 1:
        raise ValueError(f"cannot resample {n} samples: need at least 1")
    if resamples < 1:
        raise ValueError(f"resamples must be at least 1, got {resamples}")
    return np.random.default_rng(seed).integers(0, n, size=(resamples, n))


def resample_counts(n: int, resamples: int = RESAMPLES, seed: int = SEED) -> np.ndarray:
    """[resamples, n] how often each sample is in each draw of ``resample_indices`` (float, for matmul)."""
    idx = resample_indices(n, resamples, seed)
    flat = idx + (np.arange(resamples)[:, None] * n)
    return np.bincount(flat.ravel(), minlength=resamples * n).reshape(resamples, n).astype(np.float64)


def _columns(values) -> np.ndarray:
    x = np.asarray(values, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2:
        raise ValueError(f"per-sample values must be [samples] or [samples, cells], got shape {x.shape}")
    return x


def resampled_means(values, counts: np.ndarray) -> np.ndarray:
    """[resamples, cells] mean of each column of ``values`` [samples(, cells)] in each draw; NaN skipped."""
    x = _columns(values)
    if x.shape[0] != counts.shape[1]:
        raise ValueError(f"values have {x.shape[0]} samples, the draws {counts.shape[1]}")
    ok = np.isfinite(x)
    num = counts @ np.where(ok, x, 0.0)
    den = counts @ ok.astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def ratios(clean, adv) -> np.ndarray:
    """Per-sample (adv - clean) / clean, NaN where ``metrics.relative_vulnerability`` skips the sample."""
    c, a = np.asarray(clean, dtype=np.float64), np.asarray(adv, dtype=np.float64)
    if c.shape != a.shape:
        raise ValueError(f"clean and adversarial errors differ in shape: {c.shape} vs {a.shape}")
    ok = np.isfinite(c) & np.isfinite(a) & (c != 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(ok, (a - c) / np.where(ok, c, 1.0), np.nan)


def interval(value: float, draws, n: int, level: float = LEVEL, n_seeds: int = 1) -> Interval:
    """The percentile interval of ``draws`` around ``value`` (NaN bounds if value is NaN or n < 2)."""
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    d = np.asarray(draws, dtype=np.float64)
    d = d[np.isfinite(d)]
    if not math.isfinite(value) or n < 2 or d.size == 0:
        return Interval(float(value), math.nan, math.nan, int(n), n_seeds)
    tail = (1 - level) / 2
    lo, hi = np.quantile(d, [tail, 1 - tail])
    return Interval(float(value), float(lo), float(hi), int(n), n_seeds)


# ------------------------------------------------------------------------------------------ cells
def sample_matrix(rows: pd.DataFrame, cell: Sequence[str], value: str, sample="sample") -> pd.DataFrame:
    """[samples x cells] table of one per-sample column (rows of evaluation CSVs), aligned by sample id.

    Rows = the union of the sample ids (sorted), columns = the distinct ``cell`` key tuples; a sample that
    a cell lacks is NaN (skipped by every statistic here). Duplicate (cell, sample) rows are an error.
    """
    keys = list(cell)
    missing = [c for c in [*keys, value, sample] if c not in rows.columns]
    if missing:
        raise ValueError(f"per-sample rows lack column(s) {missing}; have {list(rows.columns)}")
    dup = rows.duplicated([*keys, sample])
    if dup.any():
        first = rows.loc[dup, [*keys, sample]].iloc[0].to_dict()
        raise ValueError(f"the same (cell, sample) appears twice in the per-sample rows: {first}")
    return rows.pivot(index=sample, columns=keys, values=value).sort_index()


# ------------------------------------------------------------------------------------------ bootstrap-t
_TINY = 1e-12  # a variance below this share of its uncentred magnitude is rounding noise: zero


@dataclass(frozen=True, eq=False)
class Boot:
    """A statistic with its bootstrap draws: point ``value``, ``draws`` [resamples], and for a studentized
    interval its standard error ``se`` and per-draw ``se_draws``; ``percentile`` = a percentile interval
    of the draws instead (seed aggregates), with ``se`` their standard deviation. ``symmetric``: the
    interval is value +- q se with q the quantile of |t*| (differences: the question is their sign, and the
    symmetric bootstrap-t keeps its coverage where the equal-tailed one of a skewed difference does not)."""

    value: float
    draws: np.ndarray
    se: float
    se_draws: np.ndarray
    n: int
    n_seeds: int = 1
    percentile: bool = False
    symmetric: bool = False

    def t(self) -> np.ndarray:
        """[resamples] (value* - value) / se* (NaN where the draw has no value; +-inf where se* = 0)."""
        d = self.draws - self.value
        se = np.full_like(d, self.se) if self.percentile else self.se_draws
        flat = np.abs(d) <= _TINY * max(1.0, abs(self.value))
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(se > 0, d / se, np.where(flat, 0.0, np.sign(d) * np.inf))

    def interval(self, level: float = LEVEL) -> Interval:
        """The studentized interval (percentile for ``percentile`` boots); NaN bounds if n < 2, and a NaN
        bound where the draws cannot bound it (an infinite t* quantile: draws with se* = 0, tiny n)."""
        if self.percentile or not math.isfinite(self.value) or self.n < 2:
            return interval(self.value, self.draws, self.n, level, self.n_seeds)
        if not 0 < level < 1:
            raise ValueError(f"level must be in (0, 1), got {level}")
        if self.se == 0:
            return Interval(self.value, self.value, self.value, self.n, self.n_seeds)
        t = self.t()
        t = t[~np.isnan(t)]
        if t.size == 0:
            return Interval(self.value, math.nan, math.nan, self.n, self.n_seeds)
        if self.symmetric:
            q = _quantile(np.abs(t), level)
            lo, hi = (self.value + s * q * self.se if math.isfinite(q) else math.nan for s in (-1, 1))
            return Interval(self.value, lo, hi, self.n, self.n_seeds)
        tail = (1 - level) / 2
        q_lo, q_hi = (_quantile(t, q) for q in (tail, 1 - tail))
        lo, hi = (self.value - q * self.se if math.isfinite(q) else math.nan for q in (q_hi, q_lo))
        return Interval(self.value, lo, hi, self.n, self.n_seeds)


def _quantile(x: np.ndarray, q: float) -> float:
    """np.quantile that tolerates infinite entries (an interpolation between two infinities is that one)."""
    with np.errstate(invalid="ignore"):
        v = float(np.quantile(x, q))
    if math.isnan(v):
        v = float(np.sort(x)[min(len(x) - 1, int(math.floor(q * (len(x) - 1))))])
    return v


def simultaneous(boots: Sequence[Boot], level: float = LEVEL) -> list[Interval]:
    """Family-wise ``level`` intervals of several statistics computed on the same draws: value +- c * se
    with c the ``level`` quantile of max_i |t*_i| over the family in each draw (max-statistic bootstrap).

    Members with NaN value or n < 2 get NaN bounds and do not enter the maximum."""
    live = [b.n >= 2 and math.isfinite(b.value) and math.isfinite(b.se) for b in boots]
    out = [Interval(b.value, math.nan, math.nan, b.n, b.n_seeds) for b in boots]
    if not any(live):
        return out
    t = np.abs(np.column_stack([b.t() for b, ok in zip(boots, live, strict=True) if ok]))
    t = np.where(np.isnan(t), -np.inf, t).max(axis=1)
    t = t[np.isfinite(t) | (t == np.inf)]
    t = t[t > -np.inf]
    if t.size == 0:
        return out
    c = _quantile(t, level)
    for i, (b, ok) in enumerate(zip(boots, live, strict=True)):
        if ok and (math.isfinite(c) or b.se == 0):
            half = 0.0 if b.se == 0 else c * b.se
            out[i] = Interval(b.value, b.value - half, b.value + half, b.n, b.n_seeds)
    return out


class _Stat:
    """One statistic of many columns (cells) in the point (row 0, every sample once) and in every draw.

    Column j has per-sample validity ``o``, numerator ``x`` and denominator ``y`` (0 where invalid):
    ``ratio`` False: the mean of x over the valid samples (y = o); True: sum x / sum y - 1 (the ratio of
    means, x = adv, y = clean). Linearised, the statistic moves by sum_i (x_i - beta y_i) / (scale N)
    with beta = the mean (or x/y) and scale = 1 (or mean y), which gives every se and covariance below.
    """

    def __init__(self, o, x, y, ratio: bool, counts: np.ndarray):
        self.o, self.x, self.y, self.ratio = o, x, y, ratio
        self.ext = np.vstack([np.ones((1, counts.shape[1])), counts])
        N, X, Y = self.ext @ o, self.ext @ x, self.ext @ y
        with np.errstate(invalid="ignore", divide="ignore"):
            if ratio:
                self.beta = np.where(Y != 0, X / np.where(Y != 0, Y, 1.0), np.nan)
                self.scale = np.where(N > 0, Y / np.where(N > 0, N, 1.0), np.nan)
                self.value = self.beta - 1
            else:
                self.beta = np.where(N > 0, X / np.where(N > 0, N, 1.0), np.nan)
                self.scale = np.ones_like(N)
                self.value = self.beta
            # se^2 = sum of squared influences / k^2: the sample's with ddof 1 (row 0), each draw's plug-in
            # (ddof 0: the resample's sd* / sqrt(n)); this pairing gives the coverage in the module doc
            self.k = np.vstack([np.sqrt(N[:1] * (N[:1] - 1)), N[1:]])
        self.N = N
        j = np.arange(o.shape[1])
        self.q, self.m = self.cross(j, j)

    def cross(self, i, j) -> tuple[np.ndarray, np.ndarray]:
        """[rows, pairs] sum_s (x_i - beta_i y_i)(x_j - beta_j y_j) / (scale_i scale_j) over the samples
        valid in both, and its uncentred magnitude (for the rounding-noise test)."""
        xi, yi, xj, yj = self.x[:, i], self.y[:, i], self.x[:, j], self.y[:, j]
        k = len(i)
        p = self.ext @ np.hstack([xi * xj, xi * yj, yi * xj, yi * yj])  # one product for all four sums
        pxx, pxy, pyx, pyy = p[:, :k], p[:, k : 2 * k], p[:, 2 * k : 3 * k], p[:, 3 * k :]
        bi, bj, s = self.beta[:, i], self.beta[:, j], self.scale[:, i] * self.scale[:, j]
        with np.errstate(invalid="ignore", divide="ignore"):
            q = (pxx - bj * pxy - bi * pyx + bi * bj * pyy) / s
            m = (np.abs(pxx) + np.abs(bj * pxy) + np.abs(bi * pyx) + np.abs(bi * bj * pyy)) / np.abs(s)
        return q, m

    def _boot(self, value: float, draws, var, mag, n: int, symmetric: bool = False) -> Boot:
        var = np.where(var > _TINY * mag, var, 0.0)
        se = float(np.sqrt(var[0])) if math.isfinite(var[0]) else math.nan
        return Boot(float(value), draws, se, np.sqrt(var[1:]), int(n), symmetric=symmetric)

    def boot(self, j: int, value: float, n: int) -> Boot:
        """Column j's statistic (point ``value`` as the caller computes it exactly)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            kk = self.k[:, j] * self.k[:, j]
            return self._boot(value, self.value[1:, j], self.q[:, j] / kk, self.m[:, j] / kk, n)

    def diff_boot(self, i: int, j: int, value: float, n: int) -> Boot:
        """Column i minus column j, paired (the same draws), with the se of the linearised difference."""
        return self.diff_boots([(i, j)], [value], [n])[0]

    def diff_boots(self, pairs, values, ns) -> list[Boot]:
        """``diff_boot`` of several (i, j) column pairs at once (one matrix product)."""
        i, j = (np.array([p[k] for p in pairs], dtype=int) for k in (0, 1))
        q, m = self.cross(i, j)
        ki, kj = self.k[:, i], self.k[:, j]
        with np.errstate(invalid="ignore", divide="ignore"):
            var = self.q[:, i] / (ki * ki) + self.q[:, j] / (kj * kj) - 2 * (q / (ki * kj))
            mag = self.m[:, i] / (ki * ki) + self.m[:, j] / (kj * kj)
        d = self.value[1:, i] - self.value[1:, j]
        return [
            self._boot(v, d[:, c], var[:, c], mag[:, c], nc, symmetric=True)
            for c, (v, nc) in enumerate(zip(values, ns, strict=True))
        ]


def mean_stat(values, counts: np.ndarray) -> _Stat:
    """The mean of each column of ``values`` [samples(, cells)] (NaN skipped) on the draws ``counts``."""
    x = _columns(values)
    o = np.isfinite(x)
    return _Stat(o.astype(np.float64), np.where(o, x, 0.0), o.astype(np.float64), False, counts)


def rom_stat(clean, adv, counts: np.ndarray) -> _Stat:
    """The ratio of means (sum adv - sum clean) / sum clean of each column (samples finite in both)."""
    c, a = _columns(clean), _columns(adv)
    o = np.isfinite(c) & np.isfinite(a)
    return _Stat(o.astype(np.float64), np.where(o, a, 0.0), np.where(o, c, 0.0), True, counts)


def rel_vuln_intervals(
    clean, adv, *, resamples: int = RESAMPLES, level: float = LEVEL, seed: int = SEED
) -> list[Interval]:
    """One studentized interval of the relative task vulnerability per column of ``clean``/``adv``.

    Columns are cells aligned by sample index; all are resampled with the same draws.
    """
    c, a = _columns(clean), _columns(adv)
    if c.shape != a.shape:
        raise ValueError(f"clean and adversarial errors differ in shape: {c.shape} vs {a.shape}")
    st = mean_stat(ratios(c, a), resample_counts(c.shape[0], resamples, seed))
    out = []
    for j in range(c.shape[1]):
        rv = M.relative_vulnerability(c[:, j], a[:, j])
        out.append(st.boot(j, rv.value, rv.n).interval(level))
    return out


def rel_vuln_interval(clean, adv, **kw) -> Interval:
    """The relative task vulnerability of one cell from its per-sample errors, with its interval."""
    return rel_vuln_intervals(np.ravel(clean), np.ravel(adv), **kw)[0]


def rel_vuln_diffs(
    clean, adv, pairs: Sequence[tuple[int, int]], *, resamples=RESAMPLES, level=LEVEL, seed=SEED
) -> list[Interval]:
    """Paired studentized intervals of v(cell a) - v(cell b) for each (a, b) column pair.

    The value is the difference of the two cells' ``metrics.relative_vulnerability`` values; ``n`` is the
    smaller of the two cells' sample counts.
    """
    c, a = _columns(clean), _columns(adv)
    if c.shape != a.shape:
        raise ValueError(f"clean and adversarial errors differ in shape: {c.shape} vs {a.shape}")
    st = mean_stat(ratios(c, a), resample_counts(c.shape[0], resamples, seed))
    rvs = [M.relative_vulnerability(c[:, j], a[:, j]) for j in range(c.shape[1])]
    values = [rvs[i].value - rvs[j].value for i, j in pairs]
    boots = st.diff_boots(pairs, values, [min(rvs[i].n, rvs[j].n) for i, j in pairs]) if pairs else []
    return [b.interval(level) for b in boots]


def rel_vuln_diff(clean_a, adv_a, clean_b, adv_b, **kw) -> Interval:
    """Paired interval of v(a) - v(b); the four arrays are aligned by sample (NaN = not evaluated)."""
    lens = {len(np.ravel(x)) for x in (clean_a, adv_a, clean_b, adv_b)}
    if len(lens) != 1:
        raise ValueError(f"paired cells must be aligned by sample; got lengths {sorted(lens)}")
    c = np.column_stack([np.ravel(clean_a), np.ravel(clean_b)])
    a = np.column_stack([np.ravel(adv_a), np.ravel(adv_b)])
    return rel_vuln_diffs(c, a, [(0, 1)], **kw)[0]


def shape(clean, adv) -> tuple[float, float]:
    """(median of the per-sample ratios, share of the largest |ratio| in the sum of |ratios|) of a cell:
    how far its mean of ratios rests on a few samples (NaN without a valid sample)."""
    r = ratios(clean, adv)
    r = r[np.isfinite(r)]
    if not r.size:
        return math.nan, math.nan
    total = float(np.abs(r).sum())
    return float(np.median(r)), float(np.abs(r).max() / total) if total > 0 else math.nan


def paired_bootstrap(
    statistic: Callable[..., float],
    *arrays,
    resamples: int = RESAMPLES,
    level: float = LEVEL,
    seed: int = SEED,
    n: int | None = None,
) -> Interval:
    """Interval of any ``statistic(*arrays)``; the arrays share their first axis (samples, aligned).

    Each draw calls ``statistic`` on the arrays indexed by the same sample positions (the draws of
    ``resample_indices``), e.g. a Pearson r over many cells recomputed from their resampled samples.
    ``n`` defaults to the number of samples.
    """
    xs = [np.asarray(x) for x in arrays]
    if not xs:
        raise ValueError("paired_bootstrap needs at least one per-sample array")
    lens = {x.shape[0] if x.ndim else 0 for x in xs}
    if len(lens) != 1:
        raise ValueError(f"per-sample arrays must share their first axis; got lengths {sorted(lens)}")
    size = lens.pop()
    value = float(statistic(*xs))
    idx = resample_indices(size, resamples, seed)
    draws = np.array([float(statistic(*(x[i] for x in xs))) for i in idx])
    return interval(value, draws, size if n is None else n, level)


class CellDraws:
    """Every cell of per-sample evaluation rows on one set of draws: intervals and paired differences.

    ``rows``: concatenated evaluation CSVs (``evaluate.COLUMNS``); a cell is one ``key`` tuple, by default
    (model_id, epoch, attack, attacked, task) as in ``results/vulnerability.csv``. All cells are aligned
    by ``sample`` and resampled with the same draws, so any two of them can be compared (``diff``).
    Statistics: ``mean`` (the paper's mean of per-sample ratios, the tables' value) and ``rom`` (the ratio
    of means, ``metrics.relative_vulnerability_ratio_of_means``).
    """

    KEY = ("model_id", "epoch", "attack", "attacked", "task")
    STATS = ("mean", "rom")

    def __init__(self, rows: pd.DataFrame, key=KEY, *, resamples=RESAMPLES, level=LEVEL, seed=SEED):
        clean = sample_matrix(rows, key, "clean_error")
        adv = sample_matrix(rows, key, "adv_error").reindex(index=clean.index, columns=clean.columns)
        self.level = level
        self.cols = {k if isinstance(k, tuple) else (k,): j for j, k in enumerate(clean.columns)}
        self.clean, self.adv = clean.to_numpy(np.float64), adv.to_numpy(np.float64)
        self.counts = resample_counts(len(clean), resamples, seed)
        self._stats: dict[str, _Stat] = {}
        # point values from the rows in their own order, as aggregate sums them (bit-identical)
        self._rv, self._rom = {}, {}
        for k, g in rows.groupby(list(key), sort=False):
            j = self._j(k if isinstance(k, tuple) else (k,))
            self._rv[j] = M.relative_vulnerability(g["clean_error"], g["adv_error"])
            self._rom[j] = M.relative_vulnerability_ratio_of_means(g["clean_error"], g["adv_error"])

    def stat(self, name: str) -> _Stat:
        """The statistic ``mean`` or ``rom`` of every cell (built on first use)."""
        if name not in self._stats:
            if name == "mean":
                self._stats[name] = mean_stat(ratios(self.clean, self.adv), self.counts)
            elif name == "rom":
                self._stats[name] = rom_stat(self.clean, self.adv, self.counts)
            else:
                raise ValueError(f"unknown cell statistic {name!r}; expected one of {list(self.STATS)}")
        return self._stats[name]

    @property
    def draws(self) -> np.ndarray:
        """[draws, cells] of every cell's relative vulnerability (mean of ratios)."""
        return self.stat("mean").value[1:]

    def _j(self, key) -> int:
        k = tuple(key)
        if k not in self.cols:
            raise KeyError(f"cell {k} is not in the per-sample rows")
        return self.cols[k]

    def rel_vuln(self, key, stat: str = "mean") -> M.RelVuln:
        return (self._rv if stat == "mean" else self._rom)[self._j(key)]

    def boot(self, key, stat: str = "mean") -> Boot:
        """The cell's statistic with its draws and standard errors."""
        rv = self.rel_vuln(key, stat)
        return self.stat(stat).boot(self._j(key), rv.value, rv.n)

    def diff_boot(self, key_a, key_b, stat: str = "mean") -> Boot:
        """v(a) - v(b) on the shared draws; ``n`` = the smaller sample count."""
        a, b = self.rel_vuln(key_a, stat), self.rel_vuln(key_b, stat)
        return self.stat(stat).diff_boot(self._j(key_a), self._j(key_b), a.value - b.value, min(a.n, b.n))

    def interval(self, key, stat: str = "mean") -> Interval:
        """The cell's relative task vulnerability (= the tables' value) with its studentized interval."""
        return self.boot(key, stat).interval(self.level)

    def diff(self, key_a, key_b, stat: str = "mean") -> Interval:
        """Paired studentized interval of v(a) - v(b); ``n`` = the smaller sample count."""
        return self.diff_boot(key_a, key_b, stat).interval(self.level)

    def shape(self, key) -> tuple[float, float]:
        """(median of the cell's per-sample ratios, share of its largest |ratio|), ``stats.shape``."""
        j = self._j(key)
        return shape(self.clean[:, j], self.adv[:, j])

    def rel_vuln_draws(self, key, stat: str = "mean") -> np.ndarray:
        """[draws] of the cell's relative vulnerability (for ``pearson_interval``)."""
        return self.stat(stat).value[1:, self._j(key)]

    def clean_error_draws(self, key) -> np.ndarray:
        """[draws] of the cell's mean clean error (the tables' ``clean_error``, NaN skipped)."""
        return resampled_means(self.clean[:, self._j(key)], self.counts)[:, 0]


def prefix_dl(rows: pd.DataFrame, prefixes: Sequence[Sequence[str]], sample: str = "sample") -> np.ndarray:
    """[samples, K] |L_prefix(x + d) - L_prefix(x)| of one model, epoch and attack (``marginal_intervals``).

    ``rows``: that model's per-sample evaluation rows; prefix k is the attacked subset ``"+".join(p)``,
    L its summed per-task losses (Definition 1). NaN where a task's loss is missing or NaN.
    """
    cols = []
    index = pd.Index(sorted(rows[sample].unique()), name=sample)
    for p in prefixes:
        g = rows[rows["attacked"] == "+".join(p)]
        if g.empty:
            raise ValueError(f"no per-sample rows for the attacked subset {'+'.join(p)!r}")
        g = g.assign(_d=g["adv_loss"] - g["clean_loss"])
        wide = g.pivot(index=sample, columns="task", values="_d").reindex(index=index, columns=list(p))
        cols.append(np.abs(wide.sum(axis=1, min_count=len(p)).to_numpy(np.float64)))
    return np.column_stack(cols)


# ------------------------------------------------------------------------------------ correlation
def pearson_draws(x, y) -> np.ndarray:
    """Pearson r of each row pair of ``x``, ``y`` [draws, cells] over the cells finite in both."""
    x, y = np.atleast_2d(np.asarray(x, dtype=np.float64)), np.atleast_2d(np.asarray(y, dtype=np.float64))
    ok = np.isfinite(x) & np.isfinite(y)
    k = ok.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mx = np.where(ok, x, 0).sum(1) / k
        my = np.where(ok, y, 0).sum(1) / k
        dx = np.where(ok, x - mx[:, None], 0)
        dy = np.where(ok, y - my[:, None], 0)
        r = np.clip((dx * dy).sum(1) / np.sqrt((dx * dx).sum(1) * (dy * dy).sum(1)), -1.0, 1.0)
    return np.where(k >= 3, r, np.nan)


def pearson_interval(x, y, x_draws, y_draws, level: float = LEVEL, seed: int = SEED) -> Interval:
    """Pearson r of the cell values ``x``, ``y`` (as Table 3's r) with a two-level bootstrap interval.

    ``x_draws``/``y_draws`` [draws, cells]: the cells recomputed in the same draws of the test samples
    (``resampled_means`` of ``ratios`` or of clean errors, one counts matrix for both). In each draw the
    cells themselves are also resampled with replacement (``default_rng(seed)``), so the interval covers
    the choice of cells, which dominates the noise of r over a few cells, and the test-sample noise of
    each cell. Percentile interval; ``n`` = cells finite in both.
    """
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    ok = np.isfinite(x) & np.isfinite(y)
    n = int(ok.sum())
    if n < 3 or np.ptp(x[ok]) == 0 or np.ptp(y[ok]) == 0:
        return Interval(math.nan, math.nan, math.nan, n)
    from scipy.stats import pearsonr

    r = float(pearsonr(x[ok], y[ok]).statistic)
    xd, yd = np.asarray(x_draws, np.float64)[:, ok], np.asarray(y_draws, np.float64)[:, ok]
    pick = np.random.default_rng(seed).integers(0, n, size=(xd.shape[0], n))
    draws = pearson_draws(np.take_along_axis(xd, pick, 1), np.take_along_axis(yd, pick, 1))
    return interval(r, draws, n, level)


def fisher_interval(r: float, n: int, level: float = LEVEL) -> Interval:
    """The cell-level interval of a Pearson r over n cells: tanh(atanh(r) +- z / sqrt(n - 3)) (Fisher z,
    exact for bivariate normal cells); NaN bounds for n <= 3, the point itself for |r| = 1."""
    from scipy.stats import norm

    if not math.isfinite(r) or n <= 3:
        return Interval(float(r), math.nan, math.nan, int(n))
    if abs(r) >= 1:  # a perfect line: atanh is infinite, the interval the point
        return Interval(float(r), float(r), float(r), int(n))
    z, half = math.atanh(r), norm.ppf(1 - (1 - level) / 2) / math.sqrt(n - 3)
    return Interval(float(r), math.tanh(z - half), math.tanh(z + half), int(n))


# ------------------------------------------------------------------------------------------ figure 1
@dataclass(frozen=True)
class Marginal:
    """Figure 1 for one order: bars E[dL] of each attacked prefix, their steps, and the dominance share."""

    bars: list[Interval]
    steps: list[Interval]
    dominance: Interval
    dominant_step: int


def dominance_share(bars) -> np.ndarray:
    """max_k D_k / sum_k |D_k| over the steps D_k = bars[k] - bars[k-1] of ``bars`` [..., K], k >= 1.

    Only the steps that add a task count: the first bar is the first task alone, not a step (the paper's
    cases ask at which added task the increase occurs). 1 when one added task makes the whole change,
    1/(K-1) when all steps are equal; NaN when nothing changes (or K < 2).
    """
    b = np.asarray(bars, dtype=np.float64)
    if b.shape[-1] < 2:
        return np.full(b.shape[:-1], np.nan)
    d = np.diff(b, axis=-1)
    total = np.abs(d).sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, d.max(-1) / np.where(total > 0, total, 1.0), np.nan)


def marginal_intervals(dl, *, resamples=RESAMPLES, level=LEVEL, seed=SEED) -> Marginal:
    """Figure 1 intervals from ``dl`` [samples, K]: column k = |L_prefix(x + d) - L_prefix(x)| per sample
    under the attack on the first k + 1 tasks of the order (L = their summed losses, Definition 1).

    Bars equal ``metrics.adversarial_vulnerability`` (mean over finite samples); steps are paired
    differences of consecutive bars (step 0 = the first bar); both studentized. ``dominance`` =
    ``dominance_share`` with the percentile interval of its draws; ``dominant_step`` = the index of the
    largest step after the first task (-1 when there is none).
    """
    x = _columns(dl)
    fin = np.isfinite(x)
    point = np.array([x[fin[:, k], k].mean() if fin[:, k].any() else math.nan for k in range(x.shape[1])])
    st = mean_stat(x, resample_counts(x.shape[0], resamples, seed))
    ns = fin.sum(0)
    bars = [st.boot(k, point[k], int(ns[k])).interval(level) for k in range(x.shape[1])]
    steps = [bars[0]] + [
        st.diff_boot(k, k - 1, point[k] - point[k - 1], int(ns[: k + 1].min())).interval(level)
        for k in range(1, x.shape[1])
    ]
    dom = interval(float(dominance_share(point)), dominance_share(st.value[1:]), int(ns.min()), level)
    d = np.diff(point)  # the steps that add a task (the first bar is not one)
    return Marginal(bars, steps, dom, int(np.nanargmax(d)) + 1 if np.isfinite(d).any() else -1)


# ------------------------------------------------------------------------------------------ seeds
def seed_aggregate(per_seed: Sequence[Boot], seed: int = SEED) -> Boot:
    """One cell from its per-seed statistics on the same sample draws: the mean over seeds, with a
    two-level bootstrap: in each draw the seeds are resampled with replacement (``default_rng(seed)``)
    and each resampled seed contributes its value in that draw of the test samples, so the interval
    (percentile) covers both the spread across seeds and the sample noise. ``n`` = the smallest sample
    count, ``n_seeds`` = seeds with a value."""
    if not per_seed:
        raise ValueError("seed_aggregate needs at least one per-seed statistic")
    live = [b for b in per_seed if math.isfinite(b.value)]
    if len(per_seed) == 1 or len(live) <= 1:
        b = live[0] if live else per_seed[0]
        return Boot(b.value, b.draws, b.se, b.se_draws, b.n, len(live), b.percentile)
    d = np.column_stack([b.draws for b in live])
    pick = np.random.default_rng(seed).integers(0, len(live), size=d.shape)
    two = np.take_along_axis(d, pick, 1)
    fin = np.isfinite(two)
    with np.errstate(invalid="ignore", divide="ignore"):
        two = np.where(fin, two, 0).sum(1) / fin.sum(1)
    sd = float(np.nanstd(two, ddof=1)) if np.isfinite(two).sum() > 1 else math.nan
    value = float(np.mean([b.value for b in live]))
    n = min(b.n for b in live)
    return Boot(value, two, sd, np.full(len(two), sd), n, len(live), percentile=True)


def seed_aggregate_intervals(
    per_seed: Sequence[Interval], level: float = LEVEL, resamples: int = RESAMPLES, seed: int = SEED
) -> Interval:
    """``seed_aggregate`` when only each seed's value and interval are known (cell CSVs): each seed's
    sample draws are taken normal with the se its interval implies ((hi - lo) / 2 z), the same standard
    normal draw for every seed (they share the test samples)."""
    from scipy.stats import norm

    if not per_seed:
        raise ValueError("seed_aggregate_intervals needs at least one per-seed interval")
    if len(per_seed) == 1:
        return per_seed[0]
    z = np.random.default_rng(seed).standard_normal(resamples)
    zq = norm.ppf(1 - (1 - level) / 2)
    boots = []
    for iv in per_seed:
        se = (iv.hi - iv.lo) / (2 * zq) if math.isfinite(iv.lo) and math.isfinite(iv.hi) else 0.0
        boots.append(Boot(iv.value, iv.value + se * z, se, np.full(resamples, se), iv.n))
    return seed_aggregate(boots, seed).interval(level)


# ------------------------------------------------------------------------------------------ reading
def significant(iv: Interval) -> bool:
    """True when the interval excludes 0 (NaN bounds: False)."""
    return bool(iv.lo > 0 or iv.hi < 0)


def _decimals(*xs: float) -> int | None:
    """Decimal places giving the largest |x| 3 significant digits; None = use scientific notation."""
    m = max((abs(x) for x in xs if math.isfinite(x)), default=math.nan)
    if not math.isfinite(m) or m == 0:
        return 0
    if m < 1e-3 or m >= 1e5:
        return None
    return max(0, 2 - math.floor(math.log10(m)))


def _fmt(x: float, decimals: int | None) -> str:
    if not math.isfinite(x):
        return "-"
    s = f"{x:.2e}" if decimals is None else f"{x:.{decimals}f}"
    return s.lstrip("-") if float(s) == 0 else s  # no "-0.000"


def format_number(x: float) -> str:
    """One number by the module's rule (3 significant digits, ``-`` for NaN)."""
    return _fmt(float(x), _decimals(float(x)))


def format_interval(iv: Interval) -> str:
    """``value [lo, hi]`` with one decimal rule for the three numbers; the value alone if bounds are NaN."""
    d = _decimals(iv.value, iv.lo, iv.hi)
    if not (math.isfinite(iv.lo) and math.isfinite(iv.hi)):
        return _fmt(iv.value, _decimals(iv.value))
    return f"{_fmt(iv.value, d)} [{_fmt(iv.lo, d)}, {_fmt(iv.hi, d)}]"
