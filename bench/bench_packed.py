"""Prepared arrays vs per-item PNG decoding: images per second over one epoch, same views, same output.

Reference = what the reference loaders do per item: open every PNG the tasks need, decode it, resize
it, decode the targets (``read_view`` + ``resize_view``, the exact code ``prepare`` runs once), then
stack a batch. Packed = ``PackedDataset.batch`` over the prepared memory-mapped arrays (shuffled
indices, batch 32). Both produce identical tensors (checked on the first batch). The ratio printed is
packed images/s over per-item images/s (target: >= 20x). CPU time of this process is used.

    python bench/bench_packed.py [--views 200] [--source 128] [--resolution 64] [--tasks sdDnkKeEprA]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from mtlrobust import tasks as T
from mtlrobust.data import taskonomy as tx
from mtlrobust.data.packed import PackedDataset, prepare, resize_view
from mtlrobust.data.synthetic import synthesize


def per_item_batch(index, views, tasks, size):
    items = [resize_view(index.read(v, tasks), tasks, size) for v in views]
    x = torch.from_numpy(np.stack([i[0] for i in items]).astype(np.float32) / np.float32(255))
    targets = {t.id: torch.from_numpy(np.stack([i[1][t.id] for i in items])) for t in tasks}
    for t in tasks:
        if t.is_segmentation:
            targets[t.id] = targets[t.id].long()
    masks = {
        t.id: torch.from_numpy(np.stack([i[2][t.id] for i in items]).astype(np.float32)[:, None])
        for t in tasks
    }
    return x, targets, masks


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--views", type=int, default=200, help="views in the epoch (4 buildings x points x 5 views)"
    )
    ap.add_argument("--source", type=int, default=128, help="side of the PNGs")
    ap.add_argument("--resolution", type=int, default=64, help="side of the prepared arrays")
    ap.add_argument("--tasks", default="sdDnkKeEprA")
    ap.add_argument("--batch", type=int, default=32)
    a = ap.parse_args()
    tasks = T.canonical(T.parse(a.tasks))
    points = max(1, a.views // 20)
    with tempfile.TemporaryDirectory() as tmp:
        raw = synthesize(Path(tmp) / "raw", 4, points, 5, a.source, 0, split_csv=False, progress=False)
        c0 = time.process_time()
        (split,) = prepare(raw, Path(tmp) / "packed", [t.id for t in tasks], a.resolution, ["train"],
                           threshold=10**9, progress=False)  # fmt: skip
        prep = time.process_time() - c0
        ds = PackedDataset(split)
        index = tx.scan(raw, tasks)
        views = [tx.View(*r) for r in ds.views.itertuples(index=False)]
        order = np.random.default_rng(0).permutation(len(ds))
        batches = [order[i : i + a.batch] for i in range(0, len(order), a.batch)]
        ref, got = (
            per_item_batch(index, [views[i] for i in batches[0]], tasks, a.resolution),
            ds.batch(batches[0]),
        )
        assert torch.equal(ref[0], got[0]) and all(torch.equal(ref[1][k], got[1][k]) for k in ref[1])
        c0 = time.process_time()
        for b in batches:
            per_item_batch(index, [views[i] for i in b], tasks, a.resolution)
        slow = time.process_time() - c0
        c0 = time.process_time()
        reps = 20
        for _ in range(reps):
            for b in batches:
                ds.batch(b)
        fast = (time.process_time() - c0) / reps
    n = len(ds)
    print(
        f"{n} views, {len(tasks)} tasks, PNG {a.source} px -> {a.resolution} px, batch {a.batch} (cpu time)"
    )
    print(f"  per-item PNG decode+resize: {slow:.2f} s/epoch = {n / slow:.0f} images/s")
    print(f"  packed (PackedDataset.batch): {fast:.4f} s/epoch = {n / fast:.0f} images/s")
    print(f"  ratio packed / per-item = {slow / fast:.0f}x (target >= 20x); prepare once: {prep:.2f} s")


if __name__ == "__main__":
    main()
