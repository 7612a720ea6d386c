"""Aggregation, tables and figures on small hand-made evaluation / vulnerability tables."""

import csv
import json
import math
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy.stats import pearsonr

from mtlrobust import cli
from mtlrobust.analysis import aggregate as AG
from mtlrobust.analysis import figures as FG
from mtlrobust.analysis import tables as TB
from mtlrobust.evaluate import COLUMNS
from mtlrobust.ids import model_spec

LET = "sdD"
IDX = {c: i + 1 for i, c in enumerate(LET)}
ID = {"s": "seg", "d": "depth_z", "D": "depth_e"}


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
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(columns)
        w.writerows(rows)
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


# ------------------------------------------------------------------------------------------ synthetic table
def _vuln(rows):
    base = {"epoch": 150, "attack": "pgd", "eps": 8 / 255, "clean_error": 1.0, "adv_vulnerability": 0.0}
    return pd.DataFrame([{**base, **r} for r in rows])


def _grid_rows(
    arch="resnet18", epoch=150, attack="pgd", weightings=("uniform", "paper"), f=None, eps=8 / 255
):
    """Every cell of a (main, aux) grid over s, d, D; value = 100 main + 10 aux + 1 single / 2 multi
    (+5 paper).

    Single-task models: 1000 + main; measured-aux rows of pair models: 9999 (must never be picked)."""
    f = f or (lambda v: v)
    rows = []
    for m in LET:
        rows.append(
            dict(
                model_id=model_spec(arch, "uniform", [m], 0).id,
                attacked=ID[m],
                task=ID[m],
                rel_vuln=f(1000 + IDX[m]),
                clean_error=IDX[m],
                epoch=epoch,
                attack=attack,
                eps=eps,
            )
        )
        for a in LET:
            if a == m:
                continue
            for w in weightings:
                mid = model_spec(arch, w, [m, a], 0, main=m).id
                off = 5 if w == "paper" else 0
                both = "+".join(t for t in ("seg", "depth_z", "depth_e") if t in (ID[m], ID[a]))
                for att, k in ((ID[m], 1), (both, 2)):
                    rows.append(
                        dict(
                            model_id=mid,
                            attacked=att,
                            task=ID[m],
                            epoch=epoch,
                            attack=attack,
                            eps=eps,
                            rel_vuln=f(100 * IDX[m] + 10 * IDX[a] + k + off),
                            clean_error=IDX[m] + IDX[a],
                        )
                    )
                    if w == "paper":
                        rows.append(
                            dict(
                                model_id=mid,
                                attacked=att,
                                task=ID[a],
                                rel_vuln=9999.0,
                                epoch=epoch,
                                attack=attack,
                                eps=eps,
                            )
                        )
    return rows


def test_table1_cell_placement(tmp_path):
    df = _vuln(_grid_rows())
    spec = {
        "arch": "resnet18",
        "epoch": 150,
        "seed": 0,
        "tasks": list(LET),
        "attack": "pgd",
        "weightings": ["uniform", "paper"],
    }
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        t = TB.table1(df, spec)
    t = t.set_index(["attack", "main"])
    assert list(t.columns) == [f"{w}:{a}" for w in ("uniform", "paper") for a in LET]
    assert t.loc[("single", "d"), "uniform:D"] == 100 * 2 + 10 * 3 + 1
    assert t.loc[("multi", "d"), "uniform:D"] == 100 * 2 + 10 * 3 + 2
    assert t.loc[("single", "D"), "paper:s"] == 100 * 3 + 10 * 1 + 1 + 5
    assert t.loc[("multi", "s"), "paper:D"] == 100 * 1 + 10 * 3 + 2 + 5
    for kind in ("single", "multi"):  # diagonal = the single-task model in every block
        for w in ("uniform", "paper"):
            assert t.loc[(kind, "D"), f"{w}:D"] == 1003
    assert not (t.to_numpy() == 9999).any()


def test_table1_missing_cells_warn_and_stay_empty():
    df = _vuln([r for r in _grid_rows() if not (r["task"] == "seg" and r["rel_vuln"] == 121)])
    spec = {"arch": "resnet18", "epoch": 150, "tasks": list(LET), "attack": "pgd", "weightings": ["uniform"]}
    with pytest.warns(UserWarning, match="1 cell"):
        t = TB.table1(df, spec).set_index(["attack", "main"])
    assert math.isnan(t.loc[("single", "s"), "uniform:d"])


