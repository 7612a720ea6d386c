"""Deterministic, resumable multi-task training (``mtlrobust train``).

Settings follow the paper's code: Adam (lr 1e-3, default betas, no weight decay), lr x0.1 at absolute
epochs 120 and 140 (configurable; the schedule never depends on the target milestone, so epoch 150
resumed from epoch 50 is the same run), batch 32, loss sum_i w_i L_i with the registry's per-sample
losses averaged over the batch. ``--optimizer sgd --lr 0.01 --momentum 0.99`` is the supplementary's
setting. Unlike the reference the data order is shuffled (seeded per epoch) and the last incomplete batch
is dropped as the reference's loader did.

Exactness: the data order and the optional horizontal flips are pure functions of (seed, epoch,
batch), and every state that changes (model, optimizer, scheduler, grad scaler, RNGs, per-epoch
history, running loss sums of the current epoch) is in the checkpoint. So a milestone resumed with
``--resume-from`` or a killed run resumed from ``{out}.partial`` gives bit-identical weights on CPU, and
the same command writes the same checkpoint bytes (timings go to the log CSV only). On CUDA, default
kernels are not deterministic (two uninterrupted runs already differ); with ``--deterministic`` a resumed
GPU run was checked to be bit-identical too. ``--amp`` autocasts to bf16 (fp16 + GradScaler where bf16
is unsupported) on CUDA only; on CPU it is ignored with a warning.

The command-line flags are generated from ``TrainConfig``: each field's metadata gives its flag and help.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import math
import os
import random
import sys
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from . import __version__, values
from . import tasks as T
from .baseline import TRIVIAL_COLUMN, VAL_COLUMN, constant_predictor, target_statistics, trivial_output
from .checkpoint import FORMAT, check_expect, checkpoint_meta, load_checkpoint, non_finite_tensors, save
from .device import CHOICES as DEVICES
from .device import resolve as resolve_device
from .files import check_output, write_csv
from .ids import ARCHS, ModelSpec, model_spec
from .models import DECODERS, INPUT_MULTIPLE, MultiTaskNet

OPTIMIZERS = ("adam", "sgd")
# settings that must match to resume a run, with the value meant when an older checkpoint lacks them
_HPARAMS = {
    "lr": None,
    "lr_milestones": None,
    "lr_gamma": None,
    "batch_size": None,
    "hflip": None,
    "amp": None,
    "n_train": None,
    "init_at_prior": None,
    "bn_recalibrate": None,
    "optimizer": "adam",
    "momentum": None,
    "loss_reduction": "valid",
}


# --------------------------------------------------------------------------------------- the settings
def _tasks(text: str) -> list[str]:
    return [t.id for t in T.parse(text)]


def _weights(text: str) -> dict:
    try:
        return values.json_object(text, "--weights-json")
    except ValueError as e:  # argparse prints it as "argument --weights-json: ..."
        raise argparse.ArgumentTypeError(str(e).removeprefix("--weights-json: ")) from None


def _int_list(text: str) -> list[int]:
    try:
        return [int(m) for m in str(text).split(",") if m.strip()]
    except ValueError:
        raise ValueError(f"expected integers joined by ',' (e.g. 120,140), got {text!r}") from None


_REQUIRED = dataclasses.MISSING


def _opt(help: str, default=_REQUIRED, *, factory=_REQUIRED, **cli):
    """A TrainConfig field and its flag: ``cli`` holds argparse options (flag, type, choices, action...)."""
    meta = {"help": help, **cli}
    if factory is not _REQUIRED:
        return dataclasses.field(default_factory=factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


@dataclass
class TrainConfig:
    """Everything that defines a training run; ``add_arguments`` turns each field into one flag."""

    data: str = _opt("packed dataset root with train/ and val/ folders")
    arch: str = _opt("encoder architecture", choices=ARCHS)
    tasks: list[str] = _opt("tasks as letters (sd) or ids joined by '+' (seg+depth_z)", type=_tasks)
    out: str = _opt("checkpoint to write, e.g. results/models/ID/epoch50.pt")
    epochs: int = _opt("target milestone (total epochs, not additional)", type=int)
    weighting: str = _opt(
        "uniform (1/N), sum (1 each), paper (Appendix B) or a name for --weights-json", "uniform"
    )
    decoder: str = _opt(
        "reference: the paper's decoders; skip: U-Net decoders fed every encoder scale (small inputs)",
        "reference",
        choices=DECODERS,
    )
    main: str | None = _opt("main task for non-uniform weightings (default: first listed)", None)
    explicit_weights: dict[str, float] | None = _opt(
        'explicit weights, e.g. \'{"seg": 1, "depth_z": 0.1}\'',
        None,
        flag="--weights-json",
        type=_weights,
        metavar="JSON",
    )
    seed: int = _opt("seed of the initial weights, data order and flips", 0, type=int)
    resume_from: str | None = _opt("checkpoint of an earlier milestone of the same model", None)
    log: str | None = _opt("per-epoch CSV (default: --out with .csv)", None)
    batch_size: int = _opt("training batch size (>= 2: BatchNorm needs two samples)", 32, type=int)
    optimizer: str = _opt("adam (the authors' code) or sgd (the supplementary)", "adam", choices=OPTIMIZERS)
    lr: float = _opt("initial learning rate", 1e-3, type=float)
    momentum: float = _opt("SGD momentum (only with --optimizer sgd)", 0.99, type=float)
    lr_milestones: list[int] = _opt(
        "absolute epochs where lr is multiplied by --lr-gamma", factory=lambda: [120, 140], type=_int_list
    )
    lr_gamma: float = _opt("learning-rate decay factor at each milestone, in (0, 1]", 0.1, type=float)
    loss_reduction: str = _opt(
        "valid: each task's loss averaged over its valid pixels; reference: the original code's mean over "
        "all pixels (tasks.py)",
        "valid",
        choices=T.REDUCTIONS,
    )
    hflip: bool = _opt("random horizontal flips (p=0.5, seeded); negates normal x", False)
    amp: bool = _opt("mixed precision on CUDA (bf16 if supported, else fp16); ignored on CPU", False)
    device: str = _opt("where to train", "auto", choices=DEVICES)
    checkpoint_every: int = _opt("batches between mid-epoch {out}.partial snapshots (0: none)", 200, type=int)
    checkpoint_seconds: float = _opt(
        "write an epoch-end {out}.partial snapshot when the last one is at least this old", 60.0, type=float
    )
    val_limit: int | None = _opt("validate on the first N val views (0: no validation)", None, type=int)
    threads: int | None = _opt("torch CPU threads", None, type=int)
    pretrained: str | None = _opt("local encoder state-dict file (default: from scratch)", None)
    cudnn_benchmark: bool = _opt("let cuDNN pick the fastest kernels", False)
    init_at_prior: bool = _opt(
        "keep the reference's random output layers (default: start each head at the constant predictor)",
        True,
        flag="--reference-init",
        action="store_false",
    )
    bn_recalibrate: int = _opt(
        "after each epoch re-estimate BatchNorm statistics on N training views (0: off, as the paper)",
        0,
        type=int,
        metavar="N",
    )
    deterministic: bool = _opt("CUDA: deterministic kernels (exact GPU resume, slower)", False)
    progress: bool | None = _opt(
        "no tqdm progress bar", None, flag="--no-progress", action="store_const", const=False
    )

    def check(self) -> None:
        """ValueError naming the flag of the first setting no training can use."""

        def need(ok: bool, name: str, expected: str) -> None:
            if not ok:
                raise ValueError(f"{flag(name)}: expected {expected}, got {getattr(self, name)!r}")

        pos = math.isfinite
        need(self.epochs >= 1, "epochs", "an integer >= 1")
        need(self.batch_size >= 2, "batch_size", "an integer >= 2 (BatchNorm needs two samples per batch)")
        need(pos(self.lr) and self.lr > 0, "lr", "a finite number > 0")
        need(pos(self.lr_gamma) and 0 < self.lr_gamma <= 1, "lr_gamma", "a number in (0, 1]")
        need(all(m >= 1 for m in self.lr_milestones), "lr_milestones", "epochs >= 1 joined by ','")
        need(pos(self.momentum) and 0 <= self.momentum < 1, "momentum", "a number in [0, 1)")
        need(self.seed >= 0, "seed", "an integer >= 0")
        need(self.checkpoint_every >= 0, "checkpoint_every", "an integer >= 0")
        need(self.checkpoint_seconds >= 0, "checkpoint_seconds", "a number of seconds >= 0")
        need(self.val_limit is None or self.val_limit >= 0, "val_limit", "an integer >= 0")
        need(self.threads is None or self.threads >= 1, "threads", "an integer >= 1")
        need(self.bn_recalibrate >= 0, "bn_recalibrate", "an integer >= 0")
        check_output(self.out, flag("out"))
        check_output(self.log, flag("log"))
        if self.pretrained and not Path(self.pretrained).is_file():
            raise FileNotFoundError(f"--pretrained {self.pretrained}: no such file")


def flag(name: str) -> str:
    """The command-line flag of a TrainConfig field."""
    f = TrainConfig.__dataclass_fields__[name]
    return f.metadata.get("flag", "--" + name.replace("_", "-"))


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


def init_outputs_at_prior(model, stats: Mapping[str, list[float]]) -> None:
    """Start every task head at the constant predictor: output layer weights zero, bias = mean target
    (log class frequency for segmentation).

    The reference initialisation gives the last layer outputs of standard deviation ~5 while, e.g.,
    log-depth targets vary by ~0.05, so short trainings spent their steps shrinking that noise and
    stayed worse than the constant predictor. Starting at the prior removes that phase.
    """
    with torch.no_grad():
        for tid, prior in stats.items():
            layer = model.output_layer(tid)
            layer.weight.zero_()
            if layer.bias is None:
                continue
            v = torch.tensor(prior, dtype=layer.bias.dtype)
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
def _open_split(root: Path, split: str, task_ids):
    from .data.packed import PackedDataset

    d = root / split
    if not d.is_dir():
        raise FileNotFoundError(
            f"packed split folder {d} does not exist (expected {root}/train and {root}/val)"
        )
    return PackedDataset(d, list(task_ids))


def _check_splits(train_ds, val_ds, cfg: TrainConfig) -> None:
    """Refuse data no training can use, before any work."""
    root = Path(cfg.data)
    if len(train_ds) < 2:
        raise ValueError(f"{root / 'train'} holds {len(train_ds)} views; training needs at least 2")
    res = int(train_ds.resolution)
    if res % INPUT_MULTIPLE:
        raise ValueError(
            f"{root / 'train'} holds {res} px images; the models need a multiple of {INPUT_MULTIPLE} px"
        )
    if val_ds is not None:
        if len(val_ds) == 0:
            raise ValueError(f"{root / 'val'} holds no view (use --val-limit 0 to train without validation)")
        if int(val_ds.resolution) != res:
            raise ValueError(f"{root / 'val'} holds {val_ds.resolution} px images, {root / 'train'} {res} px")


def _hparams(cfg: TrainConfig, n_train: int) -> dict:
    return {
        "optimizer": cfg.optimizer,
        "lr": float(cfg.lr),
        "momentum": float(cfg.momentum) if cfg.optimizer == "sgd" else None,
        "lr_milestones": [int(m) for m in cfg.lr_milestones],
        "lr_gamma": float(cfg.lr_gamma),
        "loss_reduction": cfg.loss_reduction,
        "batch_size": int(cfg.batch_size),
        "hflip": bool(cfg.hflip),
        "amp": bool(cfg.amp),
        "pretrained": str(cfg.pretrained) if cfg.pretrained else None,
        "init_at_prior": bool(cfg.init_at_prior),
        "bn_recalibrate": int(cfg.bn_recalibrate),
        "n_train": int(n_train),
    }


def _make_optimizer(params, cfg: TrainConfig):
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum)
    return torch.optim.Adam(params, lr=cfg.lr)


def _check_resumable(
    ckpt: Mapping, path, spec: ModelSpec, weights, hp: dict, resolution: int, decoder: str
) -> None:
    expect = {"model_id": spec.id, "weights": weights, "resolution": resolution, "decoder": decoder}
    check_expect(ckpt, expect, path)
    diff = [
        f"{k}: checkpoint {ckpt['hparams'].get(k, old)!r}, now {hp[k]!r}"
        for k, old in _HPARAMS.items()
        if ckpt["hparams"].get(k, old) != hp[k]
    ]
    if diff:
        raise ValueError(f"cannot resume from {path}: training settings differ (" + "; ".join(diff) + ")")


def _read_times(log: Path) -> dict[int, float]:
    """Epoch -> seconds from an earlier run's log (timings are kept out of checkpoints)."""
    try:
        with open(log, newline="") as f:
            return {int(r["epoch"]): float(r["time_s"]) for r in csv.DictReader(f) if r.get("time_s")}
    except (OSError, KeyError, ValueError):
        return {}


