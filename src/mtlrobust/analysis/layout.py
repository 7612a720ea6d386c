"""The contract between the study's planner and the renderers: what a spec's layout needs and makes.

A spec (``mtlrobust.study``) names its ``layout``; ``layouts.LAYOUTS`` maps the name to a :class:`Layout`. The
planner asks it for the spec's cells (the evaluations the output reads); ``render.write`` asks it for the
table (CSV, Markdown and the cell table ``claims`` reads) and the figure.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Layout:
    """How specs of one layout are read and rendered.

    ``cells(spec)``: every cell ``[model_id, epoch, attack, attacked, task]`` the spec shows or compares with.
    ``table(name, spec, inputs, *, fragile_share, models)``: (CSV table, Markdown text, cell table) from the
    evaluation CSVs (and per-step sidecars) ``inputs``; ``models`` is results/models.csv or None.
    ``figure(name, spec, inputs)``: the matplotlib figure. None: the layout makes no table / no figure.
    """

    cells: Callable[[dict], list[list]]
    table: Callable | None = None
    figure: Callable | None = None


def cells_under(nodes: list[dict], *keys: str) -> list[list]:
    """The cells held under ``keys`` of each node: a cell, a list of cells (some None: no cell there) or a
    cell's per-seed list, flattened to cells in order."""
    out = []
    for node in nodes:
        for key in keys:
            value = node.get(key)
            if not value:
                continue
            for item in value if isinstance(value[0], list | None) else [value]:
                if item is None:
                    continue
                out.extend(item if item and isinstance(item[0], list) else [item])
    return out
