"""The steps ablation (supplementary Figs. 14-15): vulnerability and attacked loss against attack steps.

Reads the per-step sidecars (``{attack}.steps.csv``, written by ``mtlrobust evaluate --steps-out``, see
``mtlrobust.steptrace``) of the output's cells: one run of each attack gives every step count. Per series
(model and attacked tasks), attack and step t, on the main task:

* ``rel_vuln``: its relative vulnerability after t steps, computed as the tables compute it (mean over the
  samples of (error_t - error_0) / error_0), with the tables' 95 % bootstrap interval (``stats.CellDraws``);
* ``loss_change``: the relative change of the mean attacked loss, (mean L_t - mean L_0) / mean L_0, where
  L is the attacked objective (the sum of the attacked tasks' losses), so series attacking different tasks
  are compared on one scale.

Step t is the state the attack stopped after t steps returns: its last iterate, or its running best for
APGD (whose step-size schedule is the full run's, so this is not a t-step APGD). The last step equals the
evaluation CSV's adversarial error. The CSV holds every step, the Markdown the marked step counts.
"""

from __future__ import annotations

import re
from io import StringIO

import numpy as np
import pandas as pd

from ... import files
from ...steps_format import COLUMNS, TRAILER
from .. import stats
from ..evaluations import CELL_COLUMNS
from ..layout import Layout, cells_under
from ..plotting import LABEL_SIZE, pyplot, suptitle

KEY = ("model_id", "epoch", "attack", "attacked", "task", "step")
OUT_COLUMNS = [
    *("panel", "series", "attack", "method", "step", "marked", "model_id", "epoch", "attacked", "task", "n"),
    *("rel_vuln", "rel_vuln_lo", "rel_vuln_hi", "attacked_loss", "loss_change"),
]


def read_steps(path) -> pd.DataFrame:
    """One steps CSV, refused when it lacks columns or its trailer (cut short)."""
    text = files.read_text(path, "steps CSV")  # names the file when it is not UTF-8
    lines = text.rstrip("\n").split("\n")
    if not lines or lines[0].split(",") != COLUMNS:
        raise ValueError(f"{path}: not a steps CSV; expected the header {','.join(COLUMNS)}")
    m = re.fullmatch(re.escape(TRAILER) + r"(\d+) rows", lines[-1])
    if m is None or int(m.group(1)) != len(lines) - 2:
        raise ValueError(f"{path}: incomplete steps CSV (no '{TRAILER}N rows' line matching its rows)")
    return pd.read_csv(StringIO("\n".join(lines[:-1])), dtype={"attacked": str, "task": str, "model_id": str})


def load(inputs) -> pd.DataFrame:
    """The steps sidecars among an output's inputs (its evaluation CSVs are ignored), concatenated."""
    paths = [p for p in map(str, inputs) if p.endswith(".steps.csv")]
    if not paths:
        raise ValueError("steps: no per-step CSV ({attack}.steps.csv) among the inputs")
    return pd.concat([read_steps(p) for p in paths], ignore_index=True)


def table(spec: dict, df: pd.DataFrame) -> pd.DataFrame:
    """One row per (panel, series, attack, step >= 1) with the main task's values (see the module doc)."""
    ids = ["model_id", "epoch", "attack", "attacked", "task", "sample"]
    base = df[df["step"] == 0].set_index(ids)
    adv = df[df["step"] > 0].copy()
    adv["clean_error"] = base["error"].reindex(pd.MultiIndex.from_frame(adv[ids])).to_numpy()
    adv = adv.rename(columns={"error": "adv_error"})
    draws = stats.CellDraws(adv, key=KEY)
    marks = set(spec["marks"])
    rows = []
    by_cell = dict(iter(df.groupby(["model_id", "epoch", "attack", "attacked", "task"], sort=False)))
    for panel in spec["panels"]:
        for series in panel["series"]:
            for cell in map(tuple, series["cells"]):
                if cell not in by_cell:
                    raise ValueError(f"steps: no per-step rows for cell {list(cell)}")
                sel = by_cell[cell]
                loss = sel.groupby("step")["attacked_loss"].mean()
                change = (loss - loss[0]) / loss[0] if loss[0] else loss * np.nan
                for step in (s for s in loss.index if s > 0):
                    iv = draws.interval((*cell, step))
                    rows.append(
                        {"panel": panel["label"], "series": series["label"], "method": sel["method"].iloc[0],
                         "step": step, "marked": step in marks, **dict(zip(KEY, cell, strict=False)),
                         "n": iv.n,
                         "rel_vuln": iv.value, "rel_vuln_lo": iv.lo, "rel_vuln_hi": iv.hi,
                         "attacked_loss": loss[step], "loss_change": change[step]}
                    )  # fmt: skip
    return pd.DataFrame(rows, columns=OUT_COLUMNS)


