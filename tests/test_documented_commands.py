"""The README's user commands on the outputs of a study: `mtlrobust claims --cells results/cells/*.csv` and
`mtlrobust recommend --configfile STUDY --out X.csv`.

The test study's every output is rendered from coded evaluation CSVs (tests/test_outputs_more.py) laid out
as the workflow lays them out (``results/evals/{model_id}/epoch{E}/{attack}.csv``, with the per-step sidecars
of the steps output), through the table rule's script, so ``results/cells/`` holds every kind of cell table
the study writes.
"""

import glob
import importlib.util
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import yaml
from test_outputs_more import REPO, write_evals

from mtlrobust import cli, ids, study
from mtlrobust import steptrace as ST

STUDY = REPO / "studies" / "test.yaml"


def _script():
    spec = importlib.util.spec_from_file_location("analysis_script", REPO / "workflow/scripts/analysis.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _sidecar(plan, key, path):
    """A coded steps CSV of one traced evaluation: every subset, sample and task, steps 0..steps."""
    model_id, epoch, attack = key
    spec = plan.attacks[attack]
    steps = spec.get("steps") or study.method_default(spec["method"], "steps")
    rows = []
    for subset in sorted(plan.evals[key]):
        for i in range(4):
            for t in ids.parse_model_id(model_id).tasks:
                for s in range(steps + 1):
                    rows.append([model_id, epoch, attack, spec["method"], "+".join(subset), i, t, s,
                                 1.0 + s * (i + 1), 0.5 + 0.1 * s * (i + 1)])  # fmt: skip
    ST.write_csv(rows, path)


def study_outputs(root: Path):
    """The test study's plan; ``root`` gets results/evals, every table (with its cells) and figure."""
    plan = study.build(study.validated(yaml.safe_load(STUDY.read_text())))
    flat = write_evals(plan, set(plan.evals), root)
    evals = {}
    for p in flat:
        model_id, epoch, attack, _ = p.name.split(".")
        dest = root / "results" / "evals" / model_id / f"epoch{epoch}" / f"{attack}.csv"
        dest.parent.mkdir(parents=True, exist_ok=True)
        p.rename(dest)
        evals[(model_id, int(epoch), attack)] = dest
    for key in plan.traced:
        _sidecar(plan, key, evals[key].with_suffix(".steps.csv"))
    run = _script()
    res = root / "results"
    for name, out in plan.outputs.items():
        inputs = [evals[k] for k in out.evals]
        inputs += [p.with_suffix(".steps.csv") for p in inputs] if out.traced else []
        params = SimpleNamespace(spec=out.spec_json, fragile=plan.config["analysis"]["fragile_share"])
        wc = SimpleNamespace(name=name)
        if "table" in out.renders:  # the table rule's named inputs (no results/models.csv here)
            o = SimpleNamespace(csv=res / f"{name}.csv", md=res / f"{name}.md", html=res / f"{name}.html",
                                cells=res / "cells" / f"{name}.csv")  # fmt: skip
            named = SimpleNamespace(evals=inputs, models=[])
            run.main(SimpleNamespace(rule="table", wildcards=wc, output=o, params=params, input=named))
        if "figure" in out.renders:
            o = SimpleNamespace(png=res / f"{name}.png", pdf=res / f"{name}.pdf")
            run.main(SimpleNamespace(rule="figure", wildcards=wc, output=o, params=params, input=inputs))
    cells = [res / "cells" / f"{n}.csv" for n in plan.claims_sources()]
    o = SimpleNamespace(csv=res / "claims.csv", md=res / "claims.md", html=res / "claims.html")
    named = SimpleNamespace(cells=cells, theory=[])  # no theory.csv here
    params = SimpleNamespace(thresholds=plan.config["claims"], source=plan.config["dataset"]["source"])
    run.main(SimpleNamespace(rule="claims", input=named, output=o, params=params))
    return plan


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("study")
    return study_outputs(root), root


def test_claims_takes_the_readmes_glob_over_every_cell_table(run_dir, capsys):
    plan, root = run_dir
    cells = sorted(glob.glob(str(root / "results" / "cells" / "*.csv")))
    assert [Path(c).stem for c in cells] == sorted(plan.tables())  # every table's cell table is there
    kinds = {pd.read_csv(c)["output"].iloc[0] for c in cells if len(pd.read_csv(c))}
    assert {"figure1_orders", "rq1_norm", "table_sets", "supp_tables", "recommend"} <= kinds
    out = root / "claims_again.csv"
    assert cli.main(["claims", "--cells", *cells, "--out", str(out)]) == 0
    judged = ", ".join(plan.claims_sources())
    assert f"cells judged: {judged}" in capsys.readouterr().out
    # the same verdicts as the workflow's claims rule, which reads the claims' own sources only
    pd.testing.assert_frame_equal(pd.read_csv(out), pd.read_csv(root / "results" / "claims.csv"))


def test_claims_still_refuses_an_output_no_study_has(run_dir, tmp_path, capsys):
    _, root = run_dir
    bad = tmp_path / "bad.csv"
    bad.write_text("output,value,lo,hi,n\ntabel1,1,0,2,3\n")
    assert cli.main(["claims", "--cells", str(bad), "--out", str(tmp_path / "x.csv")]) == 2
    assert "unknown output(s) ['tabel1']" in capsys.readouterr().err


def test_claims_help_says_which_rows_are_judged(capsys):
    with pytest.raises(SystemExit):
        cli.main(["claims", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "results/cells/*.csv" in text and "ignore those of the study's other outputs" in text


def test_recommend_from_the_study_as_the_readme_says(run_dir, tmp_path, monkeypatch):
    _, root = run_dir
    monkeypatch.chdir(root)  # --evals defaults to results/evals, as after `snakemake`
    out = tmp_path / "rec.csv"
    assert cli.main(["recommend", "--configfile", str(STUDY), "--out", str(out)]) == 0
    # the study's own settings: the same table as the workflow's recommend output
    pd.testing.assert_frame_equal(pd.read_csv(out), pd.read_csv(root / "results" / "recommend.csv"))
    assert out.with_suffix(".md").read_text().startswith("# Which auxiliary task to add")
    # a flag overrides the study: rank by the proxy's clean error instead
    other = tmp_path / "rec_clean.csv"
    args = ["recommend", "--configfile", str(STUDY), "--out", str(other), "--proxy-value", "clean_error"]
    assert cli.main(args) == 0
    a, b = pd.read_csv(out), pd.read_csv(other)
    assert not np.allclose(a["proxy_value"].dropna(), b["proxy_value"].dropna())
    assert "clean error" in other.with_suffix(".md").read_text()


def test_recommend_names_a_missing_evaluation(run_dir, tmp_path, capsys):
    _, root = run_dir
    args = [
        "recommend",
        "--configfile",
        str(STUDY),
        "--out",
        str(tmp_path / "x.csv"),
        "--evals",
        str(tmp_path),
    ]
    assert cli.main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "evaluation CSV(s)" in err and str(tmp_path) in err
    assert not (tmp_path / "x.csv").exists()


def test_recommend_leaves_out_what_results_models_csv_marks_untrained(run_dir, tmp_path, monkeypatch):
    plan, root = run_dir
    monkeypatch.chdir(root)
    pair = plan.outputs["recommend"].spec["pairs"][1]  # main s, aux d
    model_id, epoch, _, _, task = pair["proxy"]
    models = tmp_path / "models.csv"
    pd.DataFrame([{"model_id": model_id, "epoch": epoch, "task": task, "beats_trivial": False}]).to_csv(
        models, index=False
    )
    out = tmp_path / "rec.csv"
    assert (
        cli.main(["recommend", "--configfile", str(STUDY), "--out", str(out), "--models", str(models)]) == 0
    )
    t = pd.read_csv(out).set_index(["main", "aux"])
    assert np.isnan(t.loc[("s", "d"), "proxy_rank"]) and t.loc[("s", "s"), "proxy_rank"] == 1
