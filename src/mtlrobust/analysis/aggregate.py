"""``mtlrobust aggregate``: reduce per-sample evaluation CSVs into ``results/vulnerability.csv``.

One row per (model_id, epoch, attack, attacked, task) with mean losses/errors, the paper's relative task
vulnerability (mean of per-sample ratios), the authors' ratio of means, the adversarial vulnerability of
the attacked subset (Definition 1) and helper columns for the tables: ``seed``, ``main`` (first task of a
non-uniform model, empty for uniform ones), ``n_tasks``, ``letters``, ``attacked_letters``, ``task_letter``.
"""

from __future__ import annotations

import argparse
import io
import re
from pathlib import Path

import numpy as np
import pandas as pd

from .. import metrics as M
from ..evaluate import COLUMNS, TRAILER
from ..files import check_output, read_text, write_frame

KEY = ["model_id", "epoch", "attack", "attacked", "task"]
EVAL_COLUMNS = COLUMNS  # the per-sample evaluation CSV, as evaluate writes it
_PER_SAMPLE = ("sample", "view", "clean_loss", "adv_loss", "clean_error", "adv_error")
IDENT = [c for c in COLUMNS if c not in _PER_SAMPLE and not c.startswith("dataset_")]
OUT_COLUMNS = IDENT + [
    "n",
    "n_skipped",
    "clean_loss",
    "adv_loss",
    "clean_error",
    "adv_error",
    "rel_vuln",
    "rel_vuln_ratio_of_means",
    "adv_vulnerability",
    "dataset_clean_miou",
    "dataset_adv_miou",
    "seed",
    "main",
    "n_tasks",
    "letters",
    "attacked_letters",
    "task_letter",
]
_STR = {
    "model_id": str,
    "arch": str,
    "weighting": str,
    "tasks": str,
    "attack": str,
    "method": str,
    "norm": str,
    "options": str,
    "attacked": str,
    "view": str,
    "task": str,
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--inputs", nargs="*", default=[], type=Path, help="evaluation CSVs")
    p.add_argument("--inputs-from", type=Path, help="a file listing evaluation CSVs, one path per line")
    p.add_argument("--out", required=True, type=Path, help="results/vulnerability.csv")


def read_eval(path: Path) -> pd.DataFrame:
    """One evaluation CSV, checked for the contract's columns and for completeness: its last line must
    be evaluate's trailer with the row count, and every attacked subset must hold every sample x task."""
    try:
        text = read_text(path, "evaluation CSV")
    except OSError as e:
        raise ValueError(f"{path}: cannot read the evaluation CSV: {e.strerror or e}") from None
    if not text.strip():
        raise ValueError(f"{path}: empty file, expected an evaluation CSV written by `mtlrobust evaluate`")
    body, _, last = text.rstrip("\n").rpartition("\n")
    try:
        df = pd.read_csv(
            io.StringIO(body if last.startswith(TRAILER) else text),
            dtype=_STR,
            keep_default_na=False,
            na_values={c: ["", "nan", "NaN"] for c in EVAL_COLUMNS if c not in _STR},
        )
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as e:
        raise ValueError(f"{path}: cannot read the evaluation CSV: {e}") from None
    missing = [c for c in EVAL_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: malformed evaluation CSV, missing column(s) {missing}")
    m = re.fullmatch(re.escape(TRAILER) + r"(\d+) rows", last)
    if not m:
        raise ValueError(
            f"{path}: incomplete evaluation CSV (its last line is not {TRAILER!r}...; cut short or not "
            "written by `mtlrobust evaluate`): delete it and rerun the evaluation"
        )
    if int(m[1]) != len(df):
        raise ValueError(f"{path}: incomplete evaluation CSV, {len(df)} rows but written with {m[1]}")
    for c in ("epoch", "sample", "clean_loss", "adv_loss", "clean_error", "adv_error"):
        if len(df) and not pd.api.types.is_numeric_dtype(df[c]):
            bad = df[c][pd.to_numeric(df[c], errors="coerce").isna() & df[c].notna()].iloc[0]
            raise ValueError(f"{path}: malformed evaluation CSV, column {c!r} has a non-number {bad!r}")
    _check_complete(df, path)
    _check_values(df, path)
    return df


def _check_values(df: pd.DataFrame, path) -> None:
    """Losses finite and >= 0; errors >= 0 and finite, or NaN in both clean_error and adv_error (a sample
    without a valid pixel has no error). An infinite or one-sided NaN error would otherwise be skipped
    as "no valid pixel", and a negative one would turn into a plausible vulnerability."""
    both_nan = (df["clean_error"].isna() & df["adv_error"].isna()).to_numpy()
    for c in ("clean_loss", "adv_loss", "clean_error", "adv_error"):
        v = df[c].to_numpy(dtype=np.float64)
        error = c.endswith("_error")
        ok = (np.isfinite(v) & (v >= 0)) | (both_nan if error else False)
        if not ok.all():
            i = int(np.flatnonzero(~ok)[0])
            why = " (NaN only in both clean_error and adv_error: no valid pixel)" if error else ""
            raise ValueError(
                f"{path}: line {i + 2}, column {c} = {float(v[i])!r}: expected a finite number >= 0{why}"
            )


def _check_complete(df: pd.DataFrame, path) -> None:
    """Every attacked subset holds the same samples, each with a row for every task of the model."""
    tasks = df["task"].nunique()
    samples = df["sample"].nunique()
    for key, g in df.groupby(["model_id", "epoch", "attack", "attacked"], sort=False):
        if len(g) != samples * tasks or g[["sample", "task"]].duplicated().any():
            raise ValueError(
                f"{path}: incomplete evaluation CSV, attacked subset {key[3]!r} has {len(g)} rows, "
                f"expected {samples} samples x {tasks} tasks"
            )


def _letters(ids: str) -> str:
    from .. import tasks as T

    return T.letters(ids.split("+")) if ids else ""


def reduce_eval(df: pd.DataFrame) -> pd.DataFrame:
    """The vulnerability rows of one (or several concatenated) evaluation tables."""
    rows = []
    for key, g in df.groupby(["model_id", "epoch", "attack", "attacked"], sort=False):
        attacked = key[3].split("+")
        by_task = {t: gt for t, gt in g.groupby("task", sort=False)}
        av = (
            M.adversarial_vulnerability(
                {t: _by_sample(by_task, t, "clean_loss") for t in attacked},
                {t: _by_sample(by_task, t, "adv_loss") for t in attacked},
                attacked,
            )
            if all(t in by_task for t in attacked)
            else float("nan")
        )
        for _t, gt in by_task.items():
            rv = M.relative_vulnerability(gt["clean_error"], gt["adv_error"])
            rr = M.relative_vulnerability_ratio_of_means(gt["clean_error"], gt["adv_error"])
            first = gt.iloc[0]
            rows.append(
                {
                    **{c: first[c] for c in IDENT},
                    "n": rv.n,
                    "n_skipped": rv.n_skipped,
                    "clean_loss": np.nanmean(gt["clean_loss"]) if gt["clean_loss"].notna().any() else np.nan,
                    "adv_loss": np.nanmean(gt["adv_loss"]) if gt["adv_loss"].notna().any() else np.nan,
                    "clean_error": np.nanmean(gt["clean_error"])
                    if gt["clean_error"].notna().any()
                    else np.nan,
                    "adv_error": np.nanmean(gt["adv_error"]) if gt["adv_error"].notna().any() else np.nan,
                    "rel_vuln": rv.value,
                    "rel_vuln_ratio_of_means": rr.value,
                    "adv_vulnerability": av,
                    "dataset_clean_miou": first["dataset_clean_miou"],
                    "dataset_adv_miou": first["dataset_adv_miou"],
                }
            )
    return pd.DataFrame(rows, columns=OUT_COLUMNS[: OUT_COLUMNS.index("seed")])


def _by_sample(by_task, task, col) -> np.ndarray:
    g = by_task[task].sort_values("sample", kind="stable")
    return g[col].to_numpy(dtype=np.float64)


def add_helpers(out: pd.DataFrame) -> pd.DataFrame:
    """Parsed columns for tables/figures: seed, main, n_tasks, letters, attacked_letters, task_letter."""
    from .. import tasks as T

    out = out.copy()
    out["seed"] = out["model_id"].str.extract(r"-s(\d+)$", expand=False).astype("Int64")
    first = out["tasks"].str.split("+").str[0]
    out["main"] = np.where(
        out["weighting"].isin(T.SYMMETRIC_WEIGHTINGS), "", first.map(lambda t: T.get(t).letter)
    )
    out["n_tasks"] = out["tasks"].str.count(r"\+") + 1
    cache = {}
    for col, src in (("letters", "tasks"), ("attacked_letters", "attacked"), ("task_letter", "task")):
        out[col] = out[src].map(lambda s: cache.setdefault(s, _letters(s)))
    return out[OUT_COLUMNS]


def aggregate(paths) -> pd.DataFrame:
    """The vulnerability table of several evaluation CSVs (rows sorted by the key)."""
    parts = []
    for p in paths:
        try:
            parts.append(reduce_eval(read_eval(Path(p))))
        except (ValueError, TypeError, KeyError) as e:
            msg = str(e)
            named = msg if msg.startswith(str(p)) else f"{p}: malformed evaluation CSV: {msg}"
            raise ValueError(named) from None
    if not parts:
        raise ValueError("no evaluation CSV given (--inputs / --inputs-from)")
    out = pd.concat(parts, ignore_index=True)
    dup = out.duplicated(KEY)
    if dup.any():
        raise ValueError(
            f"the same (model, epoch, attack, attacked, task) appears in several inputs: "
            f"{out.loc[dup, KEY].head(3).to_dict('records')}"
        )
    return add_helpers(out.sort_values(KEY, kind="stable").reset_index(drop=True))


def input_paths(args) -> list[Path]:
    paths = list(args.inputs)
    if args.inputs_from:
        try:
            lines = read_text(args.inputs_from, "list of evaluation CSVs, one per line").splitlines()
        except OSError as e:
            raise ValueError(f"--inputs-from {args.inputs_from}: {e.strerror or e}") from None
        except ValueError as e:
            raise ValueError(f"--inputs-from {e}") from None
        paths += [Path(s.strip()) for s in lines if s.strip()]
    return paths


def run(args) -> int:
    check_output(args.out, "--out")
    df = aggregate(input_paths(args))
    write_frame(args.out, df, float_format="%.9g")
    print(f"wrote {len(df)} rows to {args.out}")
    return 0
