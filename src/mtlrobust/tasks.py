"""The task registry: the only place where a Taskonomy task is defined.

Every other module looks tasks up here (by paper letter or path-safe id) and never hard-codes one.
A task knows where its files live (Taskonomy folder and file tag), how to turn a raw PNG array into a
float target and a validity mask (``decode``), its per-sample training loss (``loss``) and its
per-sample error f_i used for the relative task vulnerability (``error``).

Normalisations (raw = stored PNG integers; 16-bit PNGs are decoded as uint16/int32, never int16).
They follow the AAAI 2022 / MTRobust target preprocessing, with its bugs fixed:

======  ==============  ====  ===========================================================  ===========
letter  id              ch    target                                                       mask
======  ==============  ====  ===========================================================  ===========
s       seg             18    raw label 0..17 (int64); 0 = uncertain, 1 = background        label > 0
d       depth_z         1     log(1 + raw) / log(2**16)                                    raw < 64500
D       depth_e         1     log(1 + raw) / log(2**16)                                    raw < 64500
n       normal          3     raw / 255 * 2 - 1  (R = right, G = down, B = forward)         depth
k       kp2d            1     clip(raw / 65535, 0, 0.005) / 0.005 * 2 - 1                  none
K       kp3d            1     raw / 65535 * 2 - 1                                          depth
e       edge2d          1     clip(raw / 65535, 0, 0.08) / 0.08 * 2 - 1                    none
E       edge3d          1     raw / 65535 / 0.00625 * 2 - 1, no clip, then a masked Gaussian   depth
                              blur of sigma = side / 64 px (the reference's sigma 4 at 256 px)
p       curv            2     (R - 123.572) / 31.922, (G - 120.1) / 21.658 on the 8-bit     depth
                              RGB values (the original code read this PNG as grey: bug)
r       reshade         1     R / 255 * 2 - 1  (R = G = B)                                 depth
A       auto            3     rgb / 255 * 2 - 1  (autoencoder target = the input image)     none
======  ==============  ====  ===========================================================  ===========

"depth" masks come from the view's depth_euclidean: valid where raw < 64500 (the reference's margin
below the 65535 "invalid" code). The model input is rgb / 255 in [0, 1].

Losses (per sample, shape [B]): masked cross-entropy over the 18 logits with label 0 ignored for s,
masked L1 for the others. ``reduction="valid"`` (the default) averages over each sample's valid pixels
(elements for L1), so a task's loss does not shrink when part of the view is invalid. ``"reference"``
is the original code's: the masked sum divided by all pixels (C x H x W elements for L1), and for s each
pixel's CE multiplied by its class's rebalancing weight (``class_weights``, indexed by raw label; the
reference's values come from Taskonomy's ``semseg_prior_factor.npy``, which is not distributed here,
so None means no rebalancing). For one task the two differ by a positive per-sample factor, so
sign-gradient attacks take the same steps; in a sum over tasks the factors differ per task and sample
(a view whose depth is half invalid halves depth's share under "reference"), so multi-task training and
attacks change. ``pixel_weight`` [B, H, W] (detached) scales each pixel's loss before the reduction;
the dense attacks (SegPGD, CosPGD) use it.

Errors f_i (per sample, shape [B]): s: 1 - mIoU of the image over the classes present in the
prediction or the label (valid pixels only); others: masked mean squared error. A sample with no
valid pixel has error NaN (metrics skip it and count it).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # torch is imported inside the loss functions: reading data and tables needs no torch
    import torch

DEPTH_INVALID_FROM = 64500  # raw depth >= this is invalid (65535 marks holes; margin as the reference)
SEG_CLASSES = 18  # raw labels 0..17, 0 = uncertain (ignored)
_LOG_2_16 = math.log(2.0**16)


def depth_valid(depth_euclidean_raw: np.ndarray) -> np.ndarray:
    """Validity map (bool [H, W]) of a view from its raw depth_euclidean array."""
    return np.asarray(depth_euclidean_raw) < DEPTH_INVALID_FROM


# --------------------------------------------------------------------------------------------- decoding
def _seg(raw, valid):
    label = np.asarray(raw).astype(np.int64)
    return label, label > 0


def _log_depth(raw, valid):
    r = np.asarray(raw).astype(np.float32)
    return (np.log1p(r) / _LOG_2_16)[None], np.asarray(raw) < DEPTH_INVALID_FROM


def _rgb_pm1(raw, valid):
    return np.asarray(raw).astype(np.float32).transpose(2, 0, 1) / 255.0 * 2.0 - 1.0, valid


def _gray16_scaled(scale: float, clip: bool):
    def decode(raw, valid):
        v = np.asarray(raw).astype(np.float32) / 65535.0
        if clip:
            v = np.clip(v, 0.0, scale)
        return (v / scale * 2.0 - 1.0)[None], valid

    return decode


_CURV_MEAN = np.array([123.572, 120.1], dtype=np.float32)[:, None, None]
_CURV_STD = np.array([31.922, 21.658], dtype=np.float32)[:, None, None]


def _blurred_occlusion_edges(raw, valid):
    """The reference blurs occlusion edges (sigma 4 px at 256 px): thin, heavy-tailed edges become a smooth
    band a decoder can regress. The blur is normalised over valid pixels so that the zeros stored where depth
    is invalid do not darken the edges next to them."""
    from scipy import ndimage

    target, _ = _gray16_scaled(0.00625, False)(raw, valid)
    sigma = raw.shape[0] / 64
    m = valid.astype(np.float32)
    num = ndimage.gaussian_filter(target[0] * m, sigma)
    den = ndimage.gaussian_filter(m, sigma)
    out = np.where(valid, num / np.maximum(den, 1e-6), target[0]).astype(np.float32)
    return out[None], valid


def _curvature(raw, valid):
    v = np.asarray(raw).astype(np.float32).transpose(2, 0, 1)[:2]
    return (v - _CURV_MEAN) / _CURV_STD, valid


def _reshade(raw, valid):
    return (np.asarray(raw).astype(np.float32)[..., 0] / 255.0 * 2.0 - 1.0)[None], valid


# ----------------------------------------------------------------------------------------------- losses
def _spatial_sum(t: torch.Tensor) -> torch.Tensor:
    return t.flatten(1).sum(1)


REDUCTIONS = ("valid", "reference")


def _check_reduction(reduction: str) -> None:
    if reduction not in REDUCTIONS:
        raise ValueError(f"loss reduction must be one of {REDUCTIONS}, got {reduction!r}")


def masked_l1(
    out: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor,
    *,
    reduction: str = "valid",
    pixel_weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-sample masked |out - target|; mask is [B, 1, H, W] (0/1). See the module doc for the options."""
    _check_reduction(reduction)
    err = (out - target).abs() * mask
    if pixel_weight is not None:
        err = err * pixel_weight[:, None]
    if reduction == "valid":
        denom = (_spatial_sum(mask) * out.shape[1]).clamp_min(1.0)
    else:
        denom = out[0].numel()
    return _spatial_sum(err) / denom


