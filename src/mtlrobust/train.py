"""Deterministic, resumable multi-task training (``mtlrobust train``).

Settings follow the paper's code: Adam (lr 1e-3, default betas, no weight decay), lr x0.1 at absolute
epochs 120 and 140 (configurable; the schedule never depends on the target milestone, so epoch 150
resumed from epoch 50 is the same run), batch 32, loss sum_i w_i L_i with the registry's per-sample
losses averaged over the batch. ``--optimizer sgd --lr 0.01 --momentum 0.99`` is the supplementary's
setting. Unlike the reference the data order is shuffled (seeded per epoch) and the last incomplete batch
is dropped as the reference's loader did.

Exactness: the data order and the optional horizontal flips are pure functions of (seed, epoch,
batch), and every state that changes (``TrainState``: model, optimizer, scheduler, grad scaler, RNGs,
per-epoch history, running loss sums of the current epoch) is saved: the weights and history in ``--out``,
the rest in ``{out}.resume.pt`` with ``--keep-resume`` (``checkpoint.save_milestone``), everything in
``{out}.partial`` during the run. So a milestone resumed with ``--resume-from`` or a killed run resumed
from ``{out}.partial`` gives bit-identical weights on CPU, and the same command writes the same checkpoint
bytes (timings go to the log CSV only, written after the checkpoint). Each epoch ends with one line on
stderr (losses, elapsed time, ETA) for the job's log. On CUDA, default
kernels are not deterministic (two uninterrupted runs already differ); with ``--deterministic`` a resumed
GPU run was checked to be bit-identical too. ``--amp`` autocasts to bf16 (fp16 + GradScaler where bf16
is unsupported) on CUDA only; on CPU it is ignored with a warning.

With ``--adversarial NAME --adv-attack-json JSON`` each batch is (partly) replaced by adversarial examples
before the step (``mtlrobust.adversarial``: the attack runs in eval mode, validation stays clean); the model
id ends in ``-adv_NAME`` and the setting is part of what a resume must match.

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

from . import adversarial as ADV
from . import progress, values
from . import tasks as T
from .baseline import TRIVIAL_COLUMN, VAL_COLUMN, constant_predictor, target_statistics, trivial_output
from .checkpoint import (
    RESUME_KEYS,
    check_expect,
    checkpoint_meta,
    compose,
    load_checkpoint,
    load_training_state,
    non_finite_tensors,
    save,
    save_milestone,
)
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
    "adversarial": None,
}


# --------------------------------------------------------------------------------------- the settings
def _tasks(text: str) -> list[str]:
    return [t.id for t in T.parse(text)]


def _weights(text: str) -> dict:
    try:
        return values.json_object(text, "--weights-json")
    except ValueError as e:  # argparse prints it as "argument --weights-json: ..."
        raise argparse.ArgumentTypeError(str(e).removeprefix("--weights-json: ")) from None


def _attack(text: str) -> dict:
    try:
        return values.json_object(text, "--adv-attack-json")
    except ValueError as e:  # argparse prints it as "argument --adv-attack-json: ..."
        raise argparse.ArgumentTypeError(str(e).removeprefix("--adv-attack-json: ")) from None


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
    adversarial: str | None = _opt(
        "train adversarially (mtlrobust.adversarial) under this setting name, which the model id ends with "
        "(-adv_NAME); needs --adv-attack-json",
        None,
        metavar="NAME",
    )
    adv_attack: dict | None = _opt(
        'the training attack as an attack spec, e.g. \'{"method": "pgd", "eps": 0.0314, "steps": 7}\'',
        None,
        flag="--adv-attack-json",
        type=_attack,
        metavar="JSON",
    )
    adv_tasks: str = _opt(
        "tasks whose loss the training attack maximises: main (the main task) or all (every task)",
        "main",
        choices=ADV.TASKS,
    )
    adv_share: float = _opt(
        "share of each batch replaced by adversarial examples, in (0, 1]: 1 = Madry et al., 0.5 = half "
        "clean, half adversarial (Mao et al.)",
        1.0,
        type=float,
    )
    resume_from: str | None = _opt(
        "checkpoint of an earlier milestone of the same model (its .resume.pt must be next to it)", None
    )
    keep_resume: bool = _opt(
        "also write the optimizer, scheduler and RNG state that --resume-from of a later milestone needs, "
        "to --out with .resume.pt (twice the weights' size with Adam)",
        False,
    )
    weights_dtype: str = _opt(
        "how --out stores the weights evaluations read: float32 (as trained) or float16 (half the disk, "
        "rounded; --keep-resume keeps float32 ones for the next milestone)",
        "float32",
        choices=("float32", "float16"),
    )
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
        "no live progress bar (the per-epoch lines to stderr stay)",
        None,
        flag="--no-progress",
        action="store_const",
        const=False,
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
        if (self.adversarial is None) != (self.adv_attack is None):
            raise ValueError("--adversarial and --adv-attack-json go together: give both or neither")
        setting = self.adversarial_setting()
        if setting is not None:
            setting.check()

    def adversarial_setting(self) -> ADV.Setting | None:
        """The adversarial-training setting, or None for standard training."""
        if self.adversarial is None:
            return None
        return ADV.Setting(self.adversarial, self.adv_attack, self.adv_tasks, self.adv_share)


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
        f"{k}: checkpoint {ckpt['hparams'].get(k, old)!r}, now {hp.get(k, old)!r}"
        for k, old in _HPARAMS.items()
        if ckpt["hparams"].get(k, old) != hp.get(k, old)
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
        if not all(k in state for k in RESUME_KEYS):
            raise ValueError("it holds no optimizer/scheduler/RNG state")
    except ValueError as e:
        print(f"warning: discarding {partial}, starting over: {e}", file=sys.stderr)
        partial.unlink()
        return None
    print(
        f"resuming interrupted run from {partial} (epoch {state['epoch']}, batch {state['batch']})",
        file=sys.stderr,
    )
    return state


def _epoch_line(spec: ModelSpec, row: Mapping, target: int, seconds: float, elapsed: float, done: int) -> str:
    """One progress line per epoch for the job's log: losses, the epoch's time, the job's elapsed time and
    an ETA (this job's mean epoch time x the epochs left)."""
    cols = [(t, VAL_COLUMN.format(t)) for t in spec.tasks]
    errors = ", ".join(f"{t} {row[c]:.4g}" for t, c in cols if c in row)
    return (
        f"{spec.id}: epoch {row['epoch']}/{target} in {seconds:.1f} s, train loss {row['train_loss']:.4g}"
        + (f", val error {errors}" if errors else "")
        + "; "
        + progress.timing(elapsed, done, done + target - row["epoch"])
    )


@dataclass
class _Job:
    """What stays fixed during one ``train`` call: settings, data, device."""

    cfg: TrainConfig
    spec: ModelSpec
    weights: dict[str, float]
    train_ds: object
    val_ds: object
    hp: dict
    resolution: int
    device: torch.device
    use_amp: bool
    amp_dtype: torch.dtype
    adversarial: ADV.Setting | None = None

    @property
    def task_ids(self) -> list[str]:
        return list(self.spec.tasks)


@dataclass
class TrainState:
    """Everything a training run changes: what its checkpoints store (``checkpoint.compose``), plus the
    epoch timings, which only the log and a killed run's .partial hold."""

    model: MultiTaskNet
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    epoch: int = 0  # epochs done
    batch: int = 0  # batches of the next epoch done (a .partial resumed mid-epoch)
    history: list[dict] = dataclasses.field(default_factory=list)
    trivial: dict = dataclasses.field(default_factory=dict)
    running: dict = dataclasses.field(default_factory=dict)  # loss sums of the current epoch
    times: dict[int, float] = dataclasses.field(default_factory=dict)

    def restore(self, ckpt: Mapping, times: Mapping[int, float], device) -> None:
        """Continue from a checkpoint with its resume state (a milestone or a .partial)."""
        self.model.load_state_dict(ckpt["model"], strict=True)
        self.opt.load_state_dict(ckpt["optimizer"])
        self.sched.load_state_dict(ckpt["scheduler"])
        if ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        _set_rng_state(ckpt["rng"], device)
        self.epoch, self.batch = int(ckpt["epoch"]), int(ckpt["batch"])
        self.history, self.trivial = list(ckpt["history"]), ckpt["trivial"]
        self.running = dict(ckpt.get("running") or {})
        self.times = {e: t for e, t in times.items() if e <= self.epoch}

    def checkpoint(self, job: _Job, batch: int, running: dict, final: bool) -> dict:
        spec = job.spec
        identity = {"model_id": spec.id, "arch": spec.arch, "decoder": job.cfg.decoder, "tasks": job.task_ids,
                    "main": spec.main, "weighting": spec.weighting, "weights": job.weights, "seed": spec.seed,
                    "resolution": job.resolution, "normalization": self.model.normalization}  # fmt: skip
        state = {
            "model": self.model.state_dict(),
            "optimizer": self.opt.state_dict(),
            "scheduler": self.sched.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else None,
            "rng": _rng_state(job.device),
        }
        return compose(identity, epoch=self.epoch, batch=batch, complete=final, hparams=job.hp,
                       history=self.history, trivial=self.trivial, running=running, state=state)  # fmt: skip

    def partial(self, job: _Job, batch: int, running: dict) -> dict:
        """A .partial snapshot: the checkpoint plus the timings of the epochs done."""
        return {**self.checkpoint(job, batch, running, False), "times": dict(self.times)}


def _setup_device(cfg: TrainConfig) -> torch.device:
    device = resolve_device(cfg.device)
    if device.type == "cuda":
        if cfg.deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.backends.cudnn.deterministic = True
            torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = bool(cfg.cudnn_benchmark) and not cfg.deterministic
    return device


def _open_job(cfg: TrainConfig) -> _Job:
    """Check the settings and the data and fix what the run needs."""
    cfg.check()
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    device = _setup_device(cfg)
    setting = cfg.adversarial_setting()
    spec = model_spec(cfg.arch, cfg.weighting, cfg.tasks, cfg.seed, cfg.main, cfg.adversarial)
    weights = T.task_weights(spec.tasks, spec.weighting, main=spec.main, explicit=cfg.explicit_weights)
    root = Path(cfg.data)
    train_ds = _open_split(root, "train", spec.tasks)
    val_ds = _open_split(root, "val", spec.tasks) if cfg.val_limit != 0 else None
    _check_splits(train_ds, val_ds, cfg)
    use_amp = bool(cfg.amp) and device.type == "cuda"
    if cfg.amp and not use_amp:
        warnings.warn("--amp is ignored on CPU (mixed precision is used on CUDA only)", stacklevel=3)
    amp_dtype = torch.bfloat16 if use_amp and torch.cuda.is_bf16_supported() else torch.float16
    hp = _hparams(cfg, len(train_ds))
    if setting is not None:  # standard runs' hparams (and checkpoint bytes) stay as they were
        hp["adversarial"] = setting.hparams()
    res = int(train_ds.resolution)
    return _Job(cfg, spec, weights, train_ds, val_ds, hp, res, device, use_amp, amp_dtype, setting)


def _start(job: _Job, partial: Path) -> TrainState:
    """A fresh run, or the one a killed run left in ``partial``, or the milestone of ``--resume-from``."""
    cfg = job.cfg

    def check(ckpt, src):
        _check_resumable(ckpt, src, job.spec, job.weights, job.hp, job.resolution, cfg.decoder)
        if ckpt["epoch"] > cfg.epochs:
            raise ValueError(f"{src} is at epoch {ckpt['epoch']}, past the target --epochs {cfg.epochs}")

    ckpt = _load_partial(partial, check) if partial.is_file() else None
    if ckpt is not None:
        times = {int(e): float(t) for e, t in (ckpt.get("times") or {}).items()}
    elif cfg.resume_from:
        ckpt = load_training_state(cfg.resume_from, check)
        times = _read_times(Path(cfg.resume_from).with_suffix(".csv"))

    # the global RNGs are seeded too, so the RNG states stored in the checkpoint are reproducible
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)  # noqa: NPY002 - the legacy global RNG some libraries draw from
    random.seed(cfg.seed)
    model = MultiTaskNet(job.spec.arch, job.task_ids, pretrained=cfg.pretrained, decoder=cfg.decoder)
    model = model.to(job.device)
    opt = _make_optimizer(model.parameters(), cfg)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=job.hp["lr_milestones"], gamma=cfg.lr_gamma)
    scaler = torch.amp.GradScaler("cuda", enabled=job.use_amp and job.amp_dtype == torch.float16)
    st = TrainState(model, opt, sched, scaler)
    if ckpt is not None:
        st.restore(ckpt, times, job.device)
    else:
        stats = target_statistics(job.train_ds, job.task_ids)
        st.trivial = constant_predictor(stats)
        if cfg.init_at_prior:
            init_outputs_at_prior(model, stats)
    return st


