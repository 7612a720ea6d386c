"""RQ4: each proxy of Table 3 (early stopping, a surrogate encoder, the clean error) correlates with its
target.
"""

from __future__ import annotations

import math

import pandas as pd

from .. import stats as S
from .verdicts import Thresholds, _claim, _rows, verdict

# the paper's text per proxy; {setting}: what the study compared (its own epochs and encoders)
PROXIES = {
    "epochs": "early stopping {how} with the fully trained model's vulnerability (here {setting}; the "
    "paper: 50 "
    "vs 150 epochs, r = 0.55)",
    "arch": "a surrogate encoder {how} with the target encoder (here {setting}; the paper: ResNet18 vs "
    "ResNet50, "
    "r = 0.94)",
    "clean": "clean performance {how} with robustness (here {setting}; the paper: r = 0.98)",
}
VERY_STRONG = (
    "arch",
    "clean",
)  # "the surrogate encoder and the clean performance achieve a very strong correlation"


def claims_proxies(df: pd.DataFrame, th: Thresholds) -> list[dict]:
    """Table 3: each proxy correlates (r >= min_r); the surrogate encoder and the clean error correlate
    'very strongly' (r >= very_strong_r), as the paper states for its 0.94 and 0.98."""
    t3 = _rows(df, "table3")
    out = []
    for proxy, paper in PROXIES.items():
        checks = [("", th.min_r, "correlates")]
        if proxy in VERY_STRONG:
            checks.append(("_very_strong", th.very_strong_r, "correlates very strongly"))
        g = t3[t3["proxy"] == proxy]
        setting = g["setting"].iloc[0] if len(g) and g["setting"].iloc[0] else "not in this study"
        for suffix, t, how in checks:
            rule = (
                f"r >= {t:g}: supported if the interval of r lies at or above it, contradicted if below; "
                f"'too few cells' below {S.MIN_CELLS} cells"
            )
            if g.empty:
                v, lo, hi, n, det = math.nan, math.nan, math.nan, 0, "no table3 row for this proxy"
            else:
                r = g.iloc[0]
                v, lo, hi = r.value, r.lo, r.hi
                n, det = int(r.n) if r.n == r.n else 0, f"over {r.n:.0f} cells"
            decided = verdict(lo, hi, t, True) if n >= S.MIN_CELLS or g.empty else "too few cells"
            out.append(
                _claim(
                    f"rq4_proxy{suffix}:{proxy}",
                    paper.format(setting=setting, how=how),
                    "table3",
                    "Pearson r of the proxy with its target",
                    v,
                    lo,
                    hi,
                    n,
                    rule,
                    decided,
                    det,
                    "two-level bootstrap of r (cells and their test samples resampled together)",
                )
            )
    return out
