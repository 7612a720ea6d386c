"""The study plan as plain Python: config checks, models, evaluations and one registry of outputs.

``build(config)`` takes a schema-validated config (Snakemake's ``validate`` fills in the defaults) and returns
a :class:`Plan`: the checks the schema cannot express (raising :class:`StudyError` with the config key), the
attack specs, the models and milestones to train, the evaluations to run ((model_id, epoch, attack) ->
attacked subsets) and, per output, the cells it shows. The workflow (``workflow/rules/*.smk``) only turns the
plan into rules, ``mtlrobust plan`` counts its jobs and ``analysis/tables.py``/``figures.py`` render the cells
the plan gives them, so the layout of an output is written once, here.

A *cell* is ``[model_id, epoch, attack, attacked, task]`` (task ids, subsets joined by ``+`` in registry
order): one row of the reduced evaluation of one evaluation CSV. An output's *spec* (JSON) carries its cells,
labels and layout; each output depends on the evaluation CSVs of its own cells only.

Loading (``load`` for ``mtlrobust plan``, ``load_workflow`` for the Snakefile) reads a study file strictly
(``read``: size, encoding, aliases, duplicate keys), validates it against the schema shipped in the package
(``SCHEMA``, integers strictly) and builds the plan; every refusal is one line naming the file, line and key.

To add an output: write a planner ``def _name(s: Section) -> dict`` returning a spec of an existing layout
(grid, correlations, sweep, bars), register it in ``OUTPUTS`` and add its ``study.NAME`` section to the
schema.
"""

from __future__ import annotations

import copy
import itertools
import json
import math
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from . import ids as IDS
from . import tasks as T
from . import values

# The schema ships inside the package (package data), so an installed mtlrobust validates studies anywhere.
SCHEMA = resources.files(__package__).joinpath("schemas", "config.schema.yaml")
KINDS = ("single", "multi")


class StudyError(ValueError):
    """A study the schema accepts but that cannot run; the message names the config key."""


# ------------------------------------------------------------------------------------ value parsing
L2_MAX = 1000.0  # largest L2 eps/step size: an L2 radius may exceed 1 (the [0, 1]^d cube's corner is sqrt(d))


def budget(value, key: str, maximum: float = 1.0) -> float:
    """An eps/step size as a float in (0, maximum]: a number or an "8/255"-style string (values.budget)."""
    try:
        return values.budget(value, f"config key {key}", positive=True, maximum=maximum)
    except ValueError as e:
        raise StudyError(str(e)) from None


def task_list(value, key: str) -> list[str]:
    """Task letters/ids -> task ids (order kept as given), with the config key named in errors."""
    if value is not None and len(value) == 0:
        raise StudyError(f"config key {key}: expected a non-empty list of task letters, got []")
    try:
        return [t.id for t in T.parse(list(value))]
    except (KeyError, ValueError) as e:
        raise StudyError(f"config key {key}: {e.args[0]}") from None


def letter(task_id: str) -> str:
    return T.get(task_id).letter


def eps_label(eps: float) -> str:
    """8/255 for eps = 0.0313..., else the number."""
    k = eps * 255
    return f"{round(k)}/255" if eps > 0 and abs(k - round(k)) < 1e-6 else f"{eps:.4g}"


def attack_spec(name: str, a: dict) -> dict:
    """The ``--attack-json`` spec: only the keys the study sets (options flattened), budgets as floats.

    Every method keeps its own defaults for the rest; ``attacks.check_spec`` rejects what it cannot use.
    """
    from .attacks import METHODS, check_spec

    options = a.get("options") or {}
    clash = sorted(set(options) & (set(a) | {"name"}))
    if clash:
        raise StudyError(f"config key attacks.{name}.options: {clash} must be set outside options (or once)")
    spec = {"name": name, **{k: v for k, v in a.items() if k != "options"}, **options}
    known = spec["method"] in METHODS  # an unknown method: check_spec names it below
    l2 = (spec.get("norm") or (method_default(spec["method"], "norm") if known else None)) == "l2"
    for k in ("eps", "step_size"):
        if k in spec:
            spec[k] = budget(spec[k], f"attacks.{name}.{k}", L2_MAX if l2 else 1.0)
    if spec["method"] != "none" and "eps" not in spec:
        raise StudyError(
            f"config key attacks.{name}.eps: method {spec['method']!r} needs a perturbation budget, "
            "e.g. eps: 8/255"
        )
    try:
        check_spec(spec)
    except ValueError as e:
        raise StudyError(f"config key attacks.{name}: {e}") from None
    return spec


def method_default(method: str, key: str):
    """The default of an attack method's keyword (None when it has none, e.g. fgsm's steps)."""
    from .attacks import METHODS

    return METHODS[method].options().get(key)


def method_steps(spec: dict) -> int:
    """The steps one run of an attack spec takes (``Method.steps``: fgsm 1, none 0)."""
    from .attacks import METHODS

    return METHODS[spec["method"]].steps(spec)


# ------------------------------------------------------------------------------------ setting checks
# Dataset keys holding a path or URL: passed to the jobs as single shell words, so any character is safe
# there, but a control character, a leading '-' (read as a flag) or, in an input path, braces (read by
# Snakemake as a wildcard) cannot work.
PATH_KEYS = ("split_csv", "taskonomy.root", "taskonomy.url_template", "taskonomy.md5")


def check_settings(config: dict) -> None:
    """Values the schema lets through but no job can use, rejected before any job (naming the key)."""
    t = config["training"]
    per_arch = t.get("per_arch") or {}
    unused = [a for a in per_arch if a not in config["architectures"]]
    if unused:
        raise StudyError(
            f"config key training.per_arch: {unused} not in config key architectures "
            f"{config['architectures']}"
        )
    for prefix, v in [("training", t)] + [(f"training.per_arch.{a}", v) for a, v in per_arch.items()]:
        for key in ("lr", "lr_gamma"):
            if key in v and not math.isfinite(v[key]):
                raise StudyError(f"config key {prefix}.{key}: expected a finite number > 0, got {v[key]}")
        late = [m for m in v.get("lr_milestones", ()) if m >= t["epochs"]]
        if late:
            raise StudyError(
                f"config key {prefix}.lr_milestones: {late} never take effect with training.epochs="
                f"{t['epochs']} (the rate drops after a milestone's epoch); expected milestones < "
                "training.epochs"
            )
    check_paths(config["dataset"])
    check_splits(config)


def check_paths(ds: dict) -> None:
    """Path and URL keys of ``dataset``: usable as one command-line word (and the root as an input)."""
    for key in PATH_KEYS:
        value = ds
        for k in key.split("."):
            value = value[k]
        if value is None:
            continue
        if not value.strip() or any(ord(c) < 32 or ord(c) == 127 for c in value):
            raise StudyError(
                f"config key dataset.{key}: expected a path or URL without control characters, got {value!r}"
            )
        if value.startswith("-"):
            raise StudyError(f"config key dataset.{key}: {value!r} would read as a flag; write ./{value}")
    root = ds["taskonomy"]["root"]
    if root is not None and ("{" in root or "}" in root):
        raise StudyError(
            f"config key dataset.taskonomy.root: {root!r} has braces, which Snakemake reads as a wildcard in "
            "an input path; rename or link the folder"
        )
    template = ds["taskonomy"]["url_template"]
    if template is not None:
        from .data.download import check_template

        try:
            check_template(template)
        except ValueError as e:
            raise StudyError(f"config key dataset.taskonomy.url_template: {e}") from None
        if "{building}" not in template and len(ds["taskonomy"]["buildings"]) > 1:
            raise StudyError(
                f"config key dataset.taskonomy.url_template: {template!r} has no {{building}} but "
                f"dataset.taskonomy.buildings lists {len(ds['taskonomy']['buildings'])} buildings"
            )


