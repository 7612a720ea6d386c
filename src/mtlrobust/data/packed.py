"""Prepared arrays: decode and resize each view once, then train/evaluate from memory-mapped .npy files.

Why: decoding 11 PNGs and resizing them per item dominates the reference loaders' time; a packed
split is read with one fancy-indexed slice per batch (``PackedDataset.batch``).

Folder ``{out}/{split}/``: ``rgb.npy`` uint8 [N, 3, H, W]; ``{task_id}.npy`` float32 [N, C, H, W]
(seg: uint8 [N, H, W]); ``{task_id}.mask.npy`` uint8 [N, H, W]; ``views.csv`` (building, point,
view); ``meta.json``; ``missing_views.csv`` (views dropped because a domain lacks them) and
``bad_views.csv`` (with ``--skip-bad``) when relevant. Each split folder is written to a temporary
folder and renamed, so a folder that exists is complete.

Resizing (only when the source size differs from ``resolution``):
- rgb input: PIL BILINEAR on the 8-bit image (antialiased when shrinking, as the reference's
  ``data_resize_taskonomy.py``);
- labels (seg) and every mask: PIL NEAREST;
- continuous targets: decoded at full size, then a *masked* PIL BILINEAR on float images
  (resize(target * mask) / resize(mask)), so invalid pixels never bleed into valid ones; a pixel is
  valid where the NEAREST-resized mask is, and set to 0 where it is not.
At the source size nothing is resized: the arrays equal ``Task.decode`` exactly.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from .. import __version__
from .. import tasks as T
from ..files import make_temp_dir, raise_if_disk_full
from . import taskonomy as tx

log = logging.getLogger(__name__)
FORMAT_VERSION = 1


# ------------------------------------------------------------------------------------------- resizing
def _resize_float(a: np.ndarray, size: int) -> np.ndarray:
    return np.asarray(Image.fromarray(a.astype(np.float32), mode="F").resize((size, size), Image.BILINEAR))


def _resize_nearest(a: np.ndarray, size: int) -> np.ndarray:
    return np.asarray(Image.fromarray(a).resize((size, size), Image.NEAREST))


def resize_view(vd: tx.ViewData, tasks: Sequence[T.Task], size: int):
    """(rgb uint8 [3, s, s], {id: target}, {id: mask uint8 [s, s]}) of a decoded view at side ``size``."""
    rgb = vd.raw[T.INPUT_DOMAIN]
    same = rgb.shape[0] == size and rgb.shape[1] == size
    x = rgb if same else np.asarray(Image.fromarray(rgb).resize((size, size), Image.BILINEAR))
    targets, masks = {}, {}
    for t in tasks:
        tgt, m = vd.targets[t.id], vd.masks[t.id].astype(np.uint8)
        if t.is_segmentation:
            lab = tgt.astype(np.uint8)
            targets[t.id] = lab if same else _resize_nearest(lab, size)
        elif same:
            targets[t.id] = tgt.astype(np.float32)
        else:
            mf = m.astype(np.float32)
            wsum = _resize_float(mf, size)
            chans = [_resize_float(c * mf, size) / np.maximum(wsum, 1e-6) for c in tgt]
            targets[t.id] = np.stack(chans).astype(np.float32)
        masks[t.id] = m if same else _resize_nearest(m, size)
        if not t.is_segmentation and not same:
            targets[t.id][:, masks[t.id] == 0] = 0.0  # nothing meaningful where invalid
    return x.transpose(2, 0, 1), targets, masks


# -------------------------------------------------------------------------------------------- prepare
def _split_rule(raw: Path, split_csv, threshold):
    if split_csv is not None and threshold is not None:
        raise ValueError("give either --split-csv or --threshold, not both")
    if threshold is not None:
        return None, int(threshold)
    path = Path(split_csv) if split_csv is not None else raw / tx.SPLIT_CSV_NAME
    if not path.is_file():
        raise FileNotFoundError(
            f"split CSV {path} not found; give --split-csv FILE or --threshold N (point id < N: train)"
        )
    return path, None


def _write_rows(path: Path, header: Sequence[str], rows) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


def prepare(
    raw: str | os.PathLike,
    out: str | os.PathLike,
    tasks: str | Sequence[str],
    resolution: int,
    splits: Sequence[str] = tx.SPLITS,
    *,
    split_csv: str | os.PathLike | None = None,
    threshold: int | None = None,
    val_threshold: int | None = None,
    buildings: Sequence[str] | None = None,
    skip_bad: bool = False,
    allow_missing: bool = False,
    progress: bool = True,
) -> list[Path]:
    """Write ``{out}/{split}/`` for each split; returns the split folders.

    Split rule: ``threshold`` (point < threshold is train; with ``val_threshold`` threshold <= point <
    val_threshold is val and the rest test, without it the paper code's rule: the rest is val and test),
    else the split CSV (``split_csv`` or ``{raw}/train_val_test_split.csv``). ``buildings``
    restricts the buildings read. A bad file raises ``TaskonomyFileError`` unless ``skip_bad``.
    """
    raw, out = Path(raw), Path(out)
    ts = T.canonical(T.parse(tasks))
    csv_path, thr = _split_rule(raw, split_csv, threshold)
    if val_threshold is not None and (thr is None or val_threshold <= thr):
        raise ValueError(f"--val-threshold {val_threshold} needs --threshold N with N < {val_threshold}")
    by_split = tx.read_split_csv(csv_path) if csv_path is not None else None
    done = []
    for split in splits:
        if split not in tx.SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {tx.SPLITS}")
        wanted = None if by_split is None else by_split[split]
        if buildings is not None:
            wanted = list(buildings) if wanted is None else [b for b in wanted if b in set(buildings)]
        index = tx.scan(raw, ts, wanted, allow_missing=allow_missing)
        views = (
            index.views
            if by_split is not None
            else tx.select_views(index.views, split, threshold=thr, val_threshold=val_threshold)
        )
        if not views:
            raise ValueError(
                f"split {split!r} has no views under {raw} (buildings {wanted}, threshold {thr})"
            )
        rule = f"csv:{csv_path}" if csv_path is not None else f"threshold:{thr}"
        rule += f":{val_threshold}" if val_threshold is not None else ""
        done.append(_write_split(index, views, ts, resolution, out / split, split, rule, skip_bad, progress))
    return done


def _write_split(index, views, ts, size, dest: Path, split, rule, skip_bad, progress) -> Path:
    from tqdm import tqdm

    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = make_temp_dir(dest.parent, f".{dest.name}.tmp-")
    try:
        n = len(views)
        arrays = {"rgb": np.lib.format.open_memmap(tmp / "rgb.npy", "w+", np.uint8, (n, 3, size, size))}
        for t in ts:
            shape = (n, size, size) if t.is_segmentation else (n, t.channels, size, size)
            dtype = np.uint8 if t.is_segmentation else np.float32
            arrays[t.id] = np.lib.format.open_memmap(tmp / f"{t.id}.npy", "w+", dtype, shape)
            arrays[t.id + ".mask"] = np.lib.format.open_memmap(
                tmp / f"{t.id}.mask.npy", "w+", np.uint8, (n, size, size)
            )
        good, bad = [], []
        for v in tqdm(
            views, desc=f"prepare {split}", unit="view", disable=None if progress else True, mininterval=1.0
        ):
            try:
                vd = index.read(v, ts)
            except tx.TaskonomyFileError as e:
                if not skip_bad:
                    raise
                bad.append((v.building, v.point, v.view, str(e.path), e.reason))
                log.warning("skipped view %s: %s", v, e)
                continue
            x, targets, masks = resize_view(vd, ts, size)
            i = len(good)
            arrays["rgb"][i] = x
            for t in ts:
                arrays[t.id][i] = targets[t.id]
                arrays[t.id + ".mask"][i] = masks[t.id]
            good.append(v)
        if not good:
            raise ValueError(f"split {split!r}: every view was bad (see the warnings)")
        for name, a in arrays.items():
            a.flush()
            if len(good) < n:  # compact after skipped views (new file, then replace)
                np.save(tmp / f"{name}.compact.npy", np.array(a[: len(good)]))
                os.replace(tmp / f"{name}.compact.npy", tmp / f"{name}.npy")
        del arrays
        _write_rows(tmp / "views.csv", ["building", "point", "view"], good)
        if skip_bad:
            _write_rows(tmp / "bad_views.csv", ["building", "point", "view", "path", "reason"], bad)
        if index.missing:
            rows = [(v.building, v.point, v.view, "+".join(ds)) for v, ds in index.missing]
            _write_rows(tmp / "missing_views.csv", ["building", "point", "view", "missing_domains"], rows)
        meta = {
            "resolution": size, "tasks": [t.id for t in ts], "split": split, "split_rule": rule,
            "source": str(index.root.resolve()), "n": len(good), "n_bad": len(bad),
            "n_missing": len(index.missing), "absent_buildings": index.absent_buildings,
            "excluded_forbidden": index.forbidden,
            "resize": {"rgb": "bilinear", "labels_masks": "nearest", "targets": "masked bilinear on float"},
            "version": {"format": FORMAT_VERSION, "mtlrobust": __version__},
        }  # fmt: skip
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
        if dest.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{dest.name}.old-", dir=dest.parent))
            os.replace(dest, old / dest.name)
            shutil.rmtree(old)
        os.replace(tmp, dest)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise_if_disk_full(e, dest)
        raise
    log.info(
        "%s: %d views (%d bad, %d missing a domain) -> %s",
        split,
        len(good),
        len(bad),
        len(index.missing),
        dest,
    )
    return dest


# -------------------------------------------------------------------------------------------- dataset
# Float targets and seg labels of arrays up to this size are checked in full when a split is opened (a
# pass over 256 MiB takes ~0.1 s); larger ones (paper scale: GBs per task) batch by batch as they are read,
# so no job pays a full read of the split before it starts.
CHECK_AT_OPEN_BYTES = 256 * 2**20
CHUNK_ROWS = 256  # rows per step of that check, so it never holds a whole large array in memory
META_KEYS = ("tasks", "resolution")


def read_meta(path: Path) -> dict:
    """A split's meta.json, checked for the keys PackedDataset needs; errors name the file."""
    from ..files import read_text

    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: not a prepared split (run `mtlrobust prepare`)")
    text = read_text(path, "JSON file (a prepared split's meta.json)")
    if not text.strip():
        raise ValueError(
            f"{path}: empty file, expected the split's JSON metadata (re-run `mtlrobust prepare`)"
        )
    try:
        meta = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e}); re-run `mtlrobust prepare`") from None
    if not isinstance(meta, dict) or any(k not in meta for k in META_KEYS):
        raise ValueError(f"{path}: expected a JSON object with keys {list(META_KEYS)}")
    tasks, res = meta["tasks"], meta["resolution"]
    if not isinstance(tasks, list) or not all(isinstance(t, str) and t in T.BY_ID for t in tasks):
        raise ValueError(f"{path}: 'tasks' must list task ids of {sorted(T.BY_ID)}, got {tasks!r}")
    if isinstance(res, bool) or not isinstance(res, int) or res < 1:
        raise ValueError(f"{path}: 'resolution' must be an integer >= 1, got {res!r}")
    return meta


