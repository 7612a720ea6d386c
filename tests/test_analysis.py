"""Aggregation on hand-made evaluation CSVs; tables and figures of a study plan from coded evaluation CSVs."""

import csv
import json
import math
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy.stats import pearsonr

from mtlrobust import cli, study
from mtlrobust.analysis import aggregate as AG
from mtlrobust.analysis import claims as CL
from mtlrobust.analysis import evaluations as E
from mtlrobust.analysis import render as RD
from mtlrobust.analysis import stats as S
from mtlrobust.analysis.layouts import bars as BA
from mtlrobust.analysis.layouts import correlations as CO
from mtlrobust.analysis.layouts import grid as GR
from mtlrobust.analysis.layouts import sweep as SW
from mtlrobust.evaluate import COLUMNS, TRAILER
from mtlrobust.ids import model_spec, parse_model_id

LET = "sdD"
IDX = {c: i + 1 for i, c in enumerate(LET)}
ID = {"s": "seg", "d": "depth_z", "D": "depth_e"}
ID_LETTER = {v: k for k, v in ID.items()}


# ------------------------------------------------------------------------------------------ aggregate
def _eval_rows(model_id, tasks, attacked, values, attack="pgd", eps=8 / 255):
    """values: {task: [(clean_loss, adv_loss, clean_error, adv_error), ...]} per sample."""
    rows = []
    n = len(next(iter(values.values())))
    for i in range(n):
        for t in tasks:
            cl, al, ce, ae = values[t][i]
            seg = t == "seg"
            rows.append(
                [
                    model_id,
                    "resnet18",
                    "uniform",
                    "+".join(tasks),
                    150,
                    attack,
                    "pgd",
                    "linf",
                    eps,
                    2 / 255,
                    25,
                    "",
                    "{}",
                    attacked,
                    i,
                    f"b/{i}/0",
                    t,
                    cl,
                    al,
                    ce,
                    ae,
                    0.5 if seg else "",
                    0.25 if seg else "",
                ]
            )
    return rows


