"""Snakemake script of rules aggregate, table and figure: reduce evaluation CSVs; render one planned output.

A script rather than a shell command because a large study's lists (every evaluation CSV; an output's spec,
i.e. its layout and cells, in ``params.spec``) do not fit on a command line.
"""

import json
import sys


def main(sm) -> None:
    from mtlrobust import files
    from mtlrobust.analysis import aggregate, figures, tables

    if sm.rule == "aggregate":
        files.write_frame(sm.output[0], aggregate.aggregate(list(sm.input)), float_format="%.9g")
    elif sm.rule == "table":
        tables.write(sm.wildcards.name, json.loads(sm.params.spec), list(sm.input), sm.output.csv)
    else:
        figures.write(sm.wildcards.name, json.loads(sm.params.spec), list(sm.input), sm.output.png)


if "snakemake" in globals():
    with open(snakemake.log[0], "w") as log:  # noqa: F821
        sys.stdout = sys.stderr = log
        main(snakemake)  # noqa: F821
