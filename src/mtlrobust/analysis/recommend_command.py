"""``mtlrobust recommend``: rank auxiliary tasks (``analysis.recommend``) from a spec or from a study's plan.

Apart from ``analysis.recommend`` because it reads a study: the study's planner reads the layouts, one of
which ranks with ``analysis.recommend``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .. import files
from .aggregate import input_paths
from .evaluations import untrained_models
from .recommend import VALUES, write
from .render import load_spec


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Which auxiliary task to add to each main task, as ranked by a cheap proxy setting, checked against "
        "the target setting. After a study has run: mtlrobust recommend --configfile config.yaml --out "
        "X.csv [--proxy-arch resnet18 --proxy-epoch 3 ...]: the pairs come from the study's recommend "
        "section (with the overrides below), the evaluations from --evals."
    )
    p.add_argument("--out", required=True, type=Path, help="the CSV to write (its .md is written next to it)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--configfile", type=Path, help="the study that was run, e.g. config.yaml")
    src.add_argument(
        "--spec",
        help='instead of a study: JSON (file or text) {"pairs": [{"main": "s", "aux": "d", "proxy": CELL, '
        '"target": CELL}, ...]}, CELL = [model_id, epoch, attack, attacked, task], with --inputs',
    )
    p.add_argument("--evals", type=Path, default=Path("results/evals"),
                   help="with --configfile: the study's evaluations (default: %(default)s)")  # fmt: skip
    p.add_argument(
        "--models",
        type=Path,
        default=Path("results/models.csv"),
        help="with --configfile: the study's model summary; candidates whose models do not beat the constant "
        "predictor are left out, as in the workflow (default: %(default)s, if there)",
    )
    p.add_argument("--inputs", nargs="*", default=[], type=Path, help="with --spec: evaluation CSVs")
    p.add_argument("--inputs-from", type=Path, help="with --spec: a file listing evaluation CSVs, one a line")
    g = p.add_argument_group("with --configfile, each overrides that key of the study's recommend section")
    g.add_argument("--proxy-arch", help="encoder of the cheap setting (schema default: resnet18)")
    g.add_argument("--proxy-epoch", type=int, help="its milestone (schema default: the final epoch)")
    g.add_argument("--target-arch", help="encoder the ranking is checked against (schema default: resnet50)")
    g.add_argument("--target-epoch", type=int, help="its milestone (schema default: the final epoch)")
    g.add_argument("--proxy-value", choices=list(VALUES), help="what the proxy ranks by (default: rel_vuln)")
    g.add_argument("--mains", help="main tasks ranked, as letters, e.g. sd (default: every candidate)")
    g.add_argument("--attack", help="the study's attack whose vulnerability is ranked (default: pgd)")
    g.add_argument("--attacked", choices=["single", "multi"], help="attack the main task alone or both")


# --flag -> key of the study's recommend section
OVERRIDES = {"proxy_arch": ("proxy", "arch"), "proxy_epoch": ("proxy", "epoch"),
             "target_arch": ("target", "arch"), "target_epoch": ("target", "epoch"),
             "proxy_value": ("proxy_value",), "mains": ("mains",), "attack": ("attack",),
             "attacked": ("attacked",)}  # fmt: skip


def study_spec(args) -> tuple[dict, list[Path]]:
    """The spec of the study's recommend section with the command's overrides, and the evaluation CSVs
    of its cells under ``--evals`` (the workflow's ``{model_id}/epoch{E}/{attack}.csv``)."""
    import yaml

    from .. import study

    try:
        config = yaml.safe_load(args.configfile.read_text()) or {}
    except yaml.YAMLError as e:
        raise ValueError(f"--configfile {args.configfile}: not YAML ({e})") from None
    section = config.setdefault("study", {}).setdefault("recommend", {})
    section["enabled"] = True
    for flag, key in OVERRIDES.items():
        value = getattr(args, flag)
        if value is not None:
            node = section
            for k in key[:-1]:
                node = node.setdefault(k, {})
            node[key[-1]] = list(value) if flag == "mains" else value
    spec = study.build(study.validated(config)).outputs["recommend"].spec
    cells = {tuple(p[side][:3]) for p in spec["pairs"] for side in ("proxy", "target")}
    paths = [args.evals / m / f"epoch{e}" / f"{a}.csv" for m, e, a in sorted(cells)]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise ValueError(
            f"{len(missing)} of the {len(paths)} evaluation CSV(s) these settings rank are not there, e.g. "
            f"{missing[0]}; expected the study's evaluations under --evals {args.evals} (run the study first)"
        )
    return spec, paths


def run(args) -> int:
    files.check_output(args.out, "--out")
    untrained = frozenset()
    if args.configfile is not None:
        spec, paths = study_spec(args)
        untrained = untrained_models(args.models if args.models.is_file() else None)
    else:
        spec, paths = load_spec(args.spec), input_paths(args)
    res = write(spec, paths, args.out, untrained=untrained)
    print(f"wrote {args.out} and {args.out.with_suffix('.md')}: {len(res.mains)} main task(s)")
    return 0
