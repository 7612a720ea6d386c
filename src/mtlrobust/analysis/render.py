"""Render one planned output: its table (CSV, Markdown, cell table) and/or its figure, by its spec's layout.

The one place that turns a spec into files, for the workflow's table and figure rules and for the
``mtlrobust tables`` and ``mtlrobust figures`` commands.
"""

from __future__ import annotations

from pathlib import Path

from .. import files, values
from .evaluations import FRAGILE_SHARE
from .layout import Layout
from .layouts import LAYOUTS
from .plotting import save


def layout_of(name: str, spec: dict, makes: str) -> Layout:
    """The layout of ``spec``, which must make a ``makes`` ("table" or "figure")."""
    layout = LAYOUTS.get(spec.get("layout"))
    if layout is None or getattr(layout, makes) is None:
        able = sorted(k for k, v in LAYOUTS.items() if getattr(v, makes) is not None)
        raise ValueError(
            f"{name}: spec layout {spec.get('layout')!r} is not a {makes}; expected one of {able}"
        )
    return layout


def table(name: str, spec: dict, inputs, *, fragile_share: float = FRAGILE_SHARE, models: Path | None = None):
    """(CSV table, Markdown text, cell table) of the output ``name`` from the evaluation CSVs ``inputs``;
    ``models``: results/models.csv, whose models not beating the constant predictor the proxies leave out."""
    layout = layout_of(name, spec, "table")
    return layout.table(name, spec, list(inputs), fragile_share=fragile_share, models=models)


def figure(name: str, spec: dict, inputs):
    """The matplotlib figure of the output ``name`` from the evaluation CSVs ``inputs``."""
    return layout_of(name, spec, "figure").figure(name, spec, list(inputs))


def write(
    name: str,
    spec: dict,
    inputs,
    *,
    csv: Path | None = None,
    cells: Path | None = None,
    png: Path | None = None,
    fragile_share: float = FRAGILE_SHARE,
    models: Path | None = None,
) -> list[Path]:
    """Write the output's table to ``csv`` (NAME.md next to it; its cell table to ``cells`` if given) and/or
    its figure to ``png`` (NAME.pdf next to it); the paths written."""
    written = []
    if csv is not None:
        t, md, long = table(name, spec, inputs, fragile_share=fragile_share, models=models)
        csv = Path(csv)
        files.write_frame(csv, t, float_format="%.6g")
        files.write_text(csv.with_suffix(".md"), md)
        written += [csv, csv.with_suffix(".md")]
        if cells is not None:
            files.write_frame(Path(cells), long, float_format="%.6g")
            written.append(Path(cells))
    if png is not None:
        written += save(figure(name, spec, inputs), png)
    return written


def load_spec(value: str) -> dict:
    """A spec given as a JSON file or as JSON text (``--spec``)."""
    return values.json_object(value, "--spec", files=True)