def masked_mse(out: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-sample mean squared error over valid elements; NaN where no element is valid."""
    import torch

    n = _spatial_sum(mask) * out.shape[1]
    err = _spatial_sum((out - target).square() * mask) / n.clamp_min(1.0)
    return torch.where(n > 0, err, torch.full_like(err, float("nan")))


def seg_cross_entropy(
    out: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor | None,
    *,
    reduction: str = "valid",
    pixel_weight: torch.Tensor | None = None,
    class_weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-sample cross-entropy over labelled pixels (label 0 = uncertain is ignored; ``mask`` unused).

    ``class_weights``: [18] weights indexed by raw label, multiplying each pixel's CE. Options: module doc.
    """
    import torch.nn.functional as F

    _check_reduction(reduction)
    ce = F.cross_entropy(out, target, reduction="none", ignore_index=0)
    valid = (target > 0).to(ce.dtype)
    w = valid
    if class_weights is not None:
        cw = class_weights.to(device=ce.device, dtype=ce.dtype)
        if cw.shape != (out.shape[1],):
            raise ValueError(f"class_weights must have shape [{out.shape[1]}], got {tuple(cw.shape)}")
        w = w * cw[target]
    if pixel_weight is not None:
        w = w * pixel_weight
    denom = _spatial_sum(valid).clamp_min(1.0) if reduction == "valid" else target[0].numel()
    return _spatial_sum(ce * w) / denom


def seg_confusion(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-sample confusion matrices [B, 18, 18] (rows = label, cols = prediction), valid pixels only.

    Label 0 ("uncertain") is not a class: predictions are taken over classes 1..17.
    """
    import torch

    b, c = out.shape[:2]
    pred = (out[:, 1:].argmax(1) + 1).flatten(1)
    lab = target.flatten(1)
    valid = lab > 0
    idx = lab * c + pred + (torch.arange(b, device=out.device) * c * c)[:, None]
    counts = torch.bincount(idx[valid], minlength=b * c * c)
    return counts.view(b, c, c)


def miou_from_confusion(conf: torch.Tensor) -> torch.Tensor:
    """mIoU over the classes present in label or prediction; conf is [..., C, C]. NaN if none."""
    import torch

    conf = conf.double()
    inter = conf.diagonal(dim1=-2, dim2=-1)
    union = conf.sum(-1) + conf.sum(-2) - inter
    present = union > 0
    iou = torch.where(present, inter / union.clamp_min(1), torch.zeros_like(inter))
    n = present.sum(-1)
    return torch.where(n > 0, iou.sum(-1) / n.clamp_min(1), torch.full_like(iou[..., 0], float("nan")))


def seg_error(out: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-sample 1 - mIoU (float32)."""
    return (1.0 - miou_from_confusion(seg_confusion(out, target))).float()


# ------------------------------------------------------------------------------------------- the table
Decode = Callable[[np.ndarray, "np.ndarray | None"], "tuple[np.ndarray, np.ndarray]"]
Loss = Callable[..., "torch.Tensor"]


@dataclass(frozen=True)
class Task:
    """One Taskonomy task. ``decode(raw, valid)`` -> (target, mask bool [H, W])."""

    letter: str  # the paper's letter (case matters: d/D, k/K, e/E)
    id: str  # path-safe id, unique even on case-insensitive file systems
    name: str  # human-readable name
    domain: str  # Taskonomy folder name
    tag: str  # file tag in point_{p}_view_{v}_domain_{tag}.png
    raw_format: str  # "rgb8" (H, W, 3 uint8), "gray16" (H, W uint16), "gray8" (H, W uint8)
    channels: int  # decoder output channels
    decode_fn: Decode
    needs_depth_mask: bool  # mask comes from the view's depth_euclidean
    loss: Loss  # (out [B,C,H,W], target, mask [B,1,H,W], *, reduction, pixel_weight, ...) -> [B]
    error: Loss  # per-sample error f_i -> [B]
    is_segmentation: bool = False
    hflip_negate: tuple[int, ...] = ()  # target channels whose sign flips under a horizontal flip
    paper_aux_weights: Mapping[str, float] = field(default_factory=dict)  # aux letter -> weight ("*" = other)

    def decode(self, raw: np.ndarray, valid: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Raw PNG array -> (target float32 [C, H, W] or int64 [H, W] for s, mask bool [H, W]).

        ``valid`` is the view's depth validity (``depth_valid``); tasks with ``needs_depth_mask``
        require it, the others ignore it and are valid everywhere unless their own rule says otherwise.
        """
        raw = np.asarray(raw)
        if self.raw_format == "rgb8":
            ok = raw.ndim == 3 and raw.shape[2] == 3 and raw.dtype == np.uint8
        elif self.raw_format == "gray16":
            ok = raw.ndim == 2 and raw.dtype in (np.uint16, np.int32, np.int64) and raw.min(initial=0) >= 0
        else:
            ok = raw.ndim == 2 and raw.dtype == np.uint8
        if not ok:
            raise ValueError(
                f"task {self.letter} ({self.id}): expected a {self.raw_format} array, "
                f"got dtype {raw.dtype} shape {raw.shape}"
            )
        if self.needs_depth_mask:
            if valid is None:
                raise ValueError(f"task {self.letter} ({self.id}) needs the depth validity map to decode")
            valid = np.asarray(valid, dtype=bool)
        else:
            valid = np.ones(raw.shape[:2], dtype=bool)
        target, mask = self.decode_fn(raw, valid)
        return target, np.asarray(mask, dtype=bool)


def _t(letter, id, name, domain, raw_format, channels, decode_fn, needs_depth_mask, **kw) -> Task:
    seg = kw.pop("is_segmentation", False)
    return Task(
        letter=letter,
        id=id,
        name=name,
        domain=domain,
        tag="segmentsemantic" if domain == "segment_semantic" else domain,
        raw_format=raw_format,
        channels=channels,
        decode_fn=decode_fn,
        needs_depth_mask=needs_depth_mask,
        loss=seg_cross_entropy if seg else masked_l1,
        error=seg_error if seg else masked_mse,
        is_segmentation=seg,
        **kw,
    )


# Paper order (s d D n k K e E p r A). paper_aux_weights: supplementary Appendix B (main task weight 1).
TASKS: tuple[Task, ...] = (
    _t("s", "seg", "semantic segmentation", "segment_semantic", "gray8", SEG_CLASSES, _seg, False,
       is_segmentation=True, paper_aux_weights={"d": 0.01, "*": 0.1}),
    _t("d", "depth_z", "z-buffer depth", "depth_zbuffer", "gray16", 1, _log_depth, False,
       paper_aux_weights={"n": 0.01, "*": 0.1}),
    _t("D", "depth_e", "euclidean depth", "depth_euclidean", "gray16", 1, _log_depth, False,
       paper_aux_weights={"s": 0.1, "*": 0.01}),
    _t("n", "normal", "surface normals", "normal", "rgb8", 3, _rgb_pm1, True,
       hflip_negate=(0,), paper_aux_weights={"d": 0.01, "*": 0.1}),
    _t("k", "kp2d", "2D keypoints", "keypoints2d", "gray16", 1, _gray16_scaled(0.005, True), False),
    _t("K", "kp3d", "3D keypoints", "keypoints3d", "gray16", 1, _gray16_scaled(1.0, False), True),
    _t("e", "edge2d", "texture edges", "edge_texture", "gray16", 1, _gray16_scaled(0.08, True), False),
    _t("E", "edge3d", "occlusion edges", "edge_occlusion", "gray16", 1, _blurred_occlusion_edges, True,
       paper_aux_weights={"*": 0.1}),
    _t("p", "curv", "principal curvature", "principal_curvature", "rgb8", 2, _curvature, True),
    _t("r", "reshade", "reshading", "reshading", "rgb8", 1, _reshade, True),
    _t("A", "auto", "autoencoder", "rgb", "rgb8", 3, _rgb_pm1, False),
)  # fmt: skip

BY_LETTER: dict[str, Task] = {t.letter: t for t in TASKS}
BY_ID: dict[str, Task] = {t.id: t for t in TASKS}
ORDER: dict[str, int] = {t.id: i for i, t in enumerate(TASKS)}
INPUT_DOMAIN = "rgb"
DEPTH_MASK_DOMAIN = "depth_euclidean"


def get(key: str) -> Task:
    """Look a task up by path-safe id or paper letter (ids first: letters are case-sensitive)."""
    if key in BY_ID:
        return BY_ID[key]
    if key in BY_LETTER:
        return BY_LETTER[key]
    known = ", ".join(f"{t.letter}={t.id}" for t in TASKS)
    raise KeyError(f"unknown task {key!r}; expected a paper letter or id among: {known}")


def parse(spec: str | Iterable[str]) -> list[Task]:
    """Parse "sdD", "s,d,D", "seg+depth_z" or a list of letters/ids into tasks (order kept, no repeats)."""
    if isinstance(spec, str):
        for sep in ("+", ","):
            if sep in spec:
                items = [s.strip() for s in spec.split(sep) if s.strip()]
                break
        else:
            items = [spec] if spec in BY_ID else list(spec)
    else:
        items = list(spec)
    tasks = [get(s) for s in items]
    if not tasks:
        raise ValueError(f"empty task list: {spec!r}")
    dup = {t.letter for t in tasks if tasks.count(t) > 1}
    if dup:
        raise ValueError(f"task list {spec!r} repeats {sorted(dup)}")
    return tasks


def canonical(tasks: Iterable[Task | str]) -> list[Task]:
    """Tasks sorted in the registry's (paper) order."""
    ts = [t if isinstance(t, Task) else get(t) for t in tasks]
    return sorted(ts, key=lambda t: ORDER[t.id])


def letters(tasks: Iterable[Task | str]) -> str:
    """Paper letters of tasks, e.g. "sd" (for tables and figures, never for paths)."""
    return "".join((t if isinstance(t, Task) else get(t)).letter for t in tasks)


def domains_needed(tasks: Sequence[Task]) -> list[str]:
    """Taskonomy domains to read for these tasks: the input, their targets and the depth mask source."""
    out = [INPUT_DOMAIN]
    for t in tasks:
        if t.domain not in out:
            out.append(t.domain)
    if any(t.needs_depth_mask for t in tasks) and DEPTH_MASK_DOMAIN not in out:
        out.append(DEPTH_MASK_DOMAIN)
    return out


# ---------------------------------------------------------------------------------------- weightings
WEIGHTINGS = ("uniform", "paper", "sum")
SYMMETRIC_WEIGHTINGS = ("uniform", "sum")  # the same weight for every task: no main task


def task_weights(
    tasks: Sequence[Task | str],
    weighting: str,
    main: str | None = None,
    explicit: Mapping[str, float] | None = None,
) -> dict[str, float]:
    """Loss weight per task id.

    ``uniform``: 1/N each. ``sum``: 1 each (the supplementary's unweighted models, Fig. 12).
    ``paper``: main task 1 and each auxiliary task its weight from the
    supplementary's Appendix B (which depends on the main task, so ``main`` is required).
    Any other name: ``explicit`` weights keyed by letter or id, one per task.
    """
    ts = [t if isinstance(t, Task) else get(t) for t in tasks]
    if weighting == "uniform":
        return {t.id: 1.0 / len(ts) for t in ts}
    if weighting == "sum":
        return {t.id: 1.0 for t in ts}
    if weighting == "paper":
        if main is None:
            raise ValueError("weighting 'paper' needs a main task")
        m = get(main)
        if m not in ts:
            raise ValueError(f"main task {main!r} is not among the tasks {letters(ts)!r}")
        if len(ts) > 1 and not m.paper_aux_weights:
            have = "".join(t.letter for t in TASKS if t.paper_aux_weights)
            raise ValueError(
                f"the paper gives auxiliary weights only for main tasks {have!r}, not {m.letter!r}; "
                "use explicit weights"
            )
        aux = m.paper_aux_weights
        return {t.id: 1.0 if t == m else float(aux.get(t.letter, aux["*"])) for t in ts}
    if explicit is None:
        raise ValueError(f"unknown weighting {weighting!r}: expected uniform, sum, paper or explicit weights")
    w = {get(k).id: float(v) for k, v in explicit.items()}
    missing = [t.letter for t in ts if t.id not in w]
    extra = sorted(set(w) - {t.id for t in ts})
    if missing or extra:
        raise ValueError(
            f"weighting {weighting!r}: missing weights for {missing}, weights for unknown tasks {extra}"
        )
    if any(v < 0 or not math.isfinite(v) for v in w.values()):
        raise ValueError(f"weighting {weighting!r}: weights must be finite and >= 0, got {w}")
    return {t.id: w[t.id] for t in ts}
