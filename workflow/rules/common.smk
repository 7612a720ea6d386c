"""The study plan (the package src/mtlrobust/study) as rule inputs, params and targets.

Checks and planning live in ``mtlrobust.study``, command lines in ``mtlrobust.commands``: here the config is
validated against the schema, the plan is built once, and every param is a canonical string (fixed order),
so the same values in another key order (or rewritten by a YAML tool) rerun nothing.
"""

import math
import os
import re
import sys
from pathlib import Path

from snakemake.utils import min_version

min_version("9.19.0")

SRC = str(Path(workflow.basedir) / "src")
sys.path.insert(0, SRC)
# Jobs inherit this, so rules run the repository's package with or without `pip install` / --sdm conda.
os.environ.update(
    PYTHONPATH=os.pathsep.join(p for p in (SRC, os.environ.get("PYTHONPATH")) if p)
)

# Two imports, not one in parentheses: a line that starts with `checkpoint` is Snakemake's keyword.
from mtlrobust import commands, cost, study  # noqa: E402
from mtlrobust import checkpoint as checkpoint_format  # noqa: E402

# The study files read again by mtlrobust's bounded loader (size, aliases, duplicate keys, encoding), then
# the schema packaged with mtlrobust (src/mtlrobust/schemas/config.schema.yaml: defaults filled in, integers
# strict) and the plan: the checks and one-line errors of `mtlrobust plan`, before any job.
# A refused study ends as one line naming the file, line and key (no traceback).
try:
    PLAN = study.load_workflow(config, workflow.configfiles)
except study.StudyError as e:
    sys.exit(f"Study error: {e}")

TASKS = PLAN.tasks
TRAIN = config["training"]
DATASET = config["dataset"]["name"]
EVAL_SPLIT = config["evaluation"]["split"]


onstart:
    # Local runs put the warm-start launcher (mtlrobust.warmstart, README "Warm start") in front of the torch
    # commands (train, evaluate, theory): jobs fork from a worker that imported torch once instead of paying
    # ~3 CPU-s of imports each. The rules read it from $MTLROBUST_LAUNCHER, set here because only now is the
    # executor known; cluster jobs never run this hook (their CPUs belong to their allocation), nor do runs
    # with MTLROBUST_WARM=0 or --no-hooks. A warm job's benchmark: file measures the launcher; the forked
    # job writes its own figures to its .job.tsv log (rules train and evaluate).
    if workflow.local_exec and os.environ.get("MTLROBUST_WARM", "") != "0":
        os.environ.update(MTLROBUST_LAUNCHER="python -m mtlrobust.warmstart run --")
    else:  # never carried into a cluster job's environment
        os.environ.pop("MTLROBUST_LAUNCHER", None)


# ------------------------------------------------------------------------------------ data
RAW = "resources/{dataset}/raw"  # the raw Taskonomy layout, synthesized or downloaded


def packed_files(split, dataset=DATASET):
    """The prepared arrays of one split (what a job reading it depends on)."""
    names = ["rgb.npy", "views.csv", "meta.json"] + [f"{t}.npy" for t in TASKS]
    return [f"resources/{dataset}/packed/{split}/{n}" for n in names]


def packed_root(wildcards, output):
    """The packed folder a prepare job writes its split into (derived from its outputs)."""
    return os.path.dirname(os.path.dirname(output[0]))


def data_split_dir(wildcards, input):
    """The split folder a job reads (derived from its input files)."""
    return os.path.dirname(input.data[0])


def data_root_dir(wildcards, input):
    """The packed folder holding the train/val/test splits (derived from the input files)."""
    return os.path.dirname(os.path.dirname(input.data[0]))


def split_csv_input(wildcards):
    """The split CSV prepare reads, if the study names one, so that editing it reruns prepare. A path with
    braces is left out (Snakemake would read them as wildcards); mtlrobust.study.check_inputs checked that it
    exists when the study loaded."""
    path = config["dataset"]["split_csv"]
    if path is None or config["dataset"]["split_point_threshold"] is not None:
        return []
    return [] if "{" in path or "}" in path else [path]


def licence_agreed(wildcards):
    """Nothing, or the study's licence error: a download job is planned only once the licence is agreed
    (or the raw folder is there already, see mtlrobust.study.check_licence)."""
    study.check_licence(config)
    return []


def raw_dir():
    """Raw Taskonomy layout: synthesized/downloaded under resources/, or an existing folder."""
    root = config["dataset"]["taskonomy"]["root"]
    if config["dataset"]["source"] == "taskonomy" and root is not None:
        return root
    return RAW.format(dataset=DATASET)


# ------------------------------------------------------------------------------------ models and attacks
# The files of a model milestone and of an evaluation, written once: the rules use these templates as they
# are, the input functions below fill them in.
CHECKPOINT = "results/models/{model_id}/epoch{epoch}.pt"
TRAIN_LOG = "results/models/{model_id}/epoch{epoch}.csv"  # the training log CSV (losses, validation errors)
# The optimizer/scheduler/RNG state a later milestone resumes from, where `train` writes it.
RESUME = str(checkpoint_format.resume_path(CHECKPOINT))
EVAL = "results/evals/{model_id}/epoch{epoch}/{attack}.csv"
EVAL_STEPS = "results/evals/{model_id}/epoch{epoch}/{attack}.steps.csv"  # the state after each step
# Each job's console log, its .benchmark.tsv and (warm jobs) its .job.tsv: these stems plus the suffix.
TRAIN_JOB = "logs/train/{model_id}/epoch{epoch}"
EVAL_JOB = "logs/evaluate/{model_id}/epoch{epoch}/{attack}"


