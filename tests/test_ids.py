"""Model names: one canonical id per model, safe on case-insensitive file systems."""

import pytest

from mtlrobust import ids
from mtlrobust import tasks as T


@pytest.mark.parametrize("weighting", T.SYMMETRIC_WEIGHTINGS)
def test_symmetric_weightings_ignore_task_order(weighting):
    a = ids.model_spec("resnet18", weighting, "ds", 0, main="d")
    b = ids.model_spec("resnet18", weighting, "sd", 0, main="s")
    assert a == b
    assert a.id == f"resnet18-{weighting}-seg+depth_z-s0"


def test_weighted_models_put_the_main_task_first():
    spec = ids.model_spec("resnet18", "paper", "sdn", 1, main="n")
    assert spec.tasks == ("normal", "seg", "depth_z")
    assert spec.main == "normal"
    assert spec.letters == "nsd"


def test_single_task_model_is_the_same_under_every_weighting():
    assert ids.model_spec("resnet50", "paper", "E", 0).id == "resnet50-uniform-edge3d-s0"


def test_round_trip_and_case_insensitive_uniqueness():
    spec = ids.model_spec("wide_resnet50_2", "paper", [t.letter for t in T.TASKS], 3, main="D")
    assert ids.parse_model_id(spec.id) == spec
    lowered = [t.id.lower() for t in T.TASKS]
    assert len(set(lowered)) == len(lowered)


@pytest.mark.parametrize(
    "bad, message",
    [
        ("resnet18-uniform-depth_z+seg-s0", "not canonical"),
        ("resnet18-uniform-seg-sX", "malformed"),
        ("vgg16-uniform-seg-s0", "unknown architecture"),
        ("resnet18-uniform-bogus-s0", "unknown task"),
    ],
)
def test_bad_ids_are_rejected_with_a_reason(bad, message):
    with pytest.raises((ValueError, KeyError), match=message):
        ids.parse_model_id(bad)


def test_main_task_must_be_among_the_tasks():
    with pytest.raises(ValueError, match="main task"):
        ids.model_spec("resnet18", "paper", "sd", 0, main="n")
