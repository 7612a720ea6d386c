"""``mtlrobust`` command line: one sub-command per stage, used by the workflow's rules.

Each sub-command lives in the module that does the work (``add_arguments(parser)`` and
``run(args)`` there); only the chosen module is imported, so ``mtlrobust synthesize`` does not pay
for importing torch.

Errors: a user's mistake (a bad flag value, a missing or malformed file, a full disk, a training that
diverged) ends as one line ``mtlrobust STAGE: error: MESSAGE`` and exit status 2, like argparse's own
errors; any other exception is a bug and keeps its traceback. ``mtlrobust --debug STAGE ...`` (or
``MTLROBUST_DEBUG=1``) shows the traceback of user errors too.

This module knows nothing of the warm start: for local runs the workflow puts a launcher in front of
the torch stages (``python -m mtlrobust.warmstart run -- python -m mtlrobust STAGE ...``) that runs
this same command line in a process forked from a worker that has imported torch already, or cold.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from pathlib import Path

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
    "recommend": (
        "mtlrobust.analysis.recommend_command",
        "which auxiliary task to add: proxy ranking vs target",
    ),
    "plan": ("mtlrobust.cost", "count a study's jobs and estimate its GPU-hours"),
}


# The paths each stage writes and reads, checked before it runs (``files.check_distinct``): an output that
# names another output or an input would destroy it. Words are argparse dests (a list option gives several
# paths); "out.md" is the file written next to --out with suffix .md, "out+.partial" --out with .partial
# appended, "log|out.csv" --log or, when it is not given, --out with .csv; "inputs_from@" the files listed in
# --inputs-from. JSON given as text (not a file name) and URLs are not paths.
PATHS = {
    "synthesize": ("out", ""),
    "download": ("dest archive_dir", "split_csv md5"),
    "prepare": ("out", "raw split_csv"),
    "train": (
        "out log|out.csv out+.partial out.resume.pt",
        "data resume_from resume_from.csv resume_from.resume.pt pretrained",
    ),
    "evaluate": ("out steps_out", "checkpoint data"),
    "aggregate": ("out", "inputs inputs_from inputs_from@"),
    "tables": ("out out.md cells", "spec inputs"),
    "figures": ("out out.pdf", "spec inputs"),
    "theory": ("out", "checkpoint data"),
    "claims": ("out out.md", "cells"),
    "recommend": ("out out.md", "spec configfile evals inputs inputs_from inputs_from@"),
    "plan": ("", ""),  # writes no file
}


def _flag(dest: str) -> str:
    return "--" + dest.replace("_", "-")


def _paths(args: argparse.Namespace, word: str) -> list[tuple[str, object]]:
    """(label, path) pairs of one word of ``PATHS`` for the parsed ``args``."""
    word, _, fallback = word.partition("|")
    if fallback:
        given = _paths(args, word)
        return given or [(f"{_flag(word)} (default: {label})", p) for label, p in _paths(args, fallback)]
    if word.endswith("@"):
        from .files import read_text

        pairs = _paths(args, word[:-1])
        try:
            return [(f"a file listed in {label}", line.strip()) for label, p in pairs if p
                    for line in read_text(p).splitlines() if line.strip()]  # fmt: skip
        except (OSError, ValueError):
            return []  # the stage reports the unreadable list
    dest, plus, appended = word.partition("+")
    dest, dot, suffix = dest.partition(".")
    values = getattr(args, dest, None)
    values = values if isinstance(values, list) else [values]
    values = [v for v in values if v and not str(v).lstrip().startswith("{") and "://" not in str(v)]
    if not (plus or dot):
        return [(_flag(dest), v) for v in values]
    near = "read next to" if dest == "resume_from" else "written next to"
    derived = f"{_flag(dest)} with {appended} appended" if plus else f"the .{suffix} {near} {_flag(dest)}"
    return [(derived, f"{v}{appended}" if plus else Path(v).with_suffix(f".{suffix}")) for v in values]


def check_paths(name: str, args: argparse.Namespace) -> None:
    """Refuse (ValueError naming both flags and the path) an output that is another output or an input."""
    from .files import check_distinct

    outputs, inputs = ([pair for w in words.split() for pair in _paths(args, w)] for words in PATHS[name])
    check_distinct(outputs, inputs)


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


def main(argv: list[str] | None = None) -> int:
    """Run one stage."""
    argv = list(sys.argv[1:] if argv is None else argv)
    top = argparse.ArgumentParser(prog="mtlrobust", description=__doc__.splitlines()[0].replace("``", ""))
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
    name, args = argv[0], None
    try:
        module = importlib.import_module(COMMANDS[name][0])
        parser = argparse.ArgumentParser(prog=f"mtlrobust {name}", description=COMMANDS[name][1])
        module.add_arguments(parser)
        args = parser.parse_args(argv[1:])
        check_paths(name, args)
        return int(module.run(args) or 0)
    except KeyboardInterrupt:  # Ctrl-C: outputs are written atomically, so nothing half-written remains
        if debug:
            raise
        print(f"mtlrobust {name}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        if debug or not is_user_error(e):
            raise
        msg = one_line(e)
        if isinstance(e, KeyError) and msg.isidentifier():  # a bare key: a spec or file lacks it
            spec = getattr(args, "spec", None)
            msg = f"--spec {spec[:60]}: missing key {msg!r}" if spec else f"missing key {msg!r}"
        print(f"mtlrobust {name}: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