def markdown(spec: dict, t: pd.DataFrame) -> str:
    """Per panel: series x (attack, marked step) with the relative vulnerability and its interval."""
    marked = t[t["marked"]]
    out = [f"# {spec['title']}", "", _caption(spec), ""]
    for panel in spec["panels"]:
        p = marked[marked["panel"] == panel["label"]]
        cols = [(a, s) for a in spec["attacks"] for s in spec["marks"]]
        out += [f"## {panel['label']} (main task {panel['main']})", "",
                "| series | " + " | ".join(f"{a}, {s} step{'s' * (s > 1)}" for a, s in cols) + " |",
                "|---|" + "---|" * len(cols)]  # fmt: skip
        for series in panel["series"]:
            cells = []
            for a, s in cols:
                r = p[(p["series"] == series["label"]) & (p["attack"] == a) & (p["step"] == s)]
                v = r[["rel_vuln", "rel_vuln_lo", "rel_vuln_hi", "n"]].to_numpy()
                iv = stats.Interval(*v[0, :3], int(v[0, 3])) if len(v) else None
                cells.append("-" if iv is None else stats.format_interval(iv))
            out.append(f"| {series['label']} | " + " | ".join(cells) + " |")
        out.append("")
    return "\n".join(out)


def _caption(spec: dict) -> str:
    return (
        "Relative vulnerability of the main task (mean over test samples of (error after t steps - clean "
        "error) / clean error; 95 % bootstrap interval over samples) after t steps of ONE run of each "
        "attack: step t is what the attack stopped there returns (its last iterate; APGD: its best so far, "
        "with the step sizes of the full run, so not a t-step APGD). Series: the single-task model, and the "
        "pair model attacked on the main task alone or on both tasks. results/steps.csv has every step and "
        "the attacked loss's relative change (the figure's lower row)."
    )


def _clean_point() -> pd.DataFrame:
    return pd.DataFrame({"step": [0], "rel_vuln": [0.0], "rel_vuln_lo": [0.0], "rel_vuln_hi": [0.0],
                         "loss_change": [0.0]})  # fmt: skip


def steps_table(name: str, spec: dict, inputs, **options):
    """(CSV table of every step, Markdown of the marked steps, an empty cell table: claims judge no step)."""
    t = table(spec, load(inputs))
    return t, markdown(spec, t), pd.DataFrame(columns=CELL_COLUMNS)


def steps_figure(name: str, spec: dict, inputs):
    """Per panel, vulnerability (top) and attacked-loss change (bottom) against the steps."""
    return figure(spec, table(spec, load(inputs)))


def figure(spec: dict, t: pd.DataFrame):
    """The steps figure of the table ``t``; the legend (series by colour, attacks by line style) sits to
    the right of the panels, where it hides no curve."""
    from matplotlib.lines import Line2D

    plt = pyplot()
    panels = spec["panels"]
    legend_in = 2.3
    fig, axes = plt.subplots(2, len(panels), figsize=(max(7.0, 4.2 * len(panels)) + legend_in, 6.4),
                             squeeze=False, sharex=True)  # fmt: skip
    styles = ["-", "--", ":", "-."]
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    series_names = list(dict.fromkeys(s["label"] for panel in panels for s in panel["series"]))
    color_of = {label: colors[i % len(colors)] for i, label in enumerate(series_names)}
    for j, panel in enumerate(panels):
        p = t[t["panel"] == panel["label"]]
        for series in panel["series"]:
            for k, attack in enumerate(spec["attacks"]):
                r = p[(p["series"] == series["label"]) & (p["attack"] == attack)].sort_values("step")
                r = pd.concat([_clean_point(), r], ignore_index=True)  # step 0: x itself, no change
                kw = {"color": color_of[series["label"]], "linestyle": styles[k % len(styles)]}
                axes[0, j].plot(r["step"], r["rel_vuln"], **kw)
                axes[0, j].fill_between(r["step"], r["rel_vuln_lo"], r["rel_vuln_hi"], alpha=0.12, **kw)
                axes[1, j].plot(r["step"], r["loss_change"], **kw)
        for ax in axes[:, j]:
            for m in spec["marks"]:
                ax.axvline(m, color="0.7", linewidth=0.8, linestyle=":")
        axes[0, j].set_title(f"{panel['label']} (main task {panel['main']})")
        axes[0, j].set_ylabel("relative vulnerability")
        axes[1, j].set_ylabel("attacked loss, relative change")
        axes[1, j].set_xlabel("attack steps")
        axes[1, j].xaxis.get_major_locator().set_params(integer=True)
    handles = [Line2D([], [], color=color_of[s], label=s) for s in series_names]
    handles += [Line2D([], [], color="black", linestyle=styles[k % len(styles)], label=a)
                for k, a in enumerate(spec["attacks"])]  # fmt: skip
    width = fig.get_figwidth()
    fig.legend(handles=handles, loc="center right", fontsize=LABEL_SIZE, frameon=False,
               title="model, attacked tasks / attack", title_fontsize=LABEL_SIZE)  # fmt: skip
    suptitle(fig, spec["title"] + "\n(shaded: 95 % intervals; dotted lines: the marked step counts)")
    fig.tight_layout(rect=(0, 0, 1 - legend_in / width, 1))
    return fig


def cells(spec: dict) -> list[list]:
    return cells_under([s for p in spec["panels"] for s in p["series"]], "cells")


LAYOUT = Layout(cells, table=steps_table, figure=steps_figure)
