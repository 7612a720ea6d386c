"""Bootstrap intervals: values equal the tables' numbers, paired draws, coverage, speed, seeds, format."""

import math
import time

import numpy as np
import pandas as pd
import pytest

from mtlrobust import metrics as M
from mtlrobust.analysis import stats as S
from mtlrobust.analysis.layouts import correlations as CO


def _cells(n=300, m=3, seed=0):
    rng = np.random.default_rng(seed)
    clean = rng.uniform(0.2, 2.0, (n, m))
    adv = clean * (1 + rng.normal(0.5, 0.3, (n, m)))
    return clean, adv


def test_value_and_n_equal_the_tables_relative_vulnerability_with_skipped_samples():
    clean, adv = _cells(50, 1)
    clean[:3, 0] = 0.0  # zero clean error: no ratio
    clean[3, 0] = np.nan  # no valid pixel
    adv[4, 0] = np.nan
    iv = S.rel_vuln_interval(clean[:, 0], adv[:, 0])
    rv = M.relative_vulnerability(clean[:, 0], adv[:, 0])
    assert iv.value == rv.value  # exactly, not approximately
    assert iv.n == rv.n == 45
    assert iv.lo < iv.value < iv.hi


def test_same_seed_same_interval_other_seed_other_draws():
    clean, adv = _cells(80, 1)
    a = S.rel_vuln_interval(clean, adv)
    assert a == S.rel_vuln_interval(clean, adv)
    b = S.rel_vuln_interval(clean, adv, seed=1)
    assert b.value == a.value and (b.lo, b.hi) != (a.lo, a.hi)


def test_interval_covers_the_true_mean_about_95_percent_of_the_time():
    rng = np.random.default_rng(5)
    hits = 0
    trials = 150
    for _ in range(trials):
        clean = np.ones(200)
        adv = 1 + rng.exponential(0.5, 200)  # true relative vulnerability 0.5, skewed
        iv = S.rel_vuln_interval(clean, adv, resamples=1000, seed=int(rng.integers(1 << 30)))
        hits += iv.lo <= 0.5 <= iv.hi
    assert 0.88 <= hits / trials <= 0.99


def test_paired_difference_resolves_what_two_separate_intervals_cannot():
    rng = np.random.default_rng(1)
    n = 200
    clean = rng.uniform(0.5, 1.5, n)
    shared = rng.exponential(2.0, n)  # per-sample difficulty seen by both models
    adv_a = clean * (1 + shared + 0.05)
    adv_b = clean * (1 + shared)
    a, b = S.rel_vuln_interval(clean, adv_a), S.rel_vuln_interval(clean, adv_b)
    assert a.lo < b.hi  # unpaired intervals overlap
    d = S.rel_vuln_diff(clean, adv_a, clean, adv_b)
    assert d.value == pytest.approx(a.value - b.value, abs=0)  # the difference of the two table cells
    assert S.significant(d) and d.lo > 0
    assert d.hi - d.lo < 0.05 * (a.hi - a.lo)


def test_identical_cells_have_a_zero_width_paired_interval():
    clean, adv = _cells(40, 1)
    d = S.rel_vuln_diff(clean, adv, clean, adv)
    assert (d.value, d.lo, d.hi) == (0.0, 0.0, 0.0)
    assert not S.significant(d)


def test_sample_matrix_aligns_cells_by_sample_id_and_missing_samples_are_skipped():
    rows = pd.DataFrame(
        {
            "model": ["a"] * 4 + ["b"] * 3,
            "sample": [3, 1, 0, 2, 2, 0, 1],  # b lacks sample 3, rows out of order
            "clean_error": [1.0, 2.0, 4.0, 1.0, 2.0, 1.0, 1.0],
            "adv_error": [2.0, 3.0, 4.0, 3.0, 2.0, 5.0, 1.5],
        }
    )
    c = S.sample_matrix(rows, ["model"], "clean_error")
    a = S.sample_matrix(rows, ["model"], "adv_error")
    assert list(c.index) == [0, 1, 2, 3] and math.isnan(c.loc[3, "b"])
    ivs = S.rel_vuln_intervals(c.to_numpy(), a.to_numpy())
    for j, m in enumerate(c.columns):
        g = rows[rows["model"] == m]
        assert ivs[j].value == M.relative_vulnerability(g["clean_error"], g["adv_error"]).value
    assert ivs[1].n == 3
    with pytest.raises(ValueError, match="appears twice"):
        S.sample_matrix(pd.concat([rows, rows.head(1)]), ["model"], "clean_error")
    with pytest.raises(ValueError, match="lack column"):
        S.sample_matrix(rows, ["arch"], "clean_error")


