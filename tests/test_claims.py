"""Claim verdicts on synthetic cells built to reach each verdict, the cell contract and the CLI outputs."""

import argparse

import pandas as pd
import pytest

from mtlrobust.analysis import claims as C

PAIRS = [("s", "d"), ("d", "s"), ("s", "n"), ("n", "s")]
# a paired diff interval: "down" excludes 0 below, "up" above, "zero" contains it
DIFFS = {"down": (-0.5, -0.8, -0.2), "up": (0.5, 0.2, 0.8), "zero": (0.05, -0.3, 0.4)}


def cell(output, diff=None, **kw):
    row = {"output": output, "value": 2.0, "lo": 1.5, "hi": 2.5, "n": 100}
    if diff is not None:
        row["diff"], row["diff_lo"], row["diff_hi"] = DIFFS[diff] if isinstance(diff, str) else diff
    return {**row, **kw}


def pair_rows(output, dirs, **kw):
    """One comparison row per (main, aux) pair; ``dirs`` = the diff direction of each pair."""
    return [cell(output, d, main=m, aux=a, **kw) for (m, a), d in zip(PAIRS, dirs, strict=True)]


def frame(rows):
    cols = ["output", "attack", "method", "norm", "kind", "weighting", "main", "aux", "vs"]
    df = pd.DataFrame(rows)
    for c in cols:
        df[c] = df[c].fillna("") if c in df else ""
    return df.astype({c: str for c in cols})


def verdicts(rows, **th):
    table, _ = C.render_claims(frame(rows), C.Thresholds(**th))
    return dict(zip(table["claim"], table["verdict"], strict=True)), table.set_index("claim")


T1 = {"attack": "pgd", "method": "pgd", "norm": "linf", "kind": "single"}


# ------------------------------------------------------------------------------ RQ1 (Table 1)
@pytest.mark.parametrize(
    "dirs, expected",
    [
        (["down", "down", "down", "up"], "supported"),  # one multi-task model surely more vulnerable
        (["down"] * 4, "contradicted"),  # every multi-task model surely less vulnerable
        (["down", "down", "down", "zero"], "unresolved"),
    ],
)
def test_rq1_not_reliably_less_vulnerable(dirs, expected):
    rows = pair_rows("table1", dirs, weighting="uniform", vs="single_task", **T1)
    v, t = verdicts(rows)
    assert v["rq1_not_reliably_less_vulnerable:single"] == expected
    assert t.loc["rq1_not_reliably_less_vulnerable:single", "n"] == 4


def test_rq1_gives_one_verdict_per_attack_kind_not_pooled():
    # single-task attacks: every multi-task model surely less vulnerable (the claim fails); multi-task
    # attacks: one surely more vulnerable (the claim holds). Pooled, 7 of 8 "less" would read unresolved.
    rows = pair_rows("table1", ["down"] * 4, weighting="uniform", vs="single_task", **T1)
    rows += pair_rows("table1", ["down", "down", "down", "up"], weighting="uniform", vs="single_task",
                      **{**T1, "kind": "multi"})  # fmt: skip
    v, t = verdicts(rows)
    assert v["rq1_not_reliably_less_vulnerable:single"] == "contradicted"
    assert v["rq1_not_reliably_less_vulnerable:multi"] == "supported"
    assert t.loc["rq1_not_reliably_less_vulnerable:multi", "n"] == 4


def test_rq1_uses_only_linf_uniform_off_diagonal_pairs():
    rows = pair_rows("table1", ["down"] * 4, weighting="uniform", vs="single_task", **T1)
    noise = [
        cell(
            "table1", "up", main="s", aux="d", weighting="uniform", vs="single_task", **{**T1, "norm": "l2"}
        ),
        cell("table1", "up", main="s", aux="d", weighting="paper", vs="single_task", **T1),
        cell("table1", "up", main="s", aux="s", weighting="uniform", vs="single_task", **T1),
        cell("table1", "up", main="s", aux="d", weighting="paper", vs="uniform", **T1),
    ]
    v, t = verdicts(rows + noise)
    assert v["rq1_not_reliably_less_vulnerable:single"] == "contradicted"
    assert t.loc["rq1_not_reliably_less_vulnerable:single", "n"] == 4