def open_array(path: Path, dtype, trailing: tuple, rows: int | None = None) -> np.ndarray:
    """Memory-map the .npy ``path`` after checking its header against the contract: ``dtype``, shape
    [N, *trailing] (N = ``rows`` when given) and a file as long as the header says."""
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, _, have = np.lib.format.read_array_header_1_0(f)
            else:
                shape, _, have = np.lib.format.read_array_header_2_0(f)
            offset = f.tell()
    except ValueError as e:
        raise ValueError(f"{path}: not a .npy array ({e})") from None
    size = path.stat().st_size
    want = f"{np.dtype(dtype).name} [{rows if rows is not None else 'N'}, {', '.join(map(str, trailing))}]"
    if have != np.dtype(dtype) or len(shape) != 1 + len(trailing) or tuple(shape[1:]) != tuple(trailing):
        raise ValueError(f"{path}: {have} {list(shape)} array, expected {want}")
    if rows is not None and shape[0] != rows:
        raise ValueError(f"{path}: {shape[0]} rows, expected {rows} (as many as rgb.npy): {want}")
    expected = offset + int(np.prod(shape)) * have.itemsize
    if size != expected:
        raise ValueError(f"{path}: truncated or corrupt .npy (expected {expected} bytes, found {size})")
    return np.load(path, mmap_mode="r")