def checkpoint(model_id, epoch):
    return CHECKPOINT.format(model_id=model_id, epoch=epoch)


def eval_csv(key):
    model_id, epoch, attack = key
    return EVAL.format(model_id=model_id, epoch=epoch, attack=attack)


def final_logs():
    """Training logs of every checkpoint the study uses (for the trivial-predictor check)."""
    return sorted(
        TRAIN_LOG.format(model_id=m, epoch=e)
        for m, es in PLAN.epochs.items()
        for e in es
    )


def resume_file(model_id, epoch):
    return RESUME.format(model_id=model_id, epoch=epoch)


def previous_checkpoint(wildcards):
    """The model's previous needed milestone and its resume state (training resumes from them), or nothing
    for the first."""
    e = PLAN.previous_epoch(wildcards.model_id, int(wildcards.epoch))
    return (
        []
        if e is None
        else [checkpoint(wildcards.model_id, e), resume_file(wildcards.model_id, e)]
    )


def resume_flag(wildcards, input):
    return commands.flags(("--resume-from", input.resume[0] if input.resume else None))


def keep_resume_flag(wildcards, output):
    """--keep-resume for the jobs that declare the resume state (rule train_resumable)."""
    return commands.flags(("--keep-resume", "resume" in output.keys()))


# SLURM's wall-clock limit (-t, minutes) of one training milestone of a standard model; the profile's
# retries multiply it by `attempt`, and an adversarially trained model's milestone costs 1 + share x k times
# as much (k: its training attack's steps; `mtlrobust plan` counts it so).
TRAIN_MINUTES = 480


def train_runtime(wildcards, attempt):
    """Minutes for SLURM's -t of one training job (ignored by local runs)."""
    factor = cost.adversarial_factor(PLAN, wildcards.model_id)
    return math.ceil(TRAIN_MINUTES * factor * attempt)


def steps_out_flag(wildcards, output):
    """--steps-out for the jobs that declare the per-step output (rule evaluate_traced)."""
    return commands.flags(
        ("--steps-out", output.steps if "steps" in output.keys() else None)
    )


# The milestones a later milestone resumes from, run by train_resumable, as a lookahead that the model_id
# wildcard must satisfy: "{model_id}/epoch{E}." exactly (wildcard constraints see one wildcard at a time).
RESUMABLE = "|".join(
    sorted(
        re.escape(f"{m}/epoch{PLAN.previous_epoch(m, e)}.")
        for m, es in PLAN.epochs.items()
        for e in es
        if PLAN.previous_epoch(m, e) is not None
    )
)


def model_args(wildcards):
    return commands.model(PLAN.models[wildcards.model_id], PLAN.adversarial)


def training_args(wildcards):
    """The training settings of the model's encoder (training.per_arch overrides)."""
    return commands.training(config, PLAN.models[wildcards.model_id].arch)


def attack_json(wildcards):
    return PLAN.attack_json(wildcards.attack)


def attacked_args(wildcards):
    key = (wildcards.model_id, int(wildcards.epoch), wildcards.attack)
    return commands.attacked(PLAN.evals[key])


# Evaluations an output reads per step, run by evaluate_traced, as a lookahead that the model_id wildcard
# must satisfy: "{model_id}/epoch{E}/{attack}." exactly.
TRACED = "|".join(sorted(re.escape(f"{m}/epoch{e}/{a}.") for m, e, a in PLAN.traced))


# ------------------------------------------------------------------------------------ outputs
def output_evals(wildcards):
    """The evaluation CSVs of the output's own cells (and their per-step sidecars if it reads steps)."""
    out = PLAN.outputs[wildcards.name]
    templates = [EVAL, EVAL_STEPS] if out.traced else [EVAL]
    return [
        t.format(model_id=m, epoch=e, attack=a)
        for t in templates
        for m, e, a in out.evals
    ]


def output_spec(wildcards):
    return PLAN.outputs[wildcards.name].spec_json


def all_eval_csvs():
    return sorted(eval_csv(k) for k in PLAN.evals)


def models_split():
    """results/models.csv's split column: the views its errors were measured on (val = test views under
    the paper's point split, dataset.split_point_val null)."""
    ds = PLAN.config["dataset"]
    return (
        "val=test"
        if ds["split_point_threshold"] and not ds["split_point_val"]
        else "val"
    )


def theory_checkpoint():
    th = PLAN.theory
    return checkpoint(th["model_id"], th["epoch"]) if th else []


def all_outputs():
    out = [f"results/{n}.{x}" for n in PLAN.tables() for x in ("csv", "md")]
    out += [f"results/{n}.{x}" for n in PLAN.figures() for x in ("png", "pdf")]
    if PLAN.claims_sources():
        out += ["results/claims.csv", "results/claims.md"]
    if PLAN.theory:
        out.append("results/theory.csv")
    if PLAN.evals:
        out += ["results/vulnerability.csv", "results/models.csv"]
    return out


MODEL_ID = r"[A-Za-z0-9_]+-[A-Za-z0-9_]+-[A-Za-z0-9_+]+-s\d+(?:-adv_[A-Za-z0-9_]+)?"


wildcard_constraints:
    dataset=re.escape(DATASET),
    split="train|val|test",
    model_id=MODEL_ID,
    epoch=r"\d+",
    attack=r"[A-Za-z0-9_]+",