def _write(path, rows, columns=COLUMNS):
    """An evaluation CSV as ``mtlrobust evaluate`` writes it (rows, then the trailer with their count)."""
    with open(path, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(columns)
        w.writerows(rows)
        f.write(f"{TRAILER}{len(rows)} rows\n")
    return path


def test_aggregate_by_hand(tmp_path):
    mid = "resnet18-uniform-seg+depth_z-s0"
    tasks = ["seg", "depth_z"]
    vals_single = {
        "seg": [(1.0, 2.0, 0.5, 0.75), (2.0, 2.5, 0.0, 0.5)],  # 2nd sample: zero clean error
        "depth_z": [(1.0, 5.0, 1.0, 3.0), (1.0, 1.0, 2.0, 2.0)],
    }
    vals_multi = {
        "seg": [(1.0, 3.0, 0.5, 1.0), (2.0, 1.0, 0.5, 0.5)],
        "depth_z": [(1.0, 2.0, 1.0, 1.0), (1.0, 1.5, 1.0, 3.0)],
    }
    p = _write(
        tmp_path / "pgd.csv",
        _eval_rows(mid, tasks, "seg", vals_single) + _eval_rows(mid, tasks, "seg+depth_z", vals_multi),
    )
    out = AG.aggregate([p])
    assert list(out.columns) == AG.OUT_COLUMNS
    r = out.set_index(["attacked", "task"])
    seg = r.loc[("seg", "seg")]
    assert seg["rel_vuln"] == pytest.approx(0.5)  # only sample 0: (0.75 - 0.5) / 0.5
    assert (seg["n"], seg["n_skipped"]) == (1, 1)
    assert seg["rel_vuln_ratio_of_means"] == pytest.approx((0.625 - 0.25) / 0.25)
    assert seg["adv_vulnerability"] == pytest.approx(
        (1.0 + 0.5) / 2
    )  # seg losses only (depth_z not attacked)
    assert r.loc[("seg", "depth_z"), "adv_vulnerability"] == seg["adv_vulnerability"]  # repeated per row
    assert seg["dataset_clean_miou"] == 0.5 and math.isnan(r.loc[("seg", "depth_z"), "dataset_clean_miou"])
    dz = r.loc[("seg", "depth_z")]
    assert dz["rel_vuln"] == pytest.approx((2.0 + 0.0) / 2)
    assert dz["clean_loss"] == 1.0 and dz["adv_loss"] == 3.0
    multi = r.loc[("seg+depth_z", "seg")]
    # sample 0: (3-1) + (2-1) = 3; sample 1: (1-2) + (1.5-1) = -0.5 -> |.| = 0.5; mean 1.75
    assert multi["adv_vulnerability"] == pytest.approx(1.75)
    assert (multi["letters"], multi["attacked_letters"], multi["task_letter"]) == ("sd", "sd", "s")
    assert multi["main"] == "" and multi["n_tasks"] == 2 and multi["seed"] == 0


def test_aggregate_cli_inputs_from_and_helper_columns(tmp_path):
    mid = model_spec("resnet18", "paper", ["depth_e", "seg"], 0, main="depth_e").id
    rows = _eval_rows(
        mid, ["depth_e", "seg"], "depth_e", {"depth_e": [(1, 2, 1, 2)], "seg": [(1, 1, 0.5, 0.5)]}
    )
    for r in rows:
        r[2] = "paper"
    p = _write(tmp_path / "a.csv", rows)
    (tmp_path / "index.txt").write_text(f"{p}\n\n")
    out = tmp_path / "res" / "vulnerability.csv"
    assert cli.main(["aggregate", "--inputs-from", str(tmp_path / "index.txt"), "--out", str(out)]) == 0
    df = pd.read_csv(out, keep_default_na=False)
    assert set(df["main"]) == {"D"} and set(df["letters"]) == {"Ds"} and set(df["task_letter"]) == {"D", "s"}
    assert not list(out.parent.glob(".*tmp*"))


def test_aggregate_rejects_malformed_csv(tmp_path):
    p = _write(tmp_path / "bad.csv", [], columns=[c for c in COLUMNS if c != "adv_error"])
    with pytest.raises(ValueError, match=r"bad\.csv.*adv_error"):
        AG.aggregate([p])


# ------------------------------------------------------------------------------------------ plan + tables
CONFIG = {
    "tasks": ["s", "d", "D"],
    "architectures": ["resnet18", "resnet50"],
    "training": {"epochs": 150, "milestones": [50, 150]},
    "attacks": {
        "pgd": {"method": "pgd", "eps": "8/255", "step_size": "2/255"},
        "pgd_l2": {"method": "pgd", "norm": "l2", "eps": 0.5},
        "pgd_eps4": {"method": "pgd", "eps": "4/255"},
        "pgd_eps16": {"method": "pgd", "eps": "16/255"},
        "apgd": {"method": "apgd", "eps": "8/255"},
        "wgd": {"method": "wgd", "eps": "8/255"},
    },
    "study": {
        "table3": {"epochs": {"proxy": 50}},
        "figure1": {"orders": ["sdD", "Dds"]},
        "rq1_eps": {"tasks": ["s", "d"], "attacks": ["pgd_eps16", "pgd_eps4"]},
        "rq1_norm": {"tasks": ["s", "d"]},
        "rq1_arch": {"tasks": ["s", "d"]},
        "rq1_epochs": {"tasks": ["s", "d"]},
    },
}
ARCH = {"resnet18": 1, "resnet50": 2}
ATTACK = {"pgd": 0, "pgd_l2": 100, "pgd_eps4": 200, "pgd_eps16": 300, "apgd": 400, "wgd": 500}


def code(model_id, epoch, attack, attacked, task) -> float:
    """A value that tells which cell it came from: model tasks, weighting, attacked subset, task, setting.

    The measured task is taken as the main task; +1000 on a paper model's auxiliary task (never shown)."""
    spec = parse_model_id(model_id)
    aux = next((t for t in spec.tasks if t != task), task)
    v = 100 * IDX[ID_LETTER[task]] + 10 * IDX[ID_LETTER[aux]] + (1 if attacked == task else 2)
    v += 5 * (spec.weighting == "paper") + 1000 * (task != spec.tasks[0] and spec.weighting == "paper")
    return (v + ATTACK[attack]) * ARCH[spec.arch] * (1 if epoch == 150 else 0.5)  # errors stay >= 0


def clean_of(model_id, task) -> float:
    """Clean error of a task of a model: 2 ** (index of the other task), exact in floating point."""
    aux = next((t for t in parse_model_id(model_id).tasks if t != task), task)
    return 2.0 ** IDX[ID_LETTER[aux]]


def write_evals(folder, plan, value=code, samples=2, drop=()):
    """One per-sample evaluation CSV per planned evaluation; rel_vuln of a cell = value(cell).

    ``drop``: (model_id, epoch, attack, attacked) subsets left out."""
    paths = []
    for (mid, epoch, attack), subsets in sorted(plan.evals.items()):
        spec = parse_model_id(mid)
        method, norm = plan.attacks[attack]["method"], plan.attacks[attack].get("norm", "linf")
        rows = []
        for sub in sorted(subsets):
            attacked = "+".join(sub)
            if (mid, epoch, attack, attacked) in drop:
                continue
            for i in range(samples):
                for t in spec.tasks:
                    v, c = value(mid, epoch, attack, attacked, t), clean_of(mid, t)
                    rows.append([mid, spec.arch, spec.weighting, "+".join(spec.tasks), epoch, attack, method,
                                 norm, 8 / 255, 2 / 255, 2, 1, "{}", attacked, i, f"b/{i}/0", t,
                                 1.0, 1.0 + abs(v) * (i + 1), c, c * (1 + v), "", ""])  # fmt: skip
        paths.append(_write(folder / f"{mid}-{epoch}-{attack}.csv", rows))
    return paths


@pytest.fixture(scope="module")
def planned(tmp_path_factory):
    """The plan of CONFIG and an evaluation CSV for each of its evaluations."""
    plan = study.build(study.validated(config()))
    return plan, write_evals(tmp_path_factory.mktemp("evals"), plan)


SHOWN = ("table1", "table2", "table3", "figure1", "rq1_norm", "rq1_eps", "rq1_arch", "rq1_epochs")


def config(**study_changes) -> dict:
    """CONFIG with the outputs tested here enabled (the others off) and ``study_changes`` applied."""
    c = json.loads(json.dumps(CONFIG))
    for name in study.OUTPUTS:
        c["study"].setdefault(name, {}) if name in SHOWN else c["study"].update({name: {"enabled": False}})
    c["study"].update(study_changes)
    return c


def _inputs(plan, paths, name):
    """The CSVs of an output's own evaluations (what its rule gets)."""
    keys = {f"{m}-{e}-{a}.csv" for m, e, a in plan.outputs[name].evals}
    return [p for p in paths if p.name in keys]


def test_table1_places_each_cell_from_the_plan(planned):
    plan, paths = planned
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        t, md, _ = GR.render(
            "table1", E.Evaluations(_inputs(plan, paths, "table1")), plan.outputs["table1"].spec
        )
    t = t.set_index(["attack", "main"])
    columns = [f"{w}:{a}" for w in ("uniform", "paper") for a in LET]
    assert list(t.columns) == [f"{c}{x}" for c in columns for x in GR.GRID_SUFFIXES]
    assert GR.GRID_SUFFIXES[:4] == ("", "_lo", "_hi", "_n")
    assert (t[[f"{c}_n" for c in columns]] == 2).all().all()  # 2 test samples behind every cell
    assert t.loc[("single", "d"), "uniform:D"] == 100 * 2 + 10 * 3 + 1
    assert t.loc[("multi", "d"), "uniform:D"] == 100 * 2 + 10 * 3 + 2
    assert t.loc[("single", "D"), "paper:s"] == 100 * 3 + 10 * 1 + 1 + 5
    assert t.loc[("multi", "s"), "paper:D"] == 100 * 1 + 10 * 3 + 2 + 5
    for kind in ("single", "multi"):  # diagonal = the single-task model in every block
        for w in ("uniform", "paper"):
            assert t.loc[(kind, "D"), f"{w}:D"] == 331
    assert (t[columns].to_numpy() < 1000).all()  # never an auxiliary task's row
    assert md.startswith("# Table 1: relative task vulnerability, pgd (resnet18, epoch 150)")
    # every sample has the same ratio: zero-width intervals, so each comparison is resolved and marked
    # with 2 samples of equal ratio, each carries half of the sum: every cell is marked fragile (†)
    assert "| multi | d | 212 [212, 212] † ↓st | *221 [221, 221]* † | 232 [232, 232] † ↑st |" in md
    assert "217 [217, 217] † ↓st ↑uni |" in md  # paper d:s vs the single-task d (221) and uniform d:s (212)
    assert "† fragile: the largest single test sample carries more than 30% of" in md


def test_each_output_reads_only_its_own_evaluations(planned):
    plan, _ = planned
    # Table 2 also reads PGD at WGD's eps and steps (APGD's default steps differ: no PGD to compare with)
    assert {a for _, _, a in plan.outputs["table2"].evals} == {"apgd", "wgd", "pgd"}
    assert {a for _, _, a in plan.outputs["table1"].evals} == {"pgd"}
    assert {e for _, e, _ in plan.outputs["table1"].evals} == {150}
    assert {(m, e) for m, e, _ in plan.outputs["figure1"].evals} == {
        ("resnet18-uniform-seg+depth_z+depth_e-s0", 150)
    }
    needed = set().union(*(o.evals for o in plan.outputs.values()))
    assert needed == set(plan.evals)


def test_missing_cells_warn_and_stay_empty_and_no_cell_at_all_fails(planned, tmp_path):
    plan, _ = planned
    mid = model_spec("resnet18", "uniform", "sd", 0).id
    paths = write_evals(tmp_path, plan, drop={(mid, 150, "pgd", "seg")})
    spec = plan.outputs["table1"].spec
    with pytest.warns(UserWarning, match="1 cell"):
        t, _, _ = GR.render("table1", E.Evaluations(paths), spec)
    assert math.isnan(t.set_index(["attack", "main"]).loc[("single", "s"), "uniform:d"])
    with pytest.raises(ValueError, match=r"table1: none of its 27 cell\(s\)"):
        GR.render("table1", E.Evaluations(_inputs(plan, paths, "rq1_eps")), spec)


def test_table2_rows_are_attacks_multi_only(planned):
    plan, paths = planned
    t, _, _ = GR.render("table2", E.Evaluations(paths), plan.outputs["table2"].spec)
    t = t.set_index(["attack", "main"])
    assert t.loc[("apgd", "s"), "uniform:d"] == 400 + 122
    assert t.loc[("wgd", "s"), "paper:d"] == 500 + 127
    assert t.loc[("wgd", "d"), "uniform:d"] == 500 + 221  # the single-task model under the same attack


def test_pearson_matches_scipy_and_handles_degenerate_input():
    x, y = [1.0, 2.0, 3.0, 4.5, float("nan")], [2.0, 1.0, 4.0, 5.0, 3.0]
    n, r, p = CO.pearson(x, y)
    ref = pearsonr(x[:4], y[:4])
    assert n == 4 and r == pytest.approx(ref.statistic) and p == pytest.approx(ref.pvalue)
    with pytest.warns(UserWarning, match="only 2"):
        n, r, p = CO.pearson([1, 2], [3, 4])
    assert n == 2 and math.isnan(r) and math.isnan(p)
    with pytest.warns(UserWarning, match="constant"):
        assert math.isnan(CO.pearson([1, 1, 1], [1, 2, 3])[1])


def test_table3_correlates_the_right_cells(planned, tmp_path):
    plan, _ = planned
    rng = np.random.default_rng(0)
    noise = {}

    def value(mid, epoch, attack, attacked, task):  # epoch 50 = noisy proxy; resnet50 = square
        v = abs(code(mid, 150, attack, attacked, task))
        if epoch == 50:
            return noise.setdefault(v, v + rng.normal() * 30)
        return v * v if mid.startswith("resnet50") else v

    paths = write_evals(tmp_path, plan, value)
    spec = plan.outputs["table3"].spec
    t, md, _ = CO.render("table3", E.Evaluations(paths), spec)
    assert list(t.columns) == CO.CORRELATION_COLUMNS
    cells = [(m, a) for m in LET for a in LET]
    v150 = [100 * IDX[m] + 10 * IDX[a] + 1 for m, a in cells]
    v50 = [noise[v] for v in v150]
    assert t["n"].tolist() == [9, 9, 9]
    assert t.loc[0, "pearson_r"] == pytest.approx(pearsonr(v50, v150).statistic)
    assert t.loc[1, "pearson_r"] == pytest.approx(pearsonr(v150, [v * v for v in v150]).statistic)
    clean = [2.0 ** IDX[a] for m, a in cells]
    assert t.loc[2, "pearson_r"] == pytest.approx(pearsonr(clean, v150).statistic)
    assert t.loc[0, "proxy"] == "resnet18 at epoch 50" and "'-' = undefined" in md
    # every sample has the cell's ratio, so the ratio of means gives the same r
    assert t["pearson_r_rom"].tolist() == pytest.approx(t["pearson_r"].tolist())
    assert "9 (too few cells)" in md and "Fisher-z" in md
    # a proxy model that does not beat the constant predictor leaves the correlation, named in the Markdown
    first = spec["rows"][0]["x"]["cells"][0]
    bad = {(first[0], int(first[1]), first[4])}
    t2, md2, _ = CO.render("table3", E.Evaluations(paths, untrained=bad), spec)
    assert t2.loc[0, "n"] == 8 and t2.loc[0, "excluded"] == f"{first[0]} at epoch {first[1]} ({first[4]})"
    assert t2.loc[0, "pearson_r"] == pytest.approx(pearsonr(v50[1:], v150[1:]).statistic)
    assert f"- resnet18 at epoch 50 vs resnet18 at epoch 150: {first[0]}" in md2


def test_rq1_sweeps_label_settings_from_the_plan_and_summarise(planned, tmp_path):
    plan, paths = planned
    spec = plan.outputs["rq1_eps"].spec
    long = SW.sweep(E.Evaluations(paths), spec)
    assert list(long.columns) == SW.SWEEP_COLUMNS and len(long) == 2 * 2 * 2
    assert list(dict.fromkeys(long["value"])) == ["16/255", "4/255"]  # the study file's order
    row = long[(long["value"] == "4/255") & (long["main"] == "s") & (long["kind"] == "multi")].iloc[0]
    assert (row["rel_vuln"], row["single_task_rel_vuln"], row["less_vulnerable"]) == (
        200 + 122,
        200 + 111,
        False,
    )
    summ = SW.sweep_summary(long).set_index(["value", "kind"])
    assert summ.loc[("4/255", "single"), "pairs"] == 2
    norm = SW.sweep(E.Evaluations(paths), plan.outputs["rq1_norm"].spec)
    assert list(dict.fromkeys(norm["value"])) == ["l2", "linf"]  # label order, not the file's key order
    spec_file = tmp_path / "rq1_eps.json"
    spec_file.write_text(plan.outputs["rq1_eps"].spec_json)
    out = tmp_path / "rq1_eps.csv"
    args = ["--spec", str(spec_file), "--inputs", *map(str, _inputs(plan, paths, "rq1_eps"))]
    assert cli.main(["tables", *args, "--out", str(out)]) == 0
    md = out.with_suffix(".md").read_text()
    assert "16/255" in md and "fraction_less_vulnerable" in md and len(pd.read_csv(out)) == 8
    png = tmp_path / "rq1_eps.png"
    assert cli.main(["figures", *args, "--out", str(png)]) == 0
    assert png.stat().st_size > 10_000 and png.with_suffix(".pdf").stat().st_size > 1000


def test_per_sample_rows_of_a_cell(planned):
    plan, paths = planned
    cell = plan.outputs["table1"].spec["rows"][0]["cells"][1]
    rows = E.Evaluations(paths).per_sample(cell)
    assert rows["sample"].tolist() == [0, 1]
    c = clean_of(cell[0], cell[4])
    assert (
        rows["clean_error"].tolist() == [c, c] and rows["adv_error"].tolist() == [c * (1 + code(*cell))] * 2
    )


def test_figure1_data_and_files_are_deterministic(planned, tmp_path):
    plan, paths = planned
    spec = plan.outputs["figure1"].spec
    ev = E.Evaluations(paths)
    t, marginals = BA.bars(ev, spec)
    assert list(t.columns) == BA.BAR_COLUMNS
    assert [(o, "".join(g["task"])) for o, g in t.groupby("order", sort=False)] == [
        ("sdD", "sdD"),
        ("Dds", "Dds"),
    ]
    values = t[["step", "E_dL", "n", "marginal", "E_dL_1N", "marginal_1N"]].to_numpy(float)
    assert np.isfinite(values).all()  # bounds may be NaN: 2 samples cannot bound a studentized interval
    for _, g in t.groupby("order", sort=False):
        bars = g["E_dL"].to_numpy()
        assert g["marginal"].to_numpy() == pytest.approx(np.diff(bars, prepend=0.0))
        assert g["E_dL_1N"].to_numpy() == pytest.approx(bars / np.arange(1, 4))  # 1/N = summed / N
        assert g["marginal_1N"].to_numpy() == pytest.approx(np.diff(bars / np.arange(1, 4), prepend=0.0))
        assert not (g["E_dL_lo"] > g["E_dL"]).any() and not (g["E_dL"] > g["E_dL_hi"]).any()
    first = t[t["order"] == "sdD"]["E_dL"].tolist()
    assert first == [ev.value(c, "adv_vulnerability") for c in spec["panels"][0]["cells"]]  # unchanged values
    cells = BA.bar_cells("figure1", t, marginals)
    dom = cells[cells["stat"] == "dominance"].set_index("order")
    steps = np.diff(first)  # the steps after the first task
    assert dom.loc["sdD", "value"] == pytest.approx(steps.max() / np.abs(steps).sum())
    assert dom.loc["sdD", "step"] == 2 + int(np.argmax(steps))
    outs = []
    for k in range(2):
        png = tmp_path / f"run{k}" / "figure1.png"
        RD.write("figure1", spec, _inputs(plan, paths, "figure1"), png=png)
        outs.append((png.read_bytes(), png.with_suffix(".pdf").read_bytes()))
    assert len(outs[0][0]) > 10_000 and outs[0] == outs[1]


def test_aggregate_names_a_non_numeric_column(tmp_path):
    rows = _eval_rows("resnet18-uniform-seg-s0", ["seg"], "seg", {"seg": [(1.0, "oops", 0.5, 0.6)]})
    p = _write(tmp_path / "nan.csv", rows)
    with pytest.raises(ValueError, match=r"nan\.csv.*'adv_loss'.*oops"):
        AG.aggregate([p])


# ------------------------------------------------------------------------------------------ intervals
SEG = ["seg", "depth_z"]
N = 40


def _cell(model_id, attacked, task="seg", epoch=150):
    return [model_id, epoch, "pgd", attacked, task]


def write_coded(path, model_id, tasks, ratios):
    """An evaluation CSV where task t of attacked subset a has clean error 1 and adversarial error
    1 + ratios[a][t][sample] (so its per-sample relative vulnerability is that ratio); losses = errors."""
    spec = parse_model_id(model_id)
    rows = []
    for attacked, by_task in ratios.items():
        for i in range(N):
            for t in tasks:
                r = by_task.get(t, np.zeros(N))[i]
                rows.append([model_id, spec.arch, spec.weighting, "+".join(tasks), 150, "pgd", "pgd", "linf",
                             8 / 255, 2 / 255, 2, 1, "{}", attacked, i, f"b/{i}/0", t, 1.0, 1.0 + r, 1.0,
                             1.0 + r, "", ""])  # fmt: skip
    return _write(path, rows)


def grid_spec(rows) -> dict:
    return {"layout": "grid", "title": "T", "note": "N", "label_columns": ["attack", "main"],
            "columns": ["uniform:s", "uniform:d"], "value": "rel_vuln",
            "rows": [{"labels": [kind, "s"], "cells": cells, "emphasize": ["uniform:s"], "kind": kind,
                      "attack": "pgd"} for kind, cells in rows]}  # fmt: skip


@pytest.fixture(scope="module")
def coded(tmp_path_factory):
    """A single-task model and a pair model on the same 40 test samples: the pair model's single-task
    attack is the single-task model's ratio + 0.05 on every sample (a small, consistent effect hidden in
    large sample noise), its multi-task attack the same ratio + symmetric noise (no effect)."""
    rng = np.random.default_rng(1)
    base = rng.uniform(0, 2, N)
    sym = np.tile([0.5, -0.5], N // 2)[rng.permutation(N)]
    folder = tmp_path_factory.mktemp("coded")
    single = model_spec("resnet18", "uniform", ["seg"], 0).id
    pair = model_spec("resnet18", "uniform", SEG, 0, main="seg").id
    paths = [
        write_coded(folder / "single.csv", single, ["seg"], {"seg": {"seg": base}}),
        write_coded(folder / "pair.csv", pair, SEG,
                    {"seg": {"seg": base + 0.05, "depth_z": sym}, "seg+depth_z": {"seg": base + sym}}),
    ]  # fmt: skip
    return single, pair, base, sym, paths


def test_intervals_exclude_or_contain_zero_and_match_stats(coded):
    single, pair, base, sym, paths = coded
    ev = E.Evaluations(paths)
    iv = ev.interval(_cell(single, "seg"))
    assert iv.n == N and 0 < iv.lo < base.mean() < iv.hi  # clearly vulnerable: excludes 0
    ref = S.rel_vuln_interval(np.ones(N), 1 + base)  # the same draws (n, resamples, seed)
    assert (iv.value, iv.lo, iv.hi) == pytest.approx((ref.value, ref.lo, ref.hi))
    noise = ev.interval(_cell(pair, "seg", "depth_z"))
    assert noise.value == pytest.approx(0) and noise.lo < 0 < noise.hi  # symmetric around 0: contains 0
    assert not S.significant(noise) and S.significant(iv)


def test_comparisons_are_paired_and_marked_only_when_the_interval_excludes_0(coded, tmp_path):
    single, pair, base, sym, paths = coded
    spec = grid_spec([("single", [_cell(single, "seg"), _cell(pair, "seg")]),
                      ("multi", [_cell(single, "seg"), _cell(pair, "seg+depth_z")])])  # fmt: skip
    out = tmp_path / "t.csv"
    RD.write("table1", spec, paths, csv=out, cells=tmp_path / "cells" / "t.csv")
    t = pd.read_csv(out).set_index("attack")
    # unpaired, the two cells' intervals overlap widely ...
    assert t.loc["single", "uniform:d_lo"] < t.loc["single", "uniform:s_hi"]
    md = out.with_suffix(".md").read_text()
    rows = {line.split(" | ")[0].strip("| "): line for line in md.splitlines() if line.startswith("| ")}
    assert rows["single"].endswith("↑st |")  # ... but paired, +0.05 on every sample is resolved
    assert "↑st" not in rows["multi"] and "↓st" not in rows["multi"]  # symmetric noise: no mark
    assert "↓st / ↑st: lower / higher than the single-task model" in md  # the legend: only marks it uses
    assert "↓uni" not in md and "↓pgd" not in md
    cells = CL.read_cells(tmp_path / "cells" / "t.csv")  # checked against the claims' cell contract
    comp = cells[cells["vs"] == "single_task"].set_index("kind")
    assert comp.loc["single", "diff"] == pytest.approx(0.05)
    assert (
        comp.loc["single", "diff_lo"] == pytest.approx(0.05) == pytest.approx(comp.loc["single", "diff_hi"])
    )
    assert comp.loc["multi", "diff_lo"] < 0 < comp.loc["multi", "diff_hi"]
    assert set(cells["method"]) == {"pgd"} and set(cells["norm"]) == {"linf"} and (cells["n"] == N).all()
    assert len(cells) == 4  # two diagonals (no comparison) + two compared cells


def test_several_seeds_merge_by_seed_aggregate(coded, tmp_path):
    single, pair, base, sym, paths = coded
    seed1 = model_spec("resnet18", "uniform", ["seg"], 1).id
    paths = [*paths, write_coded(tmp_path / "s1.csv", seed1, ["seg"], {"seg": {"seg": base + 1.0}})]
    ev = E.Evaluations(paths)
    per = [ev.interval(_cell(m, "seg")) for m in (single, seed1)]
    both = ev.interval([_cell(single, "seg"), _cell(seed1, "seg")])
    assert both.n_seeds == 2 and both.n == N
    assert both.value == pytest.approx(np.mean([p.value for p in per]))
    assert both.value == ev.value([_cell(single, "seg"), _cell(seed1, "seg")])
    assert both.lo < per[0].value and both.hi > per[1].value  # the spread across seeds is kept
    spec = grid_spec([("single", [[_cell(single, "seg"), _cell(seed1, "seg")], None])])
    spec["columns"] = ["uniform:s", "uniform:d"]
    _, md, cells = GR.render("table1", ev, spec)
    assert cells["n_seeds"].tolist() == [2] and S.format_interval(both) in md


def test_a_section_with_several_seeds_merges_them_in_each_cell(tmp_path):
    c = config(
        table1={"seeds": [0, 1]}, rq1_eps={"tasks": ["s", "d"], "attacks": ["pgd_eps16"], "seeds": [0, 1]}
    )
    c["seeds"] = [0, 1]
    plan = study.build(study.validated(c))
    cell = plan.outputs["table1"].spec["rows"][0]["cells"][1]
    assert [parse_model_id(x[0]).seed for x in cell] == [0, 1]  # per-seed cells of one table cell
    assert {parse_model_id(m).seed for m, _, _ in plan.outputs["table1"].evals} == {0, 1}
    assert {parse_model_id(m).seed for m, _, _ in plan.outputs["table2"].evals} == {0}  # its own seed

    def value(mid, epoch, attack, attacked, task):  # seed 1 is coded one higher
        return code(mid, epoch, attack, attacked, task) + parse_model_id(mid).seed

    paths = write_evals(tmp_path, plan, value)
    t, md, cells = GR.render("table1", E.Evaluations(paths), plan.outputs["table1"].spec)
    row = t.set_index(["attack", "main"]).loc[("single", "s")]
    # no sample noise: the two-level bootstrap resamples the 2 seeds, so its interval spans both seeds' values
    assert (row["uniform:d"], row["uniform:d_lo"], row["uniform:d_hi"]) == (121.5, 121, 122)
    assert set(cells["n_seeds"]) == {2}
    long = SW.sweep(E.Evaluations(paths), plan.outputs["rq1_eps"].spec)
    assert ((long[["rel_vuln", "single_task_rel_vuln"]].abs() % 1) == 0.5).all().all()  # seed means
    with pytest.raises(study.StudyError, match=r"study.table1.seed: seed 2 is not in config key seeds"):
        study.build(study.validated({**c, "study": {**c["study"], "table1": {"seeds": [0, 2]}}}))