def _step(job: _Job, st: TrainState, idx: np.ndarray, b: int, n_batches: int) -> None:
    """One optimizer step on the batch ``idx`` (batch ``b`` of the epoch); adds its losses to ``running``."""
    cfg, device, pin = job.cfg, job.device, job.device.type == "cuda"
    x, tg, mk = job.train_ds.batch(idx)
    if pin:
        x, tg, mk = (x.pin_memory(), {k: v.pin_memory() for k, v in tg.items()},
                     {k: v.pin_memory() for k, v in mk.items()})  # fmt: skip
    x = x.to(device, non_blocking=pin)
    tg = {k: v.to(device, non_blocking=pin) for k, v in tg.items()}
    mk = {k: v.to(device, non_blocking=pin) for k, v in mk.items()}
    if cfg.hflip:
        flags = torch.from_numpy(flip_flags(cfg.seed, st.epoch, b, x.shape[0])).to(device)
        x, tg, mk = hflip_batch(x, tg, mk, flags)
    if job.adversarial is not None:
        x = job.adversarial.examples(st.model, x, (tg, mk), job.task_ids, (cfg.seed, st.epoch, b),
                                     cfg.loss_reduction)  # fmt: skip
    with torch.autocast(device.type, dtype=job.amp_dtype, enabled=job.use_amp):
        outs = st.model(x)
    losses = {
        tid: T.get(tid).loss(outs[tid].float(), tg[tid], mk[tid], reduction=cfg.loss_reduction).mean()
        for tid in job.task_ids
    }
    for tid, loss in losses.items():
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"{job.spec.id}: non-finite loss {float(loss.detach())} for task {tid} "
                f"at epoch {st.epoch + 1}, batch {b + 1}/{n_batches}"
            )
    total = sum(job.weights[tid] * losses[tid] for tid in job.task_ids)
    st.opt.zero_grad(set_to_none=True)
    st.scaler.scale(total).backward()
    st.scaler.step(st.opt)
    st.scaler.update()
    for tid in job.task_ids:
        st.running[tid] = st.running.get(tid, 0.0) + float(losses[tid].detach())
    st.running["total"] = st.running.get("total", 0.0) + float(total.detach())


