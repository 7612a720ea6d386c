"""Uncertainty of the study's numbers: bootstrap intervals over test samples, paired differences, seeds.

A table cell is a mean over a few hundred test samples, so two cells can differ by noise alone. Every
number gets a 95 % percentile-bootstrap interval over the test samples, and a comparison between two
cells (multi-task vs single-task model, weighted vs uniform, APGD vs PGD) a PAIRED interval: both cells
are recomputed on the same resampled samples, so the noise they share cancels in the difference.

Conventions (one place, so every interval of the study is comparable):

* a draw is ``n`` sample positions taken with replacement from ``numpy.random.default_rng(seed)``;
  ``RESAMPLES`` (2000) draws, ``SEED`` 0, ``LEVEL`` 0.95. The draws depend only on (n, resamples, seed):
  cells whose per-sample arrays are aligned by sample index (``sample_matrix``) are resampled with the
  same indices however many calls compute them, which is what makes their differences paired;
* a cell's value is computed exactly as the tables compute it (``metrics.relative_vulnerability``:
  samples with a zero or NaN clean error, or a NaN adversarial error, are skipped; a sample missing from
  a cell is NaN, hence skipped too). Within a draw the cell is the mean over its valid drawn samples;
* ``n`` of an interval = the samples (or cells, for a correlation; seeds, for ``seed_interval``) it rests
  on. Bounds are NaN when fewer than 2 remain;
* ``CellDraws`` puts every cell of the per-sample evaluation rows on one set of draws (the producer's
  entry point: ``interval(key)``, ``diff(key_a, key_b)``, draws for ``pearson_interval``); ``prefix_dl``
  and ``marginal_intervals`` do the same for Figure 1;
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


def rel_vuln_intervals(
    clean, adv, *, resamples: int = RESAMPLES, level: float = LEVEL, seed: int = SEED
) -> list[Interval]:
    """One interval of the relative task vulnerability per column of ``clean``/``adv`` [samples(, cells)].

    Columns are cells aligned by sample index; all are resampled with the same draws.
    """
    c, a = _columns(clean), _columns(adv)
    if c.shape != a.shape:
        raise ValueError(f"clean and adversarial errors differ in shape: {c.shape} vs {a.shape}")
    draws = resampled_means(ratios(c, a), resample_counts(c.shape[0], resamples, seed))
    out = []
    for j in range(c.shape[1]):
        rv = M.relative_vulnerability(c[:, j], a[:, j])
        out.append(interval(rv.value, draws[:, j], rv.n, level))
    return out


def rel_vuln_interval(clean, adv, **kw) -> Interval:
    """The relative task vulnerability of one cell from its per-sample errors, with its interval."""
    return rel_vuln_intervals(np.ravel(clean), np.ravel(adv), **kw)[0]


def rel_vuln_diffs(
    clean, adv, pairs: Sequence[tuple[int, int]], *, resamples=RESAMPLES, level=LEVEL, seed=SEED
) -> list[Interval]:
    """Paired intervals of v(cell a) - v(cell b) for each (a, b) column pair of ``clean``/``adv``.

    The value is the difference of the two cells' ``metrics.relative_vulnerability`` values; ``n`` is the
    smaller of the two cells' sample counts.
    """
    c, a = _columns(clean), _columns(adv)
    if c.shape != a.shape:
        raise ValueError(f"clean and adversarial errors differ in shape: {c.shape} vs {a.shape}")
    draws = resampled_means(ratios(c, a), resample_counts(c.shape[0], resamples, seed))
    rvs = [M.relative_vulnerability(c[:, j], a[:, j]) for j in range(c.shape[1])]
    out = []
    for i, j in pairs:
        n = min(rvs[i].n, rvs[j].n)
        out.append(interval(rvs[i].value - rvs[j].value, draws[:, i] - draws[:, j], n, level))
    return out


def rel_vuln_diff(clean_a, adv_a, clean_b, adv_b, **kw) -> Interval:
    """Paired interval of v(a) - v(b); the four arrays are aligned by sample (NaN = not evaluated)."""
    lens = {len(np.ravel(x)) for x in (clean_a, adv_a, clean_b, adv_b)}
    if len(lens) != 1:
        raise ValueError(f"paired cells must be aligned by sample; got lengths {sorted(lens)}")
    c = np.column_stack([np.ravel(clean_a), np.ravel(clean_b)])
    a = np.column_stack([np.ravel(adv_a), np.ravel(adv_b)])
    return rel_vuln_diffs(c, a, [(0, 1)], **kw)[0]


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
    """

    KEY = ("model_id", "epoch", "attack", "attacked", "task")

    def __init__(self, rows: pd.DataFrame, key=KEY, *, resamples=RESAMPLES, level=LEVEL, seed=SEED):
        clean = sample_matrix(rows, key, "clean_error")
        adv = sample_matrix(rows, key, "adv_error").reindex(index=clean.index, columns=clean.columns)
        self.level = level
        self.cols = {k if isinstance(k, tuple) else (k,): j for j, k in enumerate(clean.columns)}
        self.clean, self.adv = clean.to_numpy(np.float64), adv.to_numpy(np.float64)
        self.counts = resample_counts(len(clean), resamples, seed)
        self.draws = resampled_means(ratios(self.clean, self.adv), self.counts)
        # point values from the rows in their own order, as aggregate sums them (bit-identical)
        self._rv = {
            self._j(k if isinstance(k, tuple) else (k,)): M.relative_vulnerability(
                g["clean_error"], g["adv_error"]
            )
            for k, g in rows.groupby(list(key), sort=False)
        }

    def _j(self, key) -> int:
        k = tuple(key)
        if k not in self.cols:
            raise KeyError(f"cell {k} is not in the per-sample rows")
        return self.cols[k]

    def rel_vuln(self, key) -> M.RelVuln:
        return self._rv[self._j(key)]

    def interval(self, key) -> Interval:
        """The cell's relative task vulnerability (= the tables' value) with its interval."""
        rv = self.rel_vuln(key)
        return interval(rv.value, self.draws[:, self._j(key)], rv.n, self.level)

    def diff(self, key_a, key_b) -> Interval:
        """Paired interval of v(a) - v(b); ``n`` = the smaller sample count."""
        a, b = self.rel_vuln(key_a), self.rel_vuln(key_b)
        d = self.draws[:, self._j(key_a)] - self.draws[:, self._j(key_b)]
        return interval(a.value - b.value, d, min(a.n, b.n), self.level)

    def rel_vuln_draws(self, key) -> np.ndarray:
        """[draws] of the cell's relative vulnerability (for ``pearson_interval``)."""
        return self.draws[:, self._j(key)]

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
        r = (dx * dy).sum(1) / np.sqrt((dx * dx).sum(1) * (dy * dy).sum(1))
    return np.where(k >= 3, r, np.nan)