def _write_log(path: Path, history: list[dict], times: Mapping[int, float]) -> None:
    rows = []
    for row in history:
        e = row["epoch"]
        rows.append({"epoch": e, "lr": row["lr"], "time_s": times.get(e, ""), **row})
    cols = list(rows[0]) if rows else ["epoch"]
    write_csv(path, cols, ([r.get(c, "") for c in cols] for r in rows))


def _check_validation(v: Mapping[str, float], task_ids, model_id: str, epoch: int) -> None:
    """A NaN validation error where the constant predictor's is finite means non-finite outputs."""
    bad = [t for t in task_ids if math.isnan(v[t]) and not math.isnan(v[f"trivial:{t}"])]
    if bad:
        raise FloatingPointError(
            f"{model_id}: the validation error of {', '.join(bad)} is NaN after epoch {epoch} (the model "
            "outputs non-finite values); no checkpoint written, lower --lr"
        )


def _load_partial(partial: Path, check) -> dict | None:
    """The interrupted run's state, or None (with a warning) when it cannot continue this command."""
    try:
        state = load_checkpoint(partial)
        check(state, partial)
    except ValueError as e:
        print(f"warning: discarding {partial}, starting over: {e}", file=sys.stderr)
        partial.unlink()
        return None
    print(
        f"resuming interrupted run from {partial} (epoch {state['epoch']}, batch {state['batch']})",
        file=sys.stderr,
    )
    return state


