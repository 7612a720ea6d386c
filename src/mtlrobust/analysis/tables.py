"""``mtlrobust tables``: render one table of the study plan from the evaluation CSVs of its cells.

The plan (``mtlrobust.study``) gives each output a spec: its layout, labels and cells, a cell being
``[model_id, epoch, attack, attacked, task]`` (or a list of such cells, one per training seed, merged by
``stats.seed_aggregate``). The spec's layout (``layouts``) reads the per-sample evaluation CSVs of those
cells, reduces them (``aggregate.reduce_eval``) and fills the layout; it never recomputes model ids. Every
table is a CSV plus a Markdown rendering next to it (``NAME.md``) and a long "cell" CSV
(``results/cells/NAME.csv``, the input contract of ``claims/cells.py``). Missing cells are left empty with
a warning; a table with no cell at all is an error.

Every number carries n and a 95 % studentized bootstrap interval over the test samples (``stats.CellDraws``:
all cells on one set of draws, so differences are paired); a comparison the table invites (multi-task cell
vs its single-task model, weighted vs uniform, an adaptive attack vs PGD, adversarially vs standard trained:
``std_cells``) is marked in the Markdown only when its paired interval excludes 0 (``MARKS``).

Heavy tails: the value is the paper's mean of per-sample ratios; every cell also carries the ratio of means
(``rom``, with its delta-method interval), the median of the ratios and the share of the largest |ratio| in
the sum of |ratios| (``top_share``). A cell whose top share exceeds ``fragile_share`` (config key, default
0.3) is marked ``FRAGILE_MARK`` in the Markdown: its value rests on one test sample. Each comparison also
carries its ratio-of-means difference and family-wise intervals (``diff_fw_lo``/``diff_fw_hi``:
``stats.simultaneous`` over the ``fw_k`` comparisons of the same kind in the table), which ``claims`` uses
for "for each pair" and "at least one" claims.

Layouts: one module each in ``analysis/layouts/`` (grid, correlations, sweep, bars, supplementary, recommend,
steps, adversarial), dispatched by ``render``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from . import render
from .evaluations import FRAGILE_SHARE


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--spec", required=True, help="the table's spec from the plan: a JSON file or JSON text")
    p.add_argument("--inputs", nargs="+", required=True, type=Path, help="evaluation CSVs of its cells")
    p.add_argument("--out", required=True, type=Path, help="results/NAME.csv (NAME.md is written next to it)")
    p.add_argument("--cells", type=Path, help="also write the long cell CSV (mtlrobust claims' input) here")
    p.add_argument(
        "--fragile-share", type=float, default=FRAGILE_SHARE,
        help="mark a cell fragile when its largest |per-sample ratio| carries more than this share of all",
    )  # fmt: skip
    p.add_argument(
        "--models", type=Path,
        help="results/models.csv: proxies (Table 3, recommend) leave out cells of models with beats_trivial "
        "false on the cell's task",
    )  # fmt: skip


def run(args) -> int:
    spec = render.load_spec(args.spec)
    render.write(args.out.stem, spec, args.inputs, csv=args.out, cells=args.cells,
                 fragile_share=args.fragile_share, models=args.models)  # fmt: skip
    extra = f" and {args.cells}" if args.cells else ""
    print(f"wrote {args.out}, {args.out.with_suffix('.md')}{extra}")
    return 0
