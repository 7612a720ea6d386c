"""Issue 18: verdicts on coded per-sample data whose answer is known (heavy tails, interval coverage,
correlations over few cells, several comparisons, seeds)."""

import math

import numpy as np
import pandas as pd
import pytest

from mtlrobust.analysis import claims as CL
from mtlrobust.analysis import evaluations as E
from mtlrobust.analysis import render as RD
from mtlrobust.analysis import stats as S
from mtlrobust.evaluate import write_csv
from mtlrobust.ids import model_spec


def _eval_csv(path, model_id, tasks, errors):
    """An evaluation CSV: ``errors[attacked][task]`` = (clean errors, adversarial errors) per sample."""
    rows = []
    for attacked, by_task in errors.items():
        n = len(next(iter(by_task.values()))[0])
        for i in range(n):
            for t in tasks:
                c, a = (x[i] for x in by_task[t])
                ident = [model_id, "resnet18", "uniform", "+".join(tasks), 150, "pgd", "pgd", "linf"]
                rows.append(
                    [*ident, 8 / 255, 2 / 255, 2, 1, "{}", attacked, i, f"b/{i}/0", t, c, a, c, a, "", ""]
                )
    write_csv(rows, path)
    return path


# ------------------------------------------------------------------------------------ 18.1 heavy tails
def test_a_cell_carried_by_one_sample_reports_its_robust_companions_and_is_marked_fragile(tmp_path):
    n = 10
    # sample 0: clean error 0.01 -> ratio 9; the others: clean 1, ratios 0.05, 0.0625, ..., 0.15 (mean 0.1)
    clean = np.r_[0.01, np.ones(n - 1)]
    adv = np.r_[0.1, 1.1 + np.linspace(-0.05, 0.05, n - 1)]
    even = np.full(n, 1.0), np.full(n, 1.5) + np.linspace(-0.1, 0.1, n)  # ratios 0.4..0.6, none dominates
    single = model_spec("resnet18", "uniform", ["seg"], 0).id
    pair = model_spec("resnet18", "uniform", ["seg", "depth_z"], 0, main="seg").id
    paths = [
        _eval_csv(tmp_path / "a.csv", single, ["seg"], {"seg": {"seg": even}}),
        _eval_csv(tmp_path / "b.csv", pair, ["seg", "depth_z"],
                  {"seg": {"seg": (clean, adv), "depth_z": even}}),
    ]  # fmt: skip
    spec = {"layout": "grid", "title": "T", "note": "N", "label_columns": ["attack", "main"],
            "columns": ["uniform:s", "uniform:d"], "value": "rel_vuln",
            "rows": [{"labels": ["single", "s"], "kind": "single", "attack": "pgd",
                      "cells": [[single, 150, "pgd", "seg", "seg"],
                                [pair, 150, "pgd", "seg", "seg"]]}]}  # fmt: skip
    out = tmp_path / "t1.csv"
    RD.write("table1", spec, paths, csv=out, cells=tmp_path / "cells.csv")
    t = pd.read_csv(out).iloc[0]
    assert t["uniform:d"] == pytest.approx((9 + 9 * 0.1) / n)  # the paper's mean of ratios: 0.99
    assert t["uniform:d_rom"] == pytest.approx((0.1 + 9 * 1.1 - 0.01 - 9) / 9.01)  # 0.110
    assert t["uniform:d_median"] == pytest.approx((0.1 + 0.1125) / 2)  # 5th and 6th of the 10 ratios
    assert t["uniform:d_top_share"] == pytest.approx(9 / 9.9)
    assert t["uniform:s_top_share"] == pytest.approx(0.6 / 5.0)
    assert t["uniform:d_rom_lo"] < t["uniform:d_rom"] < t["uniform:d_rom_hi"]
    md = out.with_suffix(".md").read_text()
    row = next(s for s in md.splitlines() if s.startswith("| single"))
    s_cell, d_cell = row.split(" | ")[2:4]
    assert "†" not in s_cell and "†" in d_cell  # only the cell carried by one sample
    assert "† fragile: the largest single test sample carries more than 30% of" in md
    cells = CL.read_cells(tmp_path / "cells.csv")
    d = cells[cells["aux"] == "d"].iloc[0]
    assert (d["rom"], d["median"], d["fragile"]) == (
        pytest.approx(0.99 / 9.01),
        pytest.approx(0.10625),
        "True",
    )
    assert d["rom_diff"] == pytest.approx(0.99 / 9.01 - 0.5, abs=1e-6)  # vs the single-task model
    # a stricter threshold marks nothing, a looser one the even cell too
    RD.write("table1", spec, paths, csv=out, fragile_share=0.95)
    assert "†" not in out.with_suffix(".md").read_text()
    with pytest.raises(ValueError, match=r"fragile_share must be in \(0, 1\], got 0"):
        E.Evaluations(paths, fragile_share=0)


