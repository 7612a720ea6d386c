"""The plan model: a Plan (models, evaluations, outputs), its Outputs and the Section a planner reads."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from .. import ids as IDS
from .. import tasks as T
from .checks import StudyError, task_list

KINDS = ("single", "multi")  # attack kinds: only the main task attacked, or main and auxiliary task


@dataclass(frozen=True)
class Output:
    """One registered output: the study section enabling it, what it renders and the evaluations it reads."""

    name: str
    section: str
    renders: tuple[str, ...]  # "table" (NAME.csv + NAME.md) and/or "figure" (NAME.png + NAME.pdf)
    spec: dict  # layout, labels and cells; rendered by its layout (analysis/layouts/)
    evals: tuple[tuple[str, int, str], ...]  # sorted (model_id, epoch, attack) of its cells
    traced: bool = False  # it also reads each evaluation's per-step sidecar ({attack}.steps.csv)
    claims: bool = False  # its cell table feeds results/claims.csv

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
        return [n for n, o in self.outputs.items() if o.claims]

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

    def _listed(self, value, where: str, what: str, config_key: str):
        """``value`` when the top-level ``config_key`` lists it; else the error names both keys."""
        options = self.plan.config[config_key]
        if value not in options:
            raise StudyError(
                f"config key study.{self.name}{where}: {what} is not in config key {config_key} {options}"
            )
        return value

    def arch(self, value, key: str = "arch") -> str:
        return self._listed(value, f".{key}", f"architecture {value!r}", "architectures")

    def attack(self, value, key: str = "attack") -> str:
        if value not in self.plan.attacks:
            raise StudyError(
                f"config key study.{self.name}.{key}: attack {value!r} is not defined; expected one of the "
                f"names under attacks: {sorted(self.plan.attacks)}"
            )
        return value

    def weighting(self, value) -> str:
        return self._listed(value, "", f"weighting {value!r}", "weightings")

    def seed(self, value) -> int:
        return self._listed(value, ".seed", f"seed {value}", "seeds")

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
def seeds_of(s: Section) -> list[int]:
    """The section's training seeds: its ``seeds`` list (each cell then merges them) or its one ``seed``."""
    return [s.seed(v) for v in s.cfg.get("seeds") or [s.cfg["seed"]]]


def merged(cells: list) -> list:
    """One cell, or the list of its per-seed cells (``stats.seed_aggregate`` merges them in the tables)."""
    return cells[0] if len(cells) == 1 else cells


# ------------------------------------------------------------------------------------ more of the paper
def setting_of(s: Section) -> tuple[str, int, int, str | None]:
    """(arch, epoch, seed, attack) of a section that has those keys (an attack key only if it uses one)."""
    c = s.cfg
    attack = s.attack(c["attack"]) if "attack" in c else None
    return s.arch(c["arch"]), s.epoch(c["epoch"]), s.seed(c["seed"]), attack
