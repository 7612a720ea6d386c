"""Deterministic, resumable multi-task training (``mtlrobust train``) and checkpoint loading.

Settings follow the paper's code: Adam (lr 1e-3, default betas, no weight decay), lr x0.1 at absolute
epochs 120 and 140 (configurable; the schedule never depends on the target milestone, so epoch 150
resumed from epoch 50 is the same run), batch 32, loss sum_i w_i L_i with the registry's per-sample
losses averaged over the batch. Unlike the reference the data order is shuffled (seeded per epoch)
and the last incomplete batch is dropped as the reference's loader did.

Exactness: the data order and the optional horizontal flips are pure functions of (seed, epoch,
batch), and every state that changes (model, optimizer, scheduler, grad scaler, RNGs, per-epoch
history, running loss sums of the current epoch) is in the checkpoint. So a milestone resumed with
``--resume-from`` or a killed run resumed from ``{out}.partial`` gives bit-identical weights on CPU.
On CUDA, default kernels are not deterministic (two uninterrupted runs already differ); with
``--deterministic`` a resumed GPU run was checked to be bit-identical too. ``--amp`` autocasts to bf16
(fp16 + GradScaler where bf16 is unsupported) on CUDA only; on CPU it is ignored with a warning.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import random
import sys
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from . import __version__
from . import tasks as T
from .ids import ARCHS, ModelSpec, model_spec
from .models import DECODERS, MultiTaskNet

FORMAT = "mtlrobust-checkpoint/1"
TRIVIAL_MAX_SAMPLES = 4096  # the trivial predictor's statistics use at most this many training views
_META_SKIP = ("model", "optimizer", "scheduler", "scaler", "rng", "running")
# settings that must match to resume a run
_HPARAMS = (
    "lr",
    "lr_milestones",
    "lr_gamma",
    "batch_size",
    "hflip",
    "amp",
    "n_train",
    "init_at_prior",
    "bn_recalibrate",
)


@dataclass
class TrainConfig:
    """Everything that defines a training run (the CLI maps 1:1 onto it)."""

    data: str  # packed root holding train/ and val/
    arch: str
    tasks: list[str]  # letters or ids
    out: str
    epochs: int
    weighting: str = "uniform"
    decoder: str = "reference"  # models.DECODERS; part of what a checkpoint must match to be resumed
    main: str | None = None
    explicit_weights: dict[str, float] | None = None
    seed: int = 0
    resume_from: str | None = None
    log: str | None = None
    batch_size: int = 32
    lr: float = 1e-3
    lr_milestones: list[int] = field(default_factory=lambda: [120, 140])
    lr_gamma: float = 0.1
    hflip: bool = False
    amp: bool = False
    device: str = "auto"
    checkpoint_every: int = 200  # batches between mid-epoch snapshots (0: none)
    checkpoint_seconds: float = 60.0  # epoch-end snapshot only if the last one is older (a save costs ~1 s)
    val_limit: int | None = None
    threads: int | None = None
    pretrained: str | None = None
    cudnn_benchmark: bool = False
    init_at_prior: bool = True  # output layers start at the constant predictor (see init_outputs_at_prior)
    bn_recalibrate: int = 0  # training views for re-estimating BatchNorm statistics after each epoch
    deterministic: bool = False  # CUDA: deterministic kernels, so GPU resumes are exact too (slower)
    progress: bool | None = None  # None: tqdm decides (off when not a TTY)


# ------------------------------------------------------------------------------------ checkpoint I/O
def _atomic_save(obj, path: Path) -> None:
    """Write to a temporary name in the same folder, fsync, then rename over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _spec_fields(expect) -> dict:
    if isinstance(expect, ModelSpec):
        return {
            "model_id": expect.id,
            "arch": expect.arch,
            "tasks": list(expect.tasks),
            "weighting": expect.weighting,
            "seed": expect.seed,
        }
    return dict(expect)