def test_the_ratio_of_means_interval_uses_the_delta_method_se():
    rng = np.random.default_rng(3)
    c = rng.uniform(0.2, 1.0, 50)
    a = c * rng.lognormal(0.2, 0.4, 50)
    st = S.rom_stat(c, a, S.resample_counts(50))
    q = a.mean() / c.mean()
    boot = st.boot(0, q - 1, 50)
    by_hand = np.std(a - q * c, ddof=1) / (c.mean() * math.sqrt(50))  # sd of a - q c over mean c, / sqrt n
    assert boot.se == pytest.approx(by_hand, rel=1e-9)
    assert boot.draws == pytest.approx(S.resampled_means(a, S.resample_counts(50))[:, 0]
                                       / S.resampled_means(c, S.resample_counts(50))[:, 0] - 1)  # fmt: skip


def _cells(rows):
    df = pd.DataFrame(rows)
    for c in ("attack", "method", "norm", "kind", "weighting", "main", "aux", "vs"):
        df[c] = df[c].fillna("").astype(str) if c in df else ""
    return df


def test_a_claim_is_decided_under_both_statistics_and_called_metric_sensitive_when_they_differ():
    # weighted vs uniform: the mean of ratios says lower on every pair, the ratio of means says nothing
    base = {"output": "table1", "attack": "pgd", "method": "pgd", "norm": "linf", "kind": "single",
            "weighting": "paper", "vs": "uniform", "value": 1.0, "lo": 0.8, "hi": 1.2, "n": 50, "rom": 0.2,
            "rom_lo": 0.1, "rom_hi": 0.3, "diff": -0.5, "diff_lo": -0.8, "diff_hi": -0.3, "rom_diff": 0.01,
            "rom_diff_lo": -0.05, "rom_diff_hi": 0.07}  # fmt: skip
    rows = [dict(base, main=m, aux=x) for m, x in (("s", "d"), ("d", "s"), ("s", "n"), ("n", "s"))]
    table, md = CL.render_claims(_cells(rows))
    c = table.set_index("claim").loc["rq3_weights_lower_pgd"]
    assert (c["verdict"], c["verdict_rom"], c["metric_sensitive"]) == ("supported", "unresolved", True)
    line = next(s for s in md.splitlines() if s.startswith("| rq3_weights_lower_pgd"))
    assert "**supported**" in line and "**unresolved** (metric-sensitive)" in line
    # identical ratio-of-means columns: the same verdict, not metric-sensitive
    same = [dict(r, rom_diff=r["diff"], rom_diff_lo=r["diff_lo"], rom_diff_hi=r["diff_hi"]) for r in rows]
    c = CL.claims(CL.check_cells(_cells(same))).set_index("claim").loc["rq3_weights_lower_pgd"]
    assert (c["verdict_rom"], c["metric_sensitive"]) == ("supported", False)


# ------------------------------------------------------------------------------------ 18.2 coverage
SIMS = 1500  # binomial se of a coverage near 0.94: sqrt(0.94 * 0.06 / 1500) = 0.006


def _skewed(sigma: float, seed: int):
    """SIMS data sets of n = 20: ratios a ~ lognormal(-1, sigma) and b on the same samples (corr. 0.8 on
    the log scale, 22 % lower); true mean of a and of a - b."""
    rng = np.random.default_rng(seed)
    z1, z2 = rng.standard_normal((2, 20, SIMS))
    a = np.exp(-1 + sigma * z1)
    b = np.exp(-1.25 + sigma * (0.8 * z1 + 0.6 * z2))
    mean = math.exp(-1 + sigma**2 / 2)
    return a, b, mean, (1 - math.exp(-0.25)) * mean