def test_generic_bootstrap_uses_the_same_draws_as_the_vectorised_path():
    clean, adv = _cells(60, 1)
    r = S.ratios(clean[:, 0], adv[:, 0])
    generic = S.paired_bootstrap(lambda x: np.mean(x), r, resamples=300)
    draws = S.mean_stat(r, S.resample_counts(60, 300)).value[1:, 0]  # the studentized path's draws
    fast = S.interval(float(np.mean(r)), draws, 60)
    assert generic.value == pytest.approx(fast.value)
    assert (generic.lo, generic.hi) == pytest.approx((fast.lo, fast.hi))
    with pytest.raises(ValueError, match="first axis"):
        S.paired_bootstrap(np.mean, np.ones(3), np.ones(4))


def test_pearson_interval_value_is_the_tables_r_and_its_draws_resample_cells_and_samples():
    rng = np.random.default_rng(2)
    n, m = 80, 8
    clean = rng.uniform(0.5, 1.5, (n, m))
    level = rng.uniform(0.1, 2.0, m)
    adv_x = clean * (1 + level + rng.normal(0, 0.3, (n, m)))
    adv_y = clean * (1 + 2 * level + rng.normal(0, 0.3, (n, m)))
    x = [M.relative_vulnerability(clean[:, j], adv_x[:, j]).value for j in range(m)]
    y = [M.relative_vulnerability(clean[:, j], adv_y[:, j]).value for j in range(m)]
    counts = S.resample_counts(n, 400)
    rx, ry = (
        S.resampled_means(S.ratios(clean, adv_x), counts),
        S.resampled_means(S.ratios(clean, adv_y), counts),
    )
    iv = S.pearson_interval(x, y, rx, ry)
    _, r, _ = CO.pearson(x, y)
    assert iv.value == pytest.approx(r, abs=1e-12) and iv.n == m
    assert iv.lo <= iv.value <= iv.hi <= 1
    # by hand: draw d takes the cells pick[d] (with replacement) at their values in draw d
    pick = np.random.default_rng(S.SEED).integers(0, m, size=(400, m))
    by_hand = [np.corrcoef(rx[d, pick[d]], ry[d, pick[d]])[0, 1] for d in range(400)]
    assert (iv.lo, iv.hi) == pytest.approx(tuple(np.nanquantile(by_hand, [0.025, 0.975])))
    samples_only = S.interval(r, S.pearson_draws(rx, ry), m)
    assert iv.hi - iv.lo > samples_only.hi - samples_only.lo  # the choice of cells adds noise
    assert math.isnan(S.pearson_interval([1, 2], [1, 2], counts[:, :2], counts[:, :2]).value)


def test_fisher_interval_of_r_over_cells():
    iv = S.fisher_interval(0.5, 12)
    half = 1.959963984540054 / 3.0
    assert (iv.lo, iv.hi) == pytest.approx(
        (math.tanh(math.atanh(0.5) - half), math.tanh(math.atanh(0.5) + half))
    )
    assert math.isnan(S.fisher_interval(0.9, 3).lo)


