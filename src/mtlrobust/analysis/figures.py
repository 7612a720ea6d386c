"""``mtlrobust figures``: render one figure of the study plan from the evaluation CSVs of its cells.

Layouts of the plan's specs (``mtlrobust.study``):

* ``bars`` (Figure 1): one panel per order in which the tasks of one model are enabled as attack targets;
  dark bars = adversarial vulnerability E[dL] of the attacked prefix (Definition 1, L = sum of the attacked
  tasks' losses), light bars = the 1/N weighting of Theorems 2 and 4 (the summed value / N); whiskers = 95 %
  bootstrap intervals; labels = the marginal vulnerability (change when that task is added), red/green only
  when its paired interval excludes 0; the panel title gives the dominance share (``tables.bars``).
* ``sweep`` (RQ1): one panel per main task; for each value of the swept parameter, box plots of the main
  task's relative vulnerability over the auxiliary tasks (single-task and multi-task attacks side by side,
  each point with its 95 % interval) and the single-task model as a black diamond. Boxes below the
  diamond = multi-task models more robust than the single-task model.

Writes NAME.png and NAME.pdf (Agg backend, fixed metadata, so reruns give identical files).
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np

from .. import files
from . import tables as TB

KIND_COLORS = {"single": "#4C72B0", "multi": "#DD8452"}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--spec", required=True, help="the figure's spec from the plan: a JSON file or JSON text")
    p.add_argument("--inputs", nargs="+", required=True, type=Path, help="evaluation CSVs of its cells")
    p.add_argument(
        "--out", required=True, type=Path, help="results/NAME.png (NAME.pdf is written next to it)"
    )


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 9, "axes.titlesize": 10, "svg.hashsalt": "mtlrobust"})
    return plt


# ------------------------------------------------------------------------------------------ figure 1
def figure1_data(ev: TB.Evaluations, spec: dict):
    """(per-step table, per-order marginals) of ``tables.bars``: E[dL] summed and 1/N with intervals."""
    return TB.bars(ev, spec)


def _yerr(t, col) -> np.ndarray:
    v, lo, hi = (t[c].to_numpy(np.float64) for c in (col, f"{col}_lo", f"{col}_hi"))
    return np.nan_to_num(np.vstack([v - lo, hi - v]), nan=0.0)


def _step_color(lo: float, hi: float) -> str:
    """red / green when the step's interval excludes 0 (more / less vulnerable), grey otherwise."""
    return "#b2182b" if lo > 0 else "#1a7837" if hi < 0 else "#555555"