def pearson_interval(x, y, x_draws, y_draws, level: float = LEVEL) -> Interval:
    """Pearson r of the cell values ``x``, ``y`` (as ``tables.pearson``) with its interval over draws.

    ``x_draws``/``y_draws`` [draws, cells]: the cells recomputed in the same draws (``resampled_means``
    of ``ratios`` or of clean errors, one counts matrix for both). ``n`` = cells finite in both.
    """
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    ok = np.isfinite(x) & np.isfinite(y)
    n = int(ok.sum())
    if n < 3 or np.ptp(x[ok]) == 0 or np.ptp(y[ok]) == 0:
        return Interval(math.nan, math.nan, math.nan, n)
    from scipy.stats import pearsonr

    r = float(pearsonr(x[ok], y[ok]).statistic)
    return interval(r, pearson_draws(x_draws, y_draws), n, level)


# ------------------------------------------------------------------------------------------ figure 1
@dataclass(frozen=True)
class Marginal:
    """Figure 1 for one order: bars E[dL] of each attacked prefix, their steps, and the dominance share."""

    bars: list[Interval]
    steps: list[Interval]
    dominance: Interval
    dominant_step: int


def dominance_share(bars) -> np.ndarray:
    """max_k D_k / sum_k |D_k| over the steps D_k of ``bars`` [..., K] (D_0 = bars[0], from no task).

    1 when one task makes the whole change, 1/K when all K steps are equal; NaN when nothing changes.
    """
    b = np.asarray(bars, dtype=np.float64)
    d = np.diff(b, axis=-1, prepend=0.0)
    total = np.abs(d).sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, d.max(-1) / np.where(total > 0, total, 1.0), np.nan)


