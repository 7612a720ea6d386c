"""The package as users get it: a wheel installed non-editable (every command, a study loaded from another
directory), its metadata (SPDX licence, torch as a range, the workflow tools as an extra) and the files that
say how to cite, license and catalogue the workflow."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
import yaml

from mtlrobust.cli import COMMANDS

REPO = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())


def run(cmd: list, cwd: Path, timeout: int = 120) -> subprocess.CompletedProcess:
    """Run outside the repository, without PYTHONPATH: nothing but the installed package can be imported."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "MTLROBUST_"))}
    proc = subprocess.run(
        [str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, (
        f"{' '.join(map(str, cmd))} failed ({proc.returncode}):\n{proc.stdout[-2000:]}{proc.stderr[-3000:]}"
    )
    return proc


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> tuple[Path, str]:
    """(the wheel, the build log), built from a copy of the sources: the repository gets no build/ folder."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "mtlrobust"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE", "MANIFEST.in"):
        if name != "MANIFEST.in" or (REPO / name).exists():
            shutil.copy2(REPO / name, src / name)
    shutil.copytree(REPO / "src", src / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    cmd = [sys.executable, "-m", "pip", "wheel", "-v", "--no-deps", "--no-build-isolation", "--no-index",
           "-w", tmp / "dist", src]  # fmt: skip
    proc = run(cmd, tmp, timeout=300)
    (whl,) = (tmp / "dist").glob("mtlrobust-*.whl")
    return whl, proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def venv(wheel, tmp_path_factory) -> Path:
    """A venv seeing the system's packages (torch, snakemake, ...) with the wheel installed in it."""
    root = tmp_path_factory.mktemp("venv") / "venv"
    run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", root], root.parent)
    # The system's pip installs into the venv; --no-index: every dependency must already be satisfied.
    run([root / "bin" / "python", "-m", "pip", "install", "--no-index", wheel[0]], root.parent, timeout=300)
    return root


def test_wheel_metadata(wheel):
    """SPDX licence (no table-form warning), LICENSE shipped, torch as a range, Snakemake only in an extra."""
    whl, log = wheel
    warned = [
        line
        for line in log.splitlines()
        if re.search(r"licen[cs]e.*deprecat|deprecat.*licen[cs]e", line, re.I)
    ]
    assert not warned, warned
    with zipfile.ZipFile(whl) as z:
        names = z.namelist()
        meta = z.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names), names
    assert "mtlrobust/schemas/config.schema.yaml" in names, "the config schema must ship as package data"
    headers = re.findall(r"^([\w-]+): (.*)$", meta.split("\n\n", 1)[0], re.M)
    fields = {k: [v for key, v in headers if key == k] for k, _ in headers}
    assert fields["License-Expression"] == ["MIT"] and fields["License-File"] == ["LICENSE"]
    assert "License" not in fields, "the deprecated License field is set"
    requires = fields["Requires-Dist"]

    def named(name: str) -> list[str]:
        return [r for r in requires if re.match(rf"{name}(?![-\w])", r, re.I)]

    assert named("torch") == ["torch>=2.3"], f"torch must be a range, not a pin: {named('torch')}"
    for tool in ("snakemake", "pygments"):
        (req,) = named(tool)
        assert req.endswith('extra == "workflow"'), f"{req!r} must be in the workflow extra only"
    assert {"workflow", "test"} <= set(fields["Provides-Extra"])
    assert fields["Author"] or fields.get("Author-email"), "no authors"
    assert len(fields["Classifier"]) >= 5 and fields["Project-URL"], fields


def test_installed_wheel_runs_every_command_from_another_directory(venv, tmp_path):
    """Non-editable install: the schema and every module come from site-packages, not from the checkout."""
    py, cli = venv / "bin" / "python", venv / "bin" / "mtlrobust"
    where = run([py, "-c", "import mtlrobust; print(mtlrobust.__file__)"], tmp_path).stdout.strip()
    assert Path(where).is_relative_to(venv), f"mtlrobust imported from {where}, not from the venv {venv}"
    top = run([cli, "--help"], tmp_path).stdout
    for name in COMMANDS:
        assert name in top
        out = run([cli, name, "--help"], tmp_path).stdout
        assert out.startswith(f"usage: mtlrobust {name}"), out[:300]
    plan = run([cli, "plan", "--configfile", REPO / "config.yaml"], tmp_path).stdout
    assert re.search(r"\b[1-9]\d* jobs\b", plan) and "train" in plan, plan[-2000:]
    load = ("import sys; from mtlrobust import study; p = study.load(sys.argv[1]); "
            "print(study.__file__); print(sorted(p.outputs))")  # fmt: skip
    module, outputs = run([py, "-c", load, REPO / "config.yaml"], tmp_path).stdout.splitlines()[-2:]
    assert Path(module).is_relative_to(venv) and "table1" in outputs, (module, outputs)
    assert not list(tmp_path.iterdir()), (
        f"commands wrote into the working directory: {list(tmp_path.iterdir())}"
    )


# ------------------------------------------------------------------------------------- conventions
def test_licence_citation_and_catalog_files():
    project = PYPROJECT["project"]
    assert project["license"] == "MIT" and project["license-files"] == ["LICENSE"]
    licence = (REPO / "LICENSE").read_text()
    assert licence.startswith("MIT License\n\nCopyright (c) 2026 The mtlrobust authors\n"), licence[:200]
    (setuptools,) = [r for r in PYPROJECT["build-system"]["requires"] if r.startswith("setuptools")]
    minimum = re.fullmatch(r"setuptools>=(\d+)", setuptools)
    assert minimum and int(minimum[1]) >= 77, f"{setuptools}: SPDX license strings need setuptools >= 77"

    cff = yaml.safe_load((REPO / "CITATION.cff").read_text())
    assert cff["cff-version"] == "1.2.0" and cff["type"] == "software" and cff["license"] == "MIT"
    assert cff["version"] == project["version"]
    paper = cff["preferred-citation"]
    readme = " ".join((REPO / "README.md").read_text().split())
    assert f'"{paper["title"]}" (Ghamizi et al., AAAI {paper["year"]})' in readme
    assert [a["family-names"] for a in paper["authors"]] == ["Ghamizi", "Cordy", "Papadakis", "Le Traon"]

    usage = yaml.safe_load((REPO / ".snakemake-workflow-catalog.yml").read_text())["usage"]
    assert usage["software-stack-deployment"]["conda"] is True and usage["report"] is True
    assert "--workflow-profile profiles/slurm" in usage["mandatory-flags"]["desc"]


def test_ci_runs_the_readme_commands_with_the_workflow_tools():
    """.ci/run is the README's test command, whose extra brings the workflow extra; the README's run command
    installs that extra."""
    readme = (REPO / "README.md").read_text()
    two = readme.split("## Two commands", 1)[1].split("\n## ", 1)[0]
    commands = re.findall(r"^    (pip install .*)$", two, re.M)
    assert commands == ["pip install -e '.[workflow]' && snakemake --cores 2",
                        "pip install -e '.[test]' && python -m pytest"], commands  # fmt: skip
    assert commands[1] in (REPO / ".ci" / "run").read_text().splitlines()
    assert "mtlrobust[workflow]" in PYPROJECT["project"]["optional-dependencies"]["test"]
    assert not [r for r in PYPROJECT["project"]["dependencies"] if r.startswith(("snakemake", "pygments"))]
