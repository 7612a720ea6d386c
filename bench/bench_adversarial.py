"""Adversarial training cost: an epoch with a k-step training attack vs a standard epoch, side by side.

Both runs go through ``mtlrobust.train`` on the same packed arrays, model (2-task seg + depth_z ResNet18),
batch order and process, alternating standard and adversarial runs (validation off), and report the median
epoch time of each (the epoch's ``time_s`` in the training log: set-up and checkpoint writing excluded) and
their ratio against the goal of at most 1.1 x (k + 1) (issue 21: k attack passes plus the training step).
One epoch per run: each run trains epoch 1 from scratch.

    python bench/bench_adversarial.py [--k 3,7] [--res 64] [--n 96] [--batch-size 16] [--repeats 3]
                                      [--threads 2] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import pandas as pd
from bench_train import write_split

from mtlrobust.train import TrainConfig, train


def epoch_seconds(root: Path, out: Path, args, k: int) -> float:
    """Seconds of one training epoch (k = 0: standard; else PGD with k steps, share 1), from its log."""
    adv = {}
    if k:
        spec = {"method": "pgd", "norm": "linf", "eps": 8 / 255, "step_size": 2 / 255, "steps": k}
        adv = {"adversarial": f"pgd{k}", "adv_attack": spec}
    cfg = TrainConfig(data=str(root), arch="resnet18", tasks=["seg", "depth_z"], out=str(out), epochs=1,
                      batch_size=args.batch_size, val_limit=0, checkpoint_every=0, threads=args.threads,
                      device=args.device, progress=False, **adv)  # fmt: skip
    train(cfg)
    return float(pd.read_csv(out.with_suffix(".csv"))["time_s"].iloc[0])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--k", default="3,7", help="training-attack steps, joined by ','")
    p.add_argument("--res", type=int, default=64)
    p.add_argument("--n", type=int, default=96, help="training images")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    args = p.parse_args()
    ks = [int(k) for k in args.k.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_split(root / "train", args.n, args.res)
        times: dict[int, list[float]] = {k: [] for k in [0, *ks]}
        epoch_seconds(root, root / "warm/epoch1.pt", args, 0)  # warm-up (imports, allocator)
        for r in range(args.repeats):
            for k in times:
                times[k].append(epoch_seconds(root, root / f"r{r}k{k}/epoch1.pt", args, k))
    std = statistics.median(times[0])
    print(f"device {args.device}, {args.threads} threads, {args.n} images at {args.res} px, batch "
          f"{args.batch_size}, median of {args.repeats}")  # fmt: skip
    print(f"{'epoch':<22}{'seconds':>9}{'x standard':>12}{'goal 1.1(k+1)':>15}")
    print(f"{'standard':<22}{std:>9.2f}{1:>12.2f}")
    for k in ks:
        t = statistics.median(times[k])
        goal = 1.1 * (k + 1)
        print(f"{f'PGD-{k} adversarial':<22}{t:>9.2f}{t / std:>12.2f}{goal:>15.2f}"
              f"  {'ok' if t / std <= goal else 'OVER'}")  # fmt: skip


if __name__ == "__main__":
    main()
