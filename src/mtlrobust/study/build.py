"""The plan of a checked config."""

from __future__ import annotations

from .. import ids as IDS
from ..analysis.layouts import LAYOUTS
from .attack_specs import adversarial_settings, attack_spec
from .checks import StudyError, check_settings, task_list
from .outputs import OUTPUTS
from .plan import Output, Plan, Section


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
        evals = tuple(sorted({(c[0], c[1], c[2]) for c in LAYOUTS[spec["layout"]].cells(spec)}))
        plan.outputs[name] = Output(name, name, entry.renders, spec, evals, entry.traced, entry.claims)
        if entry.traced:
            plan.traced.update(evals)
    return plan