def test_table2_rows_are_attacks_multi_only():
    df = _vuln(_grid_rows(attack="apgd") + _grid_rows(attack="wgd", f=lambda v: -v))
    spec = {
        "arch": "resnet18",
        "epoch": 150,
        "tasks": list(LET),
        "attacks": ["apgd", "wgd"],
        "weightings": ["uniform", "paper"],
    }
    t = TB.table2(df, spec).set_index(["attack", "main"])
    assert t.loc[("apgd", "s"), "uniform:d"] == 122
    assert t.loc[("wgd", "s"), "paper:d"] == -127
    assert t.loc[("wgd", "d"), "uniform:d"] == -1002


def test_pearson_matches_scipy_and_handles_degenerate_input():
    x, y = [1.0, 2.0, 3.0, 4.5, float("nan")], [2.0, 1.0, 4.0, 5.0, 3.0]
    n, r, p = TB.pearson(x, y)
    ref = pearsonr(x[:4], y[:4])
    assert n == 4 and r == pytest.approx(ref.statistic) and p == pytest.approx(ref.pvalue)
    with pytest.warns(UserWarning, match="only 2"):
        n, r, p = TB.pearson([1, 2], [3, 4])
    assert n == 2 and math.isnan(r) and math.isnan(p)
    with pytest.warns(UserWarning, match="constant"):
        assert math.isnan(TB.pearson([1, 1, 1], [1, 2, 3])[1])


def test_table3_correlates_the_right_cells():
    rng = np.random.default_rng(0)
    noise = {}

    def f(v):
        return noise.setdefault(v, v + rng.normal() * 30)

    df = _vuln(
        _grid_rows(epoch=150, weightings=("uniform",))
        + _grid_rows(epoch=50, weightings=("uniform",), f=f)
        + _grid_rows(arch="resnet50", weightings=("uniform",), f=lambda v: v * v)
    )
    spec = {
        "attack": "pgd",
        "tasks": list(LET),
        "attacked": "single",
        "weighting": "uniform",
        "epochs": {"proxy": 50, "target": 150, "arch": "resnet18"},
        "archs": {"proxy": "resnet18", "target": "resnet50", "epoch": 150},
        "clean": {"arch": "resnet18", "epoch": 150},
    }
    t = TB.table3(df, spec)
    assert list(t.columns) == ["proxy", "target", "n", "pearson_r", "p_value"]
    cells = [(m, a) for m in LET for a in LET]
    v150 = [1000 + IDX[m] if a == m else 100 * IDX[m] + 10 * IDX[a] + 1 for m, a in cells]
    v50 = [noise[v] for v in v150]
    clean = [IDX[m] if a == m else IDX[m] + IDX[a] for m, a in cells]
    assert t["n"].tolist() == [9, 9, 9]
    assert t.loc[0, "pearson_r"] == pytest.approx(pearsonr(v50, v150).statistic)
    assert t.loc[1, "pearson_r"] == pytest.approx(pearsonr(v150, [v * v for v in v150]).statistic)
    assert t.loc[2, "pearson_r"] == pytest.approx(pearsonr(clean, v150).statistic)
    both = TB.table3(df, {**spec, "attacked": "both"})
    assert both["n"].tolist()[0] == 3 + 2 * 6  # diagonal counted once