def _end_epoch(job: _Job, st: TrainState, lr: float, n_batches: int) -> dict:
    """The epoch's log row: mean losses, and after the optional BatchNorm re-estimate the validation
    errors; refuses non-finite weights or outputs (no checkpoint of a broken model)."""
    cfg, spec, e = job.cfg, job.spec, st.epoch + 1
    row = {"epoch": e, "lr": lr, "train_loss": st.running["total"] / n_batches}
    row.update({f"train_loss_{tid}": st.running[tid] / n_batches for tid in job.task_ids})
    if cfg.bn_recalibrate:
        recalibrate_batchnorm(st.model, job.train_ds, cfg.bn_recalibrate, cfg.batch_size, job.device)
    bad = non_finite_tensors(st.model.state_dict())
    if bad:
        raise FloatingPointError(
            f"{spec.id}: weights became non-finite in epoch {e} ({len(bad)} tensors, e.g. "
            f"{bad[0]}); no checkpoint written, lower {flag('lr')} (now {cfg.lr!r})"
        )
    if job.val_ds is not None:
        v = validate(
            st.model, job.val_ds, job.task_ids, cfg.batch_size, job.device, cfg.val_limit, st.trivial
        )
        _check_validation(v, job.task_ids, spec.id, e)
        row.update({VAL_COLUMN.format(tid): v[tid] for tid in job.task_ids})
        row.update({TRIVIAL_COLUMN.format(tid): v[f"trivial:{tid}"] for tid in job.task_ids})
    return row


