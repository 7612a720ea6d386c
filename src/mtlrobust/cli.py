"""``mtlrobust`` command line: one sub-command per stage, used by the workflow's rules.

Each sub-command lives in the module that does the work (``add_arguments(parser)`` and
``run(args)`` there); only the chosen module is imported, so ``mtlrobust synthesize`` does not pay
for importing torch.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from . import __version__

COMMANDS = {
    "synthesize": ("mtlrobust.data.synthetic", "write the embedded synthetic Taskonomy (all 11 domains)"),
    "download": ("mtlrobust.data.download", "download Taskonomy archives (resumable, checksummed)"),
    "prepare": ("mtlrobust.data.packed", "decode and resize once into memory-mapped arrays"),
    "train": ("mtlrobust.train", "train a multi-task model up to a milestone epoch (resumable)"),
    "evaluate": ("mtlrobust.evaluate", "attack one checkpoint over the test split -> per-sample CSV"),
    "aggregate": ("mtlrobust.analysis.aggregate", "collect evaluation CSVs into results/vulnerability.csv"),
    "tables": ("mtlrobust.analysis.tables", "render Tables 1-3 and the RQ1 sweep tables"),
    "figures": ("mtlrobust.analysis.figures", "render Figure 1 and the RQ1 sweep plots"),
    "theory": ("mtlrobust.analysis.theory", "input-gradient norms, covariances, Theorem 2/4 quantities"),
    "plan": ("mtlrobust.plan", "count a study's jobs and estimate its GPU-hours"),
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    top = argparse.ArgumentParser(prog="mtlrobust", description=__doc__.splitlines()[0])
    top.add_argument("--version", action="version", version=f"mtlrobust {__version__}")
    sub = top.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_) in COMMANDS.items():
        sub.add_parser(name, help=help_, add_help=False)
    if not argv or argv[0] not in COMMANDS:
        top.parse_args(argv)  # prints help / version / "invalid choice"
        top.print_help()
        return 2
    name = argv[0]
    module = importlib.import_module(COMMANDS[name][0])
    parser = argparse.ArgumentParser(prog=f"mtlrobust {name}", description=COMMANDS[name][1])
    module.add_arguments(parser)
    args = parser.parse_args(argv[1:])
    return int(module.run(args) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
