"""The study plan as plain Python: config checks, models, evaluations and one registry of outputs.

``build(config)`` takes a schema-validated config (Snakemake's ``validate`` fills in the defaults) and returns
a :class:`Plan`: the checks the schema cannot express (raising :class:`StudyError` with the config key), the
attack specs, the models and milestones to train, the evaluations to run ((model_id, epoch, attack) ->
attacked subsets) and, per output, the cells it shows. The workflow (``workflow/rules/*.smk``) only turns the
plan into rules, ``mtlrobust plan`` counts its jobs and ``analysis`` renders the cells the plan gives it.

A *cell* is ``[model_id, epoch, attack, attacked, task]`` (task ids, subsets joined by ``+`` in registry
order): one row of the reduced evaluation of one evaluation CSV. An output's *spec* (JSON) carries its cells,
labels and layout; each output depends on the evaluation CSVs of its own cells only.

Modules: ``checks`` (config checks), ``attack_specs`` (the study's attacks), ``plan`` (Plan, Output, Section),
``outputs`` (the registry ``OUTPUTS`` and one planner module per family of outputs: ``paper``, ``sweeps``,
``recommend``, ``supplementary``, ``steps``, ``adversarial``), ``build`` and ``read`` (strict YAML, schema,
``load``).
"""

from .attack_specs import matched_l2_eps, method_default
from .build import build
from .checks import StudyError, check_inputs, check_licence
from .outputs import CLAIMS_SOURCES, OUTPUTS
from .plan import Output, Plan, Section
from .read import SCHEMA, load, load_workflow, plan_of, read, validated

__all__ = [
    "CLAIMS_SOURCES", "OUTPUTS", "SCHEMA", "Output", "Plan", "Section", "StudyError", "build",
    "check_inputs", "check_licence", "load", "load_workflow", "matched_l2_eps", "method_default", "plan_of",
    "read", "validated",
]  # fmt: skip