def read_views(path: Path) -> list[tx.View]:
    """The split's views.csv (building, point, view); errors name the file and the row."""
    from ..files import read_text

    try:
        rows = list(csv.reader(read_text(path, "CSV file (a prepared split's views.csv)").splitlines()))
    except OSError as e:
        raise FileNotFoundError(f"{path}: {e.strerror or e}") from None
    if not rows or [c.strip() for c in rows[0]] != ["building", "point", "view"]:
        raise ValueError(f"{path}: expected the header building,point,view, got {rows[:1]}")
    views = []
    for n, r in enumerate(rows[1:], 2):
        try:
            b, p, v = r
            views.append(tx.View(b, int(p), int(v)))
        except ValueError:
            raise ValueError(f"{path}:{n}: expected building,point,view (integers), got {r}") from None
    return views


class PackedDataset:
    """A prepared split: ``ds[i]`` or ``ds.batch(idx)`` -> (x in [0, 1], targets, masks [1, H, W]).

    A map-style dataset (``len`` and indexing, as ``torch.utils.data.DataLoader`` wants) that imports
    neither torch nor pandas when opened, so ``prepare`` and short jobs start fast.
    """

    def __init__(self, split_dir: str | os.PathLike, task_ids: Sequence[str] | None = None):
        self.dir = Path(split_dir)
        self.meta = read_meta(self.dir / "meta.json")
        have = self.meta["tasks"]
        ids = have if task_ids is None else [T.get(t).id for t in task_ids]
        lacking = [t for t in ids if t not in have]
        if lacking:
            raise ValueError(f"{self.dir}: tasks {lacking} were not prepared (it has {have})")
        self.tasks = [T.get(t) for t in ids]
        self.resolution = int(self.meta["resolution"])
        self.rgb = open_array(self.dir / "rgb.npy", np.uint8, (3, self.resolution, self.resolution))
        n, size = len(self.rgb), (self.resolution, self.resolution)
        self.targets, self.masks, self._unchecked = {}, {}, set()
        for t in self.tasks:
            want = (np.uint8, size) if t.is_segmentation else (np.float32, (t.channels, *size))
            self.targets[t.id] = open_array(self.dir / f"{t.id}.npy", *want, n)
            self.masks[t.id] = open_array(self.dir / f"{t.id}.mask.npy", np.uint8, size, n)
            if self.targets[t.id].nbytes <= CHECK_AT_OPEN_BYTES:
                self._check_values(t, np.arange(n))
            else:  # too large to read at every job's start: each batch is checked as it is read
                self._unchecked.add(t.id)
        self.views = read_views(self.dir / "views.csv")
        if len(self.views) != n:
            raise ValueError(f"{self.dir}: views.csv has {len(self.views)} rows, rgb.npy {n}")

    def _check_values(self, task: T.Task, idx: np.ndarray, values: np.ndarray | None = None) -> None:
        """Refuse a non-finite float target or a seg label outside the classes (``values``: rows ``idx``).

        Invalid pixels hold 0 (their mask is 0), never NaN: the masked losses multiply by the mask, and
        NaN * 0 is NaN, so one NaN anywhere would poison a whole batch's loss."""
        a = self.targets[task.id]
        for start in range(0, len(idx), CHUNK_ROWS):
            rows = idx[start : start + CHUNK_ROWS]
            v = (a[rows] if values is None else values[start : start + CHUNK_ROWS]).reshape(len(rows), -1)
            bad = v >= task.channels if task.is_segmentation else ~np.isfinite(v)
            if bad.any():
                row = int(np.flatnonzero(bad.any(1))[0])
                value = v[row][bad[row]][0].item()
                expected = f"labels 0..{task.channels - 1}" if task.is_segmentation else "finite targets"
                path = self.dir / f"{task.id}.npy"
                raise ValueError(f"{path}: view {int(rows[row])} holds {value!r}, expected {expected}")

    def __len__(self) -> int:
        return len(self.rgb)

    def batch(self, idx):
        """Stacked samples ``idx``, one read per array: x [B, 3, H, W], targets, masks [B, 1, H, W]."""
        import torch

        idx = np.asarray(idx, dtype=np.int64)
        x = torch.from_numpy(self.rgb[idx].astype(np.float32) / np.float32(255.0))
        targets, masks = {}, {}
        for t in self.tasks:
            a = self.targets[t.id][idx]
            if t.id in self._unchecked:
                self._check_values(t, idx, a)
            targets[t.id] = torch.from_numpy(a.astype(np.int64) if t.is_segmentation else a)
            masks[t.id] = torch.from_numpy(self.masks[t.id][idx].astype(np.float32)[:, None])
        return x, targets, masks

    def __getitem__(self, i: int):
        x, targets, masks = self.batch([i])
        return x[0], {k: v[0] for k, v in targets.items()}, {k: v[0] for k, v in masks.items()}