def check_expect(meta: Mapping, expect, path) -> None:
    """Raise ValueError naming ``path`` and every field where ``meta`` differs from ``expect``.

    ``expect`` is a ModelSpec or a dict with any of model_id, arch, tasks, weighting, weights, seed,
    epoch, resolution, decoder. Tasks compare as sets of ids (letters allowed), weights per task to 1e-9.
    """
    if expect is None:
        return
    bad = []
    for key, want in _spec_fields(expect).items():
        if key not in meta:
            raise ValueError(f"{path}: cannot check unknown checkpoint field {key!r}")
        have = meta[key]
        if key == "tasks":
            ok = {T.get(t).id for t in want} == set(have)
        elif key == "weights":
            w = {T.get(k).id: float(v) for k, v in want.items()}
            ok = w.keys() == have.keys() and all(abs(w[k] - have[k]) <= 1e-9 for k in w)
        else:
            ok = have == want
        if not ok:
            bad.append(f"{key}: checkpoint has {have!r}, expected {want!r}")
    if bad:
        raise ValueError(f"checkpoint {path} does not match what was asked for: " + "; ".join(bad))


def load_checkpoint(path, expect=None, map_location="cpu") -> dict:
    """Read a training checkpoint (full state) and check it against ``expect`` (see ``check_expect``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - corrupt/truncated files raise many types
        raise ValueError(f"checkpoint {path} is corrupt or unreadable ({type(e).__name__}: {e})") from e
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        got = ckpt.get("format") if isinstance(ckpt, dict) else type(ckpt).__name__
        raise ValueError(f"{path} is not an mtlrobust checkpoint (format {got!r}, expected {FORMAT!r})")
    check_expect(ckpt, expect, path)
    return ckpt


def checkpoint_meta(ckpt: Mapping) -> dict:
    """The descriptive part of a checkpoint (no tensors of model/optimizer/RNG state)."""
    return {k: v for k, v in ckpt.items() if k not in _META_SKIP}


def build_model(meta: Mapping) -> MultiTaskNet:
    """An untrained model with the architecture, tasks and input normalisation recorded in ``meta``."""
    return MultiTaskNet(
        meta["arch"], meta["tasks"], normalization=meta["normalization"], decoder=meta["decoder"]
    )


def load_model(path, device="cpu", expect=None) -> tuple[MultiTaskNet, dict]:
    """Trained model (eval mode, on ``device``) and its meta dict; strict weights, checked identity."""
    ckpt = load_checkpoint(path, expect=expect, map_location="cpu")
    model = build_model(ckpt)
    try:
        model.load_state_dict(ckpt["model"], strict=True)
    except RuntimeError as e:
        raise ValueError(
            f"checkpoint {path}: weights do not fit {ckpt['arch']} with tasks {ckpt['tasks']}: {e}"
        ) from e
    return model.to(device).eval(), checkpoint_meta(ckpt)


# ------------------------------------------------------------------------------------------ RNG state
def _rng_state(device: torch.device) -> dict:
    kind, keys, pos, has_gauss, cached = np.random.get_state()  # noqa: NPY002 - saving the legacy global RNG
    state = {
        "torch": torch.get_rng_state(),
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)),
        "python": random.getstate(),
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: Mapping, device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))  # noqa: NPY002
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


# -------------------------------------------------------------------------------- data order, flips
def epoch_batches(n: int, batch_size: int, seed: int, epoch: int) -> list[np.ndarray]:
    """Index batches of 0-based ``epoch``: a seeded permutation, incomplete last batch dropped
    (a single short batch is kept when the split is smaller than one batch)."""
    perm = np.random.default_rng([seed, epoch, 0]).permutation(n)
    nb = max(1, n // batch_size)
    return [np.sort(perm[i * batch_size : (i + 1) * batch_size]) for i in range(nb)]


def flip_flags(seed: int, epoch: int, batch: int, size: int) -> np.ndarray:
    """Which samples of a batch are mirrored (p = 0.5), a pure function of (seed, epoch, batch)."""
    return np.random.default_rng([seed, epoch, batch, 1]).random(size) < 0.5


def hflip_batch(x, targets, masks, flags: torch.Tensor):
    """Mirror the flagged samples left-right; channels in a task's ``hflip_negate`` change sign."""
    if not bool(flags.any()):
        return x, targets, masks

    def flip(t):
        f = flags.view(-1, *([1] * (t.dim() - 1)))
        return torch.where(f, t.flip(-1), t)

    tg = {}
    for tid, t in targets.items():
        t = flip(t)
        neg = T.get(tid).hflip_negate
        if neg:
            sign = torch.ones(t.shape[1], dtype=t.dtype, device=t.device)
            sign[list(neg)] = -1
            t = torch.where(flags.view(-1, 1, 1, 1), t * sign.view(1, -1, 1, 1), t)
        tg[tid] = t
    return flip(x), tg, {tid: flip(m) for tid, m in masks.items()}