def test_dominance_share_and_figure1_bars_equal_definition_1():
    # only the steps that add a task count: the first bar (the first task alone) is not a step
    assert S.dominance_share([1.0, 1.1, 3.0, 3.1]) == pytest.approx(1.9 / 2.1)
    assert S.dominance_share([1.0, 2.0, 3.0, 4.0]) == pytest.approx(1 / 3)
    assert S.dominance_share([5.0, 5.1, 5.2]) == pytest.approx(0.5)  # a large first bar does not dominate
    assert math.isnan(S.dominance_share([0.0, 0.0])) and math.isnan(S.dominance_share([3.0]))
    rng = np.random.default_rng(3)
    n = 150
    clean = {t: rng.uniform(0, 1, n) for t in "abc"}
    # prefix k is attacked separately: its own adversarial losses; c is the task that adds most
    adv = [{t: clean[t] + rng.uniform(0, s, n) for t in "abc"} for s in (0.2, 0.3, 2.0)]
    prefixes = ["a", "ab", "abc"]
    dl = np.column_stack([np.abs(sum(adv[k][t] - clean[t] for t in p)) for k, p in enumerate(prefixes)])
    dl[0, 1] = np.nan
    fig = S.marginal_intervals(dl)
    for k, p in enumerate(prefixes):
        cl = {t: clean[t].copy() for t in p}
        if k == 1:
            cl["a"][0] = np.nan
        assert fig.bars[k].value == pytest.approx(M.adversarial_vulnerability(cl, adv[k], list(p)), abs=1e-12)
    assert fig.steps[0].value == fig.bars[0].value
    assert fig.steps[2].value == pytest.approx(fig.bars[2].value - fig.bars[1].value)
    assert fig.dominant_step == 2 and S.significant(fig.steps[2])
    assert fig.dominance.lo > 0.5


def test_seed_aggregate_resamples_seeds_and_samples_together():
    rng = np.random.default_rng(0)
    z = rng.standard_normal(2000)
    boots = [
        S.Boot(v, v + 0.01 * z, 0.01, np.full(2000, 0.01), 100 - 10 * k) for k, v in enumerate((1.0, 2.0))
    ]
    agg = S.seed_aggregate(boots)
    assert (agg.value, agg.n, agg.n_seeds) == (1.5, 90, 2)
    pick = np.random.default_rng(S.SEED).integers(0, 2, size=(2000, 2))
    d = np.column_stack([b.draws for b in boots])
    by_hand = np.take_along_axis(d, pick, 1).mean(1)
    iv = agg.interval()
    assert (iv.lo, iv.hi) == pytest.approx(tuple(np.quantile(by_hand, [0.025, 0.975])))
    assert iv.lo < 1.0 and iv.hi > 2.0  # both seeds (and their sample noise) inside
    assert S.seed_aggregate(boots[:1]).value == 1.0
    iv2 = S.seed_aggregate_intervals([S.Interval(1.0, 0.98, 1.02, 100), S.Interval(2.0, 1.98, 2.02, 90)])
    assert iv2.lo < 1.0 and iv2.hi > 2.0 and iv2.n == 90 and iv2.n_seeds == 2


def test_significant_needs_an_interval_that_excludes_zero():
    assert S.significant(S.Interval(1, 0.1, 2, 5))
    assert S.significant(S.Interval(-1, -2, -0.1, 5))
    assert not S.significant(S.Interval(1, 0.0, 2, 5))
    assert not S.significant(S.Interval(1, math.nan, math.nan, 1))


@pytest.mark.parametrize(
    "iv, text",
    [
        (S.Interval(0.89, 0.85, 0.93, 10), "0.890 [0.850, 0.930]"),
        (S.Interval(135.4, 120.0, 150.0, 10), "135 [120, 150]"),
        (S.Interval(-0.00818, -0.012, -0.004, 10), "-0.0082 [-0.0120, -0.0040]"),
        (S.Interval(-0.0001, -0.5, 0.5, 10), "0.000 [-0.500, 0.500]"),
        (S.Interval(1e-5, -2e-5, 3e-5, 10), "1.00e-05 [-2.00e-05, 3.00e-05]"),
        (S.Interval(0.123, math.nan, math.nan, 1), "0.123"),
        (S.Interval(math.nan, math.nan, math.nan, 0), "-"),
    ],
)
def test_one_number_format(iv, text):
    assert S.format_interval(iv) == text


def test_fast_enough_for_a_study_2000_draws_1000_samples_100_cells():
    clean, adv = _cells(1000, 100)
    t = time.perf_counter()
    ivs = S.rel_vuln_intervals(clean, adv)
    S.rel_vuln_diffs(clean, adv, [(j, 0) for j in range(1, 100)])
    assert time.perf_counter() - t < 5.0  # ~0.2 s measured on one core
    assert len(ivs) == 100 and all(iv.lo < iv.value < iv.hi for iv in ivs)


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="differ in shape"):
        S.rel_vuln_intervals(np.ones(3), np.ones(4))
    with pytest.raises(ValueError, match="aligned by sample"):
        S.rel_vuln_diff(np.ones(3), np.ones(3), np.ones(4), np.ones(4))
    with pytest.raises(ValueError, match="level"):
        S.interval(1.0, [1.0, 2.0], 5, level=95)
    with pytest.raises(ValueError, match="at least 1"):
        S.resample_counts(0)


