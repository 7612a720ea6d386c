"""More of the paper as outputs (issue 11 parts 2-5, 7): recommend, supplementary Tables 2-6, Figure 1 for
every order, models with more than two tasks, tasks added one by one (retrained).

Planned from the test and default studies; rendered from coded evaluation CSVs of exactly the plan's cells.
"""

import copy
import itertools
import math
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from mtlrobust import evaluate, ids, study
from mtlrobust import tasks as T
from mtlrobust.analysis import render
from mtlrobust.analysis.aggregate import read_eval, reduce_eval
from mtlrobust.analysis.evaluations import CELL_COLUMNS, Evaluations
from mtlrobust.analysis.layouts import LAYOUTS, bars, grid
from mtlrobust.analysis.stats import Interval, format_interval

REPO = Path(__file__).resolve().parents[1]
NEW = ("recommend", "supp_tables", "figure1_orders", "table_sets", "figure1_retrained")


def config(name="studies/test.yaml", **study_changes):
    cfg = yaml.safe_load((REPO / name).read_text())
    for section, value in study_changes.items():
        cfg["study"][section] = value
    return study.validated(cfg)


def plan_of(**study_changes):
    return study.build(config(**study_changes))


def only(name, **section):
    """The test study with only output ``name`` enabled (its section set to ``section``)."""
    return plan_of(**{**{n: {"enabled": False} for n in study.OUTPUTS}, name: section})


def jobs(plan):
    return len(plan.models), len(plan.evals)


# ------------------------------------------------------------------------------------------ the plan
def test_default_study_adds_one_model_and_one_evaluation_job():
    with_new = study.build(config("config.yaml"))
    without = study.build(config("config.yaml", **{n: {"enabled": False} for n in NEW}))
    assert set(NEW) <= set(with_new.outputs)
    assert jobs(with_new) == (jobs(without)[0] + 1, jobs(without)[1] + 1)
    (new_model,) = set(with_new.models) - set(without.models)
    assert new_model == "resnet18-uniform-seg+depth_z+depth_e-s0"


def test_test_study_new_outputs_reuse_its_evaluations():
    with_new, without = plan_of(), plan_of(**{n: {"enabled": False} for n in NEW})
    assert set(with_new.evals) == set(without.evals)


def test_recommend_reuses_table3s_surrogate_encoder_cells():
    plan = plan_of()
    spec = plan.outputs["recommend"].spec
    arch_row = next(r for r in plan.outputs["table3"].spec["rows"] if "resnet50" in r["target"])
    assert [p["proxy"] for p in spec["pairs"]] == arch_row["x"]["cells"]
    assert [p["target"] for p in spec["pairs"]] == arch_row["y"]["cells"]
    assert {(p["main"], p["aux"]) for p in spec["pairs"]} == {("s", "s"), ("s", "d"), ("d", "s"), ("d", "d")}
    assert set(plan.outputs["recommend"].evals) == {
        (c[0], c[1], c[2]) for c in LAYOUTS["recommend"].cells(spec)
    }


@pytest.mark.parametrize(
    "section, expected",
    [
        ({"tasks": ["s"]}, "study.recommend.tasks"),
        ({"target": {"arch": "resnet18"}}, "study.recommend.proxy"),
        ({"proxy": {"epoch": 5}}, "study.recommend.proxy.epoch"),
    ],
)
def test_recommend_checks_name_the_key(section, expected):
    with pytest.raises(study.StudyError, match=expected.replace(".", r"\.")):
        only("recommend", **section)


def test_supp_tables_blocks_per_encoder():
    spec = plan_of().outputs["supp_tables"].spec
    assert [t["arch"] for t in spec["tables"]] == ["resnet18", "resnet50"]
    assert spec["columns"] == ["s", "d"]
    for t in spec["tables"]:
        clean, single, multi = t["blocks"]
        assert [b["block"] for b in t["blocks"]] == ["clean", "single", "multi"]
        assert (clean["value"], single["value"], multi["value"]) == ("clean_error", "rel_vuln", "rel_vuln")
        assert clean["rows"] == single["rows"]  # clean error from the same evaluations
        for r_single, r_multi in zip(single["rows"], multi["rows"], strict=True):
            main = T.get(r_single["main"]).id
            for aux, c_single, c_multi in zip(
                ["seg", "depth_z"], r_single["cells"], r_multi["cells"], strict=True
            ):
                model = ids.parse_model_id(c_single[0])
                assert model.arch == t["arch"] and c_single[4] == main and c_single[3] == main
                if aux == main:  # the diagonal: the single-task model, identical in both blocks
                    assert model.tasks == (main,) and c_multi == c_single
                else:
                    assert set(model.tasks) == {main, aux} and set(c_multi[3].split("+")) == {main, aux}


