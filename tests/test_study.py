"""The study plan (mtlrobust.study): config checks, attack specs, canonical params, the schema's enums."""

import copy
import json
import re
from pathlib import Path

import pytest
import yaml

from mtlrobust import attacks, commands, ids, models, study
from mtlrobust import tasks as T
from mtlrobust.analysis import figures, tables

REPO = Path(__file__).resolve().parents[1]
SCHEMA = yaml.safe_load(study.SCHEMA.read_text())
TEST_STUDY = yaml.safe_load((REPO / "studies" / "test.yaml").read_text())


def build(config):
    return study.build(study.validated(copy.deepcopy(config)))


def changed(**changes):
    """The test study, schema defaults filled in, then ``a__b__c=value`` set (keys joined by ``__``).

    Changed after validation, so the plan's own checks are tested even where the schema would catch it."""
    config = study.validated(copy.deepcopy(TEST_STUDY))
    for path, value in changes.items():
        *parents, leaf = path.split("__")
        node = config
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return config


@pytest.mark.parametrize(
    "config, expected",
    [
        (changed(tasks=["s", "x"]), ["config key tasks", "'x'"]),
        (changed(tasks=[]), ["config key tasks", "non-empty"]),
        (changed(attacks__pgd__eps=0), ["config key attacks.pgd.eps", "0 < value"]),
        (changed(attacks__pgd__eps="-8/255"), ["config key attacks.pgd.eps", "0 < value"]),
        (changed(attacks__pgd__eps=8), ["config key attacks.pgd.eps", "<= 1"]),
        (changed(attacks__pgd={"method": "pgd"}), ["config key attacks.pgd.eps", "needs"]),
        (changed(attacks__pgd={"method": "fgsm", "eps": 0.03, "steps": 5}), ["attacks.pgd", "'steps'"]),
        (
            changed(attacks__pgd={"method": "mim", "eps": 0.03, "options": {"rho": 1}}),
            ["attacks.pgd", "'rho'"],
        ),
        (
            changed(attacks__pgd={"method": "pgd", "eps": 0.03, "options": {"eps": 1}}),
            ["attacks.pgd.options"],
        ),
        (changed(architectures=["resnet18", "vgg16"]), ["architectures", "'vgg16'"]),
        (
            changed(study__table1__mains=["n"]),
            ["config key study.table1.mains", "'n'", "not among the tasks"],
        ),
        (changed(study__table2__attacks=["apgd", "cw"]), ["config key study.table2.attacks", "'cw'"]),
        (changed(study__rq1_epochs__epochs=[1, 3]), ["config key study.rq1_epochs.epochs", "epoch 3"]),
        (changed(study__figure1__orders=["sd", "s"]), ["config key study.figure1.orders", "permutation"]),
        (changed(training__milestones=[1, 5]), ["config key training.milestones", "5", "training.epochs=2"]),
    ],
    ids=[
        "unknown-letter",
        "empty-tasks",
        "eps-zero",
        "eps-negative",
        "eps-above-1",
        "eps-missing",
        "fgsm-steps",
        "mim-rho",
        "option-clash",
        "unknown-arch",
        "main-not-in-tasks",
        "unknown-attack",
        "epoch-not-milestone",
        "order-not-permutation",
        "milestone-beyond-epochs",
    ],  # fmt: skip
)
def test_bad_study_is_rejected_naming_the_key(config, expected):
    with pytest.raises(study.StudyError) as e:
        study.build(config)
    for text in expected:
        assert text in str(e.value), f"{text!r} not in {e.value}"


@pytest.mark.parametrize("method", sorted(attacks.METHODS))
def test_attack_spec_carries_only_the_keys_the_study_sets(method):
    entry = {"method": method} if method == "none" else {"method": method, "eps": "8/255"}
    plan = study.build(changed(attacks__x=entry))
    expected = {"name": "x", "method": method} | ({} if method == "none" else {"eps": 8 / 255})
    assert plan.attacks["x"] == expected
    assert json.loads(plan.attack_json("x")) == expected


def test_fgsm_with_eps_only_passes_the_check():
    plan = build(
        {**TEST_STUDY, "attacks": {**TEST_STUDY["attacks"], "fgsm": {"method": "fgsm", "eps": "8/255"}}}
    )
    assert plan.attack_json("fgsm") == '{"eps": 0.03137254901960784, "method": "fgsm", "name": "fgsm"}'


