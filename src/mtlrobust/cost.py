"""``mtlrobust plan``, the cost estimator: how many jobs a study runs, per rule, and roughly how many
GPU-hours they cost.

The jobs come from the study plan itself (``mtlrobust.study.build``, the function the workflow's rules are
generated from), so they are exactly what a run from an empty folder would schedule. The cost model is
deliberately simple and printed with its assumptions:

* training job: images/epoch x epochs in the job (a milestone job resumes from the previous milestone) x
  seconds per training image of the architecture; an adversarially trained model (``training.adversarial``)
  counts 1 + share x k standard epochs per epoch for a k-step training attack (k + 1 for Madry's share 1:
  k attack passes and the training step, bench/bench_adversarial.py);
* evaluation job: test images x attacked subsets x (attack steps x restarts + 2 clean/final passes) x seconds
  per attack pass (forward + backward to the input, ~2/3 of a training step since no weight gradients).

Seconds per training image come from a seconds-per-epoch table at 256x256 (``--per-epoch-seconds``: a JSON
file or string ``{"resnet18": 60, ...}``, measured on your GPU, epoch = ``--epoch-images`` images), scaled to
the study's ``model.resolution`` by the pixel count (the FLOPs of a convolutional network grow with it; small
inputs use a GPU less well, so at 32-64 px this is a lower bound). The built-in table is an estimate, not a
measurement: the supplementary's per-image inference cost (Table 1, "Cost", FLOPs) x 3 for a training step, at
an assumed effective 25 TFLOP/s (an A100-class GPU in fp32/TF32).

The disk estimate adds what a finished study keeps: one weights checkpoint per model and milestone (float32,
or float16 with ``training.weights_dtype``; parameter counts of the models built on torch's meta device, no
memory used), the evaluation CSVs (rows x ~250 bytes) and the packed arrays. The optimizer state a
milestone resumes from (twice the weights with Adam) is temporary and not counted, nor are the raw data
(Taskonomy's archives) or logs.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

from . import study
from .attacks import METHODS

# Supplementary Table 1, "Cost": FLOPs of one 256x256 inference, per encoder (with its task decoders).
INFERENCE_GFLOPS = {"resnet18": 6.09, "resnet50": 9.90, "xception": 3.64, "resnet152": 19.64,
                    "wide_resnet50_2": 19.45}  # fmt: skip
ASSUMED_TFLOPS = 25.0  # effective training throughput of the assumed GPU (A100-class, fp32/TF32 convnets)
TRAIN_FLOPS_FACTOR = 3.0  # forward + backward (input and weight gradients)
ATTACK_PASS_FRACTION = 2.0 / 3.0  # an attack step needs no weight gradients
REFERENCE_RESOLUTION = 256  # the resolution of the seconds-per-epoch tables
EVAL_ROW_BYTES = 250  # one row of an evaluation CSV (measured: 241 in the test study)
# Supplementary Appendix B: 9464 images of the sample building, 80% of the rooms train, 20% test.
DEFAULT_TRAIN_IMAGES = 7571
DEFAULT_TEST_IMAGES = 1893
BUILTIN_SOURCE = (
    f"ESTIMATE, not measured: supplementary Table 1 inference FLOPs x {TRAIN_FLOPS_FACTOR:g} at an assumed "
    f"{ASSUMED_TFLOPS:g} TFLOP/s; pass --per-epoch-seconds with measured numbers"
)


def builtin_per_epoch_seconds(images: int) -> dict[str, float]:
    """Seconds per training epoch of `images` images at 256x256 under the built-in FLOP-based estimate."""
    return {
        a: images * g * 1e9 * TRAIN_FLOPS_FACTOR / (ASSUMED_TFLOPS * 1e12)
        for a, g in INFERENCE_GFLOPS.items()
    }


def load_per_epoch_seconds(value: str) -> dict[str, float]:
    """`value` is a JSON object or the path of a JSON file: {arch: seconds per epoch}."""
    from .files import read_text  # names the file when it is not UTF-8

    text = read_text(value, "JSON file") if Path(value).is_file() else value
    try:
        table = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(
            f"--per-epoch-seconds: {value!r} is neither a JSON file nor a JSON object ({e})"
        ) from None
    if not isinstance(table, dict) or not all(isinstance(v, int | float) and v > 0 for v in table.values()):
        raise ValueError(f"--per-epoch-seconds: expected {{arch: seconds > 0}}, got {table!r}")
    return {str(k): float(v) for k, v in table.items()}


# ------------------------------------------------------------------------------------ the job list
def jobs(plan: study.Plan) -> list[dict]:
    """The GPU jobs of a plan: train (arch, epochs trained) and evaluate (arch, subsets, passes per image)."""
    out = []
    for model_id, epochs in sorted(plan.epochs.items()):
        arch = plan.models[model_id].arch
        factor = adversarial_factor(plan, model_id)
        for e in sorted(epochs):
            start = plan.previous_epoch(model_id, e) or 0
            out.append({"rule": "train", "arch": arch, "epochs": e - start, "factor": factor})
    for (model_id, _, attack), subsets in sorted(plan.evals.items()):
        spec = plan.attacks[attack]
        out.append({"rule": "evaluate", "arch": plan.models[model_id].arch, "subsets": len(subsets),
                    "passes": attack_passes(spec) + 2})  # fmt: skip
    return out


def adversarial_factor(plan: study.Plan, model_id: str) -> float:
    """Standard epochs one training epoch costs: 1, or 1 + share x k with a k-step training attack."""
    name = plan.models[model_id].adversarial
    if name is None:
        return 1.0
    a = plan.adversarial[name]
    return 1.0 + a["share"] * attack_passes(a["attack"])


def attack_passes(spec: dict) -> int:
    """Forward-backward passes of one attack per image and subset: steps x restarts (method defaults)."""
    method = METHODS[spec["method"]]
    if not method.perturbs:
        return 0
    restarts = spec.get("restarts") or method.options().get("restarts") or 1  # no restarts option: one run
    return method.steps(spec) * int(restarts)


def job_counts(plan: study.Plan) -> Counter:
    """Jobs per rule of a run from an empty folder (what ``snakemake -n`` lists)."""
    config = plan.config
    counts = Counter(j["rule"] for j in jobs(plan))
    # milestones a later one resumes from run as rule train_resumable (rules/train.smk)
    counts["train_resumable"] = sum(
        plan.previous_epoch(m, e) is not None for m, es in plan.epochs.items() for e in es
    )
    counts["train"] -= counts["train_resumable"]
    counts["evaluate"] -= len(plan.traced)  # the same jobs, run by rule evaluate_traced (rules/attack.smk)
    counts["evaluate_traced"] = len(plan.traced)
    counts["prepare"] = len({"train", "val", config["evaluation"]["split"]})
    if config["dataset"]["source"] == "synthetic":
        counts["synthesize"] = 1
    elif config["dataset"]["taskonomy"]["root"] is None:
        counts["download_archives"] = 1
    counts["table"], counts["figure"] = len(plan.tables()), len(plan.figures())
    counts["theory"] = int(plan.theory is not None)
    counts["claims"] = int(bool(plan.claims_sources()))
    counts["aggregate"] = counts["check_models"] = int(bool(plan.evals))
    counts["all"] = 1
    return +counts


# ------------------------------------------------------------------------------------ the estimate
def at_resolution(per_epoch: dict[str, float], resolution: int) -> dict[str, float]:
    """Seconds per epoch at 256x256 scaled to ``resolution`` px by the pixel count (FLOPs ~ pixels)."""
    scale = (resolution / REFERENCE_RESOLUTION) ** 2
    return {a: s * scale for a, s in per_epoch.items()}


def estimate(
    jobs: list[dict], per_epoch: dict[str, float], epoch_images: int, test_images: int, train_images=None
) -> dict:
    """GPU-hours per (rule, arch) of the train and evaluate jobs; other rules are CPU-only and not counted.
    ``per_epoch`` holds seconds per ``epoch_images`` images; an epoch of the study has ``train_images``
    (default: ``epoch_images``)."""
    train_images = epoch_images if train_images is None else train_images
    hours: Counter = Counter()
    missing = sorted({j["arch"] for j in jobs} - set(per_epoch))
    if missing:
        raise ValueError(f"--per-epoch-seconds has no entry for architecture(s) {missing}")
    for job in jobs:
        arch = job["arch"]
        if job["rule"] == "train":
            epochs = job["epochs"] * job.get("factor", 1.0)
            hours[("train", arch)] += epochs * per_epoch[arch] * train_images / epoch_images / 3600
        else:
            per_image = per_epoch[arch] / epoch_images * ATTACK_PASS_FRACTION
            hours[("evaluate", arch)] += test_images * job["subsets"] * job["passes"] * per_image / 3600
    return dict(hours)


# ------------------------------------------------------------------------------------ disk
def _decoder_kind(plan: study.Plan) -> str:
    return plan.config["model"]["decoder"]


def weights_bytes(plan: study.Plan) -> dict[str, int]:
    """Bytes of each model's weights (its checkpoint without the small meta): the encoder, its tasks'
    decoders and the input normalisation, counted on models built on torch's meta device."""
    import torch

    from .models import MultiTaskNet

    half = plan.config["training"].get("weights_dtype") == "float16"
    parts: dict[str, dict[str, int]] = {}  # arch -> state-dict prefix -> bytes
    for arch in sorted({m.arch for m in plan.models.values()}):
        tasks = sorted({t for m in plan.models.values() if m.arch == arch for t in m.tasks})
        with torch.device("meta"):
            net = MultiTaskNet(arch, tasks, decoder=_decoder_kind(plan))
        sizes: Counter = Counter()
        for k, v in net.state_dict().items():
            head = k.split(".")[:2] if k.startswith("decoders.") else k.split(".")[:1]
            sizes[".".join(head)] += v.numel() * (2 if half and v.is_floating_point() else v.element_size())
        parts[arch] = dict(sizes)
    out = {}
    for model_id, m in plan.models.items():
        own = parts[m.arch]
        out[model_id] = sum(b for k, b in own.items() if not k.startswith("decoders.")) + sum(
            own[f"decoders.{t}"] for t in m.tasks
        )
    return out