def check_split_points(ds: dict) -> None:
    """split_point_val needs split_point_threshold below it; without it the paper's point split (val = test)
    is used, with a warning: settings chosen on val would be tuned on the test views."""
    thr, val = ds["split_point_threshold"], ds["split_point_val"]
    if val is not None and (thr is None or val <= thr):
        raise StudyError(
            f"config key dataset.split_point_val: {val} needs dataset.split_point_threshold below it (got "
            f"{thr}): train = point id < threshold, val = threshold <= id < split_point_val, test = the rest"
        )
    if thr is not None and val is None:
        warnings.warn(
            "dataset.split_point_threshold without dataset.split_point_val is the paper code's point split: "
            "val and test are the same views, so any setting chosen on val is tuned on the test views; set "
            "dataset.split_point_val for distinct val and test views",
            stacklevel=2,
        )


def check_splits(config: dict) -> None:
    """Synthetic data: the buildings exist and each split the jobs read has views (train: >= 2)."""
    ds = config["dataset"]
    thr = ds["split_point_threshold"]
    if ds["source"] != "synthetic" or (thr is None and ds["split_csv"] is not None):
        check_split_points(ds)
        return  # the real data (or a user's split CSV) are only known when prepared
    from .data.synthetic import building_names, split_assignment

    syn = ds["synthetic"]
    names = building_names(syn["buildings"])
    chosen = ds["buildings"] or names
    unknown = [b for b in chosen if b not in names]
    if unknown:
        raise StudyError(
            f"config key dataset.buildings: {unknown} are not synthetic buildings; expected some of {names} "
            f"(dataset.synthetic.buildings={syn['buildings']})"
        )
    points, per_point = syn["points"], syn["views"] * len(chosen)
    if thr is not None:
        if thr >= points:
            raise StudyError(
                f"config key dataset.split_point_threshold: {thr} puts every point in train and leaves val "
                f"and test empty (dataset.synthetic.points={points}: point ids 0..{points - 1}); expected 1 "
                f"to {points - 1}"
            )
        check_split_points(ds)
        val_end = ds["split_point_val"] or points
        if val_end >= points and ds["split_point_val"] is not None:
            raise StudyError(
                f"config key dataset.split_point_val: {val_end} leaves test empty (dataset.synthetic.points="
                f"{points}: point ids 0..{points - 1}); expected {thr + 1} to {points - 1}"
            )
        held_out = (points - thr) * per_point
        views = {"train": thr * per_point, "val": held_out, "test": held_out}
        if ds["split_point_val"] is not None:
            views.update(val=(val_end - thr) * per_point, test=(points - val_end) * per_point)
        key = "dataset.split_point_threshold"
    else:
        check_split_points(ds)
        flags = split_assignment(names)
        splits = ("train", "val", "test")
        views = {s: sum(flags[b][i] for b in chosen) * points * syn["views"] for i, s in enumerate(splits)}
        key = "dataset.buildings"
    for split in dict.fromkeys(("train", "val", config["evaluation"]["split"])):
        if views[split] == 0:
            raise StudyError(
                f"config key {key}: the {split} split gets no views (views per split {views} with buildings "
                f"{chosen}); training reads train and val, attacks evaluation.split"
            )
    if views["train"] < 2:
        raise StudyError(
            f"config key {key}: the train split gets {views['train']} view; training needs >= 2 "
            "(BatchNorm needs two samples per batch)"
        )


def check_eps_sweep(attacks: dict, names: list[str], key: str) -> None:
    """An eps sweep compares budgets only: one method and norm, a different eps per attack."""
    models = {(attacks[a]["method"], attacks[a].get("norm") or method_default(attacks[a]["method"], "norm"))
              for a in names}  # fmt: skip
    if len(models) > 1:
        raise StudyError(
            f"config key {key}: attacks {names} mix methods/norms {sorted(models, key=str)}; an eps sweep "
            "needs one method and norm"
        )
    eps = [attacks[a].get("eps") for a in names]
    if len(set(eps)) < len(eps):
        raise StudyError(f"config key {key}: attacks {names} repeat a budget (eps {eps}); expected one each")


def matched_l2_eps(eps_inf: float, resolution: int) -> float:
    """The budget-matched L2 radius of an L-inf budget: eps_inf * sqrt(d), the L2 norm of the L-inf ball's
    corners at the model's input size d = 3 x resolution^2 (the smallest L2 ball holding the L-inf one)."""
    return eps_inf * math.sqrt(3 * resolution * resolution)


def check_matched_l2(plan: Plan, attacks: dict[str, str], key: str) -> None:
    """rq1_norm's ``l2_matched`` attack: an L2 PGD whose eps is ``matched_l2_eps`` of the ``linf`` one's."""
    if "l2_matched" not in attacks:
        return
    if "linf" not in attacks:
        raise StudyError(f"config key {key}: l2_matched needs the linf attack it is matched to (label linf)")
    inf, l2 = (plan.attacks[attacks[k]] for k in ("linf", "l2_matched"))
    norm = l2.get("norm") or method_default(l2["method"], "norm")
    if norm != "l2" or "eps" not in inf or "eps" not in l2:
        raise StudyError(f"config key {key}.l2_matched: {attacks['l2_matched']!r} must be an L2 attack (eps)")
    want = matched_l2_eps(inf["eps"], plan.config["model"]["resolution"])
    if abs(l2["eps"] - want) > 0.005 * want:
        raise StudyError(
            f"config key {key}.l2_matched: attack {attacks['l2_matched']!r} has eps {l2['eps']:.4g}; the "
            f"budget-matched L2 radius of {attacks['linf']!r} (eps {inf['eps']:.4g} x sqrt(3 x "
            f"{plan.config['model']['resolution']}^2)) is {want:.4f}"
        )


# ------------------------------------------------------------------------------------ the plan
@dataclass(frozen=True)
class Output:
    """One registered output: the study section enabling it, what it renders and the evaluations it reads."""

    name: str
    section: str
    renders: tuple[str, ...]  # "table" (NAME.csv + NAME.md) and/or "figure" (NAME.png + NAME.pdf)
    spec: dict  # layout, labels and cells; see analysis/tables.py and analysis/figures.py
    evals: tuple[tuple[str, int, str], ...]  # sorted (model_id, epoch, attack) of its cells
    traced: bool = False  # it also reads each evaluation's per-step sidecar ({attack}.steps.csv)

    @property
    def spec_json(self) -> str:
        return json.dumps(self.spec, sort_keys=True, separators=(",", ":"))


@dataclass
class Plan:
    config: dict
    tasks: list[str]
    milestones: list[int]
    attacks: dict[str, dict]
    models: dict = field(default_factory=dict)  # model_id -> ids.ModelSpec
    epochs: dict = field(default_factory=dict)  # model_id -> milestones some output needs
    evals: dict = field(default_factory=dict)  # (model_id, epoch, attack) -> attacked subsets (tuples of ids)
    outputs: dict = field(default_factory=dict)  # name -> Output, registry order
    theory: dict | None = None  # Figure 1's model: model_id, epoch, norm, eps, orders
    adversarial: dict = field(default_factory=dict)  # setting name -> {attack: spec, tasks, share}
    traced: set = field(default_factory=set)  # (model_id, epoch, attack) whose steps an output reads

    @property
    def final_epoch(self) -> int:
        return self.config["training"]["epochs"]

    def need(self, spec: IDS.ModelSpec, epoch: int, attack: str, attacked) -> list[str]:
        """Record that an output needs `attack` on `spec` at `epoch` on `attacked` tasks; the subset's key."""
        subset = tuple(t.id for t in T.canonical(attacked))
        self.models[spec.id] = spec
        self.epochs.setdefault(spec.id, set()).add(epoch)
        self.evals.setdefault((spec.id, epoch, attack), set()).add(subset)
        return "+".join(subset)

    def tables(self) -> list[str]:
        return [n for n, o in self.outputs.items() if "table" in o.renders]

    def figures(self) -> list[str]:
        return [n for n, o in self.outputs.items() if "figure" in o.renders]

    def claims_sources(self) -> list[str]:
        """The enabled outputs whose cell tables ``results/claims.csv`` judges (none: no claims output)."""
        return [n for n in CLAIMS_SOURCES if n in self.outputs]

    def attack_json(self, name: str) -> str:
        """The canonical ``--attack-json`` of one attack."""
        return json.dumps(self.attacks[name], sort_keys=True)

    def previous_epoch(self, model_id: str, epoch: int) -> int | None:
        """The model's previous needed milestone (its training resumes from it)."""
        earlier = [e for e in self.epochs.get(model_id, ()) if e < epoch]
        return max(earlier) if earlier else None


