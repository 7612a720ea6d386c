"""The README documents every configuration key of the schema (the schema's descriptions are checked too),
and its job counts and GPU-hours are what `mtlrobust plan` prints for the studies it names."""

import itertools
import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _keys(node, path=()):
    """(path, description) of every property in the schema, nested objects included."""
    for name, sub in node.get("properties", {}).items():
        yield path + (name,), sub.get("description")
        yield from _keys(sub, path + (name,))
    extra = node.get("additionalProperties")
    if isinstance(extra, dict):
        yield from _keys(extra, path + ("{name}",))


def test_every_config_key_is_described_in_the_schema_and_named_in_the_readme():
    schema = yaml.safe_load((ROOT / "src/mtlrobust/schemas/config.schema.yaml").read_text())
    readme = (ROOT / "README.md").read_text()
    keys = list(_keys(schema))
    assert len(keys) > 30
    undescribed = [".".join(p) for p, d in keys if not d]
    assert not undescribed, f"schema keys without a description: {undescribed}"
    missing = [".".join(p) for p, _ in keys if p[-1] not in readme]
    assert not missing, f"config keys the README does not mention: {missing}"


# ------------------------------------------------------------------------------------------ numbers
def _plan(configfile: str) -> dict:
    """`mtlrobust plan --json` of a study (what the README's numbers must equal)."""
    import contextlib
    import io
    import json

    from mtlrobust import cli

    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        assert cli.main(["plan", "--configfile", str(ROOT / configfile), "--json"]) == 0
    return json.loads(out.getvalue())


def _paragraph(text: str, start: str) -> str:
    """The paragraph of ``text`` that starts with ``start`` (joined into one line)."""
    i = text.index(start)
    return " ".join(text[i : text.find("\n\n", i)].split())


def test_readme_job_counts_and_gpu_hours_are_the_plans():
    readme = (ROOT / "README.md").read_text()
    default = _paragraph(readme, "Run the default study")
    jobs = sum(_plan("config.yaml")["jobs"].values())
    assert f"{jobs} jobs" in default, f"README 'Two commands' should say {jobs} jobs (mtlrobust plan)"
    paper = _plan("studies/paper.yaml")
    step = _paragraph(readme, "2. Estimate the cost")
    m = re.search(r"\(([\d,]+) jobs, about ([\d.]+) GPU-hours", step)
    assert m, f"README's SLURM step 2 should give '(N jobs, about H GPU-hours': {step}"
    assert int(m[1].replace(",", "")) == sum(paper["jobs"].values())
    assert float(m[2]) == round(sum(paper["gpu_hours"].values())), (
        "README's GPU-hours differ from mtlrobust plan"
    )
    disk = re.search(r"; ([\d.]+) GB: ([\d.]+) GB of float16 checkpoints, ([\d.]+) GB of packed", step)
    assert disk, f"README's SLURM step 2 should give the paper study's disk estimate: {step}"
    want = paper["disk_bytes"]
    assert [float(g) for g in disk.groups()] == [
        round(v / 1e9, 1) for v in (sum(want.values()), want["checkpoints"], want["packed data"])
    ], "README's disk estimate differs from mtlrobust plan"
    small = re.search(r"For the default study it says ([\d.]+) GB", step)
    assert small and float(small[1]) == round(sum(_plan("config.yaml")["disk_bytes"].values()) / 1e9, 2)


def test_the_default_studys_time_is_only_given_in_the_benchmarks():
    """Measured minutes live in bench/BENCHMARKS.md; README and config.yaml point there, repeating none."""
    minutes = re.compile(r"\d+(\.\d+)?\s*(min\b|minutes)")
    readme = _paragraph((ROOT / "README.md").read_text(), "Run the default study")
    lines = (ROOT / "config.yaml").read_text().splitlines()
    header = " ".join(itertools.takewhile(lambda line: line.startswith("#"), lines))
    for where, text in (("README 'Run the default study'", readme), ("config.yaml's header", header)):
        assert not minutes.search(text), f"{where} repeats a measured time: {minutes.search(text)[0]!r}"
        assert "bench/BENCHMARKS.md" in text, f"{where} should point at bench/BENCHMARKS.md for the time"
