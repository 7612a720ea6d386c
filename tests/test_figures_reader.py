"""The figures as a reader sees them: titles that fit and name models as the paper does, labels that are
readable and apart, legends that hide no curve, points where a box would collapse, ε for eps.

Each figure is drawn from coded evaluation CSVs (tests/test_outputs_more.py) of the default study's plan.
"""

import copy
import re

import pytest
import yaml
from matplotlib.patches import PathPatch
from test_documented_commands import _sidecar
from test_outputs_more import REPO, write_evals

from mtlrobust import cli, study
from mtlrobust.analysis import render as RD
from mtlrobust.analysis.layouts import sweep as SW

MODEL_ID = re.compile(r"[a-z0-9_]+-[a-z0-9_]+-[a-z0-9_+]+-s\d+")


def _plan(**sections):
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    config["study"].update(sections)
    return study.build(study.validated(config))


def _inputs(plan, name, folder):
    out = plan.outputs[name]
    flat = {p.name: p for p in write_evals(plan, set(out.evals), folder)}
    paths = [flat[f"{m}.{e}.{a}.csv"] for m, e, a in out.evals]
    if out.traced:
        for key, p in zip(out.evals, paths, strict=True):
            _sidecar(plan, key, p.with_suffix(".steps.csv"))
        paths += [p.with_suffix(".steps.csv") for p in paths]
    return paths


def _draw(plan, name, folder):
    spec = copy.deepcopy(plan.outputs[name].spec)
    inputs = _inputs(plan, name, folder)
    fig = RD.figure(name, spec, inputs)
    fig.canvas.draw()
    return fig


@pytest.fixture(scope="module")
def plan():
    return _plan()


@pytest.mark.parametrize("name", ["figure1", "figure1_orders"])
def test_bar_figure_title_names_the_model_by_letters_and_fits_the_figure(plan, name, tmp_path):
    fig = _draw(plan, name, tmp_path)
    title = fig._suptitle
    assert not MODEL_ID.search(title.get_text()), title.get_text()
    assert "resnet18 model of tasks sdDnE" in title.get_text()
    box, page = title.get_window_extent(), fig.bbox
    assert page.x0 <= box.x0 and box.x1 <= page.x1 and box.y1 <= page.y1  # not clipped


@pytest.mark.parametrize("name", ["figure1", "figure1_orders", "figure1_retrained"])
def test_bar_labels_are_readable_apart_and_inside_their_panel(plan, name, tmp_path):
    fig = _draw(plan, name, tmp_path)
    for ax in fig.axes:
        texts = ax.texts
        if not texts:
            continue
        assert min(t.get_fontsize() for t in texts) >= 8  # the 1/N labels too
        boxes = [t.get_window_extent() for t in texts]
        for i, a in enumerate(boxes):
            assert ax.bbox.contains(a.x0, a.y0) and ax.bbox.contains(a.x1, a.y1), texts[i].get_text()
            for j, b in enumerate(boxes[i + 1 :], i + 1):
                assert not a.overlaps(b), (texts[i].get_text(), texts[j].get_text())
    # the legend is below the panels, not over a panel's bars and labels
    legend = fig.legends[0].get_window_extent()
    assert not any(legend.overlaps(ax.bbox) for ax in fig.axes if ax.texts)


def test_steps_legend_hides_no_curve(plan, tmp_path):
    fig = _draw(plan, "steps", tmp_path)
    assert fig.legends and all(ax.get_legend() is None for ax in fig.axes)
    legend = fig.legends[0].get_window_extent()
    assert not any(legend.overlaps(ax.bbox) for ax in fig.axes)
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "d model, d attacked" in labels and "apgd" in labels


def _boxes(ax) -> int:
    return sum(isinstance(p, PathPatch) for p in ax.patches)


def test_sweep_with_one_auxiliary_task_draws_points_not_a_flat_box(plan, tmp_path):
    fig = _draw(plan, "rq1_eps", tmp_path)  # tasks s, d: one auxiliary task per main task
    panels = [ax for ax in fig.axes if ax.get_title()]
    assert panels
    for ax in panels:
        assert _boxes(ax) == 0
        points = sum(len(c.get_offsets()) for c in ax.collections if c.get_offsets().shape[1:] == (2,))
        assert points >= 2 * 3  # single- and multi-task attack at each of the 3 budgets
        assert "ε" in ax.get_xlabel() and "eps" not in ax.get_xlabel()
    assert "ε" in fig._suptitle.get_text() and not re.search(r"\beps\b", fig._suptitle.get_text())


def test_sweep_with_three_auxiliary_tasks_draws_boxes(tmp_path):
    plan = _plan(rq1_eps={"tasks": ["s", "d", "D", "n"], "attacks": ["pgd", "pgd_eps16"]})
    fig = _draw(plan, "rq1_eps", tmp_path)
    panels = [ax for ax in fig.axes if ax.get_title()]
    assert len(panels) == 4 and all(_boxes(ax) == 2 * 2 for ax in panels)  # kinds x budgets


def test_a_heavy_tailed_interval_switches_the_panel_to_symlog():
    """An interval reaching 70 over points below 3 would flatten every point onto 0 on a linear axis."""
    import matplotlib.pyplot as plt
    import pandas as pd

    def panel(hi):
        g = pd.DataFrame({"rel_vuln": [0.1, 2.0], "rel_vuln_lo": [0.0, 0.3], "rel_vuln_hi": [1.0, hi],
                          "single_task_rel_vuln": [0.2, 3.0], "single_task_rel_vuln_lo": [-0.05, 0.4],
                          "single_task_rel_vuln_hi": [0.9, 5.0]})  # fmt: skip
        fig, ax = plt.subplots()
        suffix = SW._long_whiskers(ax, g)
        scale, bottom = ax.get_yscale(), ax.get_ylim()[0]
        plt.close(fig)
        return suffix, scale, bottom

    assert panel(70.0) == (" (symlog)", "symlog", -0.05)
    assert panel(29.0)[:2] == ("", "linear")  # within 10x of the largest point (3.0): stays linear


def test_help_is_plain_text(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    text = capsys.readouterr().out
    assert "mtlrobust command line" in text and "``" not in text
