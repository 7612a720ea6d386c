"""``mtlrobust figures``: render one figure of the study plan from the evaluation CSVs of its cells.

The layout of the spec (``layouts``: bars for Figure 1, sweep for RQ1, steps) draws it; writes NAME.png and
NAME.pdf (Agg backend, fixed metadata, so reruns give identical files).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from . import render


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--spec", required=True, help="the figure's spec from the plan: a JSON file or JSON text")
    p.add_argument("--inputs", nargs="+", required=True, type=Path, help="evaluation CSVs of its cells")
    p.add_argument(
        "--out", required=True, type=Path, help="results/NAME.png (NAME.pdf is written next to it)"
    )


def run(args) -> int:
    for p in render.write(args.out.stem, render.load_spec(args.spec), args.inputs, png=args.out):
        print(f"wrote {p}")
    return 0
