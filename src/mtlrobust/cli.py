"""``mtlrobust`` command line: one sub-command per stage, used by the workflow's rules.

Each sub-command lives in the module that does the work (``add_arguments(parser)`` and
``run(args)`` there); only the chosen module is imported, so ``mtlrobust synthesize`` does not pay
for importing torch.

Errors: a user's mistake (a bad flag value, a missing or malformed file, a full disk, a training that
diverged) ends as one line ``mtlrobust STAGE: error: MESSAGE`` and exit status 2, like argparse's own
errors; any other exception is a bug and keeps its traceback. ``mtlrobust --debug STAGE ...`` (or
``MTLROBUST_DEBUG=1``) shows the traceback of user errors too.

With ``MTLROBUST_WARM=1`` (set by the workflow for local runs) the torch stages run in a child forked
from a worker that has imported torch already (``mtlrobust.warmstart``): same arguments, files and
exit status, without ~3 CPU-s of start-up per job.
"""

from __future__ import annotations

import argparse
import importlib
import os
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
    "claims": ("mtlrobust.analysis.claims", "a verdict on each claim of the paper from the tables' cells"),
    "recommend": ("mtlrobust.analysis.recommend", "which auxiliary task to add: proxy ranking vs target"),
    "plan": ("mtlrobust.plan", "count a study's jobs and estimate its GPU-hours"),
}
# The stages that import torch: the ones a warm-start worker runs (its PRELOAD imports their modules).
TORCH_STAGES = ("train", "evaluate", "theory")


# Exceptions that report a user's mistake; an exception class may also declare ``user_error = True``.
USER_ERRORS = (ValueError, KeyError, OSError, FloatingPointError)


def is_user_error(e: BaseException) -> bool:
    return isinstance(e, USER_ERRORS) or getattr(e, "user_error", False)


def one_line(e: BaseException) -> str:
    """The exception's message on one line (KeyError's without the quotes its str() adds, a file error
    as "PATH: reason")."""
    if isinstance(e, KeyError) and len(e.args) == 1:
        msg = e.args[0]
    elif isinstance(e, OSError) and e.strerror and e.filename:  # not "[Errno 2] ... : 'x'"
        msg = f"{e.filename}: {e.strerror}"
    else:
        msg = str(e)
    msg = "; ".join(line.strip() for line in str(msg).splitlines() if line.strip())
    return msg or type(e).__name__


def main(argv: list[str] | None = None, warm: bool = True) -> int:
    """Run one stage; ``warm=False`` runs it here even when a warm-start worker could."""
    argv = list(sys.argv[1:] if argv is None else argv)
    given = list(argv)
    top = argparse.ArgumentParser(prog="mtlrobust", description=__doc__.splitlines()[0])
    top.add_argument("--version", action="version", version=f"mtlrobust {__version__}")
    top.add_argument("--debug", action="store_true", help="full tracebacks, also for user errors")
    sub = top.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_) in COMMANDS.items():
        sub.add_parser(name, help=help_, add_help=False)
    debug = os.environ.get("MTLROBUST_DEBUG", "") not in ("", "0")
    while argv[:1] == ["--debug"]:
        debug, argv = True, argv[1:]
    if not argv or argv[0] not in COMMANDS:
        top.parse_args(argv)  # prints help / version / "invalid choice"
        top.print_help()
        return 2
    name = argv[0]
    if warm and name in TORCH_STAGES:
        from . import warmstart

        code = warmstart.run(given)
        if code is not None:
            return code
    module = importlib.import_module(COMMANDS[name][0])
    parser = argparse.ArgumentParser(prog=f"mtlrobust {name}", description=COMMANDS[name][1])
    module.add_arguments(parser)
    args = parser.parse_args(argv[1:])
    try:
        return int(module.run(args) or 0)
    except Exception as e:
        if debug or not is_user_error(e):
            raise
        print(f"mtlrobust {name}: error: {one_line(e)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
