"""README "Extending": a new attack, or a new output, is one file plus its import and registry line.

Each test copies the package and adds one file and those two lines, nothing else: ``attacks/noise.py``
(uniform noise in the eps-ball, its ``Method`` line in ``attacks/spec.py``), or ``study/outputs/pairs.py``
(a planner of the existing grid layout, its ``OUTPUTS`` line in ``study/outputs/__init__.py``). Then, with
the copy first on the path, it plans the test study with that output alone (Table 2 set to the new attack,
or the new output), trains its models, evaluates them with ``mtlrobust evaluate`` and renders the output.
"""

from __future__ import annotations

import ast
import filecmp
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from mtlrobust.attacks import METHODS, MultiTaskObjective, run_attack

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "src" / "mtlrobust"

NOISE = '''"""Uniform noise in the eps-ball: a gradient-free baseline every attack should beat."""

import torch

from . import _common as C


def noise(model, loss, x, y, *, eps, norm="linf", generator=None, trace=None) -> torch.Tensor:
    """A random point of the eps-ball around x (``pgd``'s uniform start), clipped to [0, 1]."""
    eps, norm, _ = C.check_args(eps, norm)
    x = C.begin(x, eps, norm, trace)
    x_adv = C.Start(eps, norm, True, generator, x.device).draw(x)
    if trace is not None:
        with C.eval_mode(model):
            trace.append(C.loss_at(model, loss, x_adv, y))
    return x_adv
'''
IMPORT = "from .noise import noise\n"
SUMMARY = "uniform noise in the eps-ball, a gradient-free baseline"
ENTRY = f'    "noise": Method(noise, "{SUMMARY}", fixed_steps=1),\n'

PAIRS = '''"""Pairs: the relative vulnerability of each uniform pair model, next to the single-task model."""

from __future__ import annotations

from ..checks import letter
from ..plan import Section


def pairs(s: Section) -> dict:
    """Rows: main task; columns: auxiliary task (diagonal: the single-task model); both tasks attacked."""
    c, tasks = s.cfg, s.tasks()
    arch, epoch, seed = s.arch(c["arch"]), s.epoch(c["epoch"]), s.seed(c["seed"])
    attack = s.attack(c["attack"])
    rows = [
        {"labels": [letter(m)], "kind": "multi", "attack": attack, "emphasize": [f"uniform:{letter(m)}"],
         "cells": [s.pair(arch, "uniform", seed, epoch, attack, m, a, "multi") for a in tasks]}
        for m in tasks
    ]
    return {"layout": "grid", "title": f"Pairs under {attack} ({arch}, epoch {epoch})", "rows": rows,
            "note": "Rows: main task; columns: auxiliary task.", "label_columns": ["main"],
            "columns": [f"uniform:{letter(a)}" for a in tasks], "value": "rel_vuln"}
'''
PAIRS_IMPORT = "from . import pairs\n"
PAIRS_ENTRY = '    "pairs": Entry(pairs.pairs, TABLE),\n'

# Run with the copy first on the path: plan the study (sections the packaged schema does not list yet added
# after validation), train and evaluate what the output NAME needs, render it.
DRIVER = """
import json, shlex, sys
from pathlib import Path

import yaml

import mtlrobust
from mtlrobust import cli, commands, study
from mtlrobust.analysis import render

config, data, name = yaml.safe_load(Path(sys.argv[1]).read_text()), Path(sys.argv[2]), sys.argv[3]
print("package:", mtlrobust.__file__)
config = study.validated(config)
config["study"].update(json.loads(sys.argv[4]))
plan = study.build(config)
output = plan.outputs[name]
csvs = []
for model_id, epoch, attack in output.evals:
    m = plan.models[model_id]
    ckpt = Path(f"results/models/{model_id}/epoch{epoch}.pt")
    if not ckpt.exists():
        words = [*shlex.split(commands.model(m)), *shlex.split(commands.training(config, m.arch))]
        assert cli.main(["train", "--data", str(data), *words, "--epochs", str(epoch), "--out", str(ckpt),
                         "--no-progress"]) == 0
    csv = Path(f"results/evals/{model_id}/epoch{epoch}/{attack}.csv")
    subsets = plan.evals[(model_id, epoch, attack)]
    words = [*shlex.split(commands.attacked(subsets)), *shlex.split(commands.evaluation(config))]
    assert cli.main(["evaluate", "--checkpoint", str(ckpt), "--data", str(data / "test"), "--attack-json",
                     plan.attack_json(attack), *words, "--out", str(csv)]) == 0
    csvs.append(str(csv))
out = Path("results") / f"{name}.csv"
render.write(name, output.spec, csvs, csv=out, cells=out.parent / "cells" / out.name)
"""