def test_figure1_orders_every_permutation_of_the_chosen_tasks_on_one_model():
    spec = study.build(config("config.yaml")).outputs["figure1_orders"].spec
    orders = [p["order"] for p in spec["panels"]]
    assert sorted(orders) == sorted("".join(p) for p in itertools.permutations("sdD")) and len(orders) == 6
    models = {c[0] for p in spec["panels"] for c in p["cells"]}
    assert models == {"resnet18-uniform-seg+depth_z+depth_e+normal+edge3d-s0"}  # Figure 1's model
    for p in spec["panels"]:
        attacked = [c[3].split("+") for c in p["cells"]]
        assert [T.letters(T.canonical(a)) for a in attacked] == [
            T.letters(T.canonical(p["order"][: i + 1])) for i in range(3)
        ]
        assert "every order" in spec["title"]


def test_figure1_orders_cap_and_checks():
    plan = study.build(config("config.yaml", figure1_orders={"tasks": ["s", "d", "D", "n"], "max_orders": 5}))
    spec = plan.outputs["figure1_orders"].spec
    assert [p["order"] for p in spec["panels"]] == ["sdDn", "sdnD", "sDdn", "sDnd", "sndD"]
    assert "the first 5 of 24 orders" in spec["title"]
    with pytest.raises(study.StudyError, match=r"study\.figure1_orders\.tasks"):
        study.build(config("config.yaml", figure1_orders={"model": ["s", "d"], "tasks": ["s", "D"]}))


def test_table_sets_columns_are_auxiliary_sets_and_cells_their_models():
    spec = study.build(config("config.yaml")).outputs["table_sets"].spec  # tasks s, d, D; main d; sizes 2, 3
    assert spec["columns"] == ["uniform:s", "uniform:d", "uniform:D", "uniform:sD"]  # sets without d, and d
    rows = {tuple(r["labels"]): r["cells"] for r in spec["rows"]}
    assert list(rows) == [("pgd", "single", "d"), ("pgd", "multi", "d")]
    single, multi = rows[("pgd", "single", "d")], rows[("pgd", "multi", "d")]
    assert (
        single[1] == multi[1] == ["resnet18-uniform-depth_z-s0", 8, "pgd", "depth_z", "depth_z"]
    )  # diagonal
    assert single[0][0] == "resnet18-uniform-seg+depth_z-s0"  # the pair model of Table 1
    assert single[3][0] == "resnet18-uniform-seg+depth_z+depth_e-s0" and single[3][3] == "depth_z"
    assert multi[3][3] == "seg+depth_z+depth_e"


def test_table_sets_without_size_2_keeps_only_the_diagonal_of_size_1():
    spec = study.build(
        config("config.yaml", table_sets={"tasks": ["s", "d", "D"], "mains": ["d"], "sizes": [3]})
    )
    assert spec.outputs["table_sets"].spec["columns"] == ["uniform:d", "uniform:sD"]


def test_table_sets_cell_is_empty_where_the_main_task_is_among_larger_auxiliary_sets():
    plan = study.build(config("config.yaml", table_sets={"tasks": ["s", "d", "D"], "sizes": [3]}))
    spec = plan.outputs["table_sets"].spec  # mains s, d, D
    assert spec["columns"] == [
        "uniform:s",
        "uniform:d",
        "uniform:D",
        "uniform:sd",
        "uniform:sD",
        "uniform:dD",
    ]
    cells = {tuple(r["labels"]): r["cells"] for r in spec["rows"]}
    assert cells[("pgd", "single", "s")][3] is None and cells[("pgd", "single", "s")][4] is None
    assert cells[("pgd", "single", "s")][1] is None  # no pair models with sizes [3]
    assert {c[0] for r in cells.values() for c in r if c is not None} == {
        "resnet18-uniform-seg-s0", "resnet18-uniform-depth_z-s0", "resnet18-uniform-depth_e-s0",
        "resnet18-uniform-seg+depth_z+depth_e-s0",
    }  # fmt: skip


def test_table_sets_size_beyond_the_tasks_names_the_key():
    with pytest.raises(study.StudyError, match=r"study\.table_sets\.sizes"):
        only("table_sets", sizes=[3])


