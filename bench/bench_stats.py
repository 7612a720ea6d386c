"""Bootstrap intervals: the vectorised draws of ``analysis.stats`` vs a plain per-cell resampling loop.

Every table cell's 95 % interval is a studentized bootstrap over the test samples (2000 resamples). ``stats``
draws the resamples once as a count matrix and gets every cell's resampled means and standard errors from
matrix products; the reference is the textbook loop (per cell and resample: index the per-sample ratios with
the resample's indices, t* = (mean* - mean) / (sd* / sqrt(n)), then invert the t* quantiles with the sample's
se). Both must give the same interval bounds; the ratio of their CPU times is the figure of merit.

    python bench/bench_stats.py [--cells 100] [--samples 1000] [--resamples 2000]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from mtlrobust.analysis import stats as S


def reference(clean: np.ndarray, adv: np.ndarray, resamples: int, seed: int) -> list[tuple[float, float]]:
    """Per cell and resample: the studentized mean of the resampled per-sample ratios (``stats``' draws;
    se* with ddof 0, the sample's se with ddof 1, as ``stats`` pairs them)."""
    idx = S.resample_indices(clean.shape[0], resamples, seed)
    out = []
    for j in range(clean.shape[1]):
        r = S.ratios(clean[:, j], adv[:, j])
        m, se = r.mean(), r.std(ddof=1) / np.sqrt(len(r))
        t = np.array([(r[i].mean() - m) / (r[i].std() / np.sqrt(len(r))) for i in idx])
        q_lo, q_hi = np.quantile(t, [0.025, 0.975])
        out.append((m - q_hi * se, m - q_lo * se))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cells", type=int, default=100)
    p.add_argument("--samples", type=int, default=1000)
    p.add_argument("--resamples", type=int, default=2000)
    a = p.parse_args()
    rng = np.random.default_rng(0)
    clean = rng.uniform(0.1, 1.0, (a.samples, a.cells))
    adv = clean * rng.lognormal(0.1, 0.3, (a.samples, a.cells))

    t = time.process_time()
    fast = S.rel_vuln_intervals(clean, adv, resamples=a.resamples)
    t_fast = time.process_time() - t
    t = time.process_time()
    slow = reference(clean, adv, a.resamples, S.SEED)
    t_slow = time.process_time() - t

    worst = max(max(abs(f.lo - lo), abs(f.hi - hi)) for f, (lo, hi) in zip(fast, slow, strict=True))
    print(f"{a.cells} cells x {a.samples} samples x {a.resamples} resamples")
    print(f"stats.rel_vuln_intervals: {t_fast:.2f} CPU-s; per-cell loop: {t_slow:.2f} CPU-s; "
          f"ratio {t_slow / t_fast:.1f}x; largest bound difference {worst:.2g}")  # fmt: skip


if __name__ == "__main__":
    main()
