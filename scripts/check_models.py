"""Snakemake script of rule check_models: did every trained model beat its trivial predictor?

Reads the training CSV log written next to each checkpoint (last row = the checkpoint's epoch) and writes one
row per (model, epoch, task) with the validation error, the trivial predictor's error and ``beats_trivial``.
A model that does not beat it is flagged here and in the log, not failed: its vulnerability is still
reported, but should not be interpreted.
"""

import os
import re
import sys

import pandas as pd

COLUMN = re.compile(r"^val_error_(?P<task>\w+)$")


def summarize(log_csv: str) -> pd.DataFrame:
    """One row per task of the log's last epoch."""
    log = pd.read_csv(log_csv)
    if log.empty:
        raise ValueError(f"{log_csv}: empty training log")
    last = log.iloc[-1]
    model_id = os.path.basename(os.path.dirname(log_csv))
    rows = []
    for col in log.columns:
        m = COLUMN.match(col)
        if not m:
            continue
        task = m["task"]
        trivial = f"trivial_error_{task}"
        if trivial not in log.columns:
            raise ValueError(f"{log_csv}: column {col} has no matching {trivial}")
        val, triv = float(last[col]), float(last[trivial])
        rows.append(dict(model_id=model_id, epoch=int(last["epoch"]), task=task, val_error=val,
                         trivial_error=triv, beats_trivial=bool(val < triv)))  # fmt: skip
    if not rows:
        raise ValueError(f"{log_csv}: no val_error_<task> columns")
    return pd.DataFrame(rows)


def main(logs: list[str], out: str) -> None:
    table = pd.concat([summarize(p) for p in logs], ignore_index=True)
    tmp = f"{out}.tmp"
    table.to_csv(tmp, index=False)
    os.replace(tmp, out)
    bad = table[~table["beats_trivial"]]
    for r in bad.itertuples():
        print(f"WARNING: {r.model_id} epoch {r.epoch} does not beat the trivial predictor on {r.task}: "
              f"val error {r.val_error:.4g} >= trivial {r.trivial_error:.4g}", file=sys.stderr)  # fmt: skip
    print(f"{len(table)} (model, task) rows, {len(bad)} not better than trivial", file=sys.stderr)


if "snakemake" in globals():
    sys.stderr = open(snakemake.log[0], "w")  # noqa: F821
    main(list(snakemake.input), snakemake.output[0])  # noqa: F821