# ------------------------------------------------------------------------------- trivial predictor
def target_statistics(ds, task_ids, batch_size: int = 64) -> dict[str, list[float]]:
    """Training-set statistics per task: the mean target per channel over valid pixels, or for
    segmentation the frequency of each labelled class (at most TRIVIAL_MAX_SAMPLES views, evenly spaced)."""
    n = len(ds)
    idx = np.unique(np.linspace(0, n - 1, min(n, TRIVIAL_MAX_SAMPLES)).round().astype(np.int64))
    sums: dict[str, torch.Tensor] = {}
    counts: dict[str, torch.Tensor] = {}
    for i in range(0, len(idx), batch_size):
        _, tg, mk = ds.batch(idx[i : i + batch_size])
        for tid in task_ids:
            if T.get(tid).is_segmentation:
                lab = tg[tid].flatten()
                s = torch.bincount(lab[lab > 0], minlength=T.SEG_CLASSES).double()
                c = s.sum()
            else:
                m = mk[tid].double()
                s = (tg[tid].double() * m).sum((0, 2, 3))
                c = m.sum()
            sums[tid] = sums.get(tid, 0) + s
            counts[tid] = counts.get(tid, 0) + c
    return {tid: (sums[tid] / counts[tid].clamp_min(1)).tolist() for tid in task_ids}


def constant_predictor(stats: Mapping[str, list[float]]) -> dict[str, list[float] | int]:
    """The constant predictor of ``target_statistics``: mean target, or majority class for segmentation."""
    return {tid: int(np.argmax(v)) if T.get(tid).is_segmentation else v for tid, v in stats.items()}


def trivial_predictor(ds, task_ids, batch_size: int = 64) -> dict[str, list[float] | int]:
    """The constant predictor every model must beat: the training-set mean target per channel, or the
    majority labelled class for segmentation."""
    return constant_predictor(target_statistics(ds, task_ids, batch_size))


def init_outputs_at_prior(model, stats: Mapping[str, list[float]]) -> None:
    """Start every task head at the constant predictor: output layer weights zero, bias = mean target
    (log class frequency for segmentation).

    The reference initialisation gives the last layer outputs of standard deviation ~5 while, e.g.,
    log-depth targets vary by ~0.05, so short trainings spent their steps shrinking that noise and
    stayed worse than the constant predictor. Starting at the prior removes that phase.
    """
    with torch.no_grad():
        for tid, values in stats.items():
            layer = model.output_layer(tid)
            layer.weight.zero_()
            if layer.bias is None:
                continue
            v = torch.tensor(values, dtype=layer.bias.dtype)
            if T.get(tid).is_segmentation:
                v = torch.log(v.clamp_min(1e-4))
            layer.bias.copy_(v)


@torch.no_grad()
def recalibrate_batchnorm(model, ds, n: int, batch_size: int, device) -> None:
    """Re-estimate BatchNorm running statistics as the plain average over the first ``n`` training
    views ("precise BN"). Running averages lag behind weights that change fast, which makes eval-mode
    outputs of briefly trained models erratic; this makes them reflect the current weights."""
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    n = min(n, len(ds))
    if not bns or n <= 0:
        return
    momenta = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the batches below
    was_training = model.training
    model.train()
    for i in range(0, n, batch_size):
        x, _, _ = ds.batch(np.arange(i, min(n, i + batch_size)))
        model(x.to(device))
    for m, mom in zip(bns, momenta, strict=True):
        m.momentum = mom
    model.train(was_training)


