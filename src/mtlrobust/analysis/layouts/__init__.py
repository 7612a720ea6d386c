"""The registry of layouts: a spec's ``layout`` -> its :class:`~mtlrobust.analysis.layout.Layout`.

To add a layout, write its module here (``cells``, ``table`` and/or ``figure``, and ``LAYOUT``) and add its
line below.
"""

from . import adversarial, bars, correlations, grid, recommend, steps, supplementary, sweep

LAYOUTS = {
    "grid": grid.LAYOUT,
    "correlations": correlations.LAYOUT,
    "sweep": sweep.LAYOUT,
    "bars": bars.LAYOUT,
    "supplementary": supplementary.LAYOUT,
    "recommend": recommend.LAYOUT,
    "steps": steps.LAYOUT,
    "adversarial": adversarial.LAYOUT,
}