def split_sizes(plan: study.Plan, train_images: int, test_images: int) -> tuple[int, int]:
    """(training views, held-out views) of the study: counted for the synthetic data (split by point as
    the study sets, else 80/20), the given numbers for Taskonomy."""
    ds = plan.config["dataset"]
    if ds["source"] != "synthetic":
        return train_images, test_images
    syn = ds["synthetic"]
    total = syn["buildings"] * syn["points"] * syn["views"]
    thr = ds["split_point_threshold"]
    train = syn["buildings"] * syn["views"] * min(thr, syn["points"]) if thr else round(0.8 * total)
    return train, total - train


def packed_bytes(plan: study.Plan, train: int, held: int) -> int:
    """Bytes of the packed splits (``train`` training views; val and the evaluation split, ``held`` views
    each): rgb, targets and masks."""
    from . import tasks as T

    config = plan.config
    res = int(config["model"]["resolution"])
    per_image = 3 + sum(  # uint8 rgb; uint8 labels or float32 channels; uint8 mask per task
        (1 if T.get(t).is_segmentation else 4 * T.get(t).channels) + 1 for t in plan.tasks
    )
    # val and the evaluation split are prepared separately, even when they hold the same views (held =
    # both); distinct val and test views (dataset.split_point_val) share the held-out views between them
    splits = 1 if config["dataset"].get("split_point_val") else len({"val", config["evaluation"]["split"]})
    return (train + splits * held) * res * res * per_image


