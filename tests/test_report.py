"""The README's `pip install -e '.[workflow]'` brings everything its commands import, `snakemake --report`
included.

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

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    deps = project["dependencies"] + project["optional-dependencies"]["workflow"]
    closure = _installed_closure(deps)
    providers = metadata.packages_distributions()
    missing = {}
    for mod in sorted(_imports(Path(snakemake.__file__).parent / "report")):
        dists = {re.sub(r"[-_.]+", "-", d).lower() for d in providers.get(mod, [])}
        if dists and not dists & closure:  # empty: the standard library or snakemake itself
            missing[mod] = sorted(dists)
    assert not missing, f"`snakemake --report` imports modules no dependency installs: {missing}"


# ------------------------------------------------------------------------------------ captions and tables
def _caption(name: str) -> str:
    """workflow/report/outputs.rst rendered for output ``name`` as `snakemake --report` renders it: Jinja with
    the job's wildcards, then reStructuredText to HTML."""
    from types import SimpleNamespace

    import jinja2
    from docutils.core import publish_parts

    text = (REPO / "workflow/report/outputs.rst").read_text()
    rst = (
        jinja2.Environment()
        .from_string(text)
        .render(snakemake=SimpleNamespace(wildcards=SimpleNamespace(name=name)))
    )
    html = publish_parts(rst, writer="html", settings_overrides={"report_level": 2})["body"]
    assert "system-message" not in html, f"{name}: the caption is not valid reStructuredText"
    return rst


def test_every_registered_output_has_its_own_caption():
    from mtlrobust import study

    seen = {}
    for name in study.OUTPUTS:
        own = _caption(name).split("Files:")[0].strip()
        assert len(own) > 100 and own.startswith("**"), f"output {name} has no caption in outputs.rst"
        seen[own] = name
    assert len(seen) == len(study.OUTPUTS)  # one caption each, not a shared fallback
    assert "results/claims.md" in (REPO / "workflow/report/claims.rst").read_text()


def _rule(name: str) -> str:
    text = (REPO / "workflow/rules/analysis.smk").read_text()
    return re.search(rf"^rule {name}:\n(.*?)(?=^rule |\Z)", text, re.S | re.M)[1]


@pytest.mark.parametrize(("rule", "path", "caption"), [
    ("table", "results/{name}.html", "../report/outputs.rst"),
    ("claims", "results/claims.html", "../report/claims.rst"),
    ("figure", "results/{name}.png", "../report/outputs.rst"),
])  # fmt: skip
def test_the_report_shows_each_table_as_html_and_each_figure_with_its_caption(rule, path, caption):
    body = _rule(rule)
    m = re.search(r'report\(\s*"' + re.escape(path) + r'",\s*caption="([^"]+)"', body)
    assert m and m[1] == caption, f"rule {rule}: {path} is not in the report with caption {caption}"


def test_the_html_pages_hold_the_markdown_tables_with_their_marks(tmp_path):
    from test_documented_commands import study_outputs

    plan = study_outputs(tmp_path)
    res = tmp_path / "results"
    marked = 0
    for name in [*plan.tables(), "claims"]:
        md, html = (res / f"{name}.md").read_text(), (res / f"{name}.html").read_text()
        rows = [line for line in md.splitlines() if line.startswith("|") and not line.startswith("|---")]
        assert html.count("<tr>") == len(rows) > 0, name
        for mark in ("↓st", "↑st", "↓uni", "↑uni", "↓pgd", "↑pgd", "supported", "contradicted"):
            assert md.count(mark) == html.count(mark), (name, mark)
        assert len(re.findall(r"\| \*(?!\*)", md)) == html.count("<td><em>"), name  # the italic diagonal
        marked += html.count("<td><em>") + html.count("↓st") + html.count("↑st")
    assert marked > 0  # the coded study's tables have an italic diagonal and marks to show


def test_markdown_to_html_escapes_and_keeps_escaped_pipes():
    from mtlrobust.analysis.mdhtml import to_html

    page = to_html("# T\n\n| a | b |\n|---|---|\n| x \\| y | *1 [0, 2]* ↓st |\n\n- `r` <i>\n  more\n", "t")
    assert "<td>x | y</td><td><em>1 [0, 2]</em> ↓st</td>" in page
    assert "<li><code>r</code> &lt;i&gt; more</li>" in page and "<i>" not in page