# ------------------------------------------------------------------------------ weights under PGD
@pytest.mark.parametrize(
    "dirs, expected",
    [
        (["down"] * 4, "supported"),
        (["down", "down", "down", "up"], "contradicted"),
        (["down", "zero", "down", "down"], "unresolved"),
    ],
)
def test_weights_lower_pgd_vulnerability(dirs, expected):
    rows = pair_rows("table1", dirs, weighting="paper", vs="uniform", **T1)
    v, t = verdicts(rows)
    assert v["rq3_weights_lower_pgd"] == expected
    c = t.loc["rq3_weights_lower_pgd"]
    assert c["lo"] <= c["value"] <= c["hi"]


# ------------------------------------------------------------------------------ adaptive attacks
@pytest.mark.parametrize(
    "dirs, expected",
    [
        (["up"] * 4, "supported"),
        (["up", "down", "up", "up"], "contradicted"),
        (["up", "zero", "up", "up"], "unresolved"),
    ],
)
@pytest.mark.parametrize("attack", ["apgd", "wgd"])
def test_adaptive_attacks_stronger_than_pgd(attack, dirs, expected):
    rows = pair_rows(
        "table2", dirs, attack=attack, method=attack, kind="multi", weighting="uniform", vs="pgd"
    )
    # the single-task model: WGD is PGD there (diff exactly 0), so it must not count for WGD
    diag = cell("table2", (0.0, 0.0, 0.0), attack=attack, method=attack, main="s", aux="s", vs="pgd")
    v, t = verdicts(rows + ([diag] if attack == "wgd" else []))
    assert v[f"rq3_stronger_than_pgd_main_error:{attack}"] == expected
    assert t.loc[f"rq3_stronger_than_pgd_main_error:{attack}", "n"] == 4
    assert "rq3_stronger_than_pgd:pgd" not in v
    assert t.loc[f"rq3_stronger_than_pgd:{attack}", "n"] == 0  # no attacked-objective columns given


def test_stronger_than_pgd_is_judged_on_the_attacked_objective_and_counts_a_single_task_cell_once():
    # the main task's error says "stronger" everywhere, the attacked objective in 3 of 5 cells (one lower)
    obj = [(1.0, 0.5, 1.5), (1.0, 0.5, 1.5), (-1.0, -1.5, -0.5), (1.0, 0.5, 1.5)]
    rows = [dict(r, obj_diff=o[0], obj_diff_lo=o[1], obj_diff_hi=o[2]) for r, o in zip(
        pair_rows("table2", ["up"] * 4, attack="apgd", method="apgd", weighting="uniform", vs="pgd"), obj,
        strict=True)]  # fmt: skip
    # the single-task model s appears in both weighting columns of the grid: one cell, counted once
    diag = dict(
        obj_diff=1.0, obj_diff_lo=0.5, obj_diff_hi=1.5, attack="apgd", method="apgd", main="s", aux="s"
    )
    rows += [cell("table2", "up", weighting=w, vs="pgd", **diag) for w in ("uniform", "paper")]
    v, t = verdicts(rows)
    assert t.loc["rq3_stronger_than_pgd_main_error:apgd", "n"] == 5
    assert v["rq3_stronger_than_pgd_main_error:apgd"] == "supported"
    assert t.loc["rq3_stronger_than_pgd:apgd", "n"] == 5
    assert t.loc["rq3_stronger_than_pgd:apgd", "value"] == pytest.approx(0.8)
    assert v["rq3_stronger_than_pgd:apgd"] == "contradicted"  # 4 of 5 < 0.9, the fifth surely lower
    assert "objective" in t.loc["rq3_stronger_than_pgd:apgd", "paper"]


def test_wgd_claims_name_the_variant_they_ran():
    rows = pair_rows("table2", ["up"] * 4, attack="wgd_paper", method="wgd", weighting="uniform", vs="pgd",
                     variant="paper")  # fmt: skip
    rows += pair_rows("table2", ["up"] * 4, attack="wgd", method="wgd", weighting="uniform", vs="pgd",
                      variant="balanced")  # fmt: skip
    _, t = verdicts(rows)
    assert "wgd_paper (WGD, paper variant)" in t.loc["rq3_stronger_than_pgd:wgd_paper", "paper"]
    assert "wgd (WGD, balanced variant)" in t.loc["rq3_stronger_than_pgd:wgd", "paper"]


