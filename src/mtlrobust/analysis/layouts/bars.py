"""Layout ``bars`` (Figure 1 and its variants): per order in which tasks are attacked, E[dL] of each attacked
prefix and its marginal change, for the summed objective and the 1/N weighting.

The figure has one panel per order; dark bars = adversarial vulnerability E[dL] of the attacked prefix
(Definition 1, L = sum of the attacked tasks' losses), light bars = the 1/N weighting of Theorems 2 and 4 (the
summed value / N); whiskers = 95 % bootstrap intervals; labels = each bar's value and marginal vulnerability
(red/green only when its paired interval excludes 0), turned vertical where side-by-side labels would overlap;
the panel title gives the dominance share."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from .. import stats as S
from ..evaluations import Evaluations, figure_of, table_of
from ..layout import Layout, cells_under
from ..markdown import interval_note, md_table, title
from ..plotting import LABEL_SIZE, error_bars, fit_labels, pyplot, suptitle

BAR_COLUMNS = ["order", "step", "task", "attacked",
               "E_dL", "E_dL_lo", "E_dL_hi", "n", "marginal", "marginal_lo", "marginal_hi",
               "E_dL_1N", "E_dL_1N_lo", "E_dL_1N_hi",
               "marginal_1N", "marginal_1N_lo", "marginal_1N_hi"]  # fmt: skip

BARS_NOTE = (
    "E[dL] summed: L = the sum of the attacked tasks' losses (Definition 1); 1/N: the paper's 1/N weighting "
    "of Theorems 2 and 4, i.e. the summed value / N with N the number of attacked tasks. Marginal: the "
    "change when the task is added (paired interval); ↑ / ↓ only where that interval excludes 0. "
    "Dominance: max step / sum of |steps| over the steps that add a task after the first (the first task's "
    "own bar is not a step; 1 = one added task makes the whole change)."
)


def bars(ev: Evaluations, spec: dict) -> tuple[pd.DataFrame, list[tuple[str, S.Marginal, str]]]:
    """Figure 1's numbers: per order and attacked prefix, E[dL] of the summed objective and of the 1/N
    weighting (the summed value / N, N = tasks attacked) with their marginal changes (paired intervals),
    and per order the dominance share of the summed objective's largest step."""
    value = spec.get("value", "adv_vulnerability")
    rows, marginals = [], []
    for p in spec["panels"]:
        cells = p["cells"]
        vals = [ev.value(c, value) for c in cells]
        if not all(ev.has(c) for c in cells):
            for k, v in enumerate(vals):
                rows.append({"order": p["order"], "step": k + 1, "task": p["letters"][k],
                             "attacked": "".join(p["letters"][: k + 1]), "E_dL": v})  # fmt: skip
            continue
        dl = ev.dl(cells)
        summed = S.marginal_intervals(dl)
        per_n = S.marginal_intervals(dl / np.arange(1, dl.shape[1] + 1))
        top = p["letters"][summed.dominant_step] if summed.dominant_step > 0 else ""
        marginals.append((p["order"], summed, top))
        for k, v in enumerate(vals):
            b, st, b1, st1 = summed.bars[k], summed.steps[k], per_n.bars[k], per_n.steps[k]
            rows.append({"order": p["order"], "step": k + 1, "task": p["letters"][k],
                         "attacked": "".join(p["letters"][: k + 1]), "E_dL": v, "E_dL_lo": b.lo,
                         "E_dL_hi": b.hi, "n": b.n, "marginal": st.value, "marginal_lo": st.lo,
                         "marginal_hi": st.hi, "E_dL_1N": v / (k + 1), "E_dL_1N_lo": b1.lo,
                         "E_dL_1N_hi": b1.hi, "marginal_1N": st1.value, "marginal_1N_lo": st1.lo,
                         "marginal_1N_hi": st1.hi})  # fmt: skip
    return pd.DataFrame(rows, columns=BAR_COLUMNS), marginals


def bar_cells(name: str, t: pd.DataFrame, marginals) -> pd.DataFrame:
    """Figure 1's cell table: per order and step the bars and steps (stat bar/step/bar_1N/step_1N) and
    one ``dominance`` row per order (the claims' input)."""
    rows = []
    for r in t.itertuples(index=False):
        for stat, col in (
            ("bar", "E_dL"),
            ("step", "marginal"),
            ("bar_1N", "E_dL_1N"),
            ("step_1N", "marginal_1N"),
        ):
            rows.append({"output": name, "order": r.order, "stat": stat, "step": r.step, "task": r.task,
                         "value": getattr(r, col), "lo": getattr(r, f"{col}_lo"),
                         "hi": getattr(r, f"{col}_hi"), "n": r.n})  # fmt: skip
    for order, m, task in marginals:
        d = m.dominance
        rows.append({"output": name, "order": order, "stat": "dominance", "step": m.dominant_step + 1,
                     "task": task, "value": d.value, "lo": d.lo, "hi": d.hi, "n": d.n})  # fmt: skip
    return pd.DataFrame(rows, columns=["output", "order", "stat", "step", "task", "value", "lo", "hi", "n"])


