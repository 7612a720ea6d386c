"""Layout ``sweep`` (RQ1): one row per (setting, main, aux, attack kind) next to the single-task model.

The table's Markdown adds the fraction of less vulnerable pairs per setting and attack kind. The figure has
one panel per main task; for each value of the swept parameter, the main task's relative vulnerability in each
(main, aux) model as a point with its 95 % interval (single-task and multi-task attacks side by side; a box
plot behind them from 3 auxiliary tasks on) and the single-task model as a black diamond. Points below the
diamond = multi-task models more robust than the single-task model."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from .. import stats as S
from ..evaluations import CELL_COLUMNS, FRAGILE_SHARE, NAN, Evaluations, figure_of, table_of
from ..layout import Layout, cells_under
from ..markdown import FRAGILE_MARK, interval_note, legend, mark, markdown, title
from ..plotting import LABEL_SIZE, error_bars, pyplot, readable, suptitle

SWEEP_COLUMNS = ["sweep", "value", "attack", "arch", "epoch", "main", "aux", "kind",
                 "rel_vuln", "rel_vuln_lo", "rel_vuln_hi", "n",
                 "rom", "rom_lo", "rom_hi", "median", "top_share",
                 "single_task_rel_vuln", "single_task_rel_vuln_lo", "single_task_rel_vuln_hi",
                 "diff", "diff_lo", "diff_hi", "rom_diff", "rom_diff_lo", "rom_diff_hi",
                 "less_vulnerable", "significantly"]  # fmt: skip


def sweep(ev: Evaluations, spec: dict) -> pd.DataFrame:
    """Long table of one RQ1 sweep: each pair model's cell next to its single-task model's, with the
    paired interval of their difference (``significantly``: less / more when it excludes 0)."""
    rows = []
    for r in spec["rows"]:
        v, base, rom = ev.interval(r["cell"]), ev.interval(r["base"]), ev.interval(r["cell"], "rom")
        both = ev.has(r["cell"]) and ev.has(r["base"])
        d = ev.diff(r["cell"], r["base"]) if both else NAN
        rd = ev.diff(r["cell"], r["base"], "rom") if both else NAN
        med, top = ev.shape(r["cell"])
        less = "" if math.isnan(v.value) or math.isnan(base.value) else bool(v.value < base.value)
        sig = {"↓st": "less", "↑st": "more"}.get(mark("single_task", d), "")
        rows.append({"sweep": spec["sweep"], "value": r["value"], "attack": r["attack"], "arch": r["arch"],
                     "epoch": int(r["epoch"]), "main": r["main"], "aux": r["aux"], "kind": r["kind"],
                     "rel_vuln": v.value, "rel_vuln_lo": v.lo, "rel_vuln_hi": v.hi, "n": v.n,
                     "rom": rom.value, "rom_lo": rom.lo, "rom_hi": rom.hi, "median": med, "top_share": top,
                     "single_task_rel_vuln": base.value, "single_task_rel_vuln_lo": base.lo,
                     "single_task_rel_vuln_hi": base.hi, "diff": d.value, "diff_lo": d.lo, "diff_hi": d.hi,
                     "rom_diff": rd.value, "rom_diff_lo": rd.lo, "rom_diff_hi": rd.hi,
                     "less_vulnerable": less, "significantly": sig})  # fmt: skip
    return pd.DataFrame(rows, columns=SWEEP_COLUMNS)


def sweep_summary(long: pd.DataFrame) -> pd.DataFrame:
    """Per setting and attack kind: pairs compared, fraction whose multi-task model is less vulnerable, and
    how many are significantly less / more vulnerable (paired interval excludes 0)."""
    rows = []
    for (value, kind), g in long.groupby(["value", "kind"], sort=False):
        known = g[g["less_vulnerable"] != ""]
        n = len(known)
        frac = float(np.mean(known["less_vulnerable"].astype(bool))) if n else float("nan")
        rows.append({"value": value, "kind": kind, "pairs": n, "fraction_less_vulnerable": frac,
                     "significantly_less": int((g["significantly"] == "less").sum()),
                     "significantly_more": int((g["significantly"] == "more").sum())})  # fmt: skip
    return pd.DataFrame(rows, columns=["value", "kind", "pairs", "fraction_less_vulnerable",
                                       "significantly_less", "significantly_more"])  # fmt: skip


def sweep_wide(long: pd.DataFrame, fragile_share: float = FRAGILE_SHARE) -> pd.DataFrame:
    """Markdown view: one row per (main, aux) pair; per setting the single-task model, single- and
    multi-task attacks as value [interval] with the fragile mark and the mark against the single-task
    model."""
    rows = {}
    for r in long.itertuples(index=False):
        row = rows.setdefault((r.main, r.aux), {"main": r.main, "aux": r.aux})
        base = S.Interval(r.single_task_rel_vuln, r.single_task_rel_vuln_lo, r.single_task_rel_vuln_hi, r.n)
        row[f"single-task model {r.value}"] = S.format_interval(base)
        m = mark("single_task", S.Interval(r.diff, r.diff_lo, r.diff_hi, r.n))
        iv = S.format_interval(S.Interval(r.rel_vuln, r.rel_vuln_lo, r.rel_vuln_hi, r.n))
        frag = FRAGILE_MARK if r.top_share > fragile_share else ""
        row[f"{r.kind} {r.value}"] = " ".join(x for x in (iv, frag, m) if x)
    return pd.DataFrame(list(rows.values()))


def sweep_cells(name: str, ev: Evaluations, long: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for r in long.itertuples(index=False):
        method, norm = ev.attack_info(r.attack)
        rows.append({"output": name, "attack": r.attack, "method": method, "norm": norm, "kind": r.kind,
                     "weighting": "uniform", "main": r.main, "aux": r.aux, "setting": r.value,
                     "arch": r.arch, "epoch": r.epoch, "value": r.rel_vuln, "lo": r.rel_vuln_lo,
                     "hi": r.rel_vuln_hi, "n": r.n, "rom": r.rom, "rom_lo": r.rom_lo, "rom_hi": r.rom_hi,
                     "median": r.median, "top_share": r.top_share,
                     "fragile": bool(r.top_share > ev.fragile_share), "vs": "single_task", "diff": r.diff,
                     "diff_lo": r.diff_lo, "diff_hi": r.diff_hi, "rom_diff": r.rom_diff,
                     "rom_diff_lo": r.rom_diff_lo, "rom_diff_hi": r.rom_diff_hi})  # fmt: skip
    return pd.DataFrame(rows, columns=CELL_COLUMNS)


KIND_COLORS = {"single": "#4C72B0", "multi": "#DD8452"}

BOX_MIN = 3  # points behind a box plot; fewer are shown as points alone


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


def sweep_figure(ev: Evaluations, spec: dict):
    from ... import tasks as T

    plt = pyplot()
    long = sweep(ev, spec)
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
                    ax.errorbar(j + off + spread, y, yerr=error_bars(gk, "rel_vuln"), fmt="none",
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
                ax.errorbar([j], base["single_task_rel_vuln"], yerr=error_bars(base, "single_task_rel_vuln"),
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


def render(name: str, ev: Evaluations, spec: dict) -> tuple[pd.DataFrame, str, pd.DataFrame]:
    """(CSV table, Markdown, cell table) of a sweep spec."""
    t = sweep(ev, spec)
    md = (
        f"# {title(spec)}\n\n## Fraction of (main, auxiliary) pairs whose multi-task model is less "
        f"vulnerable on the main task than the single-task model\n\n{markdown(sweep_summary(t))}\n"
        "significantly_less / significantly_more: pairs whose paired 95 % interval of the difference "
        "excludes 0.\n\n"
        "## Relative vulnerability of the main task\n\n"
        f"{markdown(sweep_wide(t, ev.fragile_share))}\n{interval_note(ev)} "
        f"{legend({'single_task'}, bool((t['top_share'] > ev.fragile_share).any()), ev)}\n"
    )
    cells = sweep_cells(name, ev, t)
    ev.check(name)
    return t, md, cells


def cells(spec: dict) -> list[list]:
    return cells_under(spec["rows"], "cell", "base")


LAYOUT = Layout(cells, table=table_of(render), figure=figure_of(sweep_figure))