@pytest.mark.parametrize("sigma", [0.5, 0.75])
def test_studentized_intervals_cover_skewed_means_and_paired_differences_at_n_20(sigma):
    a, b, mean, diff = _skewed(sigma, seed=11)
    clean, adv = np.ones((20, 2 * SIMS)), 1 + np.concatenate([a, b], axis=1)
    cells = S.rel_vuln_intervals(clean[:, :SIMS], adv[:, :SIMS])
    diffs = S.rel_vuln_diffs(clean, adv, [(j, SIMS + j) for j in range(SIMS)])
    cover_cell = np.mean([iv.lo <= mean <= iv.hi for iv in cells])
    cover_diff = np.mean([iv.lo <= diff <= iv.hi for iv in diffs])
    assert cover_cell >= 0.93 and cover_diff >= 0.93, (cover_cell, cover_diff)
    # the check can fail: the percentile interval of the same draws covers the mean < 93 % of the time
    draws = S.resampled_means(a, S.resample_counts(20))
    pct = [S.interval(a[:, j].mean(), draws[:, j], 20) for j in range(SIMS)]
    assert np.mean([iv.lo <= mean <= iv.hi for iv in pct]) < 0.92


# ------------------------------------------------------------------------------------ 18.3 correlations
@pytest.mark.parametrize("n, expected", [(9, "too few cells"), (10, "supported")])
def test_a_correlation_over_fewer_than_10_cells_is_too_few_cells(n, expected):
    rows = [{"output": "table3", "proxy": p, "value": 0.9, "lo": 0.6, "hi": 0.97, "n": n, "rom": 0.8,
             "rom_lo": 0.5, "rom_hi": 0.95} for p in ("epochs", "arch", "clean")]  # fmt: skip
    table = CL.claims(CL.check_cells(_cells(rows))).set_index("claim")
    proxies = table.loc[[f"rq4_proxy:{p}" for p in ("epochs", "arch", "clean")]]
    assert (proxies["verdict"] == expected).all() and (proxies["verdict_rom"] == expected).all()


def test_the_two_level_interval_of_r_over_4_cells_is_much_wider_than_the_samples_only_one():
    # 4 cells whose values line up almost perfectly, each measured precisely: the test samples alone
    # say r is about -0.97 +- little; which 4 cells were drawn is the real uncertainty
    rng = np.random.default_rng(0)
    x, y = np.array([0.1, 0.4, 0.5, 0.9]), np.array([0.9, 0.55, 0.6, 0.05])
    xd, yd = x + rng.normal(0, 0.005, (2000, 4)), y + rng.normal(0, 0.005, (2000, 4))
    iv = S.pearson_interval(x, y, xd, yd)
    samples_only = S.interval(iv.value, S.pearson_draws(xd, yd), 4)
    assert samples_only.hi - samples_only.lo < 0.05
    assert iv.lo <= iv.value and iv.hi - iv.lo > 10 * (samples_only.hi - samples_only.lo)
    assert iv.lo >= -1 and iv.hi <= 1
    fz = S.fisher_interval(iv.value, 4)  # tanh(atanh(r) +- 1.96 / sqrt(1)): the cell-level interval
    assert (fz.lo, fz.hi) == pytest.approx(
        (math.tanh(math.atanh(iv.value) - 1.959964), math.tanh(math.atanh(iv.value) + 1.959964))
    )
    assert math.isnan(S.fisher_interval(iv.value, 3).lo)


# ------------------------------------------------------------------------------ 18.4 several comparisons
def test_max_statistic_intervals_hold_the_family_wise_error_at_5_percent():
    # 8 comparisons, all truly 0; per comparison about 1 - 0.95^8 = 34 % of the families have a spurious
    # "significant" one, family-wise about 5 %
    rng = np.random.default_rng(4)
    families, k, n = 150, 8, 40
    counts = S.resample_counts(n, 1000)
    any_single = any_fw = 0
    for _ in range(families):
        x = rng.normal(1.0, 1.0, (n, 2 * k))
        st = S.mean_stat(x, counts)
        values = [x[:, j].mean() - x[:, k + j].mean() for j in range(k)]
        boots = st.diff_boots([(j, k + j) for j in range(k)], values, [n] * k)
        any_single += any(S.significant(b.interval()) for b in boots)
        fw = S.simultaneous(boots)
        any_fw += any(S.significant(iv) for iv in fw)
        assert all(
            f.lo <= b.interval().lo and f.hi >= b.interval().hi for f, b in zip(fw, boots, strict=True)
        )
    assert any_single / families > 0.2 and any_fw / families < 0.1


