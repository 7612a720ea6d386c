"""``mtlrobust claims``: a verdict on each claim the paper makes from Tables 1-3, Figure 1 and the RQ1 sweeps.

``cells``: the input contract (the cell table's columns) and its checks; ``verdicts``: the thresholds and how
a statistic with an interval becomes a verdict; ``rq1`` ... ``rq4`` and ``adversarial``: the rules of each
research question and of adversarial training (table_at); ``render``: claims.csv's rows and claims.md;
``command``: the command line. The rule modules import ``cells`` and ``verdicts``, never each other.

One rule per claim, as the paper words it: RQ1 per attack kind; L2 per L2 attack of rq1_norm (the paper's
budget and the budget-matched one); eps > 4/255 per attack kind; ResNet50/152 pairs under single-task
attacks; "stronger than PGD" on the attacked objective and on the main task's error, each single-task cell
once; Figure 1 on the steps after the first task; Theorem 4 against results/theory.csv (``--theory``).
"""

from .cells import check_cells, merge_seeds, read_cells, read_theory
from .command import add_arguments, run
from .render import CLAIM_COLUMNS, claims, render_claims
from .verdicts import Thresholds, thresholds

__all__ = [
    "CLAIM_COLUMNS",
    "Thresholds",
    "add_arguments",
    "check_cells",
    "claims",
    "merge_seeds",
    "read_cells",
    "read_theory",
    "render_claims",
    "run",
    "thresholds",
]
