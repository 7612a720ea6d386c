"""Every claim's row under both statistics (``claims``: claims.csv) and its Markdown (``render_claims``)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from .. import stats as S
from .adversarial import claims_adversarial
from .cells import NUMERIC, STRING_COLUMNS, as_ratio_of_means, check_cells, merge_seeds
from .rq1 import claims_rq1, claims_sweeps
from .rq2 import claims_figure1
from .rq3 import claim_selection, claim_weights_pgd, claims_adaptive
from .rq4 import claims_proxies
from .verdicts import Thresholds

CLAIM_COLUMNS = [
    "claim",
    "paper",
    "source",
    "statistic",
    "value",
    "lo",
    "hi",
    "n",
    "rule",
    "verdict",
    "detail",
    "value_rom",
    "lo_rom",
    "hi_rom",
    "verdict_rom",
    "detail_rom",
    "metric_sensitive",
    "procedure",
]


def claims(
    df: pd.DataFrame, th: Thresholds | None = None, theory: pd.DataFrame | None = None
) -> pd.DataFrame:
    """The claims table (``CLAIM_COLUMNS``) of a checked cell table (``theory``: results/theory.csv)."""
    th = th or Thresholds()
    df = merge_seeds(df)
    for c in STRING_COLUMNS:
        if c not in df.columns:
            df[c] = ""
    for c in NUMERIC:
        if c not in df.columns:
            df[c] = np.nan
    paper = _judge(df, th, theory)
    rom_df = as_ratio_of_means(df)
    rom = _judge(rom_df, th, theory) if rom_df is not None else [None] * len(paper)
    for p, r in zip(paper, rom, strict=True):
        if r is None or (r["n"] == 0 and p["n"] > 0):  # its cells carry no ratio of means
            none = "its cells carry no ratio-of-means columns"
            p.update(value_rom=math.nan, lo_rom=math.nan, hi_rom=math.nan, verdict_rom="n/a",
                     detail_rom=none, metric_sensitive=False)  # fmt: skip
        else:
            assert r["claim"] == p["claim"]
            p.update(value_rom=r["value"], lo_rom=r["lo"], hi_rom=r["hi"], verdict_rom=r["verdict"],
                     detail_rom=r["detail"], metric_sensitive=r["verdict"] != p["verdict"])  # fmt: skip
    return pd.DataFrame(paper, columns=CLAIM_COLUMNS)


def _judge(df: pd.DataFrame, th: Thresholds, theory: pd.DataFrame | None = None) -> list[dict]:
    """Every claim's row under the statistic in the cell table's value/diff columns."""
    rows = claims_rq1(df, th) + claims_sweeps(df, th) + [claim_weights_pgd(df, th)]
    rows += claims_adaptive(df, th) + claim_selection(df, th) + claims_proxies(df, th)
    rows += claims_figure1(df, th, theory)
    rows += claims_adversarial(df, th) if (df["output"] == "table_at").any() else []
    return rows


def _md_escape(s: str) -> str:
    return str(s).replace("|", "\\|")


def render_claims(
    cells: pd.DataFrame, th: Thresholds | None = None, theory: pd.DataFrame | None = None, source: str = ""
) -> tuple[pd.DataFrame, str]:
    """(claims CSV table, Markdown text) from a cell table (``check_cells`` applied here); ``theory`` =
    results/theory.csv, ``source`` = the study's dataset.source (``synthetic``: claims.md says so)."""
    th = th or Thresholds()
    table = claims(check_cells(cells), th, theory)
    lines = [
        "# The paper's claims, checked against this study",
        "",
    ]
    if source == "synthetic":
        lines += [
            "**Synthetic data.** These verdicts are on the study's synthetic scenes, not on Taskonomy: they "
            "check the pipeline and the statistics and say nothing about whether the paper's findings "
            "hold on "
            "Taskonomy.",
            "",
        ]
    lines += [
        "Each claim is turned into a statistic with a 95 % interval (studentized bootstrap over test "
        "samples, paired where two cells share samples). **supported**: the whole interval is on the claim's "
        "side of the threshold; **contradicted**: on the other side; **unresolved**: the interval contains "
        "the threshold or no cell measures it; **too few cells**: a correlation over fewer than "
        f"{S.MIN_CELLS} cells. n: the pairs (cells, orders, steps) behind a share, the cells behind a "
        "correlation.",
        "",
        "Two statistics: each claim is decided under the paper's relative vulnerability (the mean of "
        "per-sample ratios, which one sample with a tiny clean error can dominate) and under the ratio of "
        "means (sum adv - sum clean) / sum clean. **metric-sensitive**: the two verdicts differ, so the "
        "conclusion depends on the metric. Figure 1's steps and dominance, Theorem 4's bound and the "
        "attacked "
        "objective are not ratios: the same under both.",
        "",
        f"Thresholds (config section claims:): 'reliably' / 'for each' = a share of at least {th.reliable:g} "
        f"of the pairs (cells, orders); 'correlates' = Pearson r >= {th.min_r:g}, 'very strong' = r >= "
        f"{th.very_strong_r:g}; 'as vulnerable' tolerates a reduction of at most {th.margin:.0%} of the "
        f"uniform model's value; 'dominates' = one step after the first task carries at least "
        f"{th.dominance:g} of the total change; 'often' / 'in some orders' = a share of at least "
        f"{th.often:g}; "
        f"'80 % more vulnerable' = a share of at least {th.more_vulnerable:g}. A pair counts for or "
        f"against a "
        "claim only when its interval excludes 0 (the margin for 'as vulnerable', the bound for Theorem 4); "
        "the share's interval counts the undetermined pairs as lacking (lower end) or having (upper end) the "
        "property. Procedure: 'for each pair' and 'at least one auxiliary task' claims decide each "
        "comparison "
        "with family-wise 95 % intervals (named per claim); the other share claims use each comparison's own "
        "95 % interval.",
        "",
        "| claim | the paper's claim (paraphrased) | source | statistic | value [interval] | ratio of means "
        "[interval] | n | verdict | verdict, ratio of means | procedure |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    measured = table[table["n"] > 0]
    for r in measured.itertuples(index=False):
        iv = S.Interval(r.value, r.lo, r.hi, r.n)
        rom = S.Interval(r.value_rom, r.lo_rom, r.hi_rom, r.n)
        sensitive = " (metric-sensitive)" if r.metric_sensitive else ""
        lines.append(
            f"| {r.claim} | {_md_escape(r.paper)} | {_md_escape(r.source)} | {_md_escape(r.statistic)} | "
            f"{S.format_interval(iv)} | {S.format_interval(rom)} | {r.n} | **{r.verdict}** | "
            f"**{r.verdict_rom}**{sensitive} | {_md_escape(r.procedure)} |"
        )
    unmeasured = table.loc[table["n"] == 0, "claim"]
    if len(unmeasured):  # kept in the CSV (verdict unresolved, n = 0); a table row each would hide the rest
        lines += ["", "Not measured by this study (no cell of their source output): "
                  + ", ".join(f"`{c}`" for c in unmeasured) + "."]  # fmt: skip
    lines += ["", "## Rules and details", ""]
    lines += [
        f"- `{r.claim}`: {r.rule}. {r.detail}. Under the ratio of means: {r.detail_rom}."
        for r in measured.itertuples(index=False)
    ]
    return table, "\n".join(lines) + "\n"