def bars_markdown(t: pd.DataFrame, marginals) -> str:
    def iv(r, col):
        return S.format_interval(
            S.Interval(getattr(r, col), getattr(r, f"{col}_lo"), getattr(r, f"{col}_hi"), 0)
        )

    def step(r, col):
        i = S.Interval(getattr(r, col), getattr(r, f"{col}_lo"), getattr(r, f"{col}_hi"), 0)
        m = "" if not S.significant(i) else (" ↑" if i.lo > 0 else " ↓")
        return S.format_interval(i) + m

    rows = [[r.order, f"+{r.task}", r.attacked, iv(r, "E_dL"), step(r, "marginal"), iv(r, "E_dL_1N"),
             step(r, "marginal_1N")] for r in t.itertuples(index=False)]  # fmt: skip
    head = ["order", "task added", "attacked", "E[dL] summed", "marginal (summed)", "E[dL] 1/N",
            "marginal (1/N)"]  # fmt: skip
    dom = [[o, S.format_interval(m.dominance), task] for o, m, task in marginals]
    return (
        md_table(head, rows)
        + "\n## Dominance: share of the change after the first task carried by the largest step\n\n"
        + md_table(["order", "dominance share", "largest step"], dom)
    )


def _step_color(lo: float, hi: float) -> str:
    """red / green when the step's interval excludes 0 (more / less vulnerable), grey otherwise."""
    return "#b2182b" if lo > 0 else "#1a7837" if hi < 0 else "#555555"


def figure1(ev: Evaluations, spec: dict):
    plt = pyplot()
    t, marginals = bars(ev, spec)
    dominance = {o: m.dominance for o, m, _ in marginals}
    orders = list(dict.fromkeys(t["order"]))
    n = len(orders)
    ncols = max(1, min(n, spec.get("ncols", 2)))
    nrows = math.ceil(n / ncols)
    most = int(t.groupby("order").size().max())  # bars in the fullest panel
    height = 3.8 * nrows + 0.4
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(max(5.2, 1.2 * most + 1.4) * ncols, height), squeeze=False
    )
    tops = np.r_[t["E_dL"].to_numpy(np.float64), t["E_dL_hi"].to_numpy(np.float64)]
    top = float(np.nanmax(tops)) if np.isfinite(tops).any() else 1.0
    w = 0.38
    labels = []
    for k, order in enumerate(orders):
        ax = axes[k // ncols][k % ncols]
        g = t[t["order"] == order].reset_index(drop=True)
        x = np.arange(len(g))
        vals = g["E_dL"].to_numpy(np.float64)
        ax.bar(x - w / 2, np.nan_to_num(vals), yerr=error_bars(g, "E_dL"), color="#8da0cb",
               edgecolor="#3b4a7a", width=w, capsize=2, label="summed objective")  # fmt: skip
        ax.bar(x + w / 2, np.nan_to_num(g["E_dL_1N"].to_numpy(np.float64)), yerr=error_bars(g, "E_dL_1N"),
               color="#d9def0", edgecolor="#3b4a7a", width=w, capsize=2,
               label="1/N weighting (summed / N)")  # fmt: skip
        texts = []
        for i, r in enumerate(g.itertuples(index=False)):
            if r.E_dL != r.E_dL:
                texts.append(ax.text(i, 0, "n/a", ha="center", va="bottom", fontsize=LABEL_SIZE))
                continue
            # both labels above the higher whisker of the pair, so that no label crosses a whisker
            y = np.nanmax([r.E_dL, r.E_dL_hi, r.E_dL_1N_hi]) + 0.02 * top
            for off, col in ((-w / 2, ""), (w / 2, "_1N")):
                v, d = getattr(r, f"E_dL{col}"), getattr(r, f"marginal{col}")
                lo, hi = getattr(r, f"marginal{col}_lo"), getattr(r, f"marginal{col}_hi")
                lab = f"{v:.3g}" if i == 0 else f"{v:.3g}\n({d:+.3g})"
                color = "black" if i == 0 else _step_color(lo, hi)
                texts.append(
                    ax.text(i + off, y, lab, ha="center", va="bottom", fontsize=LABEL_SIZE, color=color)
                )
        labels.append((ax, texts))
        lets = g["task"].tolist()
        ax.set_xticks(x, [lets[0]] + [f"+{c}" for c in lets[1:]])
        ax.set_ylim(0, top * 1.15)
        dom = dominance.get(order)
        ax.set_title(f"({k + 1}) order {order}" + (f"; dominance {S.format_interval(dom)}" if dom else ""))
        ax.set_xlabel(spec.get("xlabel", "attacked tasks (enabled one by one)"))
        ax.set_ylabel(r"adversarial vulnerability $E[\delta L]$")
        ax.grid(axis="y", alpha=0.3)
    for k in range(n, nrows * ncols):
        axes[k // ncols][k % ncols].axis("off")
    handles, names = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, names, loc="lower center", ncol=2, fontsize=LABEL_SIZE, frameon=False)
    suptitle(fig, spec["title"])
    fig.tight_layout(rect=(0, 0.35 / height, 1, 1))
    for ax, texts in labels:
        fit_labels(fig, ax, texts)
    return fig


def render(name: str, ev: Evaluations, spec: dict) -> tuple[pd.DataFrame, str, pd.DataFrame]:
    """(CSV table, Markdown, cell table) of a bars spec."""
    t, marginals = bars(ev, spec)
    md = f"# {title(spec)}\n\n{bars_markdown(t, marginals)}\n{BARS_NOTE}\n\n{interval_note(ev)}\n"
    cells = bar_cells(name, t, marginals)
    ev.check(name)
    return t, md, cells


def cells(spec: dict) -> list[list]:
    return cells_under(spec["panels"], "cells")


LAYOUT = Layout(cells, table=table_of(render), figure=figure_of(figure1))