# ------------------------------------------------------------------------------------------------ CLI
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--raw", required=True, help="Taskonomy root (any of the three layouts)")
    parser.add_argument("--out", required=True, help="packed root; writes OUT/{split}/")
    parser.add_argument(
        "--split", action="append", choices=tx.SPLITS, help="split to write (repeat; default all)"
    )
    parser.add_argument("--tasks", required=True, help="task ids or letters, e.g. seg+depth_z or sdD")
    parser.add_argument("--resolution", type=int, required=True, help="side of the packed images")
    rule = parser.add_mutually_exclusive_group()
    rule.add_argument("--split-csv", help=f"official split CSV (default: RAW/{tx.SPLIT_CSV_NAME})")
    rule.add_argument("--threshold", "--split-point-threshold", dest="threshold", type=int,
                      help="point id < N: train; the rest: val and test (paper code: 1200)")  # fmt: skip
    parser.add_argument(
        "--val-threshold", type=int, help="with --threshold N: N <= point id < this is val, the rest test"
    )
    parser.add_argument("--buildings", nargs="+", help="only these buildings")
    parser.add_argument(
        "--skip-bad", action="store_true", help="skip unreadable views, list them in bad_views.csv"
    )
    parser.add_argument(
        "--allow-missing", action="store_true", help="skip requested buildings absent on disk"
    )


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    prepare(args.raw, args.out, args.tasks, args.resolution, args.split or tx.SPLITS,
            split_csv=args.split_csv, threshold=args.threshold, val_threshold=args.val_threshold,
            buildings=args.buildings,
            skip_bad=args.skip_bad, allow_missing=args.allow_missing)  # fmt: skip
    return 0