def trivial_output(tid: str, value, shape, device) -> torch.Tensor:
    b, _, h, w = shape
    task = T.get(tid)
    if task.is_segmentation:
        out = torch.zeros(b, task.channels, h, w, device=device)
        out[:, value] = 1.0
        return out
    return torch.tensor(value, dtype=torch.float32, device=device).view(1, -1, 1, 1).expand(b, -1, h, w)


@torch.no_grad()
def validate(model, ds, task_ids, batch_size, device, limit=None, trivial=None) -> dict[str, float]:
    """Mean registry error per task over the first ``limit`` views (NaN samples skipped); with
    ``trivial`` also the constant predictor's error, keyed ``trivial:{task}``."""
    n = len(ds) if limit is None else min(limit, len(ds))
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    was_training = model.training
    model.eval()
    for i in range(0, n, batch_size):
        x, tg, mk = ds.batch(np.arange(i, min(n, i + batch_size)))
        x = x.to(device)
        out = model(x)
        for tid in task_ids:
            y, m = tg[tid].to(device), mk[tid].to(device)
            preds = {tid: out[tid].float()}
            if trivial is not None:
                preds[f"trivial:{tid}"] = trivial_output(tid, trivial[tid], out[tid].shape, device)
            for key, p in preds.items():
                e = T.get(tid).error(p, y, m)
                ok = torch.isfinite(e)
                sums[key] = sums.get(key, 0.0) + float(e[ok].double().sum())
                counts[key] = counts.get(key, 0) + int(ok.sum())
    model.train(was_training)
    return {k: (sums[k] / counts[k] if counts[k] else float("nan")) for k in sums}


# ----------------------------------------------------------------------------------------- training
def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda was asked for but CUDA is not available")
    return torch.device(name)


def _open_split(root: Path, split: str, task_ids):
    from .data.packed import PackedDataset

    d = root / split
    if not d.is_dir():
        raise FileNotFoundError(
            f"packed split folder {d} does not exist (expected {root}/train and {root}/val)"
        )
    return PackedDataset(d, list(task_ids))


