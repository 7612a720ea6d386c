"""Snakemake script of rules aggregate, table, figure and claims: reduce evaluation CSVs; render one planned
output (its table and cell table, or its figure); judge the paper's claims from the cell tables. Tables and
claims are also written as HTML (their Markdown, rendered): the page ``snakemake --report`` shows.

A script rather than a shell command because a large study's lists (every evaluation CSV; an output's spec,
i.e. its layout and cells, in ``params.spec``) do not fit on a command line.
"""

import json
import sys

import pandas as pd


def aggregate(sm) -> None:
    from mtlrobust import files
    from mtlrobust.analysis import aggregate

    files.write_frame(sm.output[0], aggregate.aggregate(list(sm.input)), float_format="%.9g")


def table(sm) -> None:
    from mtlrobust import files
    from mtlrobust.analysis import mdhtml, render

    models = sm.input.models[0] if sm.input.models else None
    render.write(sm.wildcards.name, json.loads(sm.params.spec), list(sm.input.evals), csv=sm.output.csv,
                 cells=sm.output.cells, fragile_share=sm.params.fragile, models=models)  # fmt: skip
    md = files.read_text(sm.output.md, "Markdown table")
    files.write_text(sm.output.html, mdhtml.to_html(md, sm.wildcards.name))


def claims(sm) -> None:
    from mtlrobust import files
    from mtlrobust.analysis import claims, mdhtml

    cells = [claims.read_cells(p) for p in sm.input.cells]
    theory = claims.read_theory(sm.input.theory[0]) if sm.input.theory else None
    th = claims.thresholds(sm.params.thresholds)  # the config's claims: section
    table, md = claims.render_claims(pd.concat(cells, ignore_index=True), th, theory, sm.params.source)
    files.write_frame(sm.output.csv, table, float_format="%.6g")
    files.write_text(sm.output.md, md)
    files.write_text(sm.output.html, mdhtml.to_html(md, "claims"))


def figure(sm) -> None:
    from mtlrobust.analysis import render

    render.write(sm.wildcards.name, json.loads(sm.params.spec), list(sm.input), png=sm.output.png)


RULES = {"aggregate": aggregate, "table": table, "claims": claims, "figure": figure}


def main(sm) -> None:
    if sm.rule not in RULES:
        raise ValueError(f"workflow/scripts/analysis.py serves rules {sorted(RULES)}, not rule {sm.rule!r}")
    RULES[sm.rule](sm)


if "snakemake" in globals():
    with open(snakemake.log[0], "w") as log:  # noqa: F821
        sys.stdout = sys.stderr = log
        main(snakemake)  # noqa: F821
