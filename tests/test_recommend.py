"""Which auxiliary task to add: proxy rankings against target rankings, with joint bootstrap intervals."""

import argparse
import json

import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr

from mtlrobust.analysis import recommend as R
from mtlrobust.analysis import recommend_command as RC
from mtlrobust.analysis import stats as S
from mtlrobust.evaluate import COLUMNS, write_csv

AUX = ["s", "d", "n", "e"]


def _cell_csv(path, model_id, epoch, clean, adv, main="s"):
    """An evaluation CSV (as ``mtlrobust evaluate`` writes it) of one model, epoch, attack: main task only."""
    rows = []
    for i, (c, a) in enumerate(zip(clean, adv, strict=True)):
        row = {"model_id": model_id, "arch": "resnet18", "weighting": "uniform", "tasks": main,
               "epoch": epoch, "attack": "pgd", "method": "pgd", "norm": "linf", "eps": 8 / 255,
               "step_size": 2 / 255, "steps": 2, "restarts": "", "options": "{}", "attacked": main,
               "sample": i, "view": f"b/{i}", "task": main, "clean_loss": c, "adv_loss": a,
               "clean_error": c, "adv_error": a,
               "dataset_clean_miou": "", "dataset_adv_miou": ""}  # fmt: skip
        rows.append([row[k] for k in COLUMNS])
    write_csv(rows, path)
    return path


def _cell(model_id, epoch, main="s"):
    return [model_id, epoch, "pgd", main, main]


def _study(folder, proxy, target, *, main="s", aux=AUX, n=60, noise=0.0, shared=False, scale=None, seed=0):
    """Evaluation CSVs and spec pairs for one main task: per candidate, true relative vulnerabilities
    ``proxy[j]``/``target[j]`` plus per-sample noise (the same noise in every cell when ``shared``);
    the proxy cells' clean errors are multiplied by ``scale[j]``."""
    rng = np.random.default_rng(seed)
    clean = rng.uniform(0.5, 1.5, n)
    common = rng.normal(0, noise, n)
    paths, pairs = [], []
    for j, a in enumerate(aux):
        cells = {}
        for side, v, epoch in (("proxy", proxy[j], 1), ("target", target[j], 2)):
            eps = common if shared else rng.normal(0, noise, n)
            mid = f"{side}-{main}{a}"
            c = clean * (scale[j] if scale and side == "proxy" else 1)
            adv = c * np.maximum(1 + v + eps, 0)  # an error is never negative (aggregate refuses it)
            paths.append(_cell_csv(folder / f"{mid}.csv", mid, epoch, c, adv, main))
            cells[side] = _cell(mid, epoch, main)
        pairs.append({"main": main, "aux": a, **cells})
    return paths, pairs


def _run(paths, pairs, out, **kw):
    spec = {"proxy": "resnet18 at epoch 1", "target": "resnet50 at epoch 2", "pairs": pairs, **kw}
    res = R.write(spec, paths, out)
    return res, pd.read_csv(out), out.with_suffix(".md").read_text()


def test_agreeing_proxy_gives_spearman_1_hit_1_and_zero_width_intervals(tmp_path):
    paths, pairs = _study(tmp_path, [0.4, 0.1, 0.3, 0.2], [0.8, 0.5, 0.7, 0.6])
    res, df, md = _run(paths, pairs, tmp_path / "out" / "recommend.csv")
    st = res.mains[0].stats
    assert (st["spearman"].value, st["spearman"].lo, st["spearman"].hi) == pytest.approx((1, 1, 1))
    assert (st["top1_hit"].value, st["top1_hit"].lo, st["top1_hit"].hi) == (1, 1, 1)
    assert st["regret"].value == pytest.approx(0, abs=1e-12)
    rows = df[df["main"] == "s"].set_index("aux")
    assert rows["proxy_rank"].to_dict() == {"s": 4, "d": 1, "n": 3, "e": 2}
    assert rows["recommended"].tolist() == [False, True, False, False]
    assert rows.loc["d", "target_best"] and rows.loc["d", "proxy_best_share"] == 1
    assert rows.loc["d", "proxy_value"] == pytest.approx(0.1) and rows.loc["d", "proxy_n"] == 60
    assert rows.loc["d", "target_cell"] == "target-sd/2/pgd/s/s"
    assert "Recommended: **d**; best on the target: **d** (a hit)" in md
    assert "| s | d | d | 1.00 [1.00, 1.00] | 1.00 [1.00, 1.00] |" in md
    assert "| 4 | none (single-task) |" in md  # aux == main: the single-task model, ranked last


def test_reversed_proxy_gives_spearman_minus_1_and_a_miss_with_its_regret(tmp_path):
    paths, pairs = _study(tmp_path, [0.1, 0.2, 0.3, 0.4], [0.8, 0.7, 0.6, 0.5])
    res, df, md = _run(paths, pairs, tmp_path / "recommend.csv")
    st = res.mains[0].stats
    assert st["spearman"].value == pytest.approx(-1) and st["spearman"].hi == pytest.approx(-1)
    assert (st["top1_hit"].value, st["top1_hit"].hi) == (0, 0)
    assert st["regret"].value == pytest.approx(0.3)  # target of the pick (s: 0.8) - best target (e: 0.5)
    assert "(a miss)" in md and "best on the target: **e**" in md