# ------------------------------------------------------------------------------------ section checks
class Section:
    """One ``study.NAME`` section: its checked values and the cells its output shows."""

    def __init__(self, plan: Plan, name: str):
        self.plan, self.name, self.cfg = plan, name, plan.config["study"][name]

    def tasks(self, key: str = "tasks") -> list[str]:
        """The section's task subset (default: the top-level tasks), checked against them."""
        value = self.cfg.get(key)
        if value is None:
            return list(self.plan.tasks)
        ids = task_list(value, f"study.{self.name}.{key}")
        extra = [t for t in ids if t not in self.plan.tasks]
        if extra:
            raise StudyError(
                f"config key study.{self.name}.{key}: task(s) {T.letters(extra)!r} are not among the study's "
                f"tasks {T.letters(self.plan.tasks)!r} (config key tasks)"
            )
        return ids

    def mains(self, tasks: list[str]) -> list[str]:
        value = self.cfg.get("mains")
        if value is None:
            return list(tasks)
        ids = task_list(value, f"study.{self.name}.mains")
        extra = [t for t in ids if t not in tasks]
        if extra:
            raise StudyError(
                f"config key study.{self.name}.mains: main task(s) {T.letters(extra)!r} are not among the "
                f"tasks {T.letters(tasks)!r}; expected a subset of them"
            )
        return ids

    def epoch(self, value, key: str = "epoch") -> int:
        p = self.plan
        e = p.final_epoch if value is None else int(value)
        if e not in p.milestones:
            raise StudyError(
                f"config key study.{self.name}.{key}: epoch {e} is not a checkpoint; expected one of "
                f"training.milestones {p.milestones} (training.epochs={p.final_epoch})"
            )
        return e

    def arch(self, value, key: str = "arch") -> str:
        archs = self.plan.config["architectures"]
        if value not in archs:
            raise StudyError(
                f"config key study.{self.name}.{key}: architecture {value!r} is not in config key "
                f"architectures {archs}"
            )
        return value

    def attack(self, value, key: str = "attack") -> str:
        if value not in self.plan.attacks:
            raise StudyError(
                f"config key study.{self.name}.{key}: attack {value!r} is not defined; expected one of the "
                f"names under attacks: {sorted(self.plan.attacks)}"
            )
        return value

    def weighting(self, value) -> str:
        weightings = self.plan.config["weightings"]
        if value not in weightings:
            raise StudyError(
                f"config key study.{self.name}: weighting {value!r} is not in config key weightings "
                f"{weightings}"
            )
        return value

    def seed(self, value) -> int:
        seeds = self.plan.config["seeds"]
        if value not in seeds:
            raise StudyError(
                f"config key study.{self.name}.seed: seed {value} is not in config key seeds {seeds}"
            )
        return value

    def model(self, arch, weighting, tasks, seed, main, adversarial=None) -> IDS.ModelSpec:
        try:
            spec = IDS.model_spec(arch, weighting, list(tasks), seed, main=main, adversarial=adversarial)
            T.task_weights(spec.tasks, spec.weighting, main=spec.main)
        except (KeyError, ValueError) as e:
            raise StudyError(
                f"config: cannot build model {arch}/{weighting}/{T.letters(tasks)}: {e.args[0]}"
            ) from None
        return spec

    def cell(self, spec: IDS.ModelSpec, epoch: int, attack: str, attacked, task: str) -> list:
        return [spec.id, epoch, attack, self.plan.need(spec, epoch, attack, attacked), task]

    def pair(self, arch, weighting, seed, epoch, attack, main, aux, kind, adversarial=None) -> list:
        """Main-task cell of the (main, aux) model; the single-task model (single attack) when aux == main.
        ``adversarial``: the model trained under that ``training.adversarial`` setting."""
        if aux == main:
            spec = self.model(arch, "uniform", [main], seed, main, adversarial)
            return self.cell(spec, epoch, attack, [main], main)
        spec = self.model(arch, weighting, [main, aux], seed, main, adversarial)
        return self.cell(spec, epoch, attack, [main] if kind == "single" else [main, aux], main)


# ------------------------------------------------------------------------------------ the outputs
def _seeds(s: Section) -> list[int]:
    """The section's training seeds: its ``seeds`` list (each cell then merges them) or its one ``seed``."""
    return [s.seed(v) for v in s.cfg.get("seeds") or [s.cfg["seed"]]]


def _merge(cells: list) -> list:
    """One cell, or the list of its per-seed cells (``stats.seed_aggregate`` merges them in the tables)."""
    return cells[0] if len(cells) == 1 else cells


def _grid(s: Section, title: str, note: str, row_keys, attack_of, kind_of, pgd_of=lambda rk: None) -> dict:
    """Rows: row key x main task; columns: weighting:aux; the diagonal is the single-task model.

    ``pgd_of(row key)``: the PGD attack each cell of the row is compared with (same model and attacked
    tasks), or None."""
    tasks = s.tasks()
    mains = s.mains(tasks)
    arch, epoch, seeds = s.arch(s.cfg["arch"]), s.epoch(s.cfg["epoch"]), _seeds(s)
    weightings = [s.weighting(w) for w in s.cfg["weightings"]]
    columns = [f"{w}:{letter(a)}" for w in weightings for a in tasks]
    rows = []
    for rk in row_keys:
        for m in mains:
            cells = [
                _merge([s.pair(arch, w, sd, epoch, attack_of(rk), m, a, kind_of(rk)) for sd in seeds])
                for w in weightings
                for a in tasks
            ]
            emph = [f"{w}:{letter(m)}" for w in weightings]
            row = {"labels": [rk, letter(m)], "cells": cells, "emphasize": emph, "kind": kind_of(rk),
                   "attack": attack_of(rk)}  # fmt: skip
            pgd = pgd_of(rk)
            if pgd is not None:
                row["pgd_cells"] = [
                    _merge([s.pair(arch, w, sd, epoch, pgd, m, a, kind_of(rk)) for sd in seeds])
                    for w in weightings
                    for a in tasks
                ]
            rows.append(row)
    title = title.format(arch=arch, epoch=epoch)
    return {"layout": "grid", "title": title, "note": note, "label_columns": ["attack", "main"],
            "columns": columns, "value": "rel_vuln", "rows": rows}  # fmt: skip


def _table1(s: Section) -> dict:
    attack = s.attack(s.cfg["attack"])
    return _grid(
        s,
        f"Table 1: relative task vulnerability, {attack} ({{arch}}, epoch {{epoch}})",
        "Rows: attack kind (single = only the main task attacked, multi = main and auxiliary task) and "
        "main task; columns: weighting:auxiliary task. Lower is more robust. Italic diagonal: the "
        "single-task model under the single-task attack. '-' = not evaluated.",
        KINDS,
        lambda kind: attack,
        lambda kind: kind,
    )


def method_captions(specs: dict[str, dict]) -> str:
    """What a table's note adds for its attacks (name -> spec), one ``Method.caption`` per method shown."""
    from .attacks import METHODS

    named = {}
    for name, spec in specs.items():
        named.setdefault(spec["method"], []).append((name, spec))
    captions = [METHODS[m].caption(pairs) for m, pairs in named.items() if METHODS[m].caption]
    return "".join(f" {c}" for c in captions)


def is_reference(spec: dict) -> bool:
    """Whether an attack spec runs the method (PGD) others are compared with (``Method.reference``)."""
    from .attacks import METHODS

    return METHODS[spec["method"]].reference


