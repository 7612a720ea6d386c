"""Attack overhead on CPU: our PGD / APGD against bare forward+backward passes and torchattacks 3.5.1.

Same model (3-conv CNN, 32/64/64 channels, max-pool, linear head, 10 classes, eval mode) and batch
(64 x 3 x 32 x 32, labels = clean predictions) for every run; eps = 8/255, 25 steps, 1 restart.
"bare" = 25 x (forward + input gradient of the summed per-sample CE), the floor for any 25-step attack.
APGD is compared at equal strength: ours with ``success_fn`` (auto-attack's default mode) returns the
same tensor as ``torchattacks.APGD``, checked before timing (it draws its start from a CPU generator, as
torchattacks does, so this holds on CUDA too); ours in loss mode (our default) is listed too.
Runs are interleaved in a rotating order; medians over rounds and paired per-round ratios are printed,
for CPU time of this process (``time.process_time``, robust to other jobs sharing the 2 cores) and wall time.
One torch thread by default, so that CPU time is not inflated by OpenMP threads waiting for each other.

On CUDA (``--device cuda``) times are wall times after ``torch.cuda.synchronize()``, and the number of
host-device synchronisations of one run of each attack is printed first (``torch.cuda.set_sync_debug_mode``).

    python bench/bench_attacks.py [--rounds 9] [--batch 64] [--size 32] [--threads 1] [--device cpu]
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchattacks

from mtlrobust.attacks import apgd, pgd

EPS, ALPHA, STEPS = 8 / 255, 2 / 255, 25


def cnn(size: int) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(64 * (size // 4) ** 2, 10),
    ).eval()  # fmt: skip


def ce(out, y):
    return F.cross_entropy(out, y, reduction="none")


def fooled(out, y):
    return out.argmax(1) != y


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    dev = torch.device(args.device)
    model = cnn(args.size).to(dev)
    x = torch.rand(args.batch, 3, args.size, args.size).to(dev)
    with torch.no_grad():
        y = model(x).argmax(1)

    def bare():
        for _ in range(STEPS):
            xr = x.detach().requires_grad_(True)
            torch.autograd.grad(ce(model(xr), y).sum(), xr)

    runs = {
        "bare 25x fwd+bwd": bare,
        "ours pgd": lambda: pgd(model, ce, x, y, eps=EPS, step_size=ALPHA, steps=STEPS, generator=0),
        "torchattacks PGD": lambda: torchattacks.PGD(model, eps=EPS, alpha=ALPHA, steps=STEPS)(x, y),
        "ours apgd (success_fn)": lambda: apgd(
            model,
            ce,
            x,
            y,
            eps=EPS,
            steps=STEPS,
            success_fn=fooled,
            generator=torch.Generator().manual_seed(0),
        ),
        "torchattacks APGD": lambda: torchattacks.APGD(model, eps=EPS, steps=STEPS, seed=0)(x, y),
        "ours apgd (loss mode)": lambda: apgd(model, ce, x, y, eps=EPS, steps=STEPS, generator=0),
    }
    assert torch.equal(runs["ours apgd (success_fn)"](), runs["torchattacks APGD"]()), "APGD outputs differ"
    names = list(runs)
    cpu, wall = ({n: [] for n in names} for _ in range(2))
    for n in names:  # warm-up
        runs[n]()
    if dev.type == "cuda":
        for n in names:
            print(f"  {n:24s} host-device syncs per run: {count_syncs(runs[n])}")
        runs = {n: synced(f) for n, f in runs.items()}
    for r in range(args.rounds):
        for n in names[r % len(names) :] + names[: r % len(names)]:
            c0, w0 = time.process_time(), time.perf_counter()
            runs[n]()
            cpu[n].append(time.process_time() - c0)
            wall[n].append(time.perf_counter() - w0)
    print(f"torch {torch.__version__}, {args.threads} threads, batch {args.batch}x3x{args.size}x{args.size}, "
          f"{STEPS} steps, {args.rounds} interleaved rounds")  # fmt: skip
    for n in names:
        print(f"  {n:24s} median CPU {1000 * med(cpu[n]):8.1f} ms   wall {1000 * med(wall[n]):8.1f} ms")
    for a, b in [
        ("ours pgd", "bare 25x fwd+bwd"),
        ("ours pgd", "torchattacks PGD"),
        ("ours apgd (success_fn)", "torchattacks APGD"),
        ("ours apgd (loss mode)", "torchattacks APGD"),
    ]:
        parts = []
        for label, t in (("CPU", cpu), ("wall", wall)):
            paired = med([ta / tb for ta, tb in zip(t[a], t[b], strict=True)])
            parts.append(f"{label} {med(t[a]) / med(t[b]):.3f} (paired {paired:.3f})")
        print(f"  {a} / {b}: " + ", ".join(parts))


def count_syncs(fn) -> int:
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            fn()
    finally:
        torch.cuda.set_sync_debug_mode(0)
    return sum("synchroniz" in str(w.message) for w in caught)


def synced(fn):
    def run():
        fn()
        torch.cuda.synchronize()

    return run


def med(values) -> float:
    return statistics.median(values)


if __name__ == "__main__":
    main()
