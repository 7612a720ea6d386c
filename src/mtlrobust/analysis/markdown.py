"""Markdown shared by the tables: comparison marks and their legend, the interval note, table text."""

from __future__ import annotations

import numpy as np
import pandas as pd

from . import stats as S
from .evaluations import FRAGILE_SHARE, Evaluations

FRAGILE_MARK = "†"

# comparison -> (mark when significantly lower, when significantly higher), and what it compares with
MARKS = {
    "single_task": ("↓st", "↑st", "the single-task model of the same main task (italic diagonal)"),
    "uniform": ("↓uni", "↑uni", "the uniformly weighted model with the same tasks"),
    "pgd": ("↓pgd", "↑pgd", "PGD at the same eps and steps on the same model and attacked tasks"),
    "standard": ("↓std", "↑std", "the same model trained without adversarial examples (table_at)"),
}


def mark(vs: str, iv: S.Interval) -> str:
    """The Markdown mark of a comparison: only when its paired interval excludes 0."""
    if not S.significant(iv):
        return ""
    down, up, _ = MARKS[vs]
    return down if iv.hi < 0 else up


def legend(used, fragile: bool = False, ev: Evaluations | None = None) -> str:
    """What the marks in a Markdown table mean (``fragile``: the table shows the fragile mark)."""
    parts = [f"{MARKS[v][0]} / {MARKS[v][1]}: lower / higher than {MARKS[v][2]}" for v in MARKS if v in used]
    out = ""
    if parts:
        out = (
            "Marks (only where the paired 95 % interval of the difference excludes 0; no mark = not "
            "resolved): " + "; ".join(parts) + "."
        )
    if fragile:
        share = FRAGILE_SHARE if ev is None else ev.fragile_share
        out += (
            f"\n\n{FRAGILE_MARK} fragile: the largest single test sample carries more than {share:.0%} of "
            "the sum of |per-sample ratios| of the cell, so its mean of ratios rests on that sample; the "
            "CSVs give the ratio of means (`_rom`), the median (`_median`) and that share (`_top_share`) of "
            "every cell."
        )
    return out.strip()


def interval_note(ev: Evaluations) -> str:
    return (
        f"Each value: the paper's mean of per-sample ratios [95 % interval], studentized bootstrap "
        f"(bootstrap-t) over the n = {ev.sample_counts()} test samples of a cell ({S.RESAMPLES} resamples, "
        f"seed {S.SEED}; several training seeds: two-level bootstrap over seeds and samples)."
    )


def title(spec: dict) -> str:
    return " ".join(spec["title"].split("\n"))


def _fmt(v) -> str:
    if isinstance(v, float | np.floating):
        return S.format_number(float(v))
    return str(v)


def md_table(head, rows) -> str:
    lines = ["| " + " | ".join(map(str, head)) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join(_fmt(v) for v in r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def markdown(df: pd.DataFrame) -> str:
    """A GitHub Markdown table of a frame (numbers by ``stats.format_number``)."""
    return md_table(list(df.columns), list(df.itertuples(index=False)))