def train(cfg: TrainConfig) -> dict:
    """Train up to ``cfg.epochs`` (a milestone) and write ``cfg.out``; returns the checkpoint meta."""
    from tqdm import tqdm

    cfg.check()
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    device = resolve_device(cfg.device)
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

    root = Path(cfg.data)
    train_ds = _open_split(root, "train", task_ids)
    val_ds = _open_split(root, "val", task_ids) if cfg.val_limit != 0 else None
    _check_splits(train_ds, val_ds, cfg)
    resolution = int(train_ds.resolution)
    hp = _hparams(cfg, len(train_ds))
    use_amp = bool(cfg.amp) and device.type == "cuda"
    if cfg.amp and not use_amp:
        warnings.warn("--amp is ignored on CPU (mixed precision is used on CUDA only)", stacklevel=2)
    amp_dtype = torch.bfloat16 if use_amp and torch.cuda.is_bf16_supported() else torch.float16

    def check(state, src):
        _check_resumable(state, src, spec, weights, hp, resolution, cfg.decoder)
        if state["epoch"] > cfg.epochs:
            raise ValueError(f"{src} is at epoch {state['epoch']}, past the target --epochs {cfg.epochs}")

    state = _load_partial(partial, check) if partial.is_file() else None
    if state is not None:
        times = _read_times(log_path)
    elif cfg.resume_from:
        state = load_checkpoint(cfg.resume_from)
        check(state, Path(cfg.resume_from))
        times = _read_times(Path(cfg.resume_from).with_suffix(".csv"))

    # the global RNGs are seeded too, so the RNG states stored in the checkpoint are reproducible
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)  # noqa: NPY002 - the legacy global RNG some libraries draw from
    random.seed(cfg.seed)
    model = MultiTaskNet(spec.arch, task_ids, pretrained=cfg.pretrained, decoder=cfg.decoder).to(device)
    opt = _make_optimizer(model.parameters(), cfg)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=hp["lr_milestones"], gamma=cfg.lr_gamma)
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype == torch.float16)

    if state is not None:
        model.load_state_dict(state["model"], strict=True)
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        if state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        _set_rng_state(state["rng"], device)
        epoch, start_batch = int(state["epoch"]), int(state["batch"])
        history, trivial, running = list(state["history"]), state["trivial"], dict(state["running"])
        times = {e: t for e, t in times.items() if e <= epoch}
    else:
        epoch, start_batch, history, running, times = 0, 0, [], {}, {}
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
            losses = {
                tid: T.get(tid).loss(outs[tid].float(), tg[tid], mk[tid], reduction=cfg.loss_reduction).mean()
                for tid in task_ids
            }
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
                save(partial, snapshot(done, {**running, "time_s": time.perf_counter() - t0}, False))
                last_save = time.monotonic()
        bar.close()
        nb = len(batches)
        row = {"epoch": epoch + 1, "lr": lr, "train_loss": running["total"] / nb}
        row.update({f"train_loss_{tid}": running[tid] / nb for tid in task_ids})
        if cfg.bn_recalibrate:
            recalibrate_batchnorm(model, train_ds, cfg.bn_recalibrate, cfg.batch_size, device)
        bad = non_finite_tensors(model.state_dict())
        if bad:
            raise FloatingPointError(
                f"{spec.id}: weights became non-finite in epoch {epoch + 1} ({len(bad)} tensors, e.g. "
                f"{bad[0]}); no checkpoint written, lower {flag('lr')} (now {cfg.lr!r})"
            )
        if val_ds is not None:
            v = validate(model, val_ds, task_ids, cfg.batch_size, device, cfg.val_limit, trivial)
            _check_validation(v, task_ids, spec.id, epoch + 1)
            row.update({VAL_COLUMN.format(tid): v[tid] for tid in task_ids})
            row.update({TRIVIAL_COLUMN.format(tid): v[f"trivial:{tid}"] for tid in task_ids})
        sched.step()
        history.append(row)
        times[epoch + 1] = round(time.perf_counter() - t0, 3)
        epoch, start_batch, running = epoch + 1, 0, {}
        _write_log(log_path, history, times)
        if epoch < cfg.epochs and time.monotonic() - last_save >= cfg.checkpoint_seconds:
            save(partial, snapshot(0, {}, False))
            last_save = time.monotonic()
    final = snapshot(0, {}, True)
    save(out, final)
    _write_log(log_path, history, times)
    partial.unlink(missing_ok=True)
    return checkpoint_meta(final)