def marginal_intervals(dl, *, resamples=RESAMPLES, level=LEVEL, seed=SEED) -> Marginal:
    """Figure 1 intervals from ``dl`` [samples, K]: column k = |L_prefix(x + d) - L_prefix(x)| per sample
    under the attack on the first k + 1 tasks of the order (L = their summed losses, Definition 1).

    Bars equal ``metrics.adversarial_vulnerability`` (mean over finite samples); steps are paired
    differences of consecutive bars (step 0 = the first bar); ``dominance`` = ``dominance_share``.
    """
    x = _columns(dl)
    fin = np.isfinite(x)
    point = np.array([x[fin[:, k], k].mean() if fin[:, k].any() else math.nan for k in range(x.shape[1])])
    draws = resampled_means(x, resample_counts(x.shape[0], resamples, seed))
    ns = fin.sum(0)
    prev_pt, prev_dr = np.r_[0.0, point[:-1]], np.c_[np.zeros(len(draws)), draws[:, :-1]]
    bars = [interval(point[k], draws[:, k], int(ns[k]), level) for k in range(x.shape[1])]
    steps = [
        interval(point[k] - prev_pt[k], draws[:, k] - prev_dr[:, k], int(ns[: k + 1].min()), level)
        for k in range(x.shape[1])
    ]
    dom = interval(float(dominance_share(point)), dominance_share(draws), int(ns.min()), level)
    d = np.diff(point, prepend=0.0)
    return Marginal(bars, steps, dom, int(np.nanargmax(d)) if np.isfinite(d).any() else -1)


# ------------------------------------------------------------------------------------------ seeds
def seed_interval(values, level: float = LEVEL) -> Interval:
    """Mean over training seeds with a Student-t interval; ``n`` = ``n_seeds`` = finite seeds (>= 2)."""
    from scipy.stats import t

    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    k = int(v.size)
    if k == 0:
        return Interval(math.nan, math.nan, math.nan, 0, 0)
    mean = float(v.mean())
    if k < 2:
        return Interval(mean, math.nan, math.nan, k, k)
    half = float(t.ppf(1 - (1 - level) / 2, k - 1) * v.std(ddof=1) / math.sqrt(k))
    return Interval(mean, mean - half, mean + half, k, k)


def seed_aggregate(per_seed: Sequence[Interval], level: float = LEVEL) -> Interval:
    """One cell from its per-seed sample intervals: mean value; bounds = the wider of the t-interval over
    seeds and the mean of the per-seed bounds (the sample noise of the mean when seeds share test samples,
    an upper bound otherwise), so neither source of noise is dropped. ``n`` = the smallest sample count.
    """
    if not per_seed:
        raise ValueError("seed_aggregate needs at least one per-seed interval")
    if len(per_seed) == 1:
        return per_seed[0]
    s = seed_interval([iv.value for iv in per_seed], level)
    lo = float(np.mean([iv.lo for iv in per_seed]))
    hi = float(np.mean([iv.hi for iv in per_seed]))
    los, his = [b for b in (s.lo, lo) if math.isfinite(b)], [b for b in (s.hi, hi) if math.isfinite(b)]
    return Interval(
        s.value,
        min(los) if los else math.nan,
        max(his) if his else math.nan,
        min(iv.n for iv in per_seed),
        s.n_seeds,
    )


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