def train(cfg: TrainConfig) -> dict:
    """Train up to ``cfg.epochs`` (a milestone) and write ``cfg.out``; returns the checkpoint meta."""
    from tqdm import tqdm

    job = _open_job(cfg)
    out = Path(cfg.out)
    partial = out.with_name(out.name + ".partial")
    log_path = Path(cfg.log) if cfg.log else out.with_suffix(".csv")
    st = _start(job, partial)
    last_save = job_start = time.monotonic()
    first_epoch = st.epoch
    st.model.train()
    while st.epoch < cfg.epochs:
        batches = epoch_batches(len(job.train_ds), cfg.batch_size, cfg.seed, st.epoch)
        lr = st.opt.param_groups[0]["lr"]
        t0 = time.perf_counter() - st.running.get("time_s", 0.0)
        bar = tqdm(range(st.batch, len(batches)), desc=f"{job.spec.id} epoch {st.epoch + 1}/{cfg.epochs}",
                   initial=st.batch, total=len(batches), leave=False,
                   disable=None if cfg.progress is None else not cfg.progress)  # fmt: skip
        for b in bar:
            _step(job, st, batches[b], b, len(batches))
            bar.set_postfix(loss=f"{st.running['total'] / (b + 1):.4f}", refresh=False)
            done = b + 1
            if cfg.checkpoint_every and done % cfg.checkpoint_every == 0 and done < len(batches):
                save(partial, st.partial(job, done, {**st.running, "time_s": time.perf_counter() - t0}))
                last_save = time.monotonic()
        bar.close()
        row = _end_epoch(job, st, lr, len(batches))
        st.sched.step()
        st.history.append(row)
        st.times[st.epoch + 1] = round(time.perf_counter() - t0, 3)
        st.epoch, st.batch, st.running = st.epoch + 1, 0, {}
        elapsed = time.monotonic() - job_start
        progress.line(
            _epoch_line(job.spec, row, cfg.epochs, st.times[st.epoch], elapsed, st.epoch - first_epoch)
        )
        if st.epoch < cfg.epochs and time.monotonic() - last_save >= cfg.checkpoint_seconds:
            save(partial, st.partial(job, 0, {}))
            last_save = time.monotonic()
    final = st.checkpoint(job, 0, {}, True)
    save_milestone(out, final, cfg.keep_resume, cfg.weights_dtype)
    _write_log(log_path, st.history, st.times)  # after the checkpoint: a log never stands without it
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