def equal_pgd(plan: Plan, attack: str, prefer: str | None = None) -> str | None:
    """A PGD attack of the study at the same norm, eps and steps as ``attack`` (``prefer`` first)."""
    a = plan.attacks[attack]

    def key(spec):
        m = spec["method"]
        return (spec.get("norm") or method_default(m, "norm"), spec.get("eps"),
                spec.get("steps") or method_default(m, "steps"))  # fmt: skip

    same = [n for n, p in plan.attacks.items() if is_reference(p) and key(p) == key(a)]
    return prefer if prefer in same else (sorted(same)[0] if same else None)


def _table2(s: Section) -> dict:
    attacks = [s.attack(a, "attacks") for a in s.cfg["attacks"]]
    t1 = s.plan.config["study"]["table1"]
    prefer = t1["attack"] if t1["enabled"] else None
    pgd = {a: None if is_reference(s.plan.attacks[a]) else equal_pgd(s.plan, a, prefer) for a in attacks}
    lacking = [a for a in attacks if pgd[a] is None and not is_reference(s.plan.attacks[a])]
    spec = _grid(
        s,
        "Table 2: relative task vulnerability, adaptive attacks ({arch}, epoch {epoch})",
        "Rows: attack and main task (main and auxiliary task attacked together); columns: "
        "weighting:auxiliary task. Lower is more robust. Italic diagonal: the single-task model under the "
        "same attack.",
        attacks,
        lambda attack: attack,
        lambda attack: "multi",
        lambda attack: pgd[attack],
    )
    spec["note"] += method_captions({a: s.plan.attacks[a] for a in attacks})
    compared = ", ".join(f"{a} with {p}" for a, p in pgd.items() if p)
    spec["pgd_note"] = " ".join(
        [f"Compared with PGD at the same norm, eps and steps: {compared}." if compared else "",
         f"No PGD attack at the same norm, eps and steps in this study for {', '.join(lacking)}: no mark "
         "against PGD there." if lacking else ""]
    ).strip()  # fmt: skip
    return spec


def _table3(s: Section) -> dict:
    c = s.cfg
    tasks = s.tasks()
    mains = s.mains(tasks)
    seed, attack, w = s.seed(c["seed"]), s.attack(c["attack"]), s.weighting(c["weighting"])
    ep, ar, cl = c["epochs"], c["archs"], c["clean"]
    e_arch, e_proxy = s.arch(ep["arch"], "epochs.arch"), s.epoch(ep["proxy"], "epochs.proxy")
    e_target = s.epoch(ep["target"], "epochs.target")
    a_proxy, a_target = s.arch(ar["proxy"], "archs.proxy"), s.arch(ar["target"], "archs.target")
    a_epoch = s.epoch(ar["epoch"], "archs.epoch")
    c_arch, c_epoch = s.arch(cl["arch"], "clean.arch"), s.epoch(cl["epoch"], "clean.epoch")
    kind = c["attacked"]
    pairs = [(m, a) for m in mains for a in tasks]

    def series(arch, epoch, value="rel_vuln"):
        return {"value": value, "cells": [s.pair(arch, w, seed, epoch, attack, m, a, kind) for m, a in pairs]}

    rows = [
        (f"{e_arch} at epoch {e_proxy}", f"{e_arch} at epoch {e_target}",
         series(e_arch, e_proxy), series(e_arch, e_target)),
        (f"{a_proxy} at epoch {a_epoch}", f"{a_target} at epoch {a_epoch}",
         series(a_proxy, a_epoch), series(a_target, a_epoch)),
        (f"clean error ({c_arch}, epoch {c_epoch})", f"relative vulnerability ({c_arch}, epoch {c_epoch})",
         series(c_arch, c_epoch, "clean_error"), series(c_arch, c_epoch)),
    ]  # fmt: skip
    return {
        "layout": "correlations",
        "title": f"Table 3: Pearson correlation of proxies with the relative vulnerability ({attack}, "
        f"{kind}-task attacks, {w} models)",
        "note": "n = number of (main, auxiliary) cells present in both settings; '-' = undefined "
        "(fewer than 3 cells or a constant input).",
        "rows": [
            {"key": k, "proxy": p, "target": t, "x": x, "y": y}
            for k, (p, t, x, y) in zip(("epochs", "arch", "clean"), rows, strict=True)
        ],
    }


def _figure1(s: Section) -> dict:
    c = s.cfg
    orders = [task_list(o, "study.figure1.orders") for o in c["orders"]]
    for o, raw in zip(orders, c["orders"], strict=True):
        unknown = [t for t in o if t not in s.plan.tasks]
        if unknown:
            raise StudyError(
                f"config key study.figure1.orders: order {raw!r} uses task(s) {T.letters(unknown)!r} "
                f"that are not among the study's tasks {T.letters(s.plan.tasks)!r}"
            )
        if set(o) != set(orders[0]):
            raise StudyError(
                f"config key study.figure1.orders: order {raw!r} is not a permutation of {c['orders'][0]!r}; "
                "all orders must enable the same tasks (one model)"
            )
    arch, epoch, seed = s.arch(c["arch"]), s.epoch(c["epoch"]), s.seed(c["seed"])
    attack = s.attack(c["attack"])
    spec = s.model(arch, "uniform", orders[0], seed, orders[0][0])
    panels = [
        {"order": T.letters(o), "letters": [letter(t) for t in o],
         "cells": [s.cell(spec, epoch, attack, o[: i + 1], o[0]) for i in range(len(o))]}
        for o in orders
    ]  # fmt: skip
    if c["theory"]:
        a = s.plan.attacks[attack]
        if "eps" not in a:
            raise StudyError(
                f"config key study.figure1.theory: the theory needs an attack with eps; attack {attack!r} "
                f"(method {a['method']!r}) has none"
            )
        norm = a.get("norm") or method_default(a["method"], "norm")
        s.plan.theory = dict(model_id=spec.id, epoch=epoch, norm=norm, eps=a["eps"], orders=list(c["orders"]))
    return {
        "layout": "bars",
        "value": "adv_vulnerability",
        "title": f"Marginal adversarial vulnerability: {spec.id}, epoch {epoch}, {attack}\n"
        "(dark: summed objective, light: 1/N weighting; whiskers: 95 % intervals; in brackets: change when "
        "the task is added, red/green = significantly more/less vulnerable)",
        "panels": panels,
    }


def _sweep(s: Section, axis: str, settings) -> dict:
    """Uniform pair models vs single-task models of the section's tasks, per (label, arch, epoch, attack)."""
    tasks = s.tasks()
    seeds = _seeds(s)
    rows = []
    for label, arch, epoch, attack in settings:
        for m in tasks:
            base = _merge([s.pair(arch, "uniform", sd, epoch, attack, m, m, "single") for sd in seeds])
            for a in tasks:
                if a == m:
                    continue
                for kind in KINDS:
                    rows.append(
                        {"value": label, "attack": attack, "arch": arch, "epoch": epoch, "main": letter(m),
                         "aux": letter(a), "kind": kind, "base": base,
                         "cell": _merge([s.pair(arch, "uniform", sd, epoch, attack, m, a, kind)
                                         for sd in seeds])}
                    )  # fmt: skip
    return {
        "layout": "sweep",
        "sweep": s.name,
        "axis": axis,
        "title": f"{s.name}: multi-task vs single-task models",
        "rows": rows,
    }


def _rq1_norm(s: Section) -> dict:
    arch, epoch = s.arch(s.cfg["arch"]), s.epoch(s.cfg["epoch"])
    attacks = {k: s.attack(v, f"attacks.{k}") for k, v in s.cfg["attacks"].items()}
    check_matched_l2(s.plan, attacks, "study.rq1_norm.attacks")
    # settings in label order: the study file's key order must not change the table
    return _sweep(s, "attack norm", [(k, arch, epoch, attacks[k]) for k in sorted(attacks)])