def test_overall_row_averages_the_main_tasks(tmp_path):
    p1, s1 = _study(tmp_path, [0.1, 0.2, 0.3], [0.5, 0.6, 0.7], main="s", aux=["s", "d", "n"])
    p2, s2 = _study(tmp_path, [0.1, 0.2, 0.3], [0.7, 0.6, 0.5], main="d", aux=["d", "s", "n"])
    res, df, md = _run(p1 + p2, s1 + s2, tmp_path / "recommend.csv")
    o = res.overall
    assert o["spearman"].value == pytest.approx(0) and o["top1_hit"].value == 0.5
    assert o["top1_hit"].n == 2 and o["regret"].value == pytest.approx(0.1)
    last = df.iloc[-1]
    assert (last["main"], last["n"], last["top1_hit"]) == ("all", 2, 0.5) and np.isnan(last["aux"])
    assert len(df) == 7 and "| **all** (mean over main tasks) |" in md


def test_noisy_samples_give_an_interval_equal_to_a_by_hand_bootstrap(tmp_path):
    proxy, target = [0.30, 0.25, 0.35, 0.2], [0.6, 0.55, 0.5, 0.45]
    paths, pairs = _study(tmp_path, proxy, target, n=80, noise=0.4)
    rows = R.read_cells(paths, [tuple(c) for p in pairs for c in (p["proxy"], p["target"])])
    res = R.compute(rows, R.parse_spec({"pairs": pairs}), resamples=300)
    sp = res.mains[0].stats["spearman"]
    assert -1 <= sp.lo < sp.value < sp.hi <= 1 and sp.n == 4

    def per_sample(mid):
        g = rows[rows["model_id"] == mid].sort_values("sample")
        return ((g["adv_error"] - g["clean_error"]) / g["clean_error"]).to_numpy()

    P = np.column_stack([per_sample(f"proxy-s{a}") for a in AUX])
    T = np.column_stack([per_sample(f"target-s{a}") for a in AUX])
    draws = [spearmanr(P[i].mean(0), T[i].mean(0)).statistic for i in S.resample_indices(80, 300)]
    lo, hi = np.quantile(draws, [0.025, 0.975])
    assert sp.value == pytest.approx(spearmanr(P.mean(0), T.mean(0)).statistic)
    assert (sp.lo, sp.hi) == pytest.approx((lo, hi))


def test_proxy_and_target_cells_are_resampled_jointly(tmp_path):
    # the same per-sample noise in every cell: every draw shifts all cells alike and keeps both orders
    proxy, target = [0.30, 0.25, 0.35, 0.2], [0.6, 0.55, 0.65, 0.5]
    paths, pairs = _study(tmp_path, proxy, target, n=80, noise=0.4, shared=True)
    res, _, _ = _run(paths, pairs, tmp_path / "recommend.csv")
    st = res.mains[0].stats
    assert (st["spearman"].lo, st["spearman"].hi) == pytest.approx((1, 1))
    assert (st["top1_hit"].lo, st["top1_hit"].hi) == (1, 1)


def test_clean_error_proxy_ranks_by_the_tables_clean_error(tmp_path):
    # ranked by relative vulnerability the proxy would pick n; by clean error it picks d, as the target
    scale = [1.3, 1.0, 1.2, 1.1]
    paths, pairs = _study(tmp_path, [0.4, 0.3, 0.1, 0.2], [0.8, 0.5, 0.7, 0.6], scale=scale)
    res, df, md = _run(paths, pairs, tmp_path / "recommend.csv", proxy_value="clean_error")
    clean = pd.read_csv(paths[0], comment="#")["clean_error"].mean()
    assert df.loc[0, "proxy_value"] == pytest.approx(clean, rel=1e-5)
    assert df.loc[:3, "proxy_rank"].tolist() == [4, 1, 3, 2] and res.mains[0].stats["spearman"].value == 1
    assert "ranked by the clean error of the main task" in md


def test_match_ties_and_missing_candidates():
    r = R.match([[1.0, 1.0, 2.0]], [[0.0, 1.0, 2.0]])  # the proxy ties its best two; one is the target's
    assert r["top1_hit"][0] == 0.5 and r["regret"][0] == 0.5
    assert r["spearman"][0] == pytest.approx(spearmanr([1, 1, 2], [0, 1, 2]).statistic)
    assert r["proxy_best"][0].tolist() == [0.5, 0.5, 0]
    r = R.match([[1.0, np.nan, 2.0, 3.0]], [[1.0, 0.0, 2.0, 3.0]])  # a candidate without a value is left out
    assert r["spearman"][0] == pytest.approx(1) and r["top1_hit"][0] == 1
    r = R.match([[1.0, np.nan]], [[1.0, 2.0]])
    assert np.isnan(r["spearman"][0]) and np.isnan(r["top1_hit"][0])