def reversed_mappings(node):
    """The same config with every mapping's keys in reverse order (lists keep their order)."""
    if isinstance(node, dict):
        return {k: reversed_mappings(node[k]) for k in reversed(list(node))}
    if isinstance(node, list):
        return [reversed_mappings(v) for v in node]
    return node


def command_lines(plan):
    """Every value the rules' params are made of."""
    c = plan.config
    out = [commands.synthesize(c), commands.prepare(c, plan.tasks), commands.download(c, plan.tasks),
           commands.training(c), commands.evaluation(c), commands.theory(c, plan.theory)]  # fmt: skip
    out += [commands.model(m) for _, m in sorted(plan.models.items())]
    out += [(k, commands.attacked(v)) for k, v in sorted(plan.evals.items())]
    out += [plan.attack_json(a) for a in sorted(plan.attacks)]
    return out + [(n, o.spec_json, o.evals) for n, o in plan.outputs.items()]


def test_key_order_of_the_study_file_changes_no_param():
    a, b = build(TEST_STUDY), build(reversed_mappings(TEST_STUDY))
    assert list(b.config["study"]) != list(a.config["study"])  # really reordered
    assert command_lines(a) == command_lines(b)


@pytest.mark.filterwarnings("ignore:Pearson correlation")
def test_every_output_has_a_schema_section_and_a_renderer():
    sections = SCHEMA["properties"]["study"]["properties"]
    assert set(study.OUTPUTS) == set(sections)
    plan = build(TEST_STUDY)
    assert set(plan.outputs) == set(study.OUTPUTS)  # the test study enables every output
    for name, out in plan.outputs.items():
        assert sections[name]["properties"]["enabled"]["type"] == "boolean"
        assert out.evals and set(out.evals) <= set(plan.evals)
        layout = out.spec["layout"]
        if "table" in out.renders:
            assert layout in ("grid", "correlations", "sweep")
        if "figure" in out.renders:
            assert layout in ("bars", "sweep")
        with pytest.raises(ValueError, match="none of its"):  # every layout is understood (no cell found)
            (tables.render if "table" in out.renders else figures.draw)(
                name, tables.Evaluations([]), out.spec
            )


def test_disabled_output_needs_nothing():
    plan = build(changed(study={s: {"enabled": False} for s in study.OUTPUTS}))
    assert plan.outputs == {} and plan.evals == {} and plan.models == {} and plan.theory is None
    only = build(
        changed(study={**{s: {"enabled": False} for s in study.OUTPUTS}, "table2": {"mains": ["s"]}})
    )
    assert list(only.outputs) == ["table2"]
    assert {a for _, _, a in only.evals} == {"apgd", "wgd"}


# ------------------------------------------------------------------------------------------ open lists
def enums(node, path=()):
    """(path, enum) of every enum in the schema."""
    if isinstance(node, dict):
        if "enum" in node:
            yield path, node["enum"]
        for k, v in node.items():
            yield from enums(v, (*path, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from enums(v, (*path, str(i)))


def test_schema_enums_match_the_code():
    weightings = [(p, v) for p, v in enums(SCHEMA) if any(k.startswith("weighting") for k in p)]
    assert len(weightings) == 4  # top-level weightings, table1, table2, table3
    for path, values in weightings:
        assert tuple(values) == T.WEIGHTINGS, path
    assert SCHEMA["$defs"]["arch"]["enum"] == list(ids.ARCHS)
    assert set(ids.ARCHS) == set(models._RESNETS) | {"xception"}  # every name has an encoder
    method = SCHEMA["properties"]["attacks"]["additionalProperties"]["properties"]["method"]
    assert method["enum"] == list(attacks.METHODS)
    assert SCHEMA["properties"]["model"]["properties"]["decoder"]["enum"] == list(models.DECODERS)
    letters = re.fullmatch(r"\^\(\[(\w+)\]\|(.*)\)\$", SCHEMA["$defs"]["letter"]["pattern"])
    assert set(letters[1]) == {t.letter for t in T.TASKS}
    assert set(letters[2].split("|")) == {t.id for t in T.TASKS}
    orders = SCHEMA["properties"]["study"]["properties"]["figure1"]["properties"]["orders"]["items"]
    assert set(re.fullmatch(r"\^\[(\w+)\]\+\$", orders["pattern"])[1]) == {t.letter for t in T.TASKS}