def _pairs(diffs, **extra):
    base = {"output": "table1", "attack": "pgd", "method": "pgd", "norm": "linf", "kind": "single",
            "weighting": "paper", "vs": "uniform", "value": 1.0, "lo": 0.8, "hi": 1.2, "n": 50}  # fmt: skip
    mains = (("s", "d"), ("d", "s"), ("s", "n"), ("n", "s"))
    return [dict(base, main=m, aux=x, **d, **extra) for (m, x), d in zip(mains, diffs, strict=True)]


def test_for_each_pair_uses_holm_when_the_cells_carry_no_family_wise_bounds():
    from scipy.stats import norm

    # four lower pairs with p = 0.01, 0.02, 0.03, 0.04 (intervals +-1.96 se): each excludes 0 on its own,
    # Holm rejects only p = 0.01 <= 0.05 / 4, then stops at 0.02 > 0.05 / 3
    diffs = []
    for p in (0.01, 0.02, 0.03, 0.04):
        d = -norm.isf(p / 2)  # se = 1
        diffs.append({"diff": d, "diff_lo": d - norm.isf(0.025), "diff_hi": d + norm.isf(0.025)})
    assert all(x["diff_hi"] < 0 for x in diffs)
    table, md = CL.render_claims(_cells(_pairs(diffs)))
    c = table.set_index("claim").loc["rq3_weights_lower_pgd"]
    assert c["detail"].startswith("1 of 4 pairs surely") and c["verdict"] == "unresolved"
    assert c["procedure"].startswith("family-wise 95 %: Holm over the 4 comparisons")
    assert "Holm over the 4 comparisons" in md


def test_for_each_pair_uses_the_tables_max_statistic_bounds_when_present():
    lower = {"diff": -0.5, "diff_lo": -0.8, "diff_hi": -0.2}
    fw_in, fw_out = {"diff_fw_lo": -0.9, "diff_fw_hi": -0.1}, {"diff_fw_lo": -1.0, "diff_fw_hi": 0.05}
    rows = _pairs([dict(lower, **fw_in)] * 3 + [dict(lower, **fw_out)], fw_k=4)
    c = CL.claims(CL.check_cells(_cells(rows))).set_index("claim").loc["rq3_weights_lower_pgd"]
    assert c["detail"].startswith("3 of 4 pairs surely") and c["verdict"] == "unresolved"
    assert "max-statistic bootstrap-t over the 4 comparisons" in c["procedure"]
    table = CL.claims(CL.check_cells(_cells(rows))).set_index("claim")
    rq1 = table.loc["rq1_not_reliably_less_vulnerable:single"]
    assert rq1["procedure"].startswith("per comparison")


# ------------------------------------------------------------------------------------ 18.7 seeds
def test_seeds_and_samples_are_resampled_together():
    # two seeds, 1 and 3, measured without sample noise: the resampled seed mean is 1, 2 or 3 with
    # probabilities 1/4, 1/2, 1/4, so the 95 % interval is [1, 3] (the old t-interval over 2 seeds: +-12.7)
    flat = [S.Boot(v, np.full(2000, v), 0.0, np.zeros(2000), 30) for v in (1.0, 3.0)]
    iv = S.seed_aggregate(flat).interval()
    assert (iv.value, iv.lo, iv.hi, iv.n_seeds) == (2.0, 1.0, 3.0, 2)
    # with sample noise inside each seed the interval widens past the seeds' values
    noisy = [S.Boot(v, v + 0.3 * np.random.default_rng(k).standard_normal(2000), 0.3, np.full(2000, 0.3), 30)
             for k, v in enumerate((1.0, 3.0))]  # fmt: skip
    wide = S.seed_aggregate(noisy).interval()
    assert wide.lo < 1.0 - 0.2 and wide.hi > 3.0 + 0.2
