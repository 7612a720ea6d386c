"""``mtlrobust figures``: render one figure of the study plan from the evaluation CSVs of its cells.

Layouts of the plan's specs (``mtlrobust.study``):

* ``bars`` (Figure 1): one panel per order in which the tasks of one model are enabled as attack targets;
  dark bars = adversarial vulnerability E[dL] of the attacked prefix (Definition 1, L = sum of the attacked
  tasks' losses), light bars = the 1/N weighting of Theorems 2 and 4 (the summed value / N); whiskers = 95 %
  bootstrap intervals; labels = each bar's value and marginal vulnerability (change when that task is added;
  red/green only when its paired interval excludes 0), turned vertical where side-by-side labels would
  overlap; the panel title gives the dominance share (``tables.bars``).
* ``sweep`` (RQ1): one panel per main task; for each value of the swept parameter, the main task's relative
  vulnerability in each (main, aux) model as a point with its 95 % interval (single-task and multi-task
  attacks side by side; a box plot behind them from 3 auxiliary tasks on) and the single-task model as a
  black diamond. Points below the diamond = multi-task models more robust than the single-task model.

Writes NAME.png and NAME.pdf (Agg backend, fixed metadata, so reruns give identical files).
"""

from __future__ import annotations

import argparse
import math
import re
import textwrap
from pathlib import Path

import numpy as np

from .. import files, ids
from . import tables as TB

KIND_COLORS = {"single": "#4C72B0", "multi": "#DD8452"}
BOX_MIN = 3  # points behind a box plot; fewer are shown as points alone


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


# ------------------------------------------------------------------------------------------ text for readers
_MODEL_ID = re.compile(r"\b[A-Za-z0-9_]+-[A-Za-z0-9_]+-[A-Za-z0-9_+]+-s\d+(?:-adv_[A-Za-z0-9_]+)?\b")
LABEL_SIZE = 8  # bar labels and legends: readable at the PNG's 150 dpi


def readable(text: str) -> str:
    """Text of the plan for a figure: model ids as encoder, paper letters and weighting; eps as ε."""

    def model(m: re.Match) -> str:
        try:
            spec = ids.parse_model_id(m.group(0))
        except (ValueError, KeyError):
            return m.group(0)
        seed = f", seed {spec.seed}" if spec.seed else ""
        adv = f", adversarially trained ({spec.adversarial})" if spec.adversarial else ""
        return f"{spec.arch} model of tasks {spec.letters} ({spec.weighting} weights{seed}{adv})"

    return re.sub(r"\beps\b", "ε", _MODEL_ID.sub(model, text))


def suptitle(fig, text: str, fontsize: float = 9) -> None:
    """The figure's title, readable and wrapped to the figure's width (never clipped at its edges)."""
    chars = max(20, int(fig.get_figwidth() * 72 * 0.92 / (fontsize * 0.55)))
    lines = [w for line in readable(text).split("\n") for w in textwrap.wrap(line, chars) or [""]]
    fig.suptitle("\n".join(lines), fontsize=fontsize)


