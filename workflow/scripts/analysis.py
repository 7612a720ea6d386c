"""Snakemake script of rules aggregate, table, figure and claims: reduce evaluation CSVs; render one planned
output (and its cell table); judge the paper's claims from the cell tables. Tables and claims are also
written as HTML (their Markdown, rendered): the page ``snakemake --report`` shows.

A script rather than a shell command because a large study's lists (every evaluation CSV; an output's spec,
i.e. its layout and cells, in ``params.spec``) do not fit on a command line.
"""

import json
import sys

import pandas as pd


def main(sm) -> None:
    from mtlrobust import files
    from mtlrobust.analysis import aggregate, claims, figures, mdhtml, tables

    if sm.rule == "aggregate":
        files.write_frame(sm.output[0], aggregate.aggregate(list(sm.input)), float_format="%.9g")
    elif sm.rule == "table":
        spec = json.loads(sm.params.spec)
        models = sm.input.models[0] if sm.input.models else None
        tables.write(sm.wildcards.name, spec, list(sm.input.evals), sm.output.csv, sm.output.cells,
                     fragile_share=sm.params.fragile, models=models)  # fmt: skip
        md = files.read_text(sm.output.md, "Markdown table")
        files.write_text(sm.output.html, mdhtml.to_html(md, sm.wildcards.name))
    elif sm.rule == "claims":
        cells = [claims.read_cells(p) for p in sm.input.cells]
        theory = claims.read_theory(sm.input.theory[0]) if sm.input.theory else None
        th = claims.thresholds(sm.params.thresholds)  # the config's claims: section
        table, md = claims.render_claims(pd.concat(cells, ignore_index=True), th, theory, sm.params.source)
        files.write_frame(sm.output.csv, table, float_format="%.6g")
        files.write_text(sm.output.md, md)
        files.write_text(sm.output.html, mdhtml.to_html(md, "claims"))
    else:
        figures.write(sm.wildcards.name, json.loads(sm.params.spec), list(sm.input), sm.output.png)


if "snakemake" in globals():
    with open(snakemake.log[0], "w") as log:  # noqa: F821
        sys.stdout = sys.stderr = log
        main(snakemake)  # noqa: F821
