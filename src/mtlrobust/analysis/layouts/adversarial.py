"""Layout ``adversarial`` (output ``table_at``): adversarially trained models next to the standard ones.

Three blocks, all from the evaluation CSVs of the plan's cells (and, for the step check, their per-step
sidecars):

* **Relative task vulnerability**: Table 1's grid (``layouts.grid``) with one more label column,
  ``training`` (standard | adversarial). Marks as in Table 1 (↓st: lower than the single-task model of the
  row, so in the adversarial rows "an auxiliary task lowers the vulnerability of an adversarially trained
  model"), plus ↓std / ↑std on the adversarial rows: lower / higher than the same model trained without
  adversarial examples, under the same attack.
* **Clean error** of the main task, per model (mean over the test samples [95 % interval]): ↑std on the
  adversarial rows marks the clean error adversarial training costs; the ``cost`` rows give adversarial
  minus standard per column, ↓st marking a cost smaller than the single-task model's (a paired difference
  of differences over the same test samples).
* **Gradient-masking checks** of every adversarially trained model (Athalye et al. 2018; Carlini et al.
  2019), each pass / FAIL / n/a and never hidden: ``steps`` (PGD's mean attacked loss never falls by more
  than 5 % of its total rise from one step to a later one, and rises at all), ``eps`` (the attacked loss
  and the vulnerability not significantly lower at a larger eps), ``apgd`` (APGD not significantly less
  effective than PGD), ``unbounded`` (at eps = 1 the mean error reaches at least the constant predictor's
  validation error from results/models.csv).

The cell table (``evaluations.CELL_COLUMNS``, claims' input) holds the grid's cells and comparisons, the clean
error cells (``kind`` clean), the cost cells (``kind`` clean_cost) and one row per check (``kind`` masking,
``aux`` the check, ``value`` 1 pass / 0 fail / NaN n/a); ``setting`` is the row's training.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from ...steps_format import COLUMNS as STEP_COLUMNS
from .. import stats as S
from ..evaluations import CELL_COLUMNS, FRAGILE_SHARE, NAN, Evaluations, per_seed
from ..layout import Layout, cells_under
from ..markdown import interval_note, legend, mark, md_table, title
from .grid import grid, grid_cells, grid_markdown, grid_records
from .steps import read_steps

CHECKS = ("steps", "eps", "apgd", "unbounded")
STEP_TOLERANCE = 0.05  # a later step may lose this share of the curve's rise (PGD's last iterate wobbles)
CHECKS_NOTE = (
    "Gradient-masking checks (Athalye et al. 2018; Carlini et al. 2019) of each adversarially trained model, "
    "main task attacked: steps = PGD's mean attacked loss rises over the steps and never falls by more than "
    f"{STEP_TOLERANCE:.0%} of that rise; eps = the attacked loss and the vulnerability are not significantly "
    "lower at a larger eps; apgd = APGD is not significantly less effective than PGD; unbounded = at eps = 1 "
    "the mean error reaches the constant predictor's (validation error, results/models.csv). FAIL = the "
    "model may owe its robustness to masked gradients: read its vulnerability as an upper bound of its "
    "robustness, not as robustness."
)


# ------------------------------------------------------------------------------------------ clean error
class Clean:
    """Per-sample clean errors of the output's cells on the cells' bootstrap draws (``Evaluations``)."""

    def __init__(self, ev: Evaluations):
        self.ev, self.draws = ev, ev.draws

    def column(self, cell) -> np.ndarray:
        """[samples] clean error of a cell (the mean over its seeds), NaN where missing."""
        js = [self.draws._j(tuple(c)) for c in per_seed(cell) if self.ev.has(c)]
        if not js:
            return np.full(self.draws.clean.shape[0], np.nan)
        with np.errstate(invalid="ignore"):
            return np.nanmean(self.draws.clean[:, js], axis=1) if len(js) > 1 else self.draws.clean[:, js[0]]

    def interval(self, combination) -> S.Interval:
        """Mean [interval] of sum_k w_k clean(cell_k) over the samples where all are finite; a
        ``combination`` is [(weight, cell)] (one cell: its clean error; two: a paired difference...)."""
        if any(c is None or not self.ev.has(c) for _, c in combination):
            return NAN
        x = sum(w * self.column(c) for w, c in combination)
        ok = np.isfinite(x)
        n = int(ok.sum())
        if n == 0:
            return NAN
        value = float(x[ok].mean())
        stat = S.mean_stat(np.where(ok, x, np.nan), self.draws.counts)
        boot = stat.boot(0, value, n)
        if len(combination) > 1:  # a difference: the symmetric interval, as the grid's comparisons
            boot = S.Boot(boot.value, boot.draws, boot.se, boot.se_draws, boot.n, symmetric=True)
        return boot.interval(self.draws.level)


def clean_records(ev: Evaluations, spec: dict) -> list[dict]:
    """Per (training, main) and column: the clean error (and its change vs standard training), then per
    main the cost rows (adversarial minus standard, vs the single-task model's cost)."""
    clean = Clean(ev)
    out = []
    first = {}  # (training, main) -> the first attack's single-kind row: its cells' clean errors
    for r in spec["rows"]:
        first.setdefault((r["training"], r["main"]), r)
    for (training, _), r in first.items():
        main = _letter(r)
        std = r.get("std_cells") or [None] * len(spec["columns"])
        for col, cell, sc in zip(spec["columns"], r["cells"], std, strict=True):
            comps = {} if sc is None else {"standard": clean.interval([(1, cell), (-1, sc)])}
            out.append({"training": training, "main": main, "block": "clean", "column": col, "cell": cell,
                        "iv": clean.interval([(1, cell)]), "comparisons": comps})  # fmt: skip
        if sc is None:
            continue
        cols = dict(zip(spec["columns"], zip(r["cells"], std, strict=True), strict=True))
        for col, (cell, sc) in cols.items():
            weighting, aux = col.split(":", 1)
            diag = cols.get(f"{weighting}:{_letter(r)}")
            comps = {}
            if diag is not None and aux != _letter(r):
                comps["single_task"] = clean.interval([(1, cell), (-1, sc), (-1, diag[0]), (1, diag[1])])
            out.append({"training": "cost", "main": main, "block": "clean_cost", "column": col, "cell": cell,
                        "iv": clean.interval([(1, cell), (-1, sc)]), "comparisons": comps})  # fmt: skip
    return out


def _letter(row: dict) -> str:
    return row["labels"][-1]


# ------------------------------------------------------------------------------------------ masking checks
def masking_checks(ev: Evaluations, spec: dict, steps: pd.DataFrame, trivial: dict) -> list[dict]:
    """One record per adversarially trained model: each check's result and a short reason."""
    out = []
    for ch in spec["checks"]:
        out.append({"model_id": ch["model_id"], "main": ch["main"],
                    "steps": _steps_check(steps, ch["steps"]["cell"]),
                    "apgd": _apgd_check(ev, ch["apgd"]["cells"]), "eps": _eps_check(ev, ch["eps"]["cells"]),
                    "unbounded": _unbounded_check(ev, ch["unbounded"]["cells"], trivial)})  # fmt: skip
    return out


def _steps_check(steps: pd.DataFrame, cell) -> tuple[bool | None, str]:
    model_id, epoch, attack, attacked, task = cell
    g = steps[(steps["model_id"] == model_id) & (steps["epoch"] == int(epoch)) & (steps["attack"] == attack)
              & (steps["attacked"] == attacked) & (steps["task"] == task)]  # fmt: skip
    if g.empty:
        return None, "no per-step record"
    curve = g.groupby("step")["attacked_loss"].mean().sort_index().to_numpy(np.float64)
    rise = float(curve.max() - curve[0])
    drop = float(np.max(np.maximum.accumulate(curve) - curve))
    text = f"loss {curve[0]:.4g} -> {curve[-1]:.4g} in {len(curve) - 1} steps"
    if not rise > 0:
        return False, text + ", never rises"
    return drop <= STEP_TOLERANCE * rise, text + (f", falls by {drop:.3g}" if drop > 0 else "")


def _apgd_check(ev: Evaluations, cells) -> tuple[bool | None, str]:
    apgd, pgd = cells
    d = ev.diff(apgd, pgd)
    if not math.isfinite(d.value):
        return None, "not evaluated"
    text = f"APGD - PGD {S.format_interval(d)}"
    return not (math.isfinite(d.hi) and d.hi < 0), text


def _eps_check(ev: Evaluations, cells) -> tuple[bool | None, str]:
    if len(cells) < 2:
        return None, "no eps sweep (study.table_at.eps_attacks)"
    bad = []
    for small, big in zip(cells, cells[1:], strict=False):
        loss = _loss_diff(ev, big, small)
        vuln = ev.diff(big, small)
        for what, d in (("loss", loss), ("vulnerability", vuln)):
            if math.isfinite(d.hi) and d.hi < 0:
                bad.append(f"{what} falls from {small[2]} to {big[2]}")
    return not bad, "; ".join(bad) or f"{len(cells)} budgets, non-decreasing"


def _loss_diff(ev: Evaluations, big, small) -> S.Interval:
    """Paired interval of the mean attacked loss at ``big`` minus ``small`` (the same model and task)."""
    a, b = ev.per_sample(big), ev.per_sample(small)
    if a.empty or b.empty:
        return NAN
    both = pd.concat([a.set_index("sample")["adv_loss"], b.set_index("sample")["adv_loss"]], axis=1).dropna()
    x = both.to_numpy(np.float64)
    st = S.mean_stat(x, S.resample_counts(len(x)))
    return st.diff_boot(0, 1, float(x[:, 0].mean() - x[:, 1].mean()), len(x)).interval(ev.draws.level)


def _unbounded_check(ev: Evaluations, cells, trivial: dict) -> tuple[bool | None, str]:
    if not cells:
        return None, "no unbounded attack (study.table_at.unbounded)"
    (cell,) = cells
    rows = ev.per_sample(cell)
    const = trivial.get((cell[0], int(cell[1]), cell[4]))
    if rows.empty or const is None:
        return None, "not evaluated" if rows.empty else "no constant-predictor error (results/models.csv)"
    err = float(rows["adv_error"].astype(float).mean())
    return err >= const, f"error at eps 1 {err:.4g} vs constant predictor {const:.4g}"


def trivial_errors(models: Path | None) -> dict:
    """(model_id, epoch, task) -> the constant predictor's validation error, from results/models.csv."""
    if models is None or not Path(models).is_file():
        return {}
    df = pd.read_csv(models, dtype={"model_id": str, "task": str})
    if "trivial_error" not in df.columns:
        raise ValueError(f"{models}: no column trivial_error (expected results/models.csv)")
    return {(r.model_id, int(r.epoch), r.task): float(r.trivial_error) for r in df.itertuples(index=False)}


def _verdict(result: tuple[bool | None, str]) -> str:
    ok, text = result
    return f"{'n/a' if ok is None else 'pass' if ok else '**FAIL**'} ({text})"


# ------------------------------------------------------------------------------------------ outputs
def _clean_markdown(spec: dict, recs: list[dict]) -> tuple[str, set]:
    rows, used = {}, set()
    for rec in recs:
        key = (rec["training"], rec["main"])
        label = "clean error" if rec["block"] == "clean" else "clean error cost (adversarial - standard)"
        row = rows.setdefault(key, [rec["training"], label, rec["main"]])
        marks = [mark(vs, iv) for vs, iv in rec["comparisons"].items()]
        used.update(rec["comparisons"])
        row.append(" ".join([S.format_interval(rec["iv"]), *[m for m in marks if m]]))
    head = ["training", "value", "main", *spec["columns"]]
    return md_table(head, list(rows.values())), used


def _clean_frame(spec: dict, recs: list[dict]) -> pd.DataFrame:
    rows = {}
    for rec in recs:
        label = "clean error" if rec["block"] == "clean" else "clean error cost"
        first = {"training": rec["training"], "attack": label, "kind": "", "main": rec["main"]}
        row = rows.setdefault((rec["training"], rec["main"]), first)
        c, iv = rec["column"], rec["iv"]
        row.update({c: iv.value, f"{c}_lo": iv.lo, f"{c}_hi": iv.hi, f"{c}_n": iv.n})
    return pd.DataFrame(list(rows.values()))


def _long(name: str, spec: dict, ev: Evaluations, records, clean_recs, checks) -> pd.DataFrame:
    """The cell table: grid cells (``setting`` = training), clean and cost cells, one row per check."""
    long = grid_cells(name, ev, records)
    long["setting"] = ["adversarial" if "-adv_" in m else "standard" for m in long["model_id"]]
    extra = []
    for rec in clean_recs:
        first = per_seed(rec["cell"])[0]
        weighting, aux = rec["column"].split(":", 1)
        base = {"output": name, "kind": rec["block"], "weighting": weighting, "main": rec["main"], "aux": aux,
                "setting": rec["training"], "epoch": first[1], "model_id": first[0], "value": rec["iv"].value,
                "lo": rec["iv"].lo, "hi": rec["iv"].hi, "n": rec["iv"].n}  # fmt: skip
        for vs, d in rec["comparisons"].items() or [("", None)]:
            diff = {} if d is None else {"vs": vs, "diff": d.value, "diff_lo": d.lo, "diff_hi": d.hi}
            extra.append({**base, **diff})
    for ch in checks:
        for check in CHECKS:
            ok, text = ch[check]
            extra.append({"output": name, "kind": "masking", "aux": check, "main": ch["main"],
                          "setting": "adversarial", "model_id": ch["model_id"],
                          "value": math.nan if ok is None else float(ok), "variant": text})  # fmt: skip
    return pd.concat([long, pd.DataFrame(extra, columns=CELL_COLUMNS)], ignore_index=True)[CELL_COLUMNS]


def table(name: str, spec: dict, inputs, *, fragile_share=FRAGILE_SHARE, models=None):
    """(CSV table: the grid, then the clean error rows; Markdown; cell table)."""
    step_files = [p for p in inputs if str(p).endswith(".steps.csv")]
    ev = Evaluations([p for p in inputs if p not in step_files], fragile_share=fragile_share)
    steps = pd.concat([read_steps(p) for p in step_files], ignore_index=True) if step_files else None
    if steps is None:
        steps = pd.DataFrame(columns=STEP_COLUMNS)
    records = grid_records(ev, spec)
    clean_recs = clean_records(ev, spec)
    checks = masking_checks(ev, spec, steps, trivial_errors(models))
    frame = pd.concat([grid(ev, spec, records), _clean_frame(spec, clean_recs)], ignore_index=True)
    body, used, fragile = grid_markdown(spec, records)
    clean_md, clean_used = _clean_markdown(spec, clean_recs)
    failed = sum(ch[c][0] is False for ch in checks for c in CHECKS)
    check_rows = [[ch["model_id"], ch["main"], *(_verdict(ch[c]) for c in CHECKS)] for ch in checks]
    md = (
        f"# {title(spec)}\n\nAdversarial training: {spec['setting_text']}.\n\n## Relative task vulnerability"
        f"\n\n{body}\n## Clean error of the main task\n\n{clean_md}\n"
        f"## Gradient-masking checks ({failed} failed)\n\n"
        f"{md_table(['model', 'main', *CHECKS], check_rows)}\n{CHECKS_NOTE}\n\n"
        f"{interval_note(ev)} {legend(used | clean_used, fragile, ev)}\n"
    )
    ev.check(name)
    return frame, md, _long(name, spec, ev, records, clean_recs, checks)


def cells(spec: dict) -> list[list]:
    """The grid's cells and those of every model's masking checks."""
    checks = [c for ch in spec["checks"] for c in (ch["steps"], ch["apgd"], ch["eps"], ch["unbounded"])]
    return cells_under(spec["rows"], "cells", "std_cells") + cells_under(checks, "cell", "cells")


LAYOUT = Layout(cells, table=table)