def _negated(diffs):
    """Weighted-vs-uniform rows of Table 2; uniform value 10 (value - diff), margin 20 % = 2."""
    return [
        cell("table2", d, value=10.0 + d[0], attack="apgd", method="apgd", weighting="paper", vs="uniform",
             main=m, aux=a)
        for (m, a), d in zip(PAIRS, diffs, strict=True)
    ]  # fmt: skip


@pytest.mark.parametrize(
    "diffs, expected",
    [
        ([(0.5, -1.5, 2.5), (3.0, 1.0, 5.0), (-0.5, -1.9, 1.0), (0.0, -1.0, 1.0)], "supported"),
        ([(0.5, -1.5, 2.5), (-5.0, -7.0, -3.0), (0.0, -1.0, 1.0), (0.0, -1.0, 1.0)], "contradicted"),
        ([(0.5, -1.5, 2.5), (-1.0, -3.0, 0.5), (0.0, -1.0, 1.0), (0.0, -1.0, 1.0)], "unresolved"),
    ],
)
def test_weights_negated_by_adaptive_attacks_uses_the_stated_margin(diffs, expected):
    v, t = verdicts(_negated(diffs))
    assert v["rq3_weights_negated:apgd"] == expected
    assert "20%" in t.loc["rq3_weights_negated:apgd", "statistic"]


def test_a_wider_margin_turns_a_reduction_into_as_vulnerable():
    diffs = [(0.5, -1.5, 2.5), (-1.0, -3.0, 0.5), (0.0, -1.0, 1.0), (0.0, -1.0, 1.0)]
    v, _ = verdicts(_negated(diffs), margin=0.35)
    assert v["rq3_weights_negated:apgd"] == "supported"


@pytest.mark.parametrize(
    "dirs, expected",
    [
        (["down", "zero", "up", "down"], "unresolved"),  # mains s and n have a helpful aux, d undecided
        (["down", "down", "down", "down"], "supported"),
        (["up", "up", "up", "up"], "contradicted"),
    ],
)
def test_some_auxiliary_task_helps_each_main_task(dirs, expected):
    rows = pair_rows("table2", dirs, attack="apgd", method="apgd", weighting="uniform", vs="single_task")
    v, t = verdicts(rows)
    assert v["rq3_some_auxiliary_helps"] == expected
    assert t.loc["rq3_some_auxiliary_helps", "n"] == 3  # (apgd, s), (apgd, d), (apgd, n)


# ------------------------------------------------------------------------------ Table 3 and Figure 1
@pytest.mark.parametrize(
    "r, expected",
    [((0.8, 0.6, 0.9), "supported"), ((0.1, -0.2, 0.25), "contradicted"), ((0.5, 0.1, 0.7), "unresolved")],
)
def test_each_proxy_correlates_with_its_target(r, expected):
    rows = [cell("table3", proxy=p, value=r[0], lo=r[1], hi=r[2], n=20) for p in ("epochs", "arch", "clean")]
    v, t = verdicts(rows)
    for p in ("epochs", "arch", "clean"):
        assert v[f"rq4_proxy:{p}"] == expected
        assert t.loc[f"rq4_proxy:{p}", "n"] == 20


@pytest.mark.parametrize(
    "r, expected",
    [((0.94, 0.85, 0.98), "supported"), ((0.6, 0.4, 0.75), "contradicted"), ((0.9, 0.7, 0.97), "unresolved")],
)
def test_very_strong_correlation_has_its_own_threshold(r, expected):
    setting = "resnet18 at epoch 3 vs resnet18 at epoch 8"
    rows = [cell("table3", proxy=p, value=r[0], lo=r[1], hi=r[2], n=20, setting=setting)
            for p in ("epochs", "arch", "clean")]  # fmt: skip
    v, t = verdicts(rows)
    assert v["rq4_proxy_very_strong:arch"] == v["rq4_proxy_very_strong:clean"] == expected
    assert "rq4_proxy_very_strong:epochs" not in v  # the paper calls early stopping's 0.55 "medium"
    assert v["rq4_proxy:arch"] == "supported"  # r >= 0.3 in every case
    # the claim text names the study's own epochs, not the paper's 50 vs 150
    assert "epoch 3 vs resnet18 at epoch 8" in t.loc["rq4_proxy:epochs", "paper"]