def disk_estimate(plan: study.Plan, train: int, held: int, test_images: int) -> dict[str, int]:
    """Bytes a finished study keeps: checkpoints (weights only), evaluation CSVs (``test_images`` per
    evaluation) and packed data (``train`` and ``held`` views, see ``packed_bytes``)."""
    weights = weights_bytes(plan)
    ckpts = sum(weights[m] for m, es in plan.epochs.items() for _ in es)
    rows = sum(
        len(subsets) * test_images * len(plan.models[m].tasks) for (m, _, _), subsets in plan.evals.items()
    )
    return {
        "checkpoints": ckpts,
        "evaluations": rows * EVAL_ROW_BYTES,
        "packed data": packed_bytes(plan, train, held),
    }


def _size(n: float) -> str:
    if n >= 1e9:
        return f"{n / 1e9:.2f} GB"
    return f"{n / 1e6:.0f} MB" if n >= 1e6 else f"{n / 1e3:.0f} kB"


def report(
    counts: Counter, jobs: list[dict], hours: dict, per_epoch: dict[str, float], source: str, args,
    resolution: int = REFERENCE_RESOLUTION, disk: dict[str, int] | None = None, images: tuple = (),
) -> str:  # fmt: skip
    """The plan as text; ``images``: (training images per epoch, test images per evaluation job)."""
    train_images, test_images = images or (args.epoch_images, args.test_images)
    lines = [f"Study {args.configfile}: {sum(counts.values())} jobs", "", f"{'rule':<14}{'jobs':>8}"]
    lines += [f"{rule:<14}{n:>8}" for rule, n in counts.most_common()]
    lines += ["", f"Seconds per epoch at 256x256 ({args.epoch_images} images/epoch; {source}):"]
    lines += [f"  {arch:<16}{s:>10.1f}" for arch, s in sorted(per_epoch.items())]
    if resolution != REFERENCE_RESOLUTION:
        scale = (resolution / REFERENCE_RESOLUTION) ** 2
        lines += [
            f"The study's models see {resolution}x{resolution} px (model.resolution): the GPU-hours scale",
            f"those seconds by ({resolution}/256)^2 = {scale:.4g}, as FLOPs scale with the pixels (small",
            "inputs use a GPU less well: below ~128 px, read the hours as a lower bound).",
        ]
    lines += ["", f"GPU-hours ({train_images} training images per epoch, {test_images} test images per "
              "evaluation job):",
              f"{'rule':<10}{'arch':<18}{'jobs':>6}{'GPU-h':>10}"]  # fmt: skip
    total = sum(hours.values())
    digits = 1 if total >= 10 else 3
    for (rule, arch), h in sorted(hours.items()):
        n = sum(1 for j in jobs if j["rule"] == rule and j["arch"] == arch)
        lines.append(f"{rule:<10}{arch:<18}{n:>6}{h:>10.{digits}f}")
    seconds = f" (= {total * 3600:.2g} GPU-seconds)" if total < 0.1 else ""
    lines += [f"{'total':<34}{total:>10.{digits}f}{seconds}", ""]
    adversarial = sorted({j["factor"] for j in jobs if j.get("factor", 1.0) != 1.0})
    if adversarial:
        n = sum(1 for j in jobs if j.get("factor", 1.0) != 1.0)
        lines += [f"Adversarial training: {n} train jobs count {'/'.join(f'{f:g}' for f in adversarial)} "
                  "standard epochs per epoch (1 + share x k for a k-step training attack)."]  # fmt: skip
    lines += ["Not counted: download/preparation/analysis (CPU), queueing, failed attempts."]
    if disk is not None:
        lines += ["", f"Disk, what the finished study keeps: {_size(sum(disk.values()))}"]
        lines += [f"  {k:<14}{_size(v):>10}" for k, v in disk.items()]
        lines += [
            "Checkpoints hold weights only (in training.weights_dtype); a milestone's optimizer state",
            "(2x its weights with Adam) lives until the next milestone exists. Not counted: raw data, logs.",
        ]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------ CLI
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--configfile", required=True, help="the study, e.g. studies/paper.yaml")
    parser.add_argument("--per-epoch-seconds", metavar="FILE_OR_JSON",
                        help='measured seconds per training epoch at 256x256 per architecture, e.g. '
                             '\'{"resnet18": 60}\' (default: a FLOP-based estimate)')  # fmt: skip
    parser.add_argument("--epoch-images", type=int, default=DEFAULT_TRAIN_IMAGES,
                        help="training images per epoch behind the per-epoch seconds (default: %(default)s, "
                             "80%% of the supplementary's 9464 images)")  # fmt: skip
    parser.add_argument("--test-images", type=int, default=DEFAULT_TEST_IMAGES,
                        help="test split size (default: %(default)s, 20%% of 9464); "
                             "a study's evaluation.limit caps it")  # fmt: skip
    parser.add_argument("--schema", type=Path, default=study.SCHEMA, help="default: %(default)s")
    parser.add_argument("--json", action="store_true", help="print job counts and GPU-hours as JSON")