def _write_log(path: Path, history: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cols = list(history[0].keys()) if history else ["epoch"]
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        w.writerows(history)
    os.replace(tmp, path)


def _hparams(cfg: TrainConfig, n_train: int) -> dict:
    return {
        "lr": float(cfg.lr),
        "lr_milestones": [int(m) for m in cfg.lr_milestones],
        "lr_gamma": float(cfg.lr_gamma),
        "batch_size": int(cfg.batch_size),
        "hflip": bool(cfg.hflip),
        "amp": bool(cfg.amp),
        "pretrained": str(cfg.pretrained) if cfg.pretrained else None,
        "init_at_prior": bool(cfg.init_at_prior),
        "bn_recalibrate": int(cfg.bn_recalibrate),
        "n_train": int(n_train),
    }


def _check_resumable(
    ckpt: Mapping, path, spec: ModelSpec, weights, hp: dict, resolution: int, decoder: str
) -> None:
    expect = {"model_id": spec.id, "weights": weights, "resolution": resolution, "decoder": decoder}
    check_expect(ckpt, expect, path)
    diff = [
        f"{k}: checkpoint {ckpt['hparams'].get(k)!r}, now {hp[k]!r}"
        for k in _HPARAMS
        if ckpt["hparams"].get(k) != hp[k]
    ]
    if diff:
        raise ValueError(f"cannot resume from {path}: training settings differ (" + "; ".join(diff) + ")")


def train(cfg: TrainConfig) -> dict:
    """Train up to ``cfg.epochs`` (a milestone) and write ``cfg.out``; returns the checkpoint meta."""
    from tqdm import tqdm

    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    device = _device(cfg.device)
    if device.type == "cuda":
        if cfg.deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.backends.cudnn.deterministic = True
            torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = bool(cfg.cudnn_benchmark) and not cfg.deterministic
    spec = model_spec(cfg.arch, cfg.weighting, cfg.tasks, cfg.seed, cfg.main)
    weights = T.task_weights(spec.tasks, spec.weighting, main=spec.main, explicit=cfg.explicit_weights)
    task_ids = list(spec.tasks)
    out = Path(cfg.out)
    partial = out.with_name(out.name + ".partial")
    log_path = Path(cfg.log) if cfg.log else out.with_suffix(".csv")
    if cfg.epochs < 1 or cfg.batch_size < 1:
        raise ValueError(f"--epochs and --batch-size must be >= 1, got {cfg.epochs} and {cfg.batch_size}")

    root = Path(cfg.data)
    train_ds = _open_split(root, "train", task_ids)
    val_ds = _open_split(root, "val", task_ids) if cfg.val_limit != 0 else None
    resolution = int(train_ds.resolution)
    hp = _hparams(cfg, len(train_ds))
    use_amp = bool(cfg.amp) and device.type == "cuda"
    if cfg.amp and not use_amp:
        warnings.warn("--amp is ignored on CPU (mixed precision is used on CUDA only)", stacklevel=2)
    amp_dtype = torch.bfloat16 if use_amp and torch.cuda.is_bf16_supported() else torch.float16

    torch.manual_seed(cfg.seed)
    model = MultiTaskNet(spec.arch, task_ids, pretrained=cfg.pretrained, decoder=cfg.decoder).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=hp["lr_milestones"], gamma=cfg.lr_gamma)
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype == torch.float16)

    state = None
    if partial.is_file():
        state, src = load_checkpoint(partial), partial
        print(
            f"resuming interrupted run from {partial} (epoch {state['epoch']}, batch {state['batch']})",
            file=sys.stderr,
        )
    elif cfg.resume_from:
        state, src = load_checkpoint(cfg.resume_from), Path(cfg.resume_from)
    if state is not None:
        _check_resumable(state, src, spec, weights, hp, resolution, cfg.decoder)
        if state["epoch"] > cfg.epochs:
            raise ValueError(f"{src} is at epoch {state['epoch']}, past the target --epochs {cfg.epochs}")
        model.load_state_dict(state["model"], strict=True)
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        if state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        _set_rng_state(state["rng"], device)
        epoch, start_batch = int(state["epoch"]), int(state["batch"])
        history, trivial, running = list(state["history"]), state["trivial"], dict(state["running"])
    else:
        epoch, start_batch, history, running = 0, 0, [], {}
        stats = target_statistics(train_ds, task_ids)
        trivial = constant_predictor(stats)
        if cfg.init_at_prior:
            init_outputs_at_prior(model, stats)

    def snapshot(batch: int, running: dict, final: bool) -> dict:
        return {
            "format": FORMAT,
            "version": __version__,
            "model_id": spec.id,
            "arch": spec.arch,
            "decoder": cfg.decoder,
            "tasks": task_ids,
            "main": spec.main,
            "weighting": spec.weighting,
            "weights": weights,
            "seed": spec.seed,
            "resolution": resolution,
            "normalization": model.normalization,
            "epoch": epoch,
            "batch": batch,
            "complete": final,
            "hparams": hp,
            "history": history,
            "trivial": trivial,
            "running": running,
            "model": model.state_dict(),
            "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict(),
            "scaler": scaler.state_dict() if scaler.is_enabled() else None,
            "rng": _rng_state(device),
        }

    pin = device.type == "cuda"
    last_save = time.monotonic()
    model.train()
    while epoch < cfg.epochs:
        batches = epoch_batches(len(train_ds), cfg.batch_size, cfg.seed, epoch)
        lr = opt.param_groups[0]["lr"]
        t0 = time.perf_counter() - running.get("time_s", 0.0)
        bar = tqdm(
            range(start_batch, len(batches)),
            desc=f"{spec.id} epoch {epoch + 1}/{cfg.epochs}",
            initial=start_batch,
            total=len(batches),
            disable=None if cfg.progress is None else not cfg.progress,
            leave=False,
        )
        for b in bar:
            x, tg, mk = train_ds.batch(batches[b])
            if pin:
                x, tg, mk = (
                    x.pin_memory(),
                    {k: v.pin_memory() for k, v in tg.items()},
                    {k: v.pin_memory() for k, v in mk.items()},
                )
            x = x.to(device, non_blocking=pin)
            tg = {k: v.to(device, non_blocking=pin) for k, v in tg.items()}
            mk = {k: v.to(device, non_blocking=pin) for k, v in mk.items()}
            if cfg.hflip:
                flags = torch.from_numpy(flip_flags(cfg.seed, epoch, b, x.shape[0])).to(device)
                x, tg, mk = hflip_batch(x, tg, mk, flags)
            with torch.autocast(device.type, dtype=amp_dtype, enabled=use_amp):
                outs = model(x)
            losses = {tid: T.get(tid).loss(outs[tid].float(), tg[tid], mk[tid]).mean() for tid in task_ids}
            for tid, loss in losses.items():
                if not torch.isfinite(loss):
                    raise FloatingPointError(
                        f"{spec.id}: non-finite loss {float(loss.detach())} for task {tid} "
                        f"at epoch {epoch + 1}, batch {b + 1}/{len(batches)}"
                    )
            total = sum(weights[tid] * losses[tid] for tid in task_ids)
            opt.zero_grad(set_to_none=True)
            scaler.scale(total).backward()
            scaler.step(opt)
            scaler.update()
            for tid in task_ids:
                running[tid] = running.get(tid, 0.0) + float(losses[tid].detach())
            running["total"] = running.get("total", 0.0) + float(total.detach())
            bar.set_postfix(loss=f"{running['total'] / (b + 1):.4f}", refresh=False)
            done = b + 1
            if cfg.checkpoint_every and done % cfg.checkpoint_every == 0 and done < len(batches):
                _atomic_save(snapshot(done, {**running, "time_s": time.perf_counter() - t0}, False), partial)
                last_save = time.monotonic()
        bar.close()
        nb = len(batches)
        row = {"epoch": epoch + 1, "lr": lr, "time_s": round(time.perf_counter() - t0, 3)}
        row["train_loss"] = running["total"] / nb
        row.update({f"train_loss_{tid}": running[tid] / nb for tid in task_ids})
        if cfg.bn_recalibrate:
            recalibrate_batchnorm(model, train_ds, cfg.bn_recalibrate, cfg.batch_size, device)
        if val_ds is not None:
            v = validate(model, val_ds, task_ids, cfg.batch_size, device, cfg.val_limit, trivial)
            row.update({f"val_error_{tid}": v[tid] for tid in task_ids})
            row.update({f"trivial_error_{tid}": v[f"trivial:{tid}"] for tid in task_ids})
        sched.step()
        history.append(row)
        epoch, start_batch, running = epoch + 1, 0, {}
        _write_log(log_path, history)
        if epoch < cfg.epochs and time.monotonic() - last_save >= cfg.checkpoint_seconds:
            _atomic_save(snapshot(0, {}, False), partial)
            last_save = time.monotonic()
    final = snapshot(0, {}, True)
    _atomic_save(final, out)
    _write_log(log_path, history)
    for p in (partial, partial.with_name(f".{partial.name}.tmp")):
        p.unlink(missing_ok=True)
    return checkpoint_meta(final)