def _rq1_eps(s: Section) -> dict:
    arch, epoch = s.arch(s.cfg["arch"]), s.epoch(s.cfg["epoch"])
    attacks = [s.attack(a, "attacks") for a in s.cfg["attacks"]]
    check_eps_sweep(s.plan.attacks, attacks, "study.rq1_eps.attacks")
    labels = [eps_label(s.plan.attacks[a]["eps"]) if "eps" in s.plan.attacks[a] else a for a in attacks]
    return _sweep(
        s, "perturbation budget eps", [(lab, arch, epoch, a) for lab, a in zip(labels, attacks, strict=True)]
    )


def _rq1_arch(s: Section) -> dict:
    archs = [s.arch(a, "archs") for a in s.cfg["archs"]]
    epoch, attack = s.epoch(s.cfg["epoch"]), s.attack(s.cfg["attack"])
    return _sweep(s, "encoder", [(a, a, epoch, attack) for a in archs])


def _rq1_epochs(s: Section) -> dict:
    arch, attack = s.arch(s.cfg["arch"]), s.attack(s.cfg["attack"])
    epochs = [s.epoch(e, "epochs") for e in (s.cfg["epochs"] or s.plan.milestones)]
    return _sweep(s, "training epochs", [(str(e), arch, e, attack) for e in epochs])


# ------------------------------------------------------------------------------------ more of the paper
def _setting(s: Section) -> tuple[str, int, int, str | None]:
    """(arch, epoch, seed, attack) of a section that has those keys (an attack key only if it uses one)."""
    c = s.cfg
    attack = s.attack(c["attack"]) if "attack" in c else None
    return s.arch(c["arch"]), s.epoch(c["epoch"]), s.seed(c["seed"]), attack


def _recommend(s: Section) -> dict:
    """Per main task, auxiliary tasks ranked by a proxy setting vs the target (``analysis/recommend.py``)."""
    c = s.cfg
    tasks = s.tasks()
    mains = s.mains(tasks)
    if len(tasks) < 2:
        raise StudyError(
            f"config key study.recommend.tasks: {T.letters(tasks)!r} gives each main task one candidate; "
            "ranking needs at least 2 tasks"
        )
    seed, attack, w = s.seed(c["seed"]), s.attack(c["attack"]), s.weighting(c["weighting"])
    kind = c["attacked"]
    p_arch, p_epoch = s.arch(c["proxy"]["arch"], "proxy.arch"), s.epoch(c["proxy"]["epoch"], "proxy.epoch")
    t_arch = s.arch(c["target"]["arch"], "target.arch")
    t_epoch = s.epoch(c["target"]["epoch"], "target.epoch")
    if (p_arch, p_epoch) == (t_arch, t_epoch) and c["proxy_value"] == "rel_vuln":
        raise StudyError(
            f"config key study.recommend.proxy: the proxy ({p_arch}, epoch {p_epoch}) is the target itself; "
            "expected a cheaper encoder or an earlier milestone (or proxy_value: clean_error)"
        )
    proxy, target = f"{p_arch} at epoch {p_epoch}", f"{t_arch} at epoch {t_epoch}"
    pairs = [
        {"main": letter(m), "aux": letter(a),
         "proxy": s.pair(p_arch, w, seed, p_epoch, attack, m, a, kind),
         "target": s.pair(t_arch, w, seed, t_epoch, attack, m, a, kind)}
        for m in mains
        for a in tasks
    ]  # fmt: skip
    return {
        "layout": "recommend",
        "title": f"Which auxiliary task to add: {proxy} as a proxy for {target} ({attack}, {kind}-task "
        f"attacks, {w} models)",
        "proxy": proxy,
        "target": target,
        "proxy_value": c["proxy_value"],
        "pairs": pairs,
    }


def _supp_tables(s: Section) -> dict:
    """Supplementary Tables 2-6: per encoder, clean error and single/multi-task attack blocks (main x aux)."""
    c = s.cfg
    tasks = s.tasks()
    mains = s.mains(tasks)
    archs = [s.arch(a, "archs") for a in (c["archs"] or s.plan.config["architectures"])]
    epoch, seed, attack = s.epoch(c["epoch"]), s.seed(c["seed"]), s.attack(c["attack"])
    w = s.weighting(c["weighting"])
    tables = []
    for arch in archs:
        rows = {
            kind: [{"main": letter(m), "cells": [s.pair(arch, w, seed, epoch, attack, m, a, kind)
                                                 for a in tasks]} for m in mains]
            for kind in KINDS
        }  # fmt: skip
        blocks = [("clean", "clean_error", rows["single"]), ("single", "rel_vuln", rows["single"]),
                  ("multi", "rel_vuln", rows["multi"])]  # fmt: skip
        tables.append({"arch": arch, "blocks": [{"block": b, "value": v, "rows": r} for b, v, r in blocks]})
    return {
        "layout": "supplementary",
        "title": f"Relative task vulnerability per encoder ({attack}, epoch {epoch}, {w} models)",
        "note": "Rows: main task evaluated; columns: auxiliary task (italic diagonal: the single-task "
        "model). clean: clean error of the main task (1 - mIoU for s, MSE otherwise); single: relative "
        "vulnerability when only the main task is attacked; multi: main and auxiliary task attacked. Lower "
        "is better. '-' = not evaluated.",
        "columns": [letter(a) for a in tasks],
        "tables": tables,
    }


def _figure1_orders(s: Section) -> dict:
    """Figure 1 for every order in which a task set of one model is enabled (capped at max_orders)."""
    c = s.cfg
    model = s.tasks("model")
    chosen = model if c["tasks"] is None else s.tasks("tasks")
    outside = [t for t in chosen if t not in model]
    if outside or len(set(chosen)) != len(chosen):
        raise StudyError(
            f"config key study.figure1_orders.tasks: {T.letters(chosen)!r} must be distinct tasks of the "
            f"model {T.letters(model)!r} (study.figure1_orders.model)"
        )
    arch, epoch, seed, attack = _setting(s)
    spec = s.model(arch, "uniform", model, seed, model[0])
    total = math.factorial(len(chosen))
    orders = list(itertools.islice(itertools.permutations(chosen), c["max_orders"]))
    panels = [
        {"order": T.letters(o), "letters": [letter(t) for t in o],
         "cells": [s.cell(spec, epoch, attack, o[: i + 1], o[0]) for i in range(len(o))]}
        for o in orders
    ]  # fmt: skip
    shown = "every order" if len(orders) == total else f"the first {len(orders)} of {total} orders"
    return {
        "layout": "bars",
        "value": "adv_vulnerability",
        "title": f"Marginal adversarial vulnerability, {shown} of {T.letters(chosen)}\n{spec.id}, epoch "
        f"{epoch}, {attack}"
        "\nwhiskers: 95 % intervals; in brackets: change when the task is added,\n"
        "red/green = significantly more/less vulnerable",
        "ncols": min(len(orders), max(2, math.ceil(math.sqrt(len(orders))))),
        "panels": panels,
    }


def _table_sets(s: Section) -> dict:
    """Tables 1-2 over models with more than two tasks: columns = auxiliary task sets of the given sizes."""
    c = s.cfg
    tasks = s.tasks()
    mains = s.mains(tasks)
    arch, epoch, seed = _setting(s)[:3]
    attacks = [s.attack(a, "attacks") for a in c["attacks"]]
    weightings = [s.weighting(w) for w in c["weightings"]]
    sizes = sorted(set(c["sizes"]))
    if sizes[-1] > len(tasks):
        raise StudyError(
            f"config key study.table_sets.sizes: a model of {sizes[-1]} tasks cannot be formed from the "
            f"{len(tasks)} task(s) {T.letters(tasks)!r} (study.table_sets.tasks)"
        )
    # auxiliary sets as Tables 1-2's columns: {main} alone is the single-task model (the diagonal)
    combos = [a for k in sizes for a in itertools.combinations(tasks, k - 1)]
    combos = combos if 2 in sizes else [(m,) for m in mains] + combos
    aux_sets = [a for a in dict.fromkeys(combos) if any(m not in a or a == (m,) for m in mains)]

    def cell(w, attack, kind, m, aux):
        if aux == (m,):
            return s.pair(arch, w, seed, epoch, attack, m, m, kind)
        if m in aux or len(aux) + 1 not in sizes:
            return None
        spec = s.model(arch, w, [m, *aux], seed, m)
        return s.cell(spec, epoch, attack, [m] if kind == "single" else [m, *aux], m)

    columns = [f"{w}:{T.letters(a)}" for w in weightings for a in aux_sets]
    rows = [
        {"labels": [attack, kind, letter(m)], "kind": kind, "attack": attack,
         "emphasize": [f"{w}:{letter(m)}" for w in weightings],
         "cells": [cell(w, attack, kind, m, a) for w in weightings for a in aux_sets]}
        for attack in attacks
        for kind in c["kinds"]
        for m in mains
    ]  # fmt: skip
    return {
        "layout": "grid",
        "title": f"Relative task vulnerability of models with {', '.join(map(str, sizes))} tasks ({arch}, "
        f"epoch {epoch})",
        "note": "Rows: attack, attack kind (single = only the main task attacked, multi = every task of the "
        "model) and main task; columns: weighting:auxiliary tasks trained with the main task. Lower is more "
        "robust. Italic diagonal: the single-task model under the same attack. '-' = the main task is among "
        "the auxiliary tasks, or not evaluated.",
        "label_columns": ["attack", "kind", "main"],
        "columns": columns,
        "value": "rel_vuln",
        "rows": rows,
    }


