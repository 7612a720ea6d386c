"""The README's `pip install -e .` brings everything its commands import, `snakemake --report` included.

The test environment has more installed (pytest brings pygments, for one), so "it runs here" proves
nothing about a user's install: this checks that every module the report code imports comes from a
distribution that the package's own dependencies (not the test extra) pull in.
"""

from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[1]


def _installed_closure(requirements: list[str]) -> set[str]:
    """Normalised names of the distributions these requirements install, transitively (no extras)."""
    seen: set[str] = set()
    todo = [Requirement(r) for r in requirements]
    while todo:
        req = todo.pop()
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        name = re.sub(r"[-_.]+", "-", req.name).lower()
        if name in seen:
            continue
        seen.add(name)
        try:
            todo += [Requirement(r) for r in metadata.requires(req.name) or []]
        except metadata.PackageNotFoundError:
            pytest.fail(f"{req.name} (required through pyproject.toml) is not installed")
    return seen


def _imports(package_dir: Path) -> set[str]:
    mods = set()
    for f in package_dir.rglob("*.py"):
        mods |= set(re.findall(r"^\s*(?:import|from)\s+([A-Za-z_]\w*)", f.read_text(), re.M))
    return mods


def test_install_brings_what_snakemake_report_imports():
    import snakemake

    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    closure = _installed_closure(deps)
    providers = metadata.packages_distributions()
    missing = {}
    for mod in sorted(_imports(Path(snakemake.__file__).parent / "report")):
        dists = {re.sub(r"[-_.]+", "-", d).lower() for d in providers.get(mod, [])}
        if dists and not dists & closure:  # empty: the standard library or snakemake itself
            missing[mod] = sorted(dists)
    assert not missing, f"`snakemake --report` imports modules no dependency installs: {missing}"
