"""``mtlrobust figures``: render one figure of the study plan from the evaluation CSVs of its cells.

Layouts of the plan's specs (``mtlrobust.study``):

* ``bars`` (Figure 1): one panel per order in which the tasks of one model are enabled as attack targets;
  bars = adversarial vulnerability E[dL] of the attacked prefix (Definition 1, L = sum of the attacked tasks'
  losses), labels above the bars = the marginal vulnerability (change when that task is added).
* ``sweep`` (RQ1): one panel per main task; for each value of the swept parameter, box plots of the main
  task's relative vulnerability over the auxiliary tasks (single-task and multi-task attacks side by side)
  and the single-task model as a black diamond. Boxes below the diamond = multi-task models more robust
  than the single-task model.

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
def figure1_data(ev: TB.Evaluations, spec: dict) -> list[tuple[str, list[str], list[float]]]:
    """[(order, letters of the enabled prefixes' last task, E[dL] of each prefix)]."""
    value = spec.get("value", "adv_vulnerability")
    return [(p["order"], p["letters"], [ev.value(c, value) for c in p["cells"]]) for p in spec["panels"]]


def figure1(ev: TB.Evaluations, spec: dict):
    plt = _plt()
    data = figure1_data(ev, spec)
    n = len(data)
    ncols = min(n, 2) if n > 1 else 1
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.6 * ncols, 3.4 * nrows), squeeze=False)
    top = max([v for _, _, vals in data for v in vals if v == v] or [1.0])
    for k, (order, lets, vals) in enumerate(data):
        ax = axes[k // ncols][k % ncols]
        x = np.arange(len(vals))
        ax.bar(x, [0 if v != v else v for v in vals], color="#8da0cb", edgecolor="#3b4a7a", width=0.65)
        ax.plot(x, vals, color="#3b4a7a", marker="o", lw=1)
        for i, v in enumerate(vals):
            if v != v:
                ax.text(i, 0, "n/a", ha="center", va="bottom", fontsize=8)
                continue
            d = v - vals[i - 1] if i and vals[i - 1] == vals[i - 1] else None
            lab = f"{v:.3g}" if d is None else f"{v:.3g}\n({d:+.3g})"
            color = "black" if d is None else ("#b2182b" if d > 0 else "#1a7837")
            ax.text(i, v + 0.02 * top, lab, ha="center", va="bottom", fontsize=7.5, color=color)
        ax.set_xticks(x, [lets[0]] + [f"+{c}" for c in lets[1:]])
        ax.set_ylim(0, top * 1.3)
        ax.set_title(f"({k + 1}) order {order}")
        ax.set_xlabel("attacked tasks (enabled one by one)")
        ax.set_ylabel(r"adversarial vulnerability $E[\delta L]$")
        ax.grid(axis="y", alpha=0.3)
    for k in range(n, nrows * ncols):
        axes[k // ncols][k % ncols].axis("off")
    fig.suptitle(spec["title"], fontsize=10)
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
                y = gv.loc[gv["kind"] == kind, "rel_vuln"].dropna().to_numpy()
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
                    ax.scatter(
                        j + off + spread,
                        y,
                        s=16,
                        color=KIND_COLORS[kind],
                        edgecolor="black",
                        linewidth=0.5,
                        zorder=4,
                    )
            base = gv["single_task_rel_vuln"].dropna()
            if len(base):
                ax.plot([j], [base.iloc[0]], marker="D", color="black", ms=6, zorder=5, ls="none")
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
        "(boxes and points: one per auxiliary task; lower = more robust)",
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
    return save(draw(name, TB.Evaluations(inputs), spec), out_png)


def run(args) -> int:
    for p in write(args.out.stem, TB.load_spec(args.spec), args.inputs, args.out):
        print(f"wrote {p}")
    return 0