def _figure1_retrained(s: Section) -> dict:
    """Supplementary section 3.3: one model trained per prefix of an order (tasks added one by one)."""
    c = s.cfg
    key = "study.figure1_retrained.orders"
    orders = []
    for raw in c["orders"]:
        o = task_list(raw, key)
        if any(t not in s.plan.tasks for t in o):
            raise StudyError(
                f"config key {key}: order {raw!r} uses tasks outside the study's tasks "
                f"{T.letters(s.plan.tasks)!r} (config key tasks)"
            )
        orders.append(o)
    arch, epoch, seed, attack = _setting(s)
    panels = [
        {"order": f"{T.letters(o)}, {w}", "letters": [letter(t) for t in o],
         "cells": [s.cell(s.model(arch, w, o[: i + 1], seed, o[0]), epoch, attack, o[: i + 1], o[0])
                   for i in range(len(o))]}
        for w in (s.weighting(w) for w in c["weightings"])
        for o in orders
    ]  # fmt: skip
    return {
        "layout": "bars",
        "value": "adv_vulnerability",
        "title": f"Tasks added one by one, one model trained per prefix\n{arch}, epoch {epoch}, {attack}"
        "\nwhiskers: 95 % intervals; in brackets: change when the task is added,\n"
        "red/green = significantly more/less vulnerable",
        "xlabel": "tasks trained and attacked (one model per bar)",
        "panels": panels,
    }


def _steps(s: Section) -> dict:
    """Supplementary Figs. 14-15: the main task's state after each step of one run of each attack, for the
    single-task model and a pair model attacked on the main task alone and on both tasks."""
    c = s.cfg
    arch, epoch, seed = s.arch(c["arch"]), s.epoch(c["epoch"]), s.seed(c["seed"])
    w = s.weighting(c["weighting"])
    attacks = [s.attack(a, "attacks") for a in c["attacks"]]
    counts = {}
    for a in attacks:
        spec = s.plan.attacks[a]
        counts[a] = method_steps(spec)
        if not counts[a]:
            raise StudyError(
                f"config key study.steps.attacks: attack {a!r} (method {spec['method']!r}) takes no steps"
            )
    marks = sorted(set(c["marks"] or [min(counts.values())]))
    beyond = [m for m in marks if m > min(counts.values())]
    if beyond:
        raise StudyError(
            f"config key study.steps.marks: {beyond} beyond the steps of attack(s) "
            f"{[a for a in attacks if counts[a] < beyond[0]]} (steps {counts}); expected marks <= "
            f"{min(counts.values())}"
        )
    raw = c["pairs"] or [T.letters(s.plan.tasks[:2])]
    panels = []
    for text in raw:
        pair = task_list(text, "study.steps.pairs")
        if len(pair) != 2 or pair[0] == pair[1] or any(t not in s.plan.tasks for t in pair):
            raise StudyError(
                f"config key study.steps.pairs: {text!r} must be two distinct tasks (main first) of the "
                f"study's tasks {T.letters(s.plan.tasks)!r}"
            )
        m, a = pair
        lm, la = letter(m), letter(a)
        single = s.model(arch, "uniform", [m], seed, m)
        both = s.model(arch, w, [m, a], seed, m)
        series = [(f"{lm} model, {lm} attacked", single, [m]), (f"{lm}{la} model, {lm} attacked", both, [m]),
                  (f"{lm}{la} model, {lm}{la} attacked", both, [m, a])]  # fmt: skip
        panels.append({
            "label": f"{lm}{la}", "main": lm,
            "series": [{"label": lab, "cells": [s.cell(spec, epoch, at, attacked, m) for at in attacks]}
                       for lab, spec, attacked in series],
        })  # fmt: skip
    return {
        "layout": "steps",
        "title": f"Vulnerability against attack steps ({arch}, epoch {epoch}; {', '.join(attacks)})",
        "attacks": attacks,
        "steps": [counts[a] for a in attacks],
        "marks": marks,
        "panels": panels,
    }


def adversarial_settings(config: dict, attacks: dict) -> dict:
    """``training.adversarial`` checked: name -> {attack: the attack's spec, tasks, share}."""
    out = {}
    for name, a in sorted((config["training"].get("adversarial") or {}).items()):
        key = f"config key training.adversarial.{name}.attack"
        if a["attack"] not in attacks:
            raise StudyError(
                f"{key}: attack {a['attack']!r} is not defined; expected one of the names under attacks: "
                f"{sorted(attacks)}"
            )
        if attacks[a["attack"]]["method"] == "none":
            raise StudyError(f"{key}: attack {a['attack']!r} (method none) crafts no adversarial example")
        out[name] = {"attack": attacks[a["attack"]], "tasks": a["tasks"], "share": float(a["share"])}
    return out


def _budget_of(s: Section, attack: str) -> tuple[str, float]:
    spec = s.plan.attacks[attack]
    return spec.get("norm") or method_default(spec["method"], "norm"), spec["eps"]