def _eval_rows(seed=0, n=60):
    """Per-sample evaluation rows (evaluate.COLUMNS) of a 2-task model and a single-task model."""
    from mtlrobust.evaluate import COLUMNS

    rng = np.random.default_rng(seed)
    fixed = {"arch": "resnet18", "weighting": "uniform", "epoch": 3, "attack": "pgd", "method": "pgd"}
    fixed |= {
        "norm": "linf",
        "eps": 8 / 255,
        "step_size": 2 / 255,
        "steps": 5,
        "restarts": 1,
        "options": "{}",
    }
    rows = []
    for mid, tasks in {"m2": ["seg", "depth_z"], "m1": ["seg"]}.items():
        for sub in [tasks[:1], tasks] if len(tasks) > 1 else [tasks]:
            for k in rng.permutation(n):  # rows in any order
                for t in tasks:
                    ce = 0.0 if (k == 0 and t == "seg") else rng.uniform(0.2, 1.0)
                    cl = rng.uniform(0.5, 1.0)
                    row = {"model_id": mid, "tasks": "+".join(tasks), "attacked": "+".join(sub), "task": t}
                    row |= {"sample": int(k), "view": f"v{k}", "clean_loss": cl, "clean_error": ce}
                    row |= {
                        "adv_loss": cl + rng.uniform(0, 1 + len(sub)),
                        "adv_error": ce * rng.uniform(1, 3) + 0.1,
                    }
                    rows.append({**fixed, **row, "dataset_clean_miou": np.nan, "dataset_adv_miou": np.nan})
    return pd.DataFrame(rows, columns=COLUMNS)


def test_cell_draws_match_the_vulnerability_table_and_pair_any_two_cells():
    from mtlrobust.analysis.aggregate import KEY, reduce_eval

    assert list(S.CellDraws.KEY) == KEY
    rows = _eval_rows()
    vt = reduce_eval(rows)
    cd = S.CellDraws(rows)
    for r in vt.itertuples():
        key = (r.model_id, r.epoch, r.attack, r.attacked, r.task)
        iv = cd.interval(key)
        assert iv.value == r.rel_vuln and iv.n == r.n  # exactly the table's number
        assert cd.clean_error_draws(key).mean() == pytest.approx(r.clean_error, rel=0.05)
    a, b = ("m2", 3, "pgd", "seg+depth_z", "seg"), ("m1", 3, "pgd", "seg", "seg")
    d = cd.diff(a, b)
    assert d.value == cd.interval(a).value - cd.interval(b).value
    ja, jb = cd._j(a), cd._j(b)
    alone = S.rel_vuln_diff(cd.clean[:, ja], cd.adv[:, ja], cd.clean[:, jb], cd.adv[:, jb])
    assert (d.lo, d.hi, d.n) == (pytest.approx(alone.lo), pytest.approx(alone.hi), alone.n)  # same draws
    with pytest.raises(KeyError, match="not in the per-sample rows"):
        cd.interval(("m3", 3, "pgd", "seg", "seg"))


def test_prefix_dl_gives_the_adversarial_vulnerability_of_each_prefix():
    from mtlrobust.analysis.aggregate import reduce_eval

    rows = _eval_rows(1)
    m2 = rows[rows["model_id"] == "m2"]
    dl = S.prefix_dl(m2, [["seg"], ["seg", "depth_z"]])
    vt = reduce_eval(m2).set_index(["attacked", "task"])
    fig = S.marginal_intervals(dl, resamples=200)
    assert fig.bars[0].value == pytest.approx(vt.loc[("seg", "seg"), "adv_vulnerability"], abs=1e-12)
    assert fig.bars[1].value == pytest.approx(vt.loc[("seg+depth_z", "seg"), "adv_vulnerability"], abs=1e-12)
    with pytest.raises(ValueError, match="'depth_z'"):
        S.prefix_dl(m2, [["depth_z"]])