def figure1(ev: TB.Evaluations, spec: dict):
    plt = _plt()
    from . import stats as S

    t, marginals = figure1_data(ev, spec)
    dominance = {o: m.dominance for o, m, _ in marginals}
    orders = list(dict.fromkeys(t["order"]))
    n = len(orders)
    ncols = max(1, min(n, spec.get("ncols", 2)))
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(5.2 * ncols, 3.8 * nrows), squeeze=False)
    tops = np.r_[t["E_dL"].to_numpy(np.float64), t["E_dL_hi"].to_numpy(np.float64)]
    top = float(np.nanmax(tops)) if np.isfinite(tops).any() else 1.0
    w = 0.38
    for k, order in enumerate(orders):
        ax = axes[k // ncols][k % ncols]
        g = t[t["order"] == order].reset_index(drop=True)
        x = np.arange(len(g))
        vals = g["E_dL"].to_numpy(np.float64)
        ax.bar(x - w / 2, np.nan_to_num(vals), yerr=_yerr(g, "E_dL"), color="#8da0cb", edgecolor="#3b4a7a",
               width=w, capsize=2, label="summed objective")  # fmt: skip
        ax.bar(x + w / 2, np.nan_to_num(g["E_dL_1N"].to_numpy(np.float64)), yerr=_yerr(g, "E_dL_1N"),
               color="#d9def0", edgecolor="#3b4a7a", width=w, capsize=2,
               label="1/N weighting (summed / N)")  # fmt: skip
        for i, r in enumerate(g.itertuples(index=False)):
            if r.E_dL != r.E_dL:
                ax.text(i, 0, "n/a", ha="center", va="bottom", fontsize=8)
                continue
            for off, col, size in ((-w / 2, "", 7), (w / 2, "_1N", 6)):
                v, d = getattr(r, f"E_dL{col}"), getattr(r, f"marginal{col}")
                lo, hi = getattr(r, f"marginal{col}_lo"), getattr(r, f"marginal{col}_hi")
                top_i = getattr(r, f"E_dL{col}_hi")
                y = (top_i if top_i == top_i else v) + 0.02 * top
                lab = f"{v:.3g}" if i == 0 else f"{v:.3g}\n({d:+.3g})"
                color = "black" if i == 0 else _step_color(lo, hi)
                ax.text(i + off, y, lab, ha="center", va="bottom", fontsize=size, color=color)
        lets = g["task"].tolist()
        ax.set_xticks(x, [lets[0]] + [f"+{c}" for c in lets[1:]])
        ax.set_ylim(0, top * 1.35)
        dom = dominance.get(order)
        ax.set_title(f"({k + 1}) order {order}" + (f"; dominance {S.format_interval(dom)}" if dom else ""))
        ax.set_xlabel(spec.get("xlabel", "attacked tasks (enabled one by one)"))
        ax.set_ylabel(r"adversarial vulnerability $E[\delta L]$")
        ax.grid(axis="y", alpha=0.3)
        if k == 0:
            ax.legend(fontsize=7, loc="upper left", frameon=False)
    for k in range(n, nrows * ncols):
        axes[k // ncols][k % ncols].axis("off")
    fig.suptitle(spec["title"], fontsize=9)
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------------------------------ RQ1 sweeps
def sweep_figure(ev: TB.Evaluations, spec: dict):
    from .. import tasks as T

    plt = _plt()
    long = TB.sweep(ev, spec)
    if long.empty:
        raise ValueError(f"{spec['sweep']}: no (main, auxiliary) pair in the spec")
    mains = list(dict.fromkeys(long["main"]))
    values = list(dict.fromkeys(long["value"]))
    ncols = min(len(mains), 5)
    nrows = math.ceil(len(mains) / ncols)
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(max(2.0 + 0.9 * len(values), 3.0) * ncols, 3.3 * nrows), squeeze=False
    )
    width = 0.35
    for k, m in enumerate(mains):
        ax = axes[k // ncols][k % ncols]
        g = long[long["main"] == m]
        for j, v in enumerate(values):
            gv = g[g["value"] == v]
            for kind, off in (("single", -width / 2), ("multi", width / 2)):
                gk = gv[(gv["kind"] == kind) & gv["rel_vuln"].notna()]
                y = gk["rel_vuln"].to_numpy(np.float64)
                if len(y):
                    bp = ax.boxplot(
                        y,
                        positions=[j + off],
                        widths=width * 0.9,
                        patch_artist=True,
                        showfliers=False,
                        medianprops={"color": "black"},
                    )
                    for patch in bp["boxes"]:
                        patch.set_facecolor(KIND_COLORS[kind])
                        patch.set_alpha(0.5)
                    # every (main, aux) model as a point, spread evenly across the box (deterministic)
                    spread = np.linspace(-width / 4, width / 4, len(y)) if len(y) > 1 else np.zeros(1)
                    ax.errorbar(j + off + spread, y, yerr=_yerr(gk, "rel_vuln"), fmt="none",
                                ecolor=KIND_COLORS[kind], lw=0.8, zorder=3)  # fmt: skip
                    ax.scatter(
                        j + off + spread,
                        y,
                        s=16,
                        color=KIND_COLORS[kind],
                        edgecolor="black",
                        linewidth=0.5,
                        zorder=4,
                    )
            base = gv[gv["single_task_rel_vuln"].notna()].head(1)
            if len(base):
                ax.errorbar([j], base["single_task_rel_vuln"], yerr=_yerr(base, "single_task_rel_vuln"),
                            marker="D", color="black", ms=6, zorder=5, ls="none", capsize=3)  # fmt: skip
        ax.set_xticks(range(len(values)), values)
        ax.set_xlim(-0.6, len(values) - 0.4)
        ax.set_title(f"main task {m} ({T.get(m).name})")
        ax.set_xlabel(spec["axis"])
        ax.set_ylabel("relative vulnerability of main task")
        ax.grid(axis="y", alpha=0.3)
    for k in range(len(mains), nrows * ncols):
        axes[k // ncols][k % ncols].axis("off")
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    handles = [
        Patch(facecolor=KIND_COLORS["single"], alpha=0.75, label="(main, aux) models, single-task attack"),
        Patch(facecolor=KIND_COLORS["multi"], alpha=0.75, label="(main, aux) models, multi-task attack"),
        Line2D([], [], marker="D", color="black", ls="none", label="single-task model"),
    ]
    fig.legend(handles=handles, loc="lower center", ncol=3, frameon=False)
    fig.suptitle(
        f"RQ1: multi-task vs single-task models across {spec['axis']}\n"
        "(boxes and points: one per auxiliary task; whiskers on points: 95 % intervals; lower = more robust)",
        fontsize=10,
    )
    fig.tight_layout(rect=(0, 0.07, 1, 0.95))
    return fig


def save(fig, out_png: Path) -> list[Path]:
    """Write the .png and the .pdf next to it, atomically and without time stamps."""
    out_png = Path(out_png)
    written = []
    for path, fmt, meta in (
        (out_png, "png", {"Software": None}),
        (out_png.with_suffix(".pdf"), "pdf", {"CreationDate": None, "Creator": None}),
    ):
        with files.atomic_path(path) as tmp:
            fig.savefig(tmp, format=fmt, dpi=150, metadata=meta)
        written.append(path)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return written


def draw(name: str, ev: TB.Evaluations, spec: dict):
    """The matplotlib figure of one output's spec."""
    layout = spec.get("layout")
    if layout == "bars":
        fig = figure1(ev, spec)
    elif layout == "sweep":
        fig = sweep_figure(ev, spec)
    else:
        raise ValueError(f"{name}: spec layout {layout!r} is not a figure; expected bars or sweep")
    ev.check(name)
    return fig


def write(name: str, spec: dict, inputs, out_png: Path) -> list[Path]:
    """Draw the figure ``name`` of ``spec`` from the evaluation CSVs ``inputs`` into out_png (and .pdf)."""
    from . import steps  # layouts that read more than the evaluation CSVs draw themselves

    if spec.get("layout") in steps.FIGURES:
        return steps.FIGURES[spec["layout"]](name, spec, inputs, out_png)
    return save(draw(name, TB.Evaluations(inputs), spec), out_png)


def run(args) -> int:
    for p in write(args.out.stem, TB.load_spec(args.spec), args.inputs, args.out):
        print(f"wrote {p}")
    return 0