@pytest.mark.parametrize(
    "shares, expected",
    [  # "in some orders" (the paper: 2 of its 4 cases): a share of orders of at least 0.5
        ([(0.8, 0.6, 0.95), (0.3, 0.2, 0.45)], "supported"),
        ([(0.3, 0.2, 0.45), (0.2, 0.1, 0.4)], "contradicted"),
        ([(0.55, 0.4, 0.7), (0.3, 0.2, 0.45)], "unresolved"),
    ],
)
def test_one_task_dominates_the_marginal_vulnerability(shares, expected):
    rows = [
        cell("figure1", order=o, stat="dominance", task="s", value=s[0], lo=s[1], hi=s[2])
        for o, s in zip(("sdDnE", "dDnEs"), shares, strict=True)
    ]
    rows.append(cell("figure1", order="sdDnE", stat="bar", value=9.0, lo=0.0, hi=99.0))  # ignored
    v, t = verdicts(rows)
    assert v["rq2_one_task_dominates"] == expected
    assert t.loc["rq2_one_task_dominates", "n"] == 2
    assert "dDnEs: +s" in t.loc["rq2_same_task_dominates", "detail"]


def test_claims_without_cells_are_unresolved_with_n_zero():
    v, t = verdicts([cell("table3", proxy="clean", value=0.9, lo=0.8, hi=0.95, n=10)])
    assert v["rq4_proxy:clean"] == "supported"
    for cid in ("rq1_not_reliably_less_vulnerable:single", "rq3_weights_lower_pgd", "rq2_one_task_dominates",
                "rq4_proxy:arch", "rq1_l2_confirms_mao", "rq1_eps_not_reliable:multi",
                "rq1_deep_more_vulnerable", "rq2_adding_tasks_increases", "rq2_theorem4_bound"):  # fmt: skip
        assert v[cid] == "unresolved" and t.loc[cid, "n"] == 0


# ------------------------------------------------------------------------------ seeds
def test_several_seeds_of_a_cell_are_merged_before_the_verdict():
    rows = []
    for seed, d in ((0, (-0.5, -0.8, -0.2)), (1, (0.4, 0.1, 0.7))):  # the seeds disagree
        rows += [
            dict(r, seed=str(seed))
            for r in pair_rows("table1", [d] * 4, weighting="paper", vs="uniform", **T1)
        ]
    v, t = verdicts(rows)
    assert v["rq3_weights_lower_pgd"] == "unresolved"
    assert t.loc["rq3_weights_lower_pgd", "n"] == 4  # 4 pairs, not 8 rows
    merged = C.merge_seeds(C.check_cells(frame(rows)))
    assert len(merged) == 4 and set(merged["seed"]) == {"2 seeds"}


# ------------------------------------------------------------------------------ output and CLI
def test_markdown_states_thresholds_and_formats_intervals_one_way():
    rows = pair_rows("table1", ["down"] * 4, weighting="paper", vs="uniform", **T1)
    rows.append(cell("table3", proxy="arch", value=0.9412, lo=0.8123, hi=0.9733, n=20))
    table, md = C.render_claims(frame(rows))
    assert list(table.columns) == C.CLAIM_COLUMNS
    assert "at least 0.9" in md and "r >= 0.3" in md and "20%" in md
    assert "0.941 [0.812, 0.973]" in md
    line = next(s for s in md.splitlines() if s.startswith("| rq3_weights_lower_pgd"))
    assert "1.00 [1.00, 1.00]" in line and "**supported**" in line
    assert "claim: share >= 0.9" in md


