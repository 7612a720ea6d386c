"""The GPU path in one short script: train and attack a 2-task ResNet18 at 256 x 256, record images/second.

Run once on a machine with a GPU (a few minutes); it prints one Markdown table for bench/BENCHMARKS.md.
Training goes through ``mtlrobust.train.train`` (the packed reader, pinned-memory copies, CUDA device
selection) on random views in the packed format, once in fp32 and once with ``--amp``; the last epoch
is timed. Attacks time ``run_attack`` (PGD and APGD, L-inf, 8/255) on one batch of the trained model and
check the invariants on the device (per-sample perturbation <= eps, inputs in [0, 1]).

    python bench/bench_gpu.py [--device cuda] [--resolution 256] [--n 192] [--batch-size 32]
    python bench/bench_gpu.py --device cpu --resolution 64 --n 16 --batch-size 8   # smoke run on a CPU
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from bench_train import TASKS, write_split

from mtlrobust.attacks import run_attack
from mtlrobust.checkpoint import load_model
from mtlrobust.data.packed import PackedDataset
from mtlrobust.train import TrainConfig, train


def train_rate(root: Path, device: str, batch_size: int, amp: bool, epochs: int) -> tuple[float, Path]:
    """Images/second of the last training epoch, and the checkpoint."""
    out = root / f"m-amp{int(amp)}.pt"
    meta = train(
        TrainConfig(
            data=str(root), arch="resnet18", tasks=TASKS, out=str(out), epochs=epochs, batch_size=batch_size,
            amp=amp, device=device, val_limit=0, checkpoint_every=0, progress=False, cudnn_benchmark=True,
        )
    )  # fmt: skip
    n = meta["hparams"]["n_train"] // batch_size * batch_size
    return n / float(meta["history"][-1]["time_s"]), out


def attack_rate(ckpt: Path, root: Path, device: str, batch_size: int, method: str, steps: int) -> float:
    """Images/second of one attack on one batch (after a warm-up run), invariants checked."""
    model, _ = load_model(ckpt, device=device)
    x, tg, mk = PackedDataset(root / "train", TASKS).batch(torch.arange(batch_size).numpy())
    x = x.to(device)
    y = ({k: v.to(device) for k, v in tg.items()}, {k: v.to(device) for k, v in mk.items()})
    spec = {"method": method, "norm": "linf", "eps": 8 / 255, "steps": steps}
    if method == "pgd":
        spec["step_size"] = 2 / 255
    run_attack(spec, model, x, y, "+".join(TASKS), generator=0)  # warm-up (cuDNN, allocator)
    if device == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    x_adv = run_attack(spec, model, x, y, "+".join(TASKS), generator=0)
    if device == "cuda":
        torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    assert (x_adv - x).abs().flatten(1).amax(1).max() <= 8 / 255 + 1e-6, "perturbation beyond eps"
    assert x_adv.min() >= 0 and x_adv.max() <= 1, "adversarial input out of [0, 1]"
    return batch_size / dt


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    p.add_argument("--resolution", type=int, default=256)
    p.add_argument("--n", type=int, default=192, help="training views per epoch")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--epochs", type=int, default=2, help="the last one is timed")
    p.add_argument("--attack-steps", type=int, default=10)
    a = p.parse_args()
    if a.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("bench_gpu.py: CUDA is not available (use --device cpu for a smoke run)")
    name = torch.cuda.get_device_name() if a.device == "cuda" else "CPU"
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_split(root / "train", a.n, a.resolution)
        for amp in (False, True):
            rate, ckpt = train_rate(root, a.device, a.batch_size, amp, a.epochs)
            rows.append((f"train, {'mixed precision' if amp else 'fp32'}", rate))
        for method in ("pgd", "apgd"):
            rate = attack_rate(ckpt, root, a.device, a.batch_size, method, a.attack_steps)
            rows.append((f"{method.upper()}-{a.attack_steps} L-inf (fp32 model)", rate))
    size = f"{a.resolution} x {a.resolution}"
    print(f"\n{name}, torch {torch.__version__}, resnet18 {'+'.join(TASKS)}, {size}, batch {a.batch_size}\n")
    print("| work | images/s |\n|---|---|")
    for what, rate in rows:
        print(f"| {what} | {rate:.1f} |")


if __name__ == "__main__":
    main()