def test_a_missing_cell_is_an_error_naming_it(tmp_path):
    paths, pairs = _study(tmp_path, [0.1, 0.2, 0.3, 0.4], [0.5, 0.6, 0.7, 0.8])
    with pytest.raises(
        ValueError, match=r"1 cell\(s\) of the spec are not in the 7 evaluation.*target-se/2/pgd/s/s"
    ):
        R.write({"pairs": pairs}, paths[:-1], tmp_path / "recommend.csv")
    assert not (tmp_path / "recommend.csv").exists()
    with pytest.raises(ValueError, match=r"proxy-ss/1/pgd/s/s is in two evaluation CSVs"):
        R.write({"pairs": pairs}, [paths[0], *paths], tmp_path / "recommend.csv")


def _pair(**kw):
    return {"main": "s", "aux": "d", "proxy": _cell("a", 1), "target": _cell("b", 2), **kw}


@pytest.mark.parametrize(
    "change, match",
    [
        ({"proxy_value": "loss"}, r"spec key proxy_value: expected one of \['rel_vuln', 'clean_error'\]"),
        ({"pairs": []}, r"spec key pairs: expected a non-empty list"),
        ({"pairs": [_pair(proxy=["m", 1, "pgd", "s"])]},
         r"spec key pairs\[0\].proxy: expected a cell \[model_id, epoch, attack, attacked, task\]"),
        ({"pairs": [{"main": "s", "aux": "d", "proxy": _cell("m", 1)}]},
         r"spec key pairs\[0\]: missing key\(s\) \['target'\]"),
        ({"pairs": [_pair(proxy=["m", "1", "pgd", "s", "s"])]},
         r"pairs\[0\].proxy: the epoch .* must be an integer, got '1'"),
        ({"pairs": [_pair()]}, r"main task 's' has one candidate; ranking needs at least 2"),
    ],
)  # fmt: skip
def test_bad_specs_name_the_key(change, match):
    with pytest.raises(ValueError, match=match):
        R.parse_spec({"pairs": [{"main": "s", "aux": "s"}], **change})


def test_duplicate_pair_is_an_error():
    p = _pair()
    with pytest.raises(ValueError, match=r"pairs\[1\]: \(main 's', aux 'd'\) is listed twice"):
        R.parse_spec({"pairs": [p, p]})


def _args(*argv):
    p = argparse.ArgumentParser()
    RC.add_arguments(p)
    return p.parse_args([str(a) for a in argv])


def test_cli_is_deterministic_and_ignores_the_input_order(tmp_path):
    paths, pairs = _study(tmp_path, [0.30, 0.25, 0.35, 0.2], [0.6, 0.55, 0.5, 0.45], noise=0.3)
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"pairs": pairs}))
    listing = tmp_path / "inputs.txt"
    listing.write_text("\n".join(map(str, reversed(paths))) + "\n")
    assert RC.run(_args("--spec", spec, "--inputs", *paths, "--out", tmp_path / "a" / "recommend.csv")) == 0
    b = tmp_path / "b" / "recommend.csv"
    assert RC.run(_args("--spec", spec, "--inputs-from", listing, "--out", b)) == 0
    for name in ("recommend.csv", "recommend.md"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert list(pd.read_csv(tmp_path / "a" / "recommend.csv").columns) == R.COLUMNS
    with pytest.raises(IsADirectoryError, match="--out"):
        RC.run(_args("--spec", spec, "--inputs", *paths, "--out", tmp_path / "a"))


def test_candidates_whose_models_do_not_beat_the_constant_predictor_are_left_out(tmp_path):
    # d would be the proxy's and the target's best; its proxy model has not learned s: left out, e is next
    paths, pairs = _study(tmp_path, [0.4, 0.1, 0.3, 0.2], [0.8, 0.5, 0.7, 0.6])
    res = R.write({"pairs": pairs}, paths, tmp_path / "recommend.csv", untrained={("proxy-sd", 1, "s")})
    df = pd.read_csv(tmp_path / "recommend.csv")
    rows = df[df["main"] == "s"].set_index("aux")
    assert np.isnan(rows.loc["d", "proxy_rank"]) and not rows.loc["d", "recommended"]
    assert rows.loc["e", "recommended"] and rows.loc["e", "target_best"]
    st = res.mains[0].stats
    assert (st["spearman"].value, st["top1_hit"].value, st["top1_hit"].n) == (pytest.approx(1), 1, 3)
    assert [p.aux for p in res.excluded] == ["d"]
    md = (tmp_path / "recommend.md").read_text()
    assert "Left out of the rankings" in md and "auxiliary d (proxy-sd/1/pgd/s/s, target-sd/2/pgd/s/s)" in md
