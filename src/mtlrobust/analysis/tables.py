"""``mtlrobust tables``: the paper's Tables 1-3 and the RQ1 sweep tables from ``results/vulnerability.csv``.

Every table is a CSV (machine-readable, task ids resolved to paper letters) plus a Markdown rendering next
to it (``NAME.md``). Cells missing from the vulnerability table are left empty and reported as a warning.

* ``table1`` relative task vulnerability (paper formula) of the main task; rows = attack kind (single: only
  the main task attacked, multi: main and auxiliary) x main task; columns = weighting x auxiliary task.
  The diagonal (aux = main) is the single-task model under the single-task attack, in every block (as the
  supplementary's tables; the paper's Table 1 leaves the multi and weighted diagonals empty).
* ``table2`` the same layout for several attacks (rows = attack name x main task), multi-task attacks only.
* ``table3`` Pearson correlation of three cheap proxies with the vulnerability they predict.
* ``rq1_norm``, ``rq1_eps``, ``rq1_arch``, ``rq1_epochs``: long tables of every (setting, main, aux, attack
  kind) cell with the single-task model's value and whether the multi-task model is less vulnerable; the
  Markdown adds the fraction of less vulnerable pairs per setting and attack kind.
"""

from __future__ import annotations

import argparse
import json
import math
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from .aggregate import write_atomic

