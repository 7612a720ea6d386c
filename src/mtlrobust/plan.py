"""``mtlrobust plan``: how many jobs a study runs, per rule, and roughly how many GPU-hours they cost.

The job list comes from Snakemake itself (a forced dry run, ``snakemake -n -p -F``, parsed), so it is exactly
what a run would schedule. The cost model is deliberately simple and printed with its assumptions:

* training job: images/epoch x epochs in the job (a milestone job resumes from the previous milestone) x
  seconds per training image of the architecture;
* evaluation job: test images x attacked subsets x (attack steps x restarts + 2 clean/final passes) x seconds
  per attack pass (forward + backward to the input, ~2/3 of a training step since no weight gradients).

Seconds per training image come from a seconds-per-epoch table at 256x256 (``--per-epoch-seconds``: a JSON
file or string ``{"resnet18": 60, ...}``, measured on your GPU, epoch = ``--epoch-images`` images). The
built-in table is an estimate, not a measurement: the supplementary's per-image inference cost (Table 1,
"Cost", FLOPs) x 3 for a training step, at an assumed effective 25 TFLOP/s (an A100-class GPU in fp32/TF32).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# Supplementary Table 1, "Cost": FLOPs of one 256x256 inference, per encoder (with its task decoders).
INFERENCE_GFLOPS = {"resnet18": 6.09, "resnet50": 9.90, "xception": 3.64, "resnet152": 19.64,
                    "wide_resnet50_2": 19.45}  # fmt: skip
ASSUMED_TFLOPS = 25.0  # effective training throughput of the assumed GPU (A100-class, fp32/TF32 convnets)
TRAIN_FLOPS_FACTOR = 3.0  # forward + backward (input and weight gradients)
ATTACK_PASS_FRACTION = 2.0 / 3.0  # an attack step needs no weight gradients
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
    text = Path(value).read_text() if Path(value).is_file() else value
    try:
        table = json.loads(text)
    except json.JSONDecodeError as e:
        raise SystemExit(
            f"--per-epoch-seconds: {value!r} is neither a JSON file nor a JSON object ({e})"
        ) from None
    if not isinstance(table, dict) or not all(isinstance(v, int | float) and v > 0 for v in table.values()):
        raise SystemExit(f"--per-epoch-seconds: expected {{arch: seconds > 0}}, got {table!r}")
    return {str(k): float(v) for k, v in table.items()}


# ------------------------------------------------------------------------------------ the job list
def dry_run(configfile: str, snakefile: Path, directory: Path | None) -> str:
    """Text of a forced dry run (every job of the study, whatever already exists), with shell commands."""
    cmd = [sys.executable, "-m", "snakemake", "-n", "-p", "-F", "--workflow-profile", "none",
           "--snakefile", str(snakefile), "--configfile", configfile]  # fmt: skip
    if directory is not None:
        cmd += ["--directory", str(directory)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(
            f"snakemake dry run failed ({' '.join(cmd)}):\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}"
        )
    return proc.stdout + proc.stderr


def parse_jobs(text: str) -> list[dict]:
    """One dict per job of a dry run: rule, wildcards and shell command."""
    jobs = []
    for block in re.split(r"\n(?=(?:local)?rule \w+:\n)", text):
        m = re.match(r"(?:local)?rule (\w+):\n", block)
        if not m:
            continue
        w = re.search(r"^    wildcards: (.*)$", block, re.M)
        s = re.search(r"^Shell command: (.*)$", block, re.M)
        wildcards = dict(kv.split("=", 1) for kv in w.group(1).split(", ")) if w else {}
        jobs.append({"rule": m.group(1), "wildcards": wildcards, "shell": s.group(1) if s else ""})
    return jobs


def _flag(shell: str, name: str) -> str | None:
    m = re.search(rf"--{name}[ =](\S+)", shell)
    return m.group(1) if m else None


def train_cost(job: dict) -> tuple[str, int]:
    """(arch, epochs trained by this job) of a train job."""
    arch, epochs = _flag(job["shell"], "arch"), int(_flag(job["shell"], "epochs"))
    resume = _flag(job["shell"], "resume-from")
    start = int(re.search(r"epoch(\d+)\.pt", resume).group(1)) if resume else 0
    return arch, epochs - start


def evaluate_cost(job: dict) -> tuple[str, int, int]:
    """(arch, attacked subsets, passes per image and subset) of an evaluate job."""
    from mtlrobust.ids import parse_model_id

    arch = parse_model_id(job["wildcards"]["model_id"]).arch
    spec = json.loads(re.search(r"--attack-json '(\{.*?\})'", job["shell"]).group(1))
    subsets = len(re.findall(r"--attacked \S+", job["shell"]))
    steps = 0 if spec.get("method", "none") == "none" else int(spec.get("steps", 1))
    return arch, subsets, steps * int(spec.get("restarts", 1) or 1) + 2


# ------------------------------------------------------------------------------------ the estimate
def estimate(jobs: list[dict], per_epoch: dict[str, float], epoch_images: int, test_images: int) -> dict:
    """GPU-hours per (rule, arch): training and evaluation jobs; other rules are CPU-only and not counted."""
    hours: Counter = Counter()
    missing = set()
    for job in jobs:
        if job["rule"] == "train":
            arch, epochs = train_cost(job)
            if arch not in per_epoch:
                missing.add(arch)
                continue
            hours[("train", arch)] += epochs * per_epoch[arch] / 3600
        elif job["rule"] == "evaluate":
            arch, subsets, passes = evaluate_cost(job)
            if arch not in per_epoch:
                missing.add(arch)
                continue
            limit = _flag(job["shell"], "limit")
            images = min(test_images, int(limit)) if limit else test_images
            per_image = per_epoch[arch] / epoch_images * ATTACK_PASS_FRACTION
            hours[("evaluate", arch)] += images * subsets * passes * per_image / 3600
    if missing:
        raise SystemExit(f"--per-epoch-seconds has no entry for architecture(s) {sorted(missing)}")
    return dict(hours)


def report(jobs: list[dict], hours: dict, per_epoch: dict[str, float], source: str, args) -> str:
    counts = Counter(j["rule"] for j in jobs)
    lines = [f"Study {args.configfile}: {len(jobs)} jobs", "", f"{'rule':<14}{'jobs':>8}"]
    lines += [f"{rule:<14}{n:>8}" for rule, n in counts.most_common()]
    lines += ["", f"Seconds per epoch at 256x256 ({args.epoch_images} images/epoch; {source}):"]
    lines += [f"  {arch:<16}{s:>10.1f}" for arch, s in sorted(per_epoch.items())]
    lines += ["", f"GPU-hours ({args.test_images} test images per evaluation job):",
              f"{'rule':<10}{'arch':<18}{'jobs':>6}{'GPU-h':>10}"]  # fmt: skip
    for (rule, arch), h in sorted(hours.items()):
        n = sum(1 for j in jobs if j["rule"] == rule and _arch_of(j) == arch)
        lines.append(f"{rule:<10}{arch:<18}{n:>6}{h:>10.1f}")
    total = sum(hours.values())
    lines += [f"{'total':<34}{total:>10.1f}", "",
              "Not counted: download/preparation/analysis (CPU), queueing, failed attempts."]  # fmt: skip
    return "\n".join(lines)


def _arch_of(job: dict) -> str | None:
    if job["rule"] == "train":
        return _flag(job["shell"], "arch")
    if job["rule"] == "evaluate":
        from mtlrobust.ids import parse_model_id

        return parse_model_id(job["wildcards"]["model_id"]).arch
    return None


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
    parser.add_argument("--snakefile", type=Path, default=REPO / "Snakefile", help="default: %(default)s")
    parser.add_argument("--directory", type=Path, help="working directory of the dry run (default: here)")
    parser.add_argument("--json", action="store_true", help="print job counts and GPU-hours as JSON")


def run(args) -> int:
    if args.per_epoch_seconds:
        per_epoch, source = load_per_epoch_seconds(args.per_epoch_seconds), "from --per-epoch-seconds"
    else:
        per_epoch, source = builtin_per_epoch_seconds(args.epoch_images), BUILTIN_SOURCE
    jobs = parse_jobs(dry_run(args.configfile, args.snakefile, args.directory))
    if not jobs:
        raise SystemExit(f"the dry run of {args.configfile} listed no jobs")
    hours = estimate(jobs, per_epoch, args.epoch_images, args.test_images)
    if args.json:
        print(json.dumps({"jobs": dict(Counter(j["rule"] for j in jobs)),
                          "gpu_hours": {f"{r}/{a}": round(h, 2) for (r, a), h in sorted(hours.items())},
                          "per_epoch_seconds": per_epoch, "source": source}, indent=2))  # fmt: skip
    else:
        print(report(jobs, hours, per_epoch, source, args))
    return 0