def run(args) -> int:
    for flag, value in (("--epoch-images", args.epoch_images), ("--test-images", args.test_images)):
        if value < 1:
            raise ValueError(f"{flag}: expected a number of images >= 1, got {value}")
    if args.per_epoch_seconds:
        per_epoch, source = load_per_epoch_seconds(args.per_epoch_seconds), "from --per-epoch-seconds"
    else:
        per_epoch, source = builtin_per_epoch_seconds(args.epoch_images), BUILTIN_SOURCE
    plan = study.load(args.configfile, args.schema)
    try:  # the workflow refuses it before any job; a cost estimate is still useful before agreeing
        study.check_licence(plan.config)
    except study.StudyError as e:
        print(f"mtlrobust plan: warning: {e}", file=sys.stderr)
    limit = plan.config["evaluation"]["limit"]
    train_images, held = split_sizes(plan, args.epoch_images, args.test_images)
    test_images = min(held, limit) if limit else held
    job_list, counts = jobs(plan), job_counts(plan)
    resolution = int(plan.config["model"]["resolution"])
    scaled = at_resolution(per_epoch, resolution)
    hours = estimate(job_list, scaled, args.epoch_images, test_images, train_images)
    disk = disk_estimate(plan, train_images, held, test_images)
    if args.json:
        print(json.dumps({"jobs": dict(counts),
                          "gpu_hours": {f"{r}/{a}": round(h, 2) for (r, a), h in sorted(hours.items())},
                          "per_epoch_seconds": per_epoch, "source": source, "resolution": resolution,
                          "disk_bytes": disk}, indent=2))  # fmt: skip
    else:
        images = (train_images, test_images)
        print(report(counts, job_list, hours, per_epoch, source, args, resolution, disk, images))
    return 0
