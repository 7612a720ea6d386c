"""Layout ``recommend``: per main task, auxiliary tasks ranked by a proxy setting against the target
(``analysis.recommend``, also the ``mtlrobust recommend`` command)."""

from __future__ import annotations

import pandas as pd

from .. import recommend as R
from ..evaluations import CELL_COLUMNS, FRAGILE_SHARE, untrained_models
from ..layout import Layout


def table(name: str, spec: dict, inputs, *, fragile_share=FRAGILE_SHARE, models=None):
    """(CSV table, Markdown, cell table): every cell must be evaluated; candidates whose models do not beat
    the constant predictor (``models``) are left out. The cell table holds the proxy's and the target's value
    of each (main, aux) candidate (``setting`` proxy / target)."""
    res = R.rank(spec, list(inputs), untrained=untrained_models(models))
    ranked = R.table(res)
    t = ranked.set_index(["main", "aux"])
    rows = []
    for pair in spec["pairs"]:
        r = t.loc[(pair["main"], pair["aux"])]
        for side in ("proxy", "target"):
            cell = pair[side]
            rows.append({"output": name, "attack": cell[2], "main": pair["main"], "aux": pair["aux"],
                         "setting": side, "epoch": cell[1], "model_id": cell[0], "value": r[f"{side}_value"],
                         "lo": r[f"{side}_lo"], "hi": r[f"{side}_hi"], "n": r[f"{side}_n"]})  # fmt: skip
    return ranked, R.markdown(res, spec), pd.DataFrame(rows, columns=CELL_COLUMNS)


def cells(spec: dict) -> list[list]:
    return [p[side] for p in spec["pairs"] for side in ("proxy", "target")]


LAYOUT = Layout(cells, table=table)