def test_rq1_eps_sweep_and_summary(tmp_path):
    # eps 4: every pair below its single-task model (1000+); eps 16: every pair above it
    df = _vuln(
        _grid_rows(attack="pgd_eps4", weightings=("uniform",), eps=4 / 255)
        + _grid_rows(
            attack="pgd_eps16", weightings=("uniform",), eps=16 / 255, f=lambda v: v if v > 999 else v * 100
        )
    )
    spec = {
        "arch": "resnet18",
        "epoch": 150,
        "seed": 0,
        "tasks": list(LET),
        "attacks": ["pgd_eps4", "pgd_eps16"],
    }
    long = TB.sweep(df, "rq1_eps", spec)
    assert list(long.columns) == TB.SWEEP_COLUMNS and len(long) == 2 * 6 * 2
    assert list(dict.fromkeys(long["value"])) == ["4/255", "16/255"]
    summ = TB.sweep_summary(long).set_index(["value", "kind"])
    assert summ.loc[("4/255", "single"), "fraction_less_vulnerable"] == 1.0
    assert summ.loc[("16/255", "multi"), "fraction_less_vulnerable"] == 0.0
    assert summ.loc[("4/255", "multi"), "pairs"] == 6
    vp = tmp_path / "v.csv"
    df.to_csv(vp, index=False)
    out = tmp_path / "rq1_eps.csv"
    assert (
        cli.main(
            [
                "tables",
                "--vulnerability",
                str(vp),
                "--table",
                "rq1_eps",
                "--spec-json",
                json.dumps(spec),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    md = out.with_suffix(".md").read_text()
    assert "16/255" in md and "fraction_less_vulnerable" in md
    assert len(pd.read_csv(out)) == 24
    png = tmp_path / "rq1_eps.png"
    assert (
        cli.main(
            [
                "figures",
                "--vulnerability",
                str(vp),
                "--figure",
                "rq1_eps",
                "--spec-json",
                json.dumps(spec),
                "--out",
                str(png),
            ]
        )
        == 0
    )
    assert png.stat().st_size > 10_000 and png.with_suffix(".pdf").stat().st_size > 1000


def test_table1_cli_markdown_uses_letters(tmp_path):
    vp = tmp_path / "v.csv"
    _vuln(_grid_rows()).to_csv(vp, index=False)
    spec = {
        "arch": "resnet18",
        "epoch": 150,
        "seed": 0,
        "tasks": list(LET),
        "mains": ["d"],
        "attack": "pgd",
        "weightings": ["uniform", "paper"],
    }
    out = tmp_path / "table1.csv"
    assert (
        cli.main(
            [
                "tables",
                "--vulnerability",
                str(vp),
                "--table",
                "table1",
                "--spec-json",
                json.dumps(spec),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    t = pd.read_csv(out)
    assert t["main"].tolist() == ["d", "d"] and "paper:D" in t.columns
    assert "| multi | d | 212.00 | *1002.00* |" in out.with_suffix(".md").read_text()


def _figure1_rows():
    order = ["seg", "depth_z", "depth_e"]
    mid = model_spec("resnet18", "uniform", order, 0).id
    rows = []
    prefixes = [order[:i] for i in (1, 2, 3)] + [["depth_e"], ["depth_e", "depth_z"]]
    vals = [1.0, 1.5, 1.2, 0.2, 0.4]
    for p, v in zip(prefixes, vals, strict=True):
        att = "+".join(t for t in order if t in p)
        rows += [dict(model_id=mid, attacked=att, task=t, rel_vuln=1.0, adv_vulnerability=v) for t in order]
    return mid, rows


def test_figure1_data_and_files_are_deterministic(tmp_path):
    mid, rows = _figure1_rows()
    df = _vuln(rows)
    spec = {"model": mid, "epoch": 150, "attack": "pgd", "orders": ["sdD", "Dds"]}
    data = FG.figure1_data(df, spec)
    assert data[0][2] == [1.0, 1.5, 1.2]
    assert data[1][1] == ["D", "d", "s"] and data[1][2] == [0.2, 0.4, 1.2]
    vp = tmp_path / "v.csv"
    df.to_csv(vp, index=False)
    outs = []
    for k in range(2):
        png = tmp_path / f"run{k}" / "figure1.png"
        assert (
            cli.main(
                [
                    "figures",
                    "--vulnerability",
                    str(vp),
                    "--figure",
                    "figure1",
                    "--spec-json",
                    json.dumps(spec),
                    "--out",
                    str(png),
                ]
            )
            == 0
        )
        outs.append((png.read_bytes(), png.with_suffix(".pdf").read_bytes()))
    assert len(outs[0][0]) > 10_000 and outs[0] == outs[1]


def test_aggregate_names_a_non_numeric_column(tmp_path):
    rows = _eval_rows("resnet18-uniform-seg-s0", ["seg"], "seg", {"seg": [(1.0, "oops", 0.5, 0.6)]})
    p = _write(tmp_path / "nan.csv", rows)
    with pytest.raises(ValueError, match=r"nan\.csv.*'adv_loss'.*oops"):
        AG.aggregate([p])