# ------------------------------------------------------------------------------------------------ CLI
def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, help="packed dataset root with train/ and val/ folders")
    p.add_argument("--arch", required=True, choices=ARCHS)
    p.add_argument(
        "--decoder",
        default="reference",
        choices=DECODERS,
        help="reference: the paper's decoders; skip: U-Net decoders fed every encoder scale (small inputs)",
    )
    p.add_argument("--tasks", required=True, help="tasks as letters (sd) or ids joined by '+' (seg+depth_z)")
    p.add_argument(
        "--weighting",
        default="uniform",
        help="uniform (1/N), paper (Appendix B) or a name for --weights-json",
    )
    p.add_argument(
        "--main", default=None, help="main task for non-uniform weightings (default: first listed)"
    )
    p.add_argument(
        "--weights-json", default=None, help='explicit weights, e.g. \'{"seg": 1, "depth_z": 0.1}\''
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--epochs", type=int, required=True, help="target milestone (total epochs, not additional)"
    )
    p.add_argument("--resume-from", default=None, help="checkpoint of an earlier milestone of the same model")
    p.add_argument("--out", required=True, help="checkpoint to write, e.g. results/models/ID/epoch50.pt")
    p.add_argument("--log", default=None, help="per-epoch CSV (default: --out with .csv)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument(
        "--lr-milestones", default="120,140", help="absolute epochs where lr is multiplied by --lr-gamma"
    )
    p.add_argument("--lr-gamma", type=float, default=0.1)
    p.add_argument(
        "--hflip", action="store_true", help="random horizontal flips (p=0.5, seeded); negates normal x"
    )
    p.add_argument(
        "--amp",
        action="store_true",
        help="mixed precision on CUDA (bf16 if supported, else fp16); ignored on CPU",
    )
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument(
        "--checkpoint-every",
        type=int,
        default=200,
        help="batches between mid-epoch {out}.partial snapshots (0: none)",
    )
    p.add_argument(
        "--checkpoint-seconds",
        type=float,
        default=60.0,
        help="write an epoch-end {out}.partial snapshot when the last one is at least this old",
    )
    p.add_argument(
        "--val-limit", type=int, default=None, help="validate on the first N val views (0: no validation)"
    )
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--pretrained", default=None, help="local encoder state-dict file (default: from scratch)")
    p.add_argument("--cudnn-benchmark", action="store_true", help="let cuDNN pick the fastest kernels")
    p.add_argument(
        "--deterministic", action="store_true", help="CUDA: deterministic kernels (exact GPU resume, slower)"
    )
    p.add_argument(
        "--reference-init",
        action="store_true",
        help="keep the reference's random output layers (default: start each head at the constant predictor)",
    )
    p.add_argument(
        "--bn-recalibrate",
        type=int,
        default=0,
        metavar="N",
        help="after each epoch re-estimate BatchNorm statistics on N training views (0: off, as the paper)",
    )
    p.add_argument("--no-progress", action="store_true", help="no tqdm progress bar")


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    try:
        explicit = json.loads(args.weights_json) if args.weights_json else None
    except json.JSONDecodeError as e:
        raise ValueError(f"--weights-json is not valid JSON ({e}): {args.weights_json!r}") from e
    milestones = [int(m) for m in str(args.lr_milestones).split(",") if m.strip()]
    return TrainConfig(
        data=args.data,
        arch=args.arch,
        tasks=[t.id for t in T.parse(args.tasks)],
        out=args.out,
        epochs=args.epochs,
        weighting=args.weighting,
        main=args.main,
        explicit_weights=explicit,
        seed=args.seed,
        resume_from=args.resume_from,
        log=args.log,
        batch_size=args.batch_size,
        lr=args.lr,
        lr_milestones=milestones,
        lr_gamma=args.lr_gamma,
        hflip=args.hflip,
        amp=args.amp,
        device=args.device,
        decoder=args.decoder,
        checkpoint_every=args.checkpoint_every,
        checkpoint_seconds=args.checkpoint_seconds,
        val_limit=args.val_limit,
        threads=args.threads,
        pretrained=args.pretrained,
        cudnn_benchmark=args.cudnn_benchmark,
        deterministic=args.deterministic,
        init_at_prior=not args.reference_init,
        bn_recalibrate=args.bn_recalibrate,
        progress=False if args.no_progress else None,
    )


def run(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    meta = train(cfg)
    last = meta["history"][-1] if meta["history"] else {}
    summary = {k: v for k, v in last.items() if isinstance(v, float) and not math.isnan(v)}
    print(json.dumps({"model_id": meta["model_id"], "epoch": meta["epoch"], "out": cfg.out, **summary}))
    return 0