# ------------------------------------------------------------------------------------------------ CLI
def add_arguments(p: argparse.ArgumentParser) -> None:
    """One flag per TrainConfig field (flag, type, choices, action and help from the field's metadata)."""
    for f in dataclasses.fields(TrainConfig):
        kw = {k: v for k, v in f.metadata.items() if k != "flag"}
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            kw["required"] = True
        else:
            kw["default"] = f.default if f.default_factory is dataclasses.MISSING else f.default_factory()
            if f.type == "bool" and "action" not in kw:
                kw["action"] = "store_true"
        if "type" in kw:
            kw["type"] = _arg_type(kw["type"])
        p.add_argument(flag(f.name), dest=f.name, **kw)


def _arg_type(parse):
    """Turn a parser's ValueError/KeyError into argparse's one-line ``argument --flag: message``."""

    def wrapped(text: str):
        try:
            return parse(text)
        except (ValueError, KeyError) as e:
            if parse in (int, float):
                raise argparse.ArgumentTypeError(f"expected {parse.__name__}, got {text!r}") from None
            raise argparse.ArgumentTypeError(str(e.args[0] if e.args else e)) from None

    wrapped.__name__ = getattr(parse, "__name__", "value")
    return wrapped


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    return TrainConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)})


def run(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    meta = train(cfg)
    last = meta["history"][-1] if meta["history"] else {}
    summary = {k: v for k, v in last.items() if isinstance(v, float) and not math.isnan(v)}
    print(json.dumps({"model_id": meta["model_id"], "epoch": meta["epoch"], "out": cfg.out, **summary}))
    return 0