def test_figure1_retrained_one_model_per_prefix_and_weighting():
    plan = only("figure1_retrained", orders=["ds"], weightings=["uniform", "paper"])
    spec = plan.outputs["figure1_retrained"].spec
    assert [p["order"] for p in spec["panels"]] == ["ds, uniform", "ds, paper"]
    uniform, paper = ([c[0] for c in p["cells"]] for p in spec["panels"])
    assert uniform == ["resnet18-uniform-depth_z-s0", "resnet18-uniform-seg+depth_z-s0"]
    assert paper == ["resnet18-uniform-depth_z-s0", "resnet18-paper-depth_z+seg-s0"]  # main d first
    assert [c[3] for c in spec["panels"][0]["cells"]] == ["depth_z", "seg+depth_z"]  # all its tasks attacked
    with pytest.raises(study.StudyError, match=r"study\.figure1_retrained\.orders.*repeats"):
        only("figure1_retrained", orders=["ss"])
    with pytest.raises(study.StudyError, match=r"study\.figure1_retrained\.orders: order 'sn' uses tasks"):
        only("figure1_retrained", orders=["sn"])


# ------------------------------------------------------------------------------------------ rendering
def _values(key, attacked, task, n):
    """Deterministic per-sample (clean_loss, adv_loss, clean_error, adv_error) of one cell."""
    seed = zlib.crc32("/".join(map(str, (*key, attacked, task))).encode())
    rng = np.random.default_rng(seed)
    clean = rng.uniform(0.2, 1.0, size=(n, 2))
    return np.concatenate([clean, clean + rng.uniform(0.0, 0.5, size=(n, 2))], axis=1)[:, [0, 2, 1, 3]]


def write_evals(plan, keys, folder: Path, n=4) -> list[Path]:
    """Coded evaluation CSVs of ``keys`` with every attacked subset the plan asks and every model task."""
    paths = []
    for key in sorted(keys):
        model_id, epoch, attack = key
        model = ids.parse_model_id(model_id)
        rows = []
        for subset in sorted(plan.evals[key]):
            attacked = "+".join(subset)
            for i in range(n):
                for t in model.tasks:
                    cl, al, ce, ae = _values(key, attacked, t, n)[i]
                    rows.append([model_id, model.arch, model.weighting, "+".join(model.tasks), epoch, attack,
                                 "pgd", "linf", 8 / 255, 2 / 255, 2, "", "{}", attacked, i, f"b/{i}/0", t,
                                 cl, al, ce, ae, "", ""])  # fmt: skip
        path = folder / f"{model_id}.{epoch}.{attack}.csv"
        evaluate.write_csv(rows, path)
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    """The test study's plan, its new outputs' evaluation CSVs (coded) and the reduced values by cell."""
    folder = tmp_path_factory.mktemp("evals")
    plan = plan_of()
    keys = {k for n in NEW for k in plan.outputs[n].evals}
    paths = write_evals(plan, keys, folder)
    reduced = pd.concat([reduce_eval(read_eval(p)) for p in paths])
    by_cell = {(r.model_id, int(r.epoch), r.attack, r.attacked, r.task): r for r in reduced.itertuples()}
    return plan, paths, by_cell, folder


def _inputs(plan, name, paths):
    want = {f"{m}.{e}.{a}.csv" for m, e, a in plan.outputs[name].evals}
    return [p for p in paths if p.name in want]