def _table_at(s: Section) -> dict:
    """Table 1's layout for the models adversarially trained under one ``training.adversarial`` setting
    next to the standard models with the same tasks (rows: training x attack x kind x main, plus the clean
    error of each main task), and per adversarially trained model the cells of its gradient-masking
    checks (``analysis/table_at.py``): PGD's loss after each step (traced), APGD vs PGD, the eps sweep and
    the unbounded attack."""
    c, plan = s.cfg, s.plan
    names = sorted(plan.adversarial)
    if not names:
        raise StudyError("config key study.table_at: needs a setting under training.adversarial (none given)")
    setting = c["setting"] or names[0]
    if setting not in names:
        raise StudyError(
            f"config key study.table_at.setting: {setting!r} is not under training.adversarial {names}"
        )
    tasks = s.tasks()
    mains = s.mains(tasks)
    arch, epoch, seeds = s.arch(c["arch"]), s.epoch(c["epoch"]), _seeds(s)
    weightings = [s.weighting(w) for w in c["weightings"]]
    attacks = [s.attack(a, "attacks") for a in c["attacks"]]
    by_method = {plan.attacks[a]["method"]: a for a in reversed(attacks)}
    if "pgd" not in by_method or "apgd" not in by_method:
        raise StudyError(
            f"config key study.table_at.attacks: {attacks} must include a pgd and an apgd attack (the "
            "masking check compares them)"
        )
    pgd, apgd = by_method["pgd"], by_method["apgd"]
    sweep = [s.attack(a, "eps_attacks") for a in c["eps_attacks"]]
    if sweep:
        check_eps_sweep(plan.attacks, sweep, "study.table_at.eps_attacks")
        sweep.sort(key=lambda a: _budget_of(s, a)[1])
    unbounded = s.attack(c["unbounded"], "unbounded") if c["unbounded"] else None
    if unbounded and _budget_of(s, unbounded) != ("linf", 1.0):
        raise StudyError(
            f"config key study.table_at.unbounded: attack {unbounded!r} has norm/eps "
            f"{_budget_of(s, unbounded)}; expected an L-inf attack with eps 1 (the whole input range)"
        )
    columns = [f"{w}:{letter(a)}" for w in weightings for a in tasks]

    def cells(attack, m, kind, adversarial):
        return [_merge([s.pair(arch, w, sd, epoch, attack, m, a, kind, adversarial) for sd in seeds])
                for w in weightings for a in tasks]  # fmt: skip

    rows = []
    for training, adv in (("standard", None), ("adversarial", setting)):
        for attack in attacks:
            for kind in c["kinds"]:
                for m in mains:
                    row = {"labels": [training, attack, kind, letter(m)], "training": training,
                           "attack": attack, "kind": kind, "main": m, "cells": cells(attack, m, kind, adv),
                           "emphasize": [f"{w}:{letter(m)}" for w in weightings]}  # fmt: skip
                    if adv:
                        row["std_cells"] = cells(attack, m, kind, None)
                    rows.append(row)
    grid = itertools.product(mains, weightings, tasks, seeds)
    checks = {}  # model id -> its checks (a single-task model appears once per weighting)
    for m, w, a, sd in grid:

        def one(attack, m=m, w=w, a=a, sd=sd):
            return s.pair(arch, w, sd, epoch, attack, m, a, "single", setting)

        checks.setdefault(one(pgd)[0], {
            "model_id": one(pgd)[0], "main": letter(m), "steps": {"cell": one(pgd)},
            "apgd": {"cells": [one(apgd), one(pgd)]}, "eps": {"cells": [one(at) for at in sweep]},
            "unbounded": {"cells": [one(unbounded)] if unbounded else []},
        })  # fmt: skip
    a_spec = plan.adversarial[setting]
    return {
        "layout": "adversarial",
        "title": f"Adversarial training ({setting}): relative task vulnerability, {', '.join(attacks)} "
        f"({arch}, epoch {epoch})",
        "setting": setting,
        "setting_text": f"training attack {a_spec['attack']['name']} on the {a_spec['tasks']} task(s), "
        f"share {a_spec['share']:g} of each batch",
        "label_columns": ["training", "attack", "kind", "main"],
        "columns": columns,
        "rows": rows,
        "checks": list(checks.values()),
    }


@dataclass(frozen=True)
class Entry:
    """How one output is planned (its section's cells) and rendered."""

    plan: Callable[[Section], dict]
    renders: tuple[str, ...]
    traced: bool = False  # its evaluations record the state after each attack step (mtlrobust.steptrace)


# The outputs whose cell tables (results/cells/NAME.csv) feed results/claims.csv (mtlrobust claims); the
# claims output is built whenever one of them is enabled.
CLAIMS_SOURCES = ("table1", "table2", "table3", "figure1", "rq1_norm", "rq1_eps", "rq1_arch", "table_at")

# Output name -> entry; the study section of the same name enables it (study.NAME.enabled).
OUTPUTS: dict[str, Entry] = {
    "table1": Entry(_table1, ("table",)),
    "table2": Entry(_table2, ("table",)),
    "table3": Entry(_table3, ("table",)),
    "figure1": Entry(_figure1, ("table", "figure")),
    "rq1_norm": Entry(_rq1_norm, ("table", "figure")),
    "rq1_eps": Entry(_rq1_eps, ("table", "figure")),
    "rq1_arch": Entry(_rq1_arch, ("table", "figure")),
    "rq1_epochs": Entry(_rq1_epochs, ("table", "figure")),
    "recommend": Entry(_recommend, ("table",)),
    "supp_tables": Entry(_supp_tables, ("table",)),
    "figure1_orders": Entry(_figure1_orders, ("table", "figure")),
    "table_sets": Entry(_table_sets, ("table",)),
    "figure1_retrained": Entry(_figure1_retrained, ("table", "figure")),
    "steps": Entry(_steps, ("table", "figure"), traced=True),
    "table_at": Entry(_table_at, ("table",), traced=True),
}


def cells_of(spec: dict) -> list[list]:
    """Every cell of a spec, whatever its layout."""
    out = []

    def walk(node):
        if isinstance(node, dict):
            for k, v in node.items():
                if k in ("cell", "base") or (k in ("proxy", "target") and isinstance(v, list)):
                    out.extend(v if v and isinstance(v[0], list) else [v])  # a cell or per-seed cells
                elif k in ("cells", "pgd_cells"):  # a cell, or a list of per-seed cells
                    for c in v:
                        if c is not None:
                            out.extend(c if c and isinstance(c[0], list) else [c])
                else:
                    walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(spec)
    return out


# ------------------------------------------------------------------------------------ build
def build(config: dict) -> Plan:
    """The plan of a schema-validated config; raises StudyError naming the key of the first problem."""
    tasks = task_list(config["tasks"], "tasks")
    train = config["training"]
    final = train["epochs"]
    milestones = sorted(set(train["milestones"]) | {final})
    if milestones[-1] > final:
        raise StudyError(
            f"config key training.milestones: milestone {milestones[-1]} is beyond training.epochs={final}; "
            f"expected milestones <= {final}"
        )
    for arch in config["architectures"]:
        if arch not in IDS.ARCHS:
            raise StudyError(
                f"config key architectures: unknown architecture {arch!r}; expected one of {IDS.ARCHS}"
            )
    check_settings(config)
    attacks = {name: attack_spec(name, a) for name, a in sorted(config["attacks"].items())}
    plan = Plan(config=config, tasks=tasks, milestones=milestones, attacks=attacks)
    plan.adversarial = adversarial_settings(config, attacks)
    for name, entry in OUTPUTS.items():
        if not config["study"][name]["enabled"]:
            continue
        spec = entry.plan(Section(plan, name))
        evals = tuple(sorted({(c[0], c[1], c[2]) for c in cells_of(spec)}))
        plan.outputs[name] = Output(name, name, entry.renders, spec, evals, entry.traced)
        if entry.traced:
            plan.traced.update(evals)
    return plan


# ------------------------------------------------------------------------------------ loading
MAX_STUDY_BYTES = 1 << 20  # a study file is a few kB: anything larger is a mistake (or an attack)
MAX_DEPTH = 32  # the schema nests 5 levels; deeper is a mistake, and deep nesting exhausts recursion
MAX_NODES = 20000  # values and collections: the paper's study has ~700; more only costs seconds to parse


def read(path) -> tuple[dict, dict[str, int]]:
    """A study file's mapping and the line of each key (dotted), refused before any schema check where it
    cannot be a study: over MAX_STUDY_BYTES, not UTF-8, a YAML syntax error, an alias (a few lines of nested
    aliases expand to billions of values once validated or copied), nesting deeper than MAX_DEPTH, more than
    MAX_NODES values, a duplicate key (YAML keeps the last silently) or not a mapping. Each error is one line
    starting PATH:LINE."""
    import yaml

    name = str(path)
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_STUDY_BYTES + 1)
    except OSError as e:
        raise StudyError(f"{name}: cannot read the study file: {e.strerror}") from None
    if len(data) > MAX_STUDY_BYTES:
        raise StudyError(f"{name}: larger than {MAX_STUDY_BYTES} bytes (1 MiB); a study file is a few kB")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise StudyError(
            f"{name}:{line}: byte 0x{data[e.start]:02x} at offset {e.start} is not UTF-8; save the study as "
            "UTF-8"
        ) from None
    loader_class = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    lines: dict[str, int] = {}
    try:
        _check_events(yaml.parse(text, Loader=loader_class), name)
        loader = loader_class(text)
        try:
            node = loader.get_single_node()
            if node is not None:
                _check_keys(node, "", name, lines)
            config = loader.construct_document(node) if node is not None else None
        finally:
            loader.dispose()
    except yaml.YAMLError as e:
        raise StudyError(_yaml_error(name, text, e)) from None
    if config is None:  # an empty file, or comments only: every key takes its default
        config = {}
    if not isinstance(config, dict):
        raise StudyError(
            f"{name}: expected a mapping of config keys (dataset:, tasks:, ...) at the top, got a "
            f"{type(config).__name__}"
        )
    return config, lines