class Wavy(torch.nn.Module):
    """Two task outputs so wavy in x that an attack's loss can fall between steps (best != last)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = torch.nn.Conv2d(3, 18, 3, padding=1)

    def forward(self, x):
        out = torch.sin(60 * self.net(x))
        return {"seg": out, "depth_z": out[:, :1]}


@pytest.mark.parametrize("method", sorted(m for m in METHODS if METHODS[m].fn is not None))
def test_method_entries_say_how_many_steps_and_which_iterate(method):
    """``Method.steps`` is the length of the attack's trace (one loss per step) and ``returns_best`` says
    whether x_adv is the last iterate (its loss is the trace's last) or the best one (no lower than any)."""
    g = torch.Generator().manual_seed(1)
    x = torch.rand(2, 3, 8, 8, generator=g)
    seg, depth = torch.randint(1, 18, (2, 8, 8), generator=g), torch.rand(2, 1, 8, 8, generator=g)
    targets = {"seg": seg, "depth_z": depth}
    masks = {t: torch.ones_like(v, dtype=torch.bool) for t, v in targets.items()}
    y, model, m = (targets, masks), Wavy(), METHODS[method]
    # eps 0.1: here both apgd's and pgd's (return_best, step_size 0.1) best iterate is not their last
    for extra in [{}, {"steps": 4}, {"return_best": True, "steps": 4, "step_size": 0.1}]:
        spec = {"method": method, "eps": 0.1, **{k: v for k, v in extra.items() if k in m.options()}}
        trace = []
        x_adv = run_attack(spec, model, x, y, "seg+depth_z", generator=0, trace=trace)
        assert len(trace) == m.steps(spec)
        with torch.no_grad():
            at = MultiTaskObjective("seg+depth_z")(model(x_adv), y)
        if m.returns_best(spec):
            assert (at >= torch.stack(trace).amax(0) - 1e-6).all()
        else:
            torch.testing.assert_close(at, trace[-1])
    assert METHODS["apgd"].returns_best({}) and METHODS["pgd"].returns_best({"return_best": True})
    assert not METHODS["pgd"].returns_best({}) and METHODS["fgsm"].steps({}) == 1


def method_name_tests(path: Path) -> list[str]:
    """Where ``path`` tests an attack method's name: compares something holding a method with a name of
    ``METHODS``, or looks a method up by its name (``METHODS["pgd"]``)."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
            named = any(isinstance(o, ast.Constant) and o.value in METHODS for o in operands)
            if named and any("method" in ast.unparse(o) for o in operands):
                out.append(f"{path.name}:{node.lineno}: {ast.unparse(node)}")
        elif isinstance(node, ast.Subscript) and ast.unparse(node.value) == "METHODS":
            if isinstance(node.slice, ast.Constant):
                out.append(f"{path.name}:{node.lineno}: {ast.unparse(node)}")
    return out


def test_no_code_outside_attacks_tests_a_method_name():
    """What the package needs to know of a method is on its ``Method`` entry, so a new attack needs no edit
    elsewhere; the checker itself finds a name test."""
    sample = PACKAGE.parent.parent / "tests" / "test_extending.py"
    assert method_name_tests(sample)  # this file looks up METHODS["apgd"] and METHODS["pgd"]
    outside = [p for p in sorted(PACKAGE.rglob("*.py")) if "attacks" not in p.relative_to(PACKAGE).parts]
    found = [hit for p in outside for hit in method_name_tests(p)]
    assert not found, found


def copy_adding(root: Path, new: str, text: str, registry: str, lines: dict[str, str]) -> Path:
    """A copy of the package under ``root`` with one new file (``new``: its path in the package) and, in the
    file ``registry``, each of ``lines`` (anchor -> line) inserted before or after its anchor."""
    pkg = root / "mtlrobust"
    shutil.copytree(PACKAGE, pkg, ignore=shutil.ignore_patterns("__pycache__"))
    (pkg / new).write_text(text)
    path = pkg / registry
    source = path.read_text()
    for anchor, line in lines.items():
        assert source.count(anchor) == 1, anchor
        source = source.replace(anchor, anchor + line if anchor.endswith("\n") else line + anchor)
    path.write_text(source)
    return pkg


def add_attack(root: Path) -> Path:
    """The noise attack: its file, its import and its ``METHODS`` line in spec.py."""
    lines = {"from .objective import": IMPORT, "METHODS: dict[str, Method] = {\n": ENTRY}
    return copy_adding(root, "attacks/noise.py", NOISE, "attacks/spec.py", lines)


def changed_files(a: Path, b: Path) -> list[str]:
    """Files that differ between two trees, or exist in one only (relative paths)."""
    cmp, out = filecmp.dircmp(a, b, ignore=["__pycache__"]), []
    stack = [(cmp, "")]
    while stack:
        c, rel = stack.pop()
        out += [rel + n for n in c.left_only + c.right_only + c.diff_files]
        stack += [(sub, f"{rel}{n}/") for n, sub in c.subdirs.items()]
    return sorted(out)


def add_output(root: Path) -> Path:
    """The pairs output: its planner's file, its import and its ``OUTPUTS`` line in the registry."""
    lines = {"from ..plan import Section": PAIRS_IMPORT, "OUTPUTS: dict[str, Entry] = {\n": PAIRS_ENTRY}
    return copy_adding(root, "study/outputs/pairs.py", PAIRS, "study/outputs/__init__.py", lines)


def run_driver(pkg: Path, work: Path, packed_dir: Path, config: dict, name: str, sections: dict) -> None:
    """DRIVER on ``config`` (plus ``sections``) with the copy ``pkg`` first on the path, in ``work``."""
    work.mkdir()
    (work / "study.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    (work / "driver.py").write_text(DRIVER)
    env = {**os.environ, "PYTHONPATH": str(pkg.parent)}
    env.pop("MTLROBUST_WARM", None)
    cmd = [sys.executable, "driver.py", "study.yaml", str(packed_dir), name, json.dumps(sections)]
    proc = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert f"package: {pkg / '__init__.py'}" in proc.stdout


def one_epoch_study() -> dict:
    """The test study with one training epoch and every output disabled."""
    config = yaml.safe_load((REPO / "studies" / "test.yaml").read_text())
    config["training"].update(epochs=1, milestones=[1])
    config["study"] = {name: {"enabled": False} for name in config["study"]}
    return config


def study_with_noise() -> dict:
    """The test study, one training epoch, with Table 2 alone, on the noise attack."""
    config = one_epoch_study()
    config["attacks"]["noise"] = {"method": "noise", "eps": "8/255"}
    config["study"]["table2"] = {"mains": ["s"], "attacks": ["noise"]}
    return config


@pytest.mark.slow
def test_a_new_attack_is_one_file_and_its_registry_line(packed_dir, tmp_path):
    pkg = add_attack(tmp_path / "src")
    assert changed_files(PACKAGE, pkg) == ["attacks/noise.py", "attacks/spec.py"]
    lines = (pkg / "attacks" / "spec.py").read_text().splitlines(keepends=True)
    assert len(lines) == len((PACKAGE / "attacks" / "spec.py").read_text().splitlines()) + 2
    work = tmp_path / "work"
    run_driver(pkg, work, packed_dir, study_with_noise(), "table2", {})
    table = pd.read_csv(work / "results" / "table2.csv")
    assert list(zip(table["attack"], table["main"], strict=True)) == [("noise", "s")]
    cells = [f"{w}:{t}" for w in ("uniform", "paper") for t in "sd"]
    assert all(math.isfinite(v) for v in table[cells].to_numpy().ravel())
    assert (table[[f"{c}_n" for c in cells]] == 4).all().all()  # evaluation.limit of the test study
    assert "noise" in (work / "results" / "table2.md").read_text()


@pytest.mark.slow
def test_a_new_output_is_one_file_and_its_registry_line(packed_dir, tmp_path):
    pkg = add_output(tmp_path / "src")
    assert changed_files(PACKAGE, pkg) == ["study/outputs/__init__.py", "study/outputs/pairs.py"]
    lines = (pkg / "study" / "outputs" / "__init__.py").read_text().splitlines()
    assert len(lines) == len((PACKAGE / "study" / "outputs" / "__init__.py").read_text().splitlines()) + 2
    work = tmp_path / "work"
    section = {
        "enabled": True,
        "arch": "resnet18",
        "epoch": 1,
        "seed": 0,
        "attack": "pgd",
        "tasks": ["s", "d"],
    }
    run_driver(pkg, work, packed_dir, one_epoch_study(), "pairs", {"pairs": section})
    table = pd.read_csv(work / "results" / "pairs.csv")
    assert table["main"].tolist() == ["s", "d"]
    values = table[["uniform:s", "uniform:d"]].to_numpy()
    assert np.isfinite(values).all() and (table[["uniform:s_n", "uniform:d_n"]] == 4).all().all()
    assert "# Pairs under pgd (resnet18, epoch 1)" in (work / "results" / "pairs.md").read_text()
    cells = pd.read_csv(work / "results" / "cells" / "pairs.csv")
    assert set(cells["output"]) == {"pairs"} and "single_task" in set(cells["vs"])  # the off-diagonal cells
