"""``mtlrobust claims``: its flags and the run that writes results/claims.csv and claims.md."""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from .cells import OUTPUTS, read_cells, read_theory
from .render import render_claims
from .verdicts import CONFIG_KEYS, Thresholds, thresholds


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--cells",
        nargs="+",
        required=True,
        type=Path,
        help="cell CSVs, e.g. results/cells/*.csv (columns: analysis/claims/cells.py); "
        f"the claims judge the rows of {', '.join(OUTPUTS)} and ignore those of the study's other outputs "
        "(figure1_orders, ...)",
    )
    p.add_argument(
        "--out", required=True, type=Path, help="results/claims.csv (claims.md is written next to it)"
    )
    p.add_argument("--theory", type=Path, help="results/theory.csv: Theorem 4's bounds (rq2_theorem4_bound)")
    p.add_argument(
        "--config",
        type=Path,
        help="a study config whose claims: section gives the thresholds (flags override)",
    )
    p.add_argument(
        "--data-source", choices=("synthetic", "taskonomy"), help="the study's dataset.source (claims.md "
        "says "
        "that verdicts on synthetic data say nothing about Taskonomy)",
    )  # fmt: skip
    d = Thresholds()
    helps = {"reliable_share": "share for 'reliably'/'for each'", "min_correlation": "smallest r that "
             "'correlates'", "margin": "relative reduction 'as vulnerable' allows", "dominance_share":
             "share one step must carry", "very_strong_correlation": "smallest r of a 'very strong' "
             "correlation", "often_share": "share of cases for 'often'", "more_vulnerable_share": "share of "
             "ResNet50/152 pairs for '80 % are more vulnerable'"}  # fmt: skip
    for key, field in CONFIG_KEYS.items():
        p.add_argument(
            f"--{key.replace('_', '-')}", type=float, default=None,
            help=f"{helps[key]} (default: the config's claims.{key}, else {getattr(d, field):g})",
        )  # fmt: skip


def config_thresholds(path: Path | None) -> dict:
    """The ``claims:`` section of a study config (schema-checked, defaults filled), {} without one."""
    if path is None:
        return {}
    from ... import study

    return study.validated(study.read(path)[0])["claims"]


def run(args) -> int:
    from ...files import write_frame, write_text
    from ...study import OUTPUTS as STUDY_OUTPUTS

    # results/cells/ holds the cell table of every output of the study; only OUTPUTS' rows are judged
    other = [n for n in STUDY_OUTPUTS if n not in OUTPUTS]
    frames = [read_cells(p, ignore=other) for p in args.cells]
    cells = pd.concat([f for f in frames if len(f)] or frames[:1], ignore_index=True)
    flags = {k: getattr(args, k, None) for k in CONFIG_KEYS}
    th = thresholds(config_thresholds(getattr(args, "config", None)), flags)
    theory = read_theory(getattr(args, "theory", None))
    table, md = render_claims(cells, th, theory, getattr(args, "data_source", None) or "")
    write_frame(args.out, table, float_format="%.6g")
    md_path = args.out.with_suffix(".md")
    write_text(md_path, md)
    judged = ", ".join(o for o in OUTPUTS if o in set(cells["output"])) or "none"
    print(f"wrote {args.out} and {md_path} (cells judged: {judged})")
    return 0
