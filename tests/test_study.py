"""The study plan (mtlrobust.study): config checks, attack specs, canonical params, the schema's enums."""

import copy
import json
import re
from pathlib import Path

import pytest
import yaml
from snakemake_interface_common.exceptions import WorkflowError

from mtlrobust import attacks, commands, ids, models, study
from mtlrobust import tasks as T
from mtlrobust.analysis import render
from mtlrobust.analysis.layouts import LAYOUTS

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


def merged(base: dict, patch: dict) -> dict:
    """``base`` with ``patch``'s mappings merged in recursively (other values replaced)."""
    out = copy.deepcopy(base)
    for k, v in patch.items():
        out[k] = merged(out.get(k) or {}, v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def names_key(message: str, key: str) -> bool:
    """A study error ("config key a.b") or a schema error ("On instance['a']['b']") names ``key``."""
    schema_path = "On instance" + "".join(f"['{k}']" for k in key.split("."))
    return f"config key {key}" in message or schema_path in message


# Study-file mistakes the schema or the plan must reject before any job (issue 12, part 4):
# (id, patch of studies/test.yaml, key named in the error, text the error must hold).
MISTAKES = [
    ("lr-inf", {"training": {"lr": float("inf")}}, "training.lr", "finite"),
    ("lr-nan", {"training": {"lr": float("nan")}}, "training.lr", "finite"),
    ("lr-gamma-nan", {"training": {"lr_gamma": float("nan")}}, "training.lr_gamma", "finite"),
    ("lr-gamma-above-1", {"training": {"lr_gamma": 2}}, "training.lr_gamma", "maximum"),
    ("batch-size-1", {"training": {"batch_size": 1}}, "training.batch_size", "minimum"),
    ("resolution-40", {"model": {"resolution": 40}}, "model.resolution", "multiple of 32"),
    ("resolution-16", {"model": {"resolution": 16}}, "model.resolution", "minimum"),
    ("threshold-empties-held-out", {"dataset": {"split_point_threshold": 10}},
     "dataset.split_point_threshold", "val and test empty"),
    ("threshold-1-view-train", {"dataset": {"split_point_threshold": 1, "synthetic": {"views": 1}}},
     "dataset.split_point_threshold", "train split gets 1 view"),
    ("building-split-empty", {"dataset": {"split_point_threshold": None, "split_point_val": None,
                                          "synthetic": {"buildings": 2},
                                          "buildings": ["alder"]}},
     "dataset.buildings", "val split gets no views"),
    ("unknown-synthetic-building", {"dataset": {"buildings": ["zelkova"]}}, "dataset.buildings", "'zelkova'"),
    ("misspelt-wgd-option", {"attacks": {"wgd": {"options": {"varaint": "paper"}}}},
     "attacks.wgd", "'variant'"),
    ("misspelt-pgd-option", {"attacks": {"pgd": {"options": {"return_bset": True}}}},
     "attacks.pgd", "'return_best'"),
    ("dataset-name-dotdot", {"dataset": {"name": ".."}}, "dataset.name", "does not match"),
    ("dataset-name-dot", {"dataset": {"name": "."}}, "dataset.name", "does not match"),
    ("dataset-name-slash", {"dataset": {"name": "a/b"}}, "dataset.name", "does not match"),
    ("eps-above-1", {"attacks": {"pgd": {"eps": 2}}}, "attacks.pgd.eps", "<= 1"),
    ("eps-fraction-above-1", {"attacks": {"pgd": {"eps": "300/255"}}}, "attacks.pgd.eps", "<= 1"),
    ("step-size-above-1", {"attacks": {"pgd": {"step_size": 1.5}}}, "attacks.pgd.step_size", "<= 1"),
    ("lr-milestone-beyond-epochs", {"training": {"lr_milestones": [5]}},
     "training.lr_milestones", "never take"),
    ("lr-milestone-at-epochs", {"training": {"lr_milestones": [2]}}, "training.lr_milestones", "never take"),
    ("duplicate-seeds", {"seeds": [0, 0]}, "seeds", "non-unique"),
    ("duplicate-weightings", {"weightings": ["uniform", "uniform"]}, "weightings", "non-unique"),
    ("duplicate-architectures", {"architectures": ["resnet18", "resnet18"]}, "architectures", "non-unique"),
    ("duplicate-milestones", {"training": {"milestones": [1, 1, 2]}}, "training.milestones", "non-unique"),
    ("duplicate-table2-attacks", {"study": {"table2": {"attacks": ["apgd", "apgd"]}}}, "study.table2.attacks",
     "non-unique"),
    ("duplicate-rq1-eps-attacks", {"study": {"rq1_eps": {"attacks": ["pgd", "pgd"]}}},
     "study.rq1_eps.attacks", "non-unique"),
    ("duplicate-table1-weightings", {"study": {"table1": {"weightings": ["paper", "paper"]}}},
     "study.table1.weightings", "non-unique"),
    ("duplicate-figure1-orders", {"study": {"figure1": {"orders": ["sd", "sd"]}}}, "study.figure1.orders",
     "non-unique"),
    ("rq1-eps-mixed-norms", {"study": {"rq1_eps": {"attacks": ["pgd", "pgd_l2"]}}}, "study.rq1_eps.attacks",
     "mix methods/norms"),
    ("rq1-eps-mixed-methods", {"study": {"rq1_eps": {"attacks": ["pgd", "apgd"]}}}, "study.rq1_eps.attacks",
     "mix methods/norms"),
    ("rq1-eps-same-budget", {"attacks": {"pgd_b": {"method": "pgd", "eps": 8 / 255}},
                             "study": {"rq1_eps": {"attacks": ["pgd", "pgd_b"]}}}, "study.rq1_eps.attacks",
     "repeat a budget"),
    ("url-template-unknown-field", {"dataset": {"taskonomy": {"url_template": "https://x/{bldg}_{domain}.tar"}}},
     "dataset.taskonomy.url_template", "unknown fields"),
    ("url-template-one-file-for-two-buildings",
     {"dataset": {"taskonomy": {"url_template": "https://x/{domain}.tar", "buildings": ["alder", "birch"]}}},
     "dataset.taskonomy.url_template", "no {building}"),
    ("root-with-braces", {"dataset": {"taskonomy": {"root": "data/{x}"}}},
     "dataset.taskonomy.root", "wildcard"),
    ("split-csv-newline", {"dataset": {"split_csv": "a\nb.csv"}}, "dataset.split_csv", "control characters"),
    ("split-csv-empty", {"dataset": {"split_csv": " "}}, "dataset.split_csv", "control characters"),
    ("md5-leading-dash", {"dataset": {"taskonomy": {"md5": "-x.md5"}}}, "dataset.taskonomy.md5", "./-x.md5"),
]  # fmt: skip


@pytest.mark.parametrize("patch, key, text", [m[1:] for m in MISTAKES], ids=[m[0] for m in MISTAKES])
def test_study_file_mistake_is_rejected_naming_the_key(tmp_path, patch, key, text):
    """Written as a YAML study file and loaded as the workflow does (schema with defaults, then the plan)."""
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(merged(TEST_STUDY, patch), sort_keys=False))
    with pytest.raises((study.StudyError, WorkflowError)) as e:
        study.load(path)
    message = str(e.value)
    assert names_key(message, key), message
    assert text in message, message