def _check_events(events, name: str) -> None:
    """No alias, no nesting deeper than MAX_DEPTH, at most MAX_NODES values: checked on the parser's events,
    before any node exists."""
    import yaml

    depth = nodes = 0
    for event in events:
        if isinstance(event, yaml.NodeEvent):
            nodes += 1
            if nodes > MAX_NODES:
                m = event.start_mark
                raise StudyError(
                    f"{name}:{m.line + 1}:{m.column + 1}: more than {MAX_NODES} values; a study has a few "
                    "hundred"
                )
        if isinstance(event, yaml.AliasEvent):
            m = event.start_mark
            raise StudyError(
                f"{name}:{m.line + 1}:{m.column + 1}: YAML alias *{event.anchor} is not allowed in a study "
                "file (nested aliases expand exponentially); write the values out"
            )
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                m = event.start_mark
                raise StudyError(f"{name}:{m.line + 1}:{m.column + 1}: nested deeper than {MAX_DEPTH} levels")
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1


def _check_keys(node, path: str, name: str, lines: dict[str, int]) -> None:
    """Record the line of every key (``lines``, dotted) and refuse a key repeated in one mapping."""
    import yaml

    if isinstance(node, yaml.MappingNode):
        first: dict = {}
        for key_node, value in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else "?"
            dotted = f"{path}.{key}" if path else str(key)
            m = key_node.start_mark
            if key in first:
                raise StudyError(
                    f"{name}:{m.line + 1}:{m.column + 1}: duplicate key {dotted} (first at line "
                    f"{first[key]}); YAML would silently keep only the last value"
                )
            first[key] = lines[dotted] = m.line + 1
            _check_keys(value, dotted, name, lines)
    elif isinstance(node, yaml.SequenceNode):
        for value in node.value:
            _check_keys(value, path, name, lines)


def _yaml_error(name: str, text: str, e) -> str:
    """A YAML error as one line: PATH:LINE:COLUMN: problem (context)."""
    import yaml

    mark = getattr(e, "problem_mark", None)
    if mark is not None:
        where = f"{name}:{mark.line + 1}:{mark.column + 1}"
        problem = e.problem or "YAML error"
        context = getattr(e, "context", None)
        if context and e.context_mark is not None:
            problem += f" ({context} at line {e.context_mark.line + 1})"
        elif context:
            problem += f" ({context})"
    else:  # a reader error (a character YAML does not allow): its position is an index into the text
        position = getattr(e, "position", 0) or 0
        where = f"{name}:{text.count(chr(10), 0, position) + 1}"
        problem = getattr(e, "reason", None) or str(e)
    kind = "YAML error" if isinstance(e, yaml.constructor.ConstructorError) else "YAML syntax error"
    return f"{where}: {kind}: " + " ".join(str(problem).split())


def _schema(schema) -> dict:
    import yaml

    return yaml.load(schema.read_text(encoding="utf-8"), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


def validated(config: dict, schema=SCHEMA) -> dict:
    """``config`` checked against the schema, its defaults filled in (as Snakemake's ``validate``), with
    integers strictly: JSON Schema counts 4.0 as an integer, which a job's ``--batch-size 4.0`` then refuses
    after hours of training. The first error is one line naming the key."""
    from jsonschema import Draft202012Validator, exceptions, validators

    base = Draft202012Validator
    properties = base.VALIDATORS["properties"]

    def with_defaults(validator, props, instance, sub):
        if validator.is_type(instance, "object"):
            for key, prop in props.items():
                if "default" in prop:
                    instance.setdefault(key, copy.deepcopy(prop["default"]))
        yield from properties(validator, props, instance, sub)

    strict = base.TYPE_CHECKER.redefine(
        "integer", lambda _, x: isinstance(x, int) and not isinstance(x, bool)
    )
    validator = validators.extend(base, {"properties": with_defaults}, type_checker=strict)(_schema(schema))
    error = exceptions.best_match(validator.iter_errors(config))
    if error is not None:
        raise StudyError(_schema_error(error))
    return config


def _schema_error(e) -> str:
    """A schema error as one line naming the key (an unknown key by its own name)."""
    key = ".".join(str(p) for p in e.absolute_path)
    if e.validator == "additionalProperties" and e.validator_value is False and isinstance(e.instance, dict):
        known = e.schema.get("properties", {})
        extra = sorted((k for k in e.instance if k not in known), key=str)
        if extra:
            where = f"{key}.{extra[0]}" if key else str(extra[0])
            return f"config key {where}: unknown key; expected one of {sorted(known)}"
    message = " ".join(e.message.split())
    if len(message) > 300:
        message = message[:300] + " ..."
    return f"config key {key or '(top level)'}: {message}"


def _located(message: str, name: str, lines: dict[str, int]) -> str:
    """``message`` prefixed with ``PATH:LINE`` of the config key it names (or of its nearest parent key)."""
    m = re.match(r"config key ([^\s:]+)", message)
    key = m[1] if m else ""
    while key and key not in lines:
        key = key.rpartition(".")[0]
    return f"{name}:{lines[key]}: {message}" if key else f"{name}: {message}"


def check_inputs(config: dict) -> None:
    """A split CSV the study reads exists (no rule makes it): checked when a study file is loaded, relative to
    the working directory, as the prepare job reads it."""
    ds = config["dataset"]
    path = ds["split_csv"]
    if path is not None and ds["split_point_threshold"] is None and not Path(path).is_file():
        raise StudyError(
            f"config key dataset.split_csv: {path!r} is not a file (relative to {Path.cwd()}); expected the "
            "id,train,val,test CSV, or null for the raw folder's train_val_test_split.csv"
        )


def downloads(config: dict) -> bool:
    """Whether the study's raw data come from a Taskonomy download (no synthetic data, no existing root)."""
    ds = config["dataset"]
    return ds["source"] == "taskonomy" and ds["taskonomy"]["root"] is None


def raw_present(config: dict) -> bool:
    """The download's folder resources/{name}/raw (relative to the working directory) exists, not empty."""
    raw = Path("resources") / config["dataset"]["name"] / "raw"
    return raw.is_dir() and any(raw.iterdir())


def check_licence(config: dict) -> None:
    """A study that downloads Taskonomy must accept its licence, unless the raw folder is there already."""
    if downloads(config) and not config["dataset"]["taskonomy"]["agree_licence"] and not raw_present(config):
        raise StudyError(
            "config key dataset.taskonomy.agree_licence: false, but the study downloads Taskonomy into "
            f"resources/{config['dataset']['name']}/raw (not there yet); set it to true to accept the data "
            "licence (non-commercial research use, README 'Real Taskonomy'), or set dataset.taskonomy.root "
            "to an existing raw folder"
        )


def plan_of(config: dict, name: str, lines: dict[str, int], schema=SCHEMA) -> Plan:
    """Validate ``config`` in place, check its input files and build its plan; errors name PATH:LINE."""
    try:
        plan = build(validated(config, schema))
        check_inputs(config)
    except StudyError as e:
        raise StudyError(_located(str(e), name, lines)) from None
    return plan


def load(configfile, schema=SCHEMA) -> Plan:
    """The plan of a study file: ``read``, schema validation with defaults, ``build`` and ``check_inputs``."""
    config, lines = read(configfile)
    return plan_of(config, str(configfile), lines, schema)


def load_workflow(config: dict, configfiles, schema=SCHEMA) -> Plan:
    """The workflow's plan of the config Snakemake merged (``--config`` values included), after every study
    file it was given is read again with ``read``: Snakemake's own YAML loading accepts aliases and duplicate
    keys and reads files of any size, so the same checks as ``mtlrobust plan`` run before the schema's."""
    name, lines = "config", {}
    for path in configfiles:
        name, lines = str(path), read(path)[1]
    return plan_of(config, name, lines, schema)
