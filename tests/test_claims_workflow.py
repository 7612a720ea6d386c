"""The table and claims rules' script on coded evaluation CSVs: cell tables -> results/claims.csv/.md.

Values are coded per cell (tests/test_analysis.py: ``code``) with the same ratio on every test sample, so
every interval has zero width and each verdict is known in advance.
"""

import importlib.util
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
from test_analysis import config, write_evals

from mtlrobust import study
from mtlrobust.analysis import claims as CL

SCRIPT = Path(__file__).resolve().parents[1] / "workflow" / "scripts" / "analysis.py"


def script():
    spec = importlib.util.spec_from_file_location("analysis_script", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def claims_run(tmp_path_factory):
    """Tables 1-3 and Figure 1 through the table rule's script, then the claims rule's."""
    plan = study.build(study.validated(config()))
    root = tmp_path_factory.mktemp("run")
    paths = write_evals(root, plan)
    run = script()
    cells = []
    for name in plan.claims_sources():
        keys = {f"{m}-{e}-{a}.csv" for m, e, a in plan.outputs[name].evals}
        out = SimpleNamespace(
            csv=root / f"{name}.csv",
            md=root / f"{name}.md",
            cells=root / "cells" / f"{name}.csv",
            html=root / f"{name}.html",
        )
        run.main(SimpleNamespace(rule="table", wildcards=SimpleNamespace(name=name), output=out,
                                 params=SimpleNamespace(spec=plan.outputs[name].spec_json, fragile=0.3),
                                 input=SimpleNamespace(evals=[p for p in paths if p.name in keys],
                                                       models=[])))  # fmt: skip
        cells.append(out.cells)
    out = SimpleNamespace(csv=root / "claims.csv", md=root / "claims.md", html=root / "claims.html")
    params = SimpleNamespace(thresholds={"reliable_share": 0.9}, source="synthetic")  # the config's claims:
    run.main(SimpleNamespace(rule="claims", input=SimpleNamespace(cells=cells, theory=[]), output=out,
                             params=params))  # fmt: skip
    return plan, root


def test_claims_sources_are_the_enabled_tables_and_figure1():
    assert study.build(study.validated(config())).claims_sources() == [
        "table1",
        "table2",
        "table3",
        "figure1",
        "rq1_norm",
        "rq1_eps",
        "rq1_arch",
    ]
    off = {n: {"enabled": False} for n in study.CLAIMS_SOURCES}
    assert study.build(study.validated(config(**off))).claims_sources() == []
    only = study.build(study.validated(config(**{**off, "table3": {"epochs": {"proxy": 50}}})))
    assert only.claims_sources() == ["table3"]


def test_one_row_per_claim_with_the_expected_verdicts(claims_run):
    _, root = claims_run
    df = pd.read_csv(root / "claims.csv").set_index("claim")
    assert list(df.columns) == CL.CLAIM_COLUMNS[1:]
    adaptive = [
        f"{c}:{a}"
        for a in ("apgd", "wgd")
        for c in ("rq3_stronger_than_pgd", "rq3_stronger_than_pgd_main_error", "rq3_weights_negated")
    ]
    expected = ["rq1_not_reliably_less_vulnerable:single", "rq1_not_reliably_less_vulnerable:multi",
                "rq1_l2_confirms_mao:pgd_l2", "rq1_eps_not_reliable:single", "rq1_eps_not_reliable:multi",
                "rq1_deep_more_vulnerable", "rq3_weights_lower_pgd", *adaptive, "rq3_some_auxiliary_helps",
                "rq4_proxy:epochs", "rq4_proxy:arch", "rq4_proxy_very_strong:arch", "rq4_proxy:clean",
                "rq4_proxy_very_strong:clean", "rq2_one_task_dominates", "rq2_same_task_dominates",
                "rq2_adding_tasks_increases", "rq2_theorem4_bound"]  # fmt: skip
    assert df.index.tolist() == expected
    v = df["verdict"]
    # coded Table 1: the pair model beats the single-task model for 3 of 6 (main, aux) pairs per attack kind
    for kind in ("single", "multi"):
        cid = f"rq1_not_reliably_less_vulnerable:{kind}"
        assert (df.loc[cid, "value"], df.loc[cid, "n"], v[cid]) == (0.5, 6, "supported")
    assert v["rq3_weights_lower_pgd"] == "contradicted"  # paper-weighted cells are coded +5
    # WGD is coded +500 over PGD (same eps, steps): on the main task's error an exact, zero-width difference;
    # on the attacked objective the difference grows with the sample, and 2 samples cannot bound it
    assert v["rq3_stronger_than_pgd_main_error:wgd"] == "supported"
    assert (
        v["rq3_stronger_than_pgd:wgd"] == "unresolved" and df.loc["rq3_stronger_than_pgd:wgd", "value"] == 1
    )
    assert v["rq3_stronger_than_pgd:apgd"] == "unresolved"  # no PGD at APGD's steps in this study
    assert df.loc["rq3_stronger_than_pgd:apgd", "n"] == 0
    assert df.loc["rq2_theorem4_bound", "n"] == 0  # no theory.csv given
    md = (root / "claims.md").read_text()
    unmeasured = df.index[df["n"] == 0].tolist()
    assert unmeasured and all(f"`{c}`" in md.split("Not measured by this study")[1].split("\n")[0]
                              for c in unmeasured)  # fmt: skip
    assert sum(line.startswith("| rq") for line in md.splitlines()) == len(expected) - len(unmeasured)
    assert "Thresholds" in md
    assert "say nothing about whether the paper's findings hold on" in md.replace("\n", " ")


def test_cell_tables_follow_the_claims_contract(claims_run):
    plan, root = claims_run
    t2 = CL.read_cells(root / "cells" / "table2.csv")
    vs_pgd = t2[t2["vs"] == "pgd"]
    # every WGD cell (3 mains x 6 columns) next to PGD on the same model and attacked tasks: coded +500
    assert set(vs_pgd["attack"]) == {"wgd"} and len(vs_pgd) == 18 and (vs_pgd["diff"] == 500).all()
    t3 = CL.read_cells(root / "cells" / "table3.csv")
    assert t3["proxy"].tolist() == ["epochs", "arch", "clean"]
    f1 = CL.read_cells(root / "cells" / "figure1.csv")
    assert f1[f1["stat"] == "dominance"]["order"].tolist() == ["sdD", "Dds"]
    md = (root / "table2.md").read_text()
    assert "No PGD attack at the same norm, eps and steps in this study for apgd" in md