KINDS = ("single", "multi")
TABLES = ("table1", "table2", "table3", "rq1_norm", "rq1_eps", "rq1_arch", "rq1_epochs")
_STR_COLS = (
    "model_id",
    "arch",
    "weighting",
    "tasks",
    "attack",
    "method",
    "norm",
    "options",
    "attacked",
    "task",
    "main",
    "letters",
    "attacked_letters",
    "task_letter",
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--vulnerability", required=True, type=Path, help="results/vulnerability.csv")
    p.add_argument("--table", required=True, choices=TABLES)
    p.add_argument(
        "--spec-json", required=True, help="the table's spec (JSON object); see the module docstring"
    )
    p.add_argument("--out", required=True, type=Path, help="results/NAME.csv (NAME.md is written next to it)")


# ------------------------------------------------------------------------------------------ lookups
def load_vulnerability(path: Path) -> pd.DataFrame:
    try:
        df = pd.read_csv(
            path,
            dtype=dict.fromkeys(_STR_COLS, str),
            keep_default_na=False,
            na_values={
                c: ["", "nan", "NaN"]
                for c in ("rel_vuln", "clean_error", "adv_vulnerability", "rel_vuln_ratio_of_means", "eps")
            },
        )
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as e:
        raise ValueError(f"{path}: cannot read the vulnerability table: {e}") from None
    need = [
        "model_id",
        "epoch",
        "attack",
        "attacked",
        "task",
        "rel_vuln",
        "clean_error",
        "adv_vulnerability",
        "eps",
    ]
    missing = [c for c in need if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: not a vulnerability table (missing column(s) {missing})")
    return df


class Lookup:
    """Values of the vulnerability table by (model, epoch, attack, attacked subset, measured task)."""

    def __init__(self, df: pd.DataFrame):
        self.df = df
        self.rows = {
            (r.model_id, int(r.epoch), r.attack, r.attacked, r.task): i
            for i, r in enumerate(df[["model_id", "epoch", "attack", "attacked", "task"]].itertuples())
        }
        self.missing: list[tuple] = []

    def get(
        self, model_id: str, epoch: int, attack: str, attacked, task: str, col: str = "rel_vuln"
    ) -> float:
        from .. import tasks as T

        key = (model_id, int(epoch), attack, "+".join(t.id for t in T.canonical(attacked)), T.get(task).id)
        i = self.rows.get(key)
        if i is None:
            self.missing.append(key)
            return float("nan")
        v = self.df[col].iat[i]
        return float(v) if v == v else float("nan")

    def warn_missing(self, name: str) -> None:
        if self.missing:
            shown = "; ".join("/".join(map(str, k)) for k in self.missing[:5])
            warnings.warn(
                f"{name}: {len(self.missing)} cell(s) missing from the vulnerability table "
                f"(left empty), e.g. {shown}",
                stacklevel=2,
            )


def model_id(arch: str, weighting: str, tasks, seed: int, main: str) -> str:
    from ..ids import model_spec

    return model_spec(arch, weighting, list(tasks), seed, main=main).id


def _ids(letters) -> list[str]:
    from .. import tasks as T

    if letters is None:
        raise ValueError("spec: 'tasks' (a list of task letters) is required")
    return [t.id for t in T.parse(list(letters))]


def _letter(tid: str) -> str:
    from .. import tasks as T

    return T.get(tid).letter


def _need(spec: dict, name: str, *keys):
    missing = [k for k in keys if k not in spec]
    if missing:
        raise ValueError(f"{name} spec lacks key(s) {missing}; got {sorted(spec)}")


def pair_value(lk: Lookup, arch, weighting, seed, epoch, attack, main, aux, kind, col="rel_vuln") -> float:
    """Main-task value of the (main, aux) model (single-task model when aux == main)."""
    if aux == main:
        return lk.get(model_id(arch, "uniform", [main], seed, main), epoch, attack, [main], main, col)
    mid = model_id(arch, weighting, [main, aux], seed, main)
    return lk.get(mid, epoch, attack, [main] if kind == "single" else [main, aux], main, col)


# ------------------------------------------------------------------------------------ tables 1 and 2
def _grid(lk, spec, row_keys, value) -> pd.DataFrame:
    tasks = _ids(spec.get("tasks"))
    mains = _ids(spec["mains"]) if spec.get("mains") else tasks
    rows = []
    for rk in row_keys:
        for m in mains:
            row = {"attack": rk, "main": _letter(m)}
            for w in spec["weightings"]:
                for a in tasks:
                    row[f"{w}:{_letter(a)}"] = value(rk, w, m, a)
            rows.append(row)
    return pd.DataFrame(rows)


def table1(df: pd.DataFrame, spec: dict) -> pd.DataFrame:
    _need(spec, "table1", "arch", "epoch", "tasks", "attack", "weightings")
    lk = Lookup(df)
    seed = int(spec.get("seed", 0))
    out = _grid(
        lk,
        spec,
        KINDS,
        lambda kind, w, m, a: pair_value(
            lk, spec["arch"], w, seed, spec["epoch"], spec["attack"], m, a, kind
        ),
    )
    lk.warn_missing("table1")
    return out


def table2(df: pd.DataFrame, spec: dict) -> pd.DataFrame:
    _need(spec, "table2", "arch", "epoch", "tasks", "attacks", "weightings")
    lk = Lookup(df)
    seed = int(spec.get("seed", 0))
    out = _grid(
        lk,
        spec,
        spec["attacks"],
        lambda attack, w, m, a: pair_value(lk, spec["arch"], w, seed, spec["epoch"], attack, m, a, "multi"),
    )
    lk.warn_missing("table2")
    return out


# ------------------------------------------------------------------------------------------ table 3
def pearson(x, y, label: str = "") -> tuple[int, float, float]:
    """(n, r, p) over the pairs where both values are finite; NaN r/p (and a warning) when undefined."""
    from scipy.stats import pearsonr

    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    n = int(ok.sum())
    if n < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        why = f"only {n} cell(s)" if n < 3 else "a constant input"
        warnings.warn(f"Pearson correlation {label}: undefined with {why}; reported as NaN", stacklevel=2)
        return n, float("nan"), float("nan")
    res = pearsonr(x, y)
    return n, float(res.statistic), float(res.pvalue)


def _cells(tasks, mains, attacked: str) -> list[tuple[str, str, str]]:
    kinds = {"single": ["single"], "multi": ["multi"], "both": ["single", "multi"]}.get(attacked)
    if kinds is None:
        raise ValueError(f"table3 spec: attacked must be single, multi or both, got {attacked!r}")
    return [(k, m, a) for m in mains for a in tasks for k in kinds if not (a == m and k != kinds[0])]


def table3(df: pd.DataFrame, spec: dict) -> pd.DataFrame:
    _need(spec, "table3", "attack", "tasks", "epochs", "archs", "clean")
    lk = Lookup(df)
    tasks = _ids(spec["tasks"])
    mains = _ids(spec["mains"]) if spec.get("mains") else tasks
    seed, attack, w = int(spec.get("seed", 0)), spec["attack"], spec.get("weighting", "uniform")
    cells = _cells(tasks, mains, spec.get("attacked", "single"))

    def vals(arch, epoch, col="rel_vuln"):
        return [pair_value(lk, arch, w, seed, epoch, attack, m, a, k, col) for k, m, a in cells]

    ep, ar, cl = spec["epochs"], spec["archs"], spec["clean"]
    rows = []
    for proxy, target, x, y in (
        (
            f"{ep['arch']} at epoch {ep['proxy']}",
            f"{ep['arch']} at epoch {ep['target']}",
            vals(ep["arch"], ep["proxy"]),
            vals(ep["arch"], ep["target"]),
        ),
        (
            f"{ar['proxy']} at epoch {ar['epoch']}",
            f"{ar['target']} at epoch {ar['epoch']}",
            vals(ar["proxy"], ar["epoch"]),
            vals(ar["target"], ar["epoch"]),
        ),
        (
            f"clean error ({cl['arch']}, epoch {cl['epoch']})",
            f"relative vulnerability ({cl['arch']}, epoch {cl['epoch']})",
            vals(cl["arch"], cl["epoch"], "clean_error"),
            vals(cl["arch"], cl["epoch"]),
        ),
    ):
        n, r, p = pearson(x, y, f"{proxy} vs {target}")
        rows.append({"proxy": proxy, "target": target, "n": n, "pearson_r": r, "p_value": p})
    lk.warn_missing("table3")
    return pd.DataFrame(rows, columns=["proxy", "target", "n", "pearson_r", "p_value"])


# ------------------------------------------------------------------------------------------ RQ1 sweeps
SWEEP_COLUMNS = [
    "sweep",
    "value",
    "attack",
    "arch",
    "epoch",
    "main",
    "aux",
    "kind",
    "rel_vuln",
    "single_task_rel_vuln",
    "less_vulnerable",
]


def eps_label(eps: float) -> str:
    """8/255 for eps = 0.0313..., else the number."""
    k = eps * 255
    return f"{round(k)}/255" if eps > 0 and abs(k - round(k)) < 1e-6 else f"{eps:.4g}"


def _settings(df: pd.DataFrame, name: str, spec: dict) -> list[tuple[str, str, int, str]]:
    """(label, arch, epoch, attack) of each value of the swept parameter, in the spec's order."""
    if name == "rq1_norm":
        _need(spec, name, "arch", "epoch", "attacks")
        return [(k, spec["arch"], spec["epoch"], a) for k, a in spec["attacks"].items()]
    if name == "rq1_eps":
        _need(spec, name, "arch", "epoch", "attacks")
        out = []
        for a in spec["attacks"]:
            eps = df.loc[df["attack"] == a, "eps"].dropna().unique()
            out.append((eps_label(float(eps[0])) if len(eps) else a, spec["arch"], spec["epoch"], a))
        return out
    if name == "rq1_arch":
        _need(spec, name, "archs", "epoch", "attack")
        return [(a, a, spec["epoch"], spec["attack"]) for a in spec["archs"]]
    _need(spec, name, "arch", "epochs", "attack")
    return [(str(e), spec["arch"], e, spec["attack"]) for e in spec["epochs"]]


def sweep(df: pd.DataFrame, name: str, spec: dict) -> pd.DataFrame:
    """Long table of one RQ1 sweep (uniform pair models vs single-task models)."""
    lk = Lookup(df)
    tasks = _ids(spec.get("tasks"))
    mains = _ids(spec["mains"]) if spec.get("mains") else tasks
    seed = int(spec.get("seed", 0))
    rows = []
    for label, arch, epoch, attack in _settings(df, name, spec):
        for m in mains:
            base = pair_value(lk, arch, "uniform", seed, epoch, attack, m, m, "single")
            for a in tasks:
                if a == m:
                    continue
                for kind in KINDS:
                    v = pair_value(lk, arch, "uniform", seed, epoch, attack, m, a, kind)
                    less = "" if math.isnan(v) or math.isnan(base) else bool(v < base)
                    rows.append(
                        {"sweep": name, "value": label, "attack": attack, "arch": arch, "epoch": int(epoch),
                         "main": _letter(m), "aux": _letter(a), "kind": kind, "rel_vuln": v,
                         "single_task_rel_vuln": base, "less_vulnerable": less}
                    )  # fmt: skip
    lk.warn_missing(name)
    return pd.DataFrame(rows, columns=SWEEP_COLUMNS)


def sweep_summary(long: pd.DataFrame) -> pd.DataFrame:
    """Per setting and attack kind: pairs compared, fraction whose multi-task model is less vulnerable."""
    rows = []
    for (value, kind), g in long.groupby(["value", "kind"], sort=False):
        known = g[g["less_vulnerable"] != ""]
        n = len(known)
        frac = float(np.mean(known["less_vulnerable"].astype(bool))) if n else float("nan")
        rows.append({"value": value, "kind": kind, "pairs": n, "fraction_less_vulnerable": frac})
    return pd.DataFrame(rows, columns=["value", "kind", "pairs", "fraction_less_vulnerable"])


def sweep_wide(long: pd.DataFrame) -> pd.DataFrame:
    """One row per (main, aux) pair; per setting: the single-task model, single- and multi-task attacks."""
    rows = {}
    for r in long.itertuples(index=False):
        row = rows.setdefault((r.main, r.aux), {"main": r.main, "aux": r.aux})
        row[f"single-task model {r.value}"] = r.single_task_rel_vuln
        row[f"{r.kind} {r.value}"] = r.rel_vuln
    return pd.DataFrame(list(rows.values()))


# ------------------------------------------------------------------------------------------ rendering
def _fmt(v) -> str:
    if isinstance(v, float | np.floating):
        if math.isnan(v):
            return "-"
        return f"{v:.2f}" if v == 0 or 0.01 <= abs(v) < 1e4 else f"{v:.3g}"
    return str(v)


def markdown(df: pd.DataFrame, emphasize=None) -> str:
    """A GitHub Markdown table; ``emphasize(row_index, column)`` -> True puts that cell in italics."""
    cols = list(df.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for i, r in enumerate(df.itertuples(index=False)):
        cells = []
        for c, v in zip(cols, r, strict=True):
            s = _fmt(v)
            cells.append(f"*{s}*" if emphasize and emphasize(i, c) and s != "-" else s)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _grid_md(title: str, df: pd.DataFrame, note: str) -> str:
    def diag(i, c):
        return ":" in c and c.split(":", 1)[1] == df["main"].iat[i]

    return f"# {title}\n\n{markdown(df, diag)}\n{note}\n"


def render(name: str, df: pd.DataFrame, spec: dict) -> tuple[pd.DataFrame, str]:
    """(CSV table, Markdown text) of one table."""
    if name == "table1":
        t = table1(df, spec)
        return t, _grid_md(
            f"Table 1: relative task vulnerability, {spec['attack']} ({spec['arch']}, epoch {spec['epoch']})",
            t,
            "Rows: attack kind (single = only the main task attacked, multi = main and auxiliary task) and "
            "main task; columns: weighting:auxiliary task. Lower is more robust. Italic diagonal: the "
            "single-task model "
            "under the single-task attack. '-' = not evaluated.",
        )
    if name == "table2":
        t = table2(df, spec)
        return t, _grid_md(
            f"Table 2: relative task vulnerability, adaptive attacks ({spec['arch']}, epoch {spec['epoch']})",
            t,
            "Rows: attack and main task (main and auxiliary task attacked together); columns: "
            "weighting:auxiliary "
            "task. Lower is more robust. Italic diagonal: the single-task model under the same attack.",
        )
    if name == "table3":
        t = table3(df, spec)
        return t, (
            f"# Table 3: Pearson correlation of proxies with the relative vulnerability ({spec['attack']}, "
            f"{spec.get('attacked', 'single')}-task attacks, {spec.get('weighting', 'uniform')} models)\n\n"
            f"{markdown(t)}\nn = number of (main, auxiliary) cells present in both settings; "
            "'-' = undefined (fewer than 3 cells or a constant input).\n"
        )
    t = sweep(df, name, spec)
    summ = sweep_summary(t)
    wide = sweep_wide(t)
    return t, (
        f"# {name}: multi-task vs single-task models\n\n## Fraction of (main, auxiliary) pairs whose "
        f"multi-task model is less vulnerable on the main task than the single-task model\n\n"
        f"{markdown(summ)}\n## Relative vulnerability of the main task\n\n{markdown(wide)}"
    )


def write_text_atomic(text: str, out: Path) -> None:
    import os

    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, out)


def parse_spec_json(text: str) -> dict:
    try:
        spec = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"--spec-json is not valid JSON ({e}): {text!r}") from None
    if not isinstance(spec, dict):
        raise ValueError(f"--spec-json must be a JSON object, got {text!r}")
    return spec


def run(args) -> int:
    spec = parse_spec_json(args.spec_json)
    df = load_vulnerability(args.vulnerability)
    table, md = render(args.table, df, spec)
    write_atomic(table, args.out, float_format="%.6g")
    write_text_atomic(md, args.out.with_suffix(".md"))
    print(f"wrote {args.out} and {args.out.with_suffix('.md')}")
    return 0
