"""The registry of outputs: name -> how its study section is planned and what it renders; one planner module
per family of outputs next to it.

To add an output, write a planner ``def NAME(s: Section) -> dict`` returning a spec of a layout
(``analysis.layouts``) in a module here, add its import and its line below, and its ``study.NAME`` section
(with ``enabled``) to the schema.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..plan import Section
from . import adversarial, paper, recommend, steps, supplementary, sweeps


@dataclass(frozen=True)
class Entry:
    """How one output is planned (its section's cells) and rendered."""

    plan: Callable[[Section], dict]
    renders: tuple[str, ...]
    traced: bool = False  # its evaluations record the state after each attack step (mtlrobust.steptrace)
    claims: bool = False  # its cell table (results/cells/NAME.csv) feeds results/claims.csv


TABLE, BOTH = ("table",), ("table", "figure")

# Output name -> entry; the study section of the same name enables it (study.NAME.enabled).
OUTPUTS: dict[str, Entry] = {
    "table1": Entry(paper.table1, TABLE, claims=True),
    "table2": Entry(paper.table2, TABLE, claims=True),
    "table3": Entry(paper.table3, TABLE, claims=True),
    "figure1": Entry(paper.figure1, BOTH, claims=True),
    "rq1_norm": Entry(sweeps.rq1_norm, BOTH, claims=True),
    "rq1_eps": Entry(sweeps.rq1_eps, BOTH, claims=True),
    "rq1_arch": Entry(sweeps.rq1_arch, BOTH, claims=True),
    "rq1_epochs": Entry(sweeps.rq1_epochs, BOTH),
    "recommend": Entry(recommend.recommend, TABLE),
    "supp_tables": Entry(supplementary.supp_tables, TABLE),
    "figure1_orders": Entry(supplementary.figure1_orders, BOTH),
    "table_sets": Entry(supplementary.table_sets, TABLE),
    "figure1_retrained": Entry(supplementary.figure1_retrained, BOTH),
    "steps": Entry(steps.steps, BOTH, traced=True),
    "table_at": Entry(adversarial.table_at, TABLE, traced=True, claims=True),
}

# The outputs whose cell tables feed results/claims.csv, in registry order; the claims output is built
# whenever one of them is enabled.
CLAIMS_SOURCES = tuple(name for name, entry in OUTPUTS.items() if entry.claims)