def fit_labels(fig, ax, texts) -> None:
    """Bar labels that neither overlap nor leave the axes: one rotated line each where side by side ones
    would overlap, and the y-axis raised until every label is inside."""
    r = fig.canvas.get_renderer()
    boxes = [t.get_window_extent(r).padded(3) for t in texts]  # 3 px apart at least
    if any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1 :]):
        for t in texts:
            t.set_text(t.get_text().replace("\n", " "))
            t.set_rotation(90)
    height = ax.get_window_extent(r).height
    lo, hi = ax.get_ylim()
    # a label of height h (axes fraction) anchored at y fits when (y - lo) / (top - lo) <= 0.97 - h
    room = [max(0.97 - t.get_window_extent(r).height / height, 0.3) for t in texts]
    need = [lo + (t.get_position()[1] - lo) / f for t, f in zip(texts, room, strict=True)]
    ax.set_ylim(lo, max([hi, *need]))


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
    bars = int(t.groupby("order").size().max())
    height = 3.8 * nrows + 0.4
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(max(5.2, 1.2 * bars + 1.4) * ncols, height), squeeze=False
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
        ax.bar(x - w / 2, np.nan_to_num(vals), yerr=_yerr(g, "E_dL"), color="#8da0cb", edgecolor="#3b4a7a",
               width=w, capsize=2, label="summed objective")  # fmt: skip
        ax.bar(x + w / 2, np.nan_to_num(g["E_dL_1N"].to_numpy(np.float64)), yerr=_yerr(g, "E_dL_1N"),
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


# ------------------------------------------------------------------------------------------ RQ1 sweeps
def _long_whiskers(ax, g) -> str:
    """Switch ``ax`` to a symlog scale when an interval reaches 10x past every point (a heavy-tailed cell):
    on a linear scale those points would sit flat on 0. Returns the axis-label suffix that says so."""
    cols = ("rel_vuln", "single_task_rel_vuln")
    points = np.abs(g[list(cols)].to_numpy(np.float64))
    top = np.nanmax(points, initial=0.0)
    if not np.nanmax(g[[f"{c}_hi" for c in cols]].to_numpy(np.float64), initial=0.0) > 10 * top > 0:
        return ""
    low = np.nanmin(g[[f"{c}_lo" for c in cols]].to_numpy(np.float64), initial=0.0)
    ax.set_yscale("symlog", linthresh=top / 10)  # linear up to a tenth of the largest point, log above
    ax.set_ylim(bottom=min(0.0, low))
    return " (symlog)"


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
                if len(y) >= BOX_MIN:  # fewer points: a box would collapse to a line, the points say it all
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
                if len(y):  # every (main, aux) model as a point, spread evenly across its slot
                    spread = np.linspace(-width / 4, width / 4, len(y)) if len(y) > 1 else np.zeros(1)
                    ax.errorbar(j + off + spread, y, yerr=_yerr(gk, "rel_vuln"), fmt="none",
                                ecolor=KIND_COLORS[kind], lw=1.0, capsize=2, zorder=3)  # fmt: skip
                    ax.scatter(
                        j + off + spread,
                        y,
                        s=28,
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
        ax.set_xlabel(readable(spec["axis"]))
        ax.set_ylabel(f"relative vulnerability{_long_whiskers(ax, g)}")  # of the panel's main task
        ax.grid(axis="y", alpha=0.3)
    for k in range(len(mains), nrows * ncols):
        axes[k // ncols][k % ncols].axis("off")
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    boxes = long.groupby(["main", "value", "kind"])["rel_vuln"].count().max() >= BOX_MIN
    handles = [
        Line2D([], [], marker="o", color=KIND_COLORS[k], markeredgecolor="black", ls="none",
               label=f"(main, aux) model, {k}-task attack") for k in ("single", "multi")
    ]  # fmt: skip
    if boxes:
        handles += [
            Patch(facecolor="0.6", alpha=0.5, label=f"box: spread over the auxiliary tasks ({BOX_MIN}+)")
        ]
    handles.append(Line2D([], [], marker="D", color="black", ls="none", label="single-task model"))
    ncol = min(len(handles), max(1, int(fig.get_figwidth() / 2.8)))
    fig.legend(handles=handles, loc="lower center", ncol=ncol, fontsize=LABEL_SIZE, frameon=False)
    suptitle(
        fig,
        f"RQ1: multi-task vs single-task models across {spec['axis']}\n(points: one per (main, auxiliary) "
        "model, with its 95 % interval; lower = more robust)",
        fontsize=10,
    )
    legend_in = 0.12 + 0.2 * math.ceil(len(handles) / ncol)
    fig.tight_layout(rect=(0, legend_in / fig.get_figheight(), 1, 1))
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
