"""Training throughput: ``mtlrobust.train`` against a plain PyTorch loop (same process, model, data).

Both loops train a 2-task (seg + depth_z) ResNet18 with Adam on the same packed arrays in the same
batch order; ours adds the packed reader, per-batch loss checks, running sums and epoch-end
validation/checkpointing (validation off here; the timed epoch is the second, after a warm-up).
Prints images/second for each and the ratio ours / plain.

    python bench/bench_train.py [--sizes 64,128] [--n 48] [--batch-size 16] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from mtlrobust import tasks as T
from mtlrobust.models import MultiTaskNet
from mtlrobust.train import TrainConfig, epoch_batches, train

TASKS = ["seg", "depth_z"]


def write_split(d: Path, n: int, res: int, seed: int = 0) -> None:
    """Random arrays in the packed format (content does not matter for throughput)."""
    rng = np.random.default_rng(seed)
    d.mkdir(parents=True)
    np.save(d / "rgb.npy", rng.integers(0, 256, (n, 3, res, res), dtype=np.uint8))
    np.save(d / "seg.npy", rng.integers(0, 18, (n, res, res), dtype=np.uint8))
    np.save(d / "depth_z.npy", rng.random((n, 1, res, res), dtype=np.float32))
    for t in TASKS:
        np.save(d / f"{t}.mask.npy", np.ones((n, res, res), np.uint8))
    (d / "views.csv").write_text("building,point,view\n" + "".join(f"b,{i},0\n" for i in range(n)))
    (d / "meta.json").write_text(json.dumps({"resolution": res, "tasks": TASKS, "source": "bench"}))


def plain_loop(split: Path, n: int, batch_size: int, epochs: int) -> float:
    """Seconds of the last epoch of a minimal loop: index arrays, forward, sum of losses, Adam."""
    rgb = np.load(split / "rgb.npy")
    seg = torch.from_numpy(np.load(split / "seg.npy").astype(np.int64))
    dep = torch.from_numpy(np.load(split / "depth_z.npy"))
    ones = torch.ones(n, 1, *dep.shape[-2:])
    torch.manual_seed(0)
    model = MultiTaskNet("resnet18", TASKS).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    seg_loss, dep_loss = T.get("seg").loss, T.get("depth_z").loss
    for epoch in range(epochs):
        t0 = time.perf_counter()
        for idx in epoch_batches(n, batch_size, 0, epoch):
            x = torch.from_numpy(rgb[idx].astype(np.float32) / 255)
            out = model(x)
            loss = 0.5 * seg_loss(out["seg"], seg[idx], ones[idx]).mean()
            loss = loss + 0.5 * dep_loss(out["depth_z"], dep[idx], ones[idx]).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        last = time.perf_counter() - t0
    return last


def ours(root: Path, batch_size: int, epochs: int) -> float:
    """Seconds of the last epoch as logged by ``train`` (training batches only)."""
    meta = train(
        TrainConfig(
            data=str(root), arch="resnet18", tasks=TASKS, out=str(root / "m.pt"), epochs=epochs,
            batch_size=batch_size, val_limit=0, checkpoint_every=0, progress=False,
        )
    )  # fmt: skip
    return float(meta["history"][-1]["time_s"])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="64,128")
    p.add_argument("--n", type=int, default=48)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--epochs", type=int, default=2, help="the last one is timed")
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    imgs = (a.n // a.batch_size) * a.batch_size
    for res in [int(s) for s in a.sizes.split(",")]:
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            write_split(root / "train", a.n, res)
            t_plain = plain_loop(root / "train", a.n, a.batch_size, a.epochs)
            t_ours = ours(root, a.batch_size, a.epochs)
        print(
            f"resnet18 seg+depth_z {res}x{res} batch {a.batch_size} threads {a.threads}: "
            f"ours {imgs / t_ours:.1f} img/s, plain {imgs / t_plain:.1f} img/s, "
            f"ratio ours/plain throughput {t_plain / t_ours:.3f}"
        )


if __name__ == "__main__":
    main()
