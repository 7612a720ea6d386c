"""Snakemake script of rule check_models: did every trained model beat its trivial predictor?

Reads the training CSV log written next to each checkpoint (last row = the checkpoint's epoch) and writes one
row per (model, epoch, task) with the validation error, the trivial predictor's error, ``beats_trivial``
(``mtlrobust.baseline.compare_last_epoch``) and ``split``: the views the error was measured on (``val``, or
``val=test`` under the paper's point split, whose val views are the test views). A model that does not beat
it is flagged here and in the log, not failed: its vulnerability is still reported, but should not be
interpreted.
"""

import os
import sys

import pandas as pd

from mtlrobust.baseline import compare_last_epoch
from mtlrobust.files import write_frame


def summarize(log_csv: str, split: str = "val") -> pd.DataFrame:
    """One row per task of the log's last epoch; ``split`` names the views its error was measured on."""
    model_id = os.path.basename(os.path.dirname(log_csv))
    try:
        rows = compare_last_epoch(pd.read_csv(log_csv))
    except (ValueError, pd.errors.EmptyDataError) as e:
        raise ValueError(f"{log_csv}: {e}") from None
    return pd.DataFrame([{"model_id": model_id, **r, "split": split} for r in rows])


def main(logs: list[str], out: str, split: str = "val") -> None:
    table = pd.concat([summarize(p, split) for p in logs], ignore_index=True)
    write_frame(out, table)
    bad = table[~table["beats_trivial"]]
    for r in bad.itertuples():
        print(f"WARNING: {r.model_id} epoch {r.epoch} does not beat the trivial predictor on {r.task}: "
              f"val error {r.val_error:.4g} >= trivial {r.trivial_error:.4g}", file=sys.stderr)  # fmt: skip
    print(f"{len(table)} (model, task) rows, {len(bad)} not better than trivial", file=sys.stderr)


if "snakemake" in globals():
    sys.stderr = open(snakemake.log[0], "w")  # noqa: F821
    main(list(snakemake.input), snakemake.output[0], snakemake.params.split)  # noqa: F821
