"""The README documents every configuration key of the schema (the schema's descriptions are checked too)."""

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
    schema = yaml.safe_load((ROOT / "workflow/schemas/config.schema.yaml").read_text())
    readme = (ROOT / "README.md").read_text()
    keys = list(_keys(schema))
    assert len(keys) > 30
    undescribed = [".".join(p) for p, d in keys if not d]
    assert not undescribed, f"schema keys without a description: {undescribed}"
    missing = [".".join(p) for p, _ in keys if p[-1] not in readme]
    assert not missing, f"config keys the README does not mention: {missing}"