def test_every_mistake_starts_from_a_valid_study():
    """Each MISTAKES patch is one change away from a study that builds (so its error is its own)."""
    assert study.load(REPO / "studies" / "test.yaml").models
    assert len(MISTAKES) == len({m[0] for m in MISTAKES})


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
    out += [commands.model(m, plan.adversarial) for _, m in sorted(plan.models.items())]
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
        layout = LAYOUTS[out.spec["layout"]]
        assert ("table" in out.renders) == (layout.table is not None)
        assert ("figure" in out.renders) == (layout.figure is not None)
        assert {tuple(c[:3]) for c in layout.cells(out.spec)} == set(out.evals)
        if out.spec["layout"] in ("grid", "correlations", "sweep", "bars", "supplementary"):
            with pytest.raises(ValueError, match="none of its"):  # the layout reads the spec (no cell found)
                render.table(name, out.spec, [])


def test_disabled_output_needs_nothing():
    plan = build(changed(study={s: {"enabled": False} for s in study.OUTPUTS}))
    assert plan.outputs == {} and plan.evals == {} and plan.models == {} and plan.theory is None
    only = build(
        changed(study={**{s: {"enabled": False} for s in study.OUTPUTS}, "table2": {"mains": ["s"]}})
    )
    assert list(only.outputs) == ["table2"]
    assert {a for _, _, a in only.evals} == {"apgd", "wgd", "pgd"}  # pgd: the equal-budget PGD compared with


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
    assert len(weightings) == 5  # top-level weightings, table1, table2, table3, table_at
    for path, values in weightings:
        assert tuple(values) == T.WEIGHTINGS, path
    assert SCHEMA["$defs"]["arch"]["enum"] == list(ids.ARCHS)
    assert set(ids.ARCHS) == set(models._RESNETS) | {"xception"}  # every name has an encoder
    # methods: no schema enum (adding an attack touches only attacks/); the plan checks them at load time
    method = SCHEMA["properties"]["attacks"]["additionalProperties"]["properties"]["method"]
    assert "enum" not in method
    with pytest.raises(study.StudyError, match=r"attacks\.bad.*'pgdd'"):
        build(changed(attacks={"bad": {"method": "pgdd", "eps": "8/255"}}))
    assert SCHEMA["properties"]["model"]["properties"]["decoder"]["enum"] == list(models.DECODERS)
    letters = re.fullmatch(r"\^\(\[(\w+)\]\|(.*)\)\$", SCHEMA["$defs"]["letter"]["pattern"])
    assert set(letters[1]) == {t.letter for t in T.TASKS}
    assert set(letters[2].split("|")) == {t.id for t in T.TASKS}
    orders = SCHEMA["properties"]["study"]["properties"]["figure1"]["properties"]["orders"]["items"]
    assert set(re.fullmatch(r"\^\[(\w+)\]\+\$", orders["pattern"])[1]) == {t.letter for t in T.TASKS}
