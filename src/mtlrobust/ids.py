"""Stable names of models: the one place that formats and parses ``model_id``.

``model_id = {arch}-{weighting}-{task ids joined by '+'}-s{seed}``, e.g.
``resnet18-paper-depth_z+seg-s0``; an adversarially trained model adds its setting's name (a key of the
study's ``training.adversarial``): ``resnet18-paper-depth_z+seg-s0-adv_madry``, so standard ids never
change. Task ids (not paper letters) keep paths safe on case-insensitive file systems. Uniformly weighted
models list their tasks in registry order (so "sd" and "ds" are one model); other weightings depend on the
main task, which comes first, and so do adversarially trained ones (their training attack may target the
main task). A single-task model is the same model under every weighting, so it is always named ``uniform``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from . import tasks as T

ARCHS = ("resnet18", "resnet50", "resnet152", "wide_resnet50_2", "xception")
_NAME = re.compile(r"^[A-Za-z0-9_]+$")
_MODEL_ID = re.compile(
    r"^(?P<arch>[A-Za-z0-9_]+)-(?P<weighting>[A-Za-z0-9_]+)-(?P<tasks>[A-Za-z0-9_+]+)-s(?P<seed>\d+)"
    r"(?:-adv_(?P<adversarial>[A-Za-z0-9_]+))?$"
)


@dataclass(frozen=True)
class ModelSpec:
    arch: str
    weighting: str
    tasks: tuple[str, ...]  # task ids, main first
    seed: int
    adversarial: str | None = None  # name of the adversarial-training setting; None: standard training

    @property
    def main(self) -> str:
        return self.tasks[0]

    @property
    def id(self) -> str:
        base = f"{self.arch}-{self.weighting}-{'+'.join(self.tasks)}-s{self.seed}"
        return base if self.adversarial is None else f"{base}-adv_{self.adversarial}"

    @property
    def standard(self) -> ModelSpec:
        """The same model trained without adversarial examples (its canonical spec)."""
        return model_spec(self.arch, self.weighting, self.tasks, self.seed, main=self.main)

    @property
    def letters(self) -> str:
        return T.letters(self.tasks)


def model_spec(
    arch: str, weighting: str, tasks, seed: int = 0, main: str | None = None, adversarial: str | None = None
) -> ModelSpec:
    """Normalise a model description (tasks as letters/ids/Task) into its canonical spec."""
    if arch not in ARCHS:
        raise ValueError(f"unknown architecture {arch!r}; expected one of {', '.join(ARCHS)}")
    if not _NAME.match(weighting):
        raise ValueError(f"weighting name {weighting!r} must be letters, digits or '_'")
    if adversarial is not None and not _NAME.match(adversarial):
        raise ValueError(f"adversarial setting name {adversarial!r} must be letters, digits or '_'")
    ts = T.parse(tasks) if isinstance(tasks, str) else [T.get(t) if isinstance(t, str) else t for t in tasks]
    if len(ts) == 1:
        weighting = "uniform"
    ordered = T.canonical(ts)
    if weighting not in T.SYMMETRIC_WEIGHTINGS or adversarial is not None:  # the training attack's main
        m = T.get(main) if main is not None else ts[0]
        if m not in ts:
            raise ValueError(f"main task {m.letter!r} is not among the tasks {T.letters(ts)!r}")
        ordered = [m] + [t for t in ordered if t != m]
    return ModelSpec(arch, weighting, tuple(t.id for t in ordered), int(seed), adversarial)


def parse_model_id(model_id: str) -> ModelSpec:
    m = _MODEL_ID.match(model_id)
    if not m:
        raise ValueError(
            f"malformed model id {model_id!r}; expected {{arch}}-{{weighting}}-{{tasks}}-s{{seed}}"
            "[-adv_{{setting}}]"
        )
    ids = m["tasks"].split("+")
    spec = model_spec(
        m["arch"], m["weighting"], ids, int(m["seed"]), main=ids[0], adversarial=m["adversarial"]
    )
    if spec.id != model_id:
        raise ValueError(f"model id {model_id!r} is not canonical; the canonical name is {spec.id!r}")
    return spec