def _args(tmp_path, paths, **kw):
    ns = argparse.ArgumentParser()
    C.add_arguments(ns)
    argv = ["--cells", *map(str, paths), "--out", str(tmp_path / "res" / "claims.csv")]
    for k, v in kw.items():
        argv += [f"--{k}", str(v)]
    return ns.parse_args(argv)


def test_run_reads_several_cell_csvs_and_writes_csv_and_markdown(tmp_path):
    a = tmp_path / "t1.csv"
    b = tmp_path / "t3.csv"
    frame(pair_rows("table1", ["down"] * 4, weighting="paper", vs="uniform", **T1)).to_csv(a, index=False)
    pd.DataFrame([cell("table3", proxy="epochs", value=0.5, lo=0.35, hi=0.6, n=12)]).to_csv(b, index=False)
    assert C.run(_args(tmp_path, [a, b])) == 0
    out = pd.read_csv(tmp_path / "res" / "claims.csv", keep_default_na=False)
    got = dict(zip(out["claim"], out["verdict"], strict=True))
    assert got["rq3_weights_lower_pgd"] == "supported" and got["rq4_proxy:epochs"] == "supported"
    assert (tmp_path / "res" / "claims.md").read_text().startswith("# The paper's claims")
    assert C.run(_args(tmp_path, [a, b], **{"min-correlation": 0.4})) == 0
    out = pd.read_csv(tmp_path / "res" / "claims.csv", keep_default_na=False)
    assert dict(zip(out["claim"], out["verdict"], strict=True))["rq4_proxy:epochs"] == "unresolved"


@pytest.mark.parametrize(
    "df, match",
    [
        (
            pd.DataFrame({"output": ["table3"], "value": [1]}),
            r"t.csv: not a cell table, missing column\(s\) \['lo'",
        ),
        (pd.DataFrame([cell("tabel1")]), r"unknown output\(s\) \['tabel1'\]"),
        (pd.DataFrame([cell("table1", "up")]), r"table1 rows need column\(s\) \['attack'"),
        (
            pd.DataFrame([cell("table3", proxy="arch", value="high")]),
            r"column 'value' has a non-number 'high'",
        ),
    ],
)
def test_malformed_cell_csvs_are_named(tmp_path, df, match):
    p = tmp_path / "t.csv"
    df.to_csv(p, index=False)
    with pytest.raises(ValueError, match=match):
        C.run(_args(tmp_path, [p]))


def test_bad_thresholds_are_rejected(tmp_path):
    p = tmp_path / "t.csv"
    pd.DataFrame([cell("table3", proxy="arch")]).to_csv(p, index=False)
    with pytest.raises(ValueError, match="--reliable-share must be in"):
        C.run(_args(tmp_path, [p], **{"reliable-share": 1.5}))


def test_cells_without_a_comparison_are_not_counted_and_duplicate_seeds_are_errors():
    rows = pair_rows("table1", ["down"] * 4, weighting="paper", vs="uniform", **T1)
    rows.append(cell("table1", (float("nan"),) * 3, main="d", aux="n", weighting="paper", vs="uniform", **T1))
    v, t = verdicts(rows)
    assert v["rq3_weights_lower_pgd"] == "supported" and t.loc["rq3_weights_lower_pgd", "n"] == 4
    twice = [dict(r, seed="0") for r in rows[:1] * 2]
    with pytest.raises(ValueError, match="same cell and seed appear twice"):
        C.render_claims(frame(twice))


def test_a_claim_whose_cells_lack_the_ratio_of_means_is_na_not_metric_sensitive():
    rows = pair_rows("table1", ["down"] * 4, weighting="paper", vs="uniform", **T1)
    rows.append(
        cell("table3", proxy="arch", value=0.9, lo=0.8, hi=0.95, n=12, rom=0.1, rom_lo=-0.3, rom_hi=0.5)
    )
    _, t = verdicts(rows)
    pgd, arch = t.loc["rq3_weights_lower_pgd"], t.loc["rq4_proxy:arch"]
    assert (pgd["verdict"], pgd["verdict_rom"], pgd["metric_sensitive"]) == ("supported", "n/a", False)
    assert (arch["verdict"], arch["verdict_rom"], arch["metric_sensitive"]) == (
        "supported",
        "unresolved",
        True,
    )