def test_supp_tables_renders_the_cells_values(rendered):
    plan, paths, by_cell, folder = rendered
    spec = plan.outputs["supp_tables"].spec
    out = folder / "supp_tables.csv"
    cells_out = folder / "cells_supp_tables.csv"
    render.write("supp_tables", spec, _inputs(plan, "supp_tables", paths), csv=out, cells=cells_out)
    table = pd.read_csv(out)
    assert list(table.columns) == ["arch", "block", "main"] + [
        f"{t}{x}" for t in "sd" for x in grid.GRID_SUFFIXES
    ]
    assert {"s_rom", "s_median", "s_top_share"} <= set(table.columns)  # the heavy-tail companions
    assert len(table) == 2 * 3 * 2  # archs x blocks x mains
    for t in spec["tables"]:
        for b in t["blocks"]:
            for r in b["rows"]:
                got = table[
                    (table.arch == t["arch"]) & (table.block == b["block"]) & (table.main == r["main"])
                ]
                for col, cell in zip(spec["columns"], r["cells"], strict=True):
                    want = getattr(by_cell[tuple(cell)], b["value"])
                    assert got[col].item() == pytest.approx(want, rel=1e-5)
                    assert got[f"{col}_lo"].item() <= got[col].item() + 1e-9 <= got[f"{col}_hi"].item() + 2e-9
                    assert got[f"{col}_n"].item() == 4
    md = out.with_suffix(".md").read_text()
    assert (
        "## resnet18 (the supplementary's Table 2)" in md
        and "## resnet50 (the supplementary's Table 3)" in md
    )
    diag = table[(table.arch == "resnet18") & (table.block == "clean") & (table.main == "s")].iloc[0]
    text = format_interval(Interval(diag["s"], diag["s_lo"], diag["s_hi"], 4))
    assert f"| clean | s | *{text}* |" in md  # the single-task model in italics
    long = pd.read_csv(cells_out)
    assert list(long.columns) == CELL_COLUMNS
    assert len(long) == 2 * 2 * 2 * 2 and set(long["kind"]) == {"single", "multi"}  # no clean rows
    r = long[
        (long.arch == "resnet50") & (long.kind == "multi") & (long.main == "d") & (long.aux == "s")
    ].iloc[0]
    want = table[(table.arch == "resnet50") & (table.block == "multi") & (table.main == "d")].iloc[0]
    assert (r["value"], r["lo"], r["hi"]) == pytest.approx((want["s"], want["s_lo"], want["s_hi"]))


def test_supp_tables_without_any_cell_is_an_error(tmp_path):
    spec = plan_of().outputs["supp_tables"].spec
    with pytest.raises(ValueError, match="none of its"):
        render.write("supp_tables", spec, [], csv=tmp_path / "x.csv")
    assert not (tmp_path / "x.csv").exists()


def test_recommend_renders_through_the_registry(rendered):
    plan, paths, by_cell, folder = rendered
    spec = plan.outputs["recommend"].spec
    out = folder / "recommend.csv"
    cells_out = folder / "cells_recommend.csv"
    render.write("recommend", spec, _inputs(plan, "recommend", paths), csv=out, cells=cells_out)
    table = pd.read_csv(out)
    assert set(table["main"]) == {"s", "d", "all"}
    for p in spec["pairs"]:
        row = table[(table.main == p["main"]) & (table.aux == p["aux"])]
        assert row["proxy_value"].item() == pytest.approx(by_cell[tuple(p["proxy"])].rel_vuln, rel=1e-5)
        assert row["target_value"].item() == pytest.approx(by_cell[tuple(p["target"])].rel_vuln, rel=1e-5)
    assert out.with_suffix(".md").read_text().startswith("# Which auxiliary task to add")
    long = pd.read_csv(cells_out)
    assert len(long) == 2 * len(spec["pairs"]) and set(long["setting"]) == {"proxy", "target"}
    first = long.iloc[1]  # the first pair's target cell
    assert first["model_id"] == spec["pairs"][0]["target"][0]
    assert first["value"] == pytest.approx(by_cell[tuple(spec["pairs"][0]["target"])].rel_vuln, rel=1e-5)


def test_table_sets_renders_as_a_grid(rendered):
    plan, paths, by_cell, folder = rendered
    spec = plan.outputs["table_sets"].spec
    t, md, _ = grid.render("table_sets", Evaluations(_inputs(plan, "table_sets", paths)), spec)
    assert list(t.columns[:3]) == ["attack", "kind", "main"]
    for r, (_, row) in zip(spec["rows"], t.iterrows(), strict=True):
        for col, cell in zip(spec["columns"], r["cells"], strict=True):
            want = math.nan if cell is None else by_cell[tuple(cell)].rel_vuln
            assert row[col] == pytest.approx(want, rel=1e-9, nan_ok=True)


@pytest.mark.parametrize("name", ["figure1_orders", "figure1_retrained"])
def test_bar_figures_draw_each_panels_prefixes(rendered, name):
    plan, paths, by_cell, folder = rendered
    spec = plan.outputs[name].spec
    ev = Evaluations(_inputs(plan, name, paths))
    t, _ = bars.bars(ev, spec)
    assert list(dict.fromkeys(t["order"])) == [p["order"] for p in spec["panels"]]
    for p in spec["panels"]:
        got = t[t["order"] == p["order"]].sort_values("step")["E_dL"]
        assert list(got) == pytest.approx([by_cell[tuple(c)].adv_vulnerability for c in p["cells"]])
    png = render.write(name, copy.deepcopy(spec), _inputs(plan, name, paths), png=folder / f"{name}.png")
    assert all(p.stat().st_size > 0 for p in png)
