"""Config validation and the study plan: which models, milestones and attack jobs each output needs.

Everything here is computed once from the validated config. Model ids come from
``mtlrobust.ids.model_spec`` (imported from src/) so that names have a single source of truth.
"""

import json
import os
import re
import sys
from fractions import Fraction
from pathlib import Path

from snakemake.utils import min_version, validate

min_version("9.19.0")

SRC = str(Path(workflow.basedir) / "src")
sys.path.insert(0, SRC)
# Jobs inherit this, so rules run the repository's package with or without `pip install` / --sdm conda.
os.environ.update(
    PYTHONPATH=os.pathsep.join(p for p in (SRC, os.environ.get("PYTHONPATH")) if p)
)

from mtlrobust import ids as IDS  # noqa: E402
from mtlrobust import tasks as T  # noqa: E402

validate(config, schema="../schemas/config.schema.yaml")


# ------------------------------------------------------------------------------------ value parsing
def budget(value, key):
    """An eps/step size as a float: numbers or "8/255"-style strings; must be > 0."""
    try:
        v = (
            float(Fraction(str(value).replace(" ", "")))
            if isinstance(value, str)
            else float(value)
        )
    except (ValueError, ZeroDivisionError):
        raise ValueError(
            f"config key {key}: expected a number or a fraction like '8/255', got {value!r}"
        )
    if not v > 0:
        raise ValueError(f"config key {key}: expected a value > 0, got {value!r}")
    return v


def task_list(value, key):
    """Task letters/ids -> task ids (registry order kept as given), with the config key named in errors."""
    if value is not None and len(value) == 0:
        raise ValueError(
            f"config key {key}: expected a non-empty list of task letters, got []"
        )
    try:
        return [t.id for t in T.parse(list(value))]
    except (KeyError, ValueError) as e:
        raise ValueError(f"config key {key}: {e.args[0]}") from None


def letters(task_ids):
    return T.letters(task_ids)


# ------------------------------------------------------------------------------------ explicit checks
TASKS = task_list(config["tasks"], "tasks")
TRAIN = config["training"]
FINAL_EPOCH = TRAIN["epochs"]
MILESTONES = sorted(set(TRAIN["milestones"]) | {FINAL_EPOCH})
if MILESTONES[-1] > FINAL_EPOCH:
    raise ValueError(
        f"config key training.milestones: milestone {MILESTONES[-1]} is beyond training.epochs={FINAL_EPOCH}; "
        f"expected milestones <= {FINAL_EPOCH}"
    )
for arch in config["architectures"]:
    if arch not in IDS.ARCHS:
        raise ValueError(
            f"config key architectures: unknown architecture {arch!r}; expected one of {IDS.ARCHS}"
        )

ATTACKS = {}
for name, a in config["attacks"].items():
    spec = {
        "name": name,
        **{k: v for k, v in a.items() if k != "options"},
        **a["options"],
    }
    if a["method"] != "none":
        spec["eps"] = budget(a["eps"], f"attacks.{name}.eps")
        spec["step_size"] = budget(a["step_size"], f"attacks.{name}.step_size")
    else:
        spec["eps"] = spec["step_size"] = 0.0
    ATTACKS[name] = spec

STUDY = config["study"]


def sub_tasks(section, key="tasks"):
    """A study section's task subset (default: the top-level tasks), checked against them."""
    value = STUDY[section].get(key)
    if value is None:
        return list(TASKS)
    ids = task_list(value, f"study.{section}.{key}")
    extra = [t for t in ids if t not in TASKS]
    if extra:
        raise ValueError(
            f"config key study.{section}.{key}: task(s) {letters(extra)!r} are not among the study's tasks "
            f"{letters(TASKS)!r} (config key tasks)"
        )
    return ids


def sub_mains(section, tasks):
    value = STUDY[section].get("mains")
    if value is None:
        return list(tasks)
    ids = task_list(value, f"study.{section}.mains")
    extra = [t for t in ids if t not in tasks]
    if extra:
        raise ValueError(
            f"config key study.{section}.mains: main task(s) {letters(extra)!r} are not among the tasks "
            f"{letters(tasks)!r}; expected a subset of them"
        )
    return ids


def epoch_of(section, value, key="epoch"):
    e = FINAL_EPOCH if value is None else int(value)
    if e not in MILESTONES:
        raise ValueError(
            f"config key study.{section}.{key}: epoch {e} is not a checkpoint; expected one of "
            f"training.milestones {MILESTONES} (training.epochs={FINAL_EPOCH})"
        )
    return e


def arch_of(section, value, key="arch"):
    if value not in config["architectures"]:
        raise ValueError(
            f"config key study.{section}.{key}: architecture {value!r} is not in config key architectures "
            f"{config['architectures']}"
        )
    return value


def attack_of(section, value, key="attack"):
    if value not in ATTACKS:
        raise ValueError(
            f"config key study.{section}.{key}: attack {value!r} is not defined; expected one of the names "
            f"under attacks: {sorted(ATTACKS)}"
        )
    return value


def weighting_of(section, value):
    if value not in config["weightings"]:
        raise ValueError(
            f"config key study.{section}: weighting {value!r} is not in config key weightings {config['weightings']}"
        )
    return value


def seed_of(section, value):
    if value not in config["seeds"]:
        raise ValueError(
            f"config key study.{section}.seed: seed {value} is not in config key seeds {config['seeds']}"
        )
    return value


# ------------------------------------------------------------------------------------ the plan
MODELS = {}  # model_id -> ModelSpec
EPOCHS = {}  # model_id -> set of milestones some output needs
EVALS = (
    {}
)  # (model_id, epoch, attack) -> set of attacked subsets (tuples of task ids, registry order)


def need(spec, epoch, attack, attacked):
    """Record that an output needs `attack` on `spec` at `epoch` for each attacked subset."""
    MODELS[spec.id] = spec
    EPOCHS.setdefault(spec.id, set()).add(epoch)
    subsets = EVALS.setdefault((spec.id, epoch, attack), set())
    for s in attacked:
        subsets.add(tuple(t.id for t in T.canonical(s)))


def model(arch, weighting, tasks, seed, main):
    try:
        spec = IDS.model_spec(arch, weighting, list(tasks), seed, main=main)
        T.task_weights(spec.tasks, spec.weighting, main=spec.main)
    except (KeyError, ValueError) as e:
        raise ValueError(
            f"config: cannot build model {arch}/{weighting}/{letters(tasks)}: {e.args[0]}"
        ) from None
    return spec


def pair_grid(arch, weighting, seed, tasks, mains, epoch, attack, attacked="both"):
    """Single-task models of the mains and (main, aux) models; attack the main and/or both tasks."""
    for m in mains:
        need(model(arch, "uniform", [m], seed, m), epoch, attack, [[m]])
        for a in tasks:
            if a == m:
                continue
            subsets = {"single": [[m]], "multi": [[m, a]], "both": [[m], [m, a]]}[
                attacked
            ]
            need(model(arch, weighting, [m, a], seed, m), epoch, attack, subsets)


SPECS = {}  # output name -> spec JSON for the analysis CLIs
FIGURE_OUTPUTS = []  # outputs drawn by `mtlrobust figures`

if STUDY["table1"]["enabled"]:
    s = STUDY["table1"]
    tasks = sub_tasks("table1")
    mains = sub_mains("table1", tasks)
    arch, epoch, seed = (
        arch_of("table1", s["arch"]),
        epoch_of("table1", s["epoch"]),
        seed_of("table1", s["seed"]),
    )
    attack = attack_of("table1", s["attack"])
    for w in s["weightings"]:
        pair_grid(arch, weighting_of("table1", w), seed, tasks, mains, epoch, attack)
    SPECS["table1"] = dict(
        arch=arch, epoch=epoch, seed=seed, tasks=list(letters(tasks)), mains=list(letters(mains)),
        attack=attack, weightings=s["weightings"],
    )  # fmt: skip

if STUDY["table2"]["enabled"]:
    s = STUDY["table2"]
    tasks = sub_tasks("table2")
    mains = sub_mains("table2", tasks)
    arch, epoch, seed = (
        arch_of("table2", s["arch"]),
        epoch_of("table2", s["epoch"]),
        seed_of("table2", s["seed"]),
    )
    attacks = [attack_of("table2", a, "attacks") for a in s["attacks"]]
    for w in s["weightings"]:
        for a in attacks:
            pair_grid(
                arch, weighting_of("table2", w), seed, tasks, mains, epoch, a, "multi"
            )
    SPECS["table2"] = dict(
        arch=arch, epoch=epoch, seed=seed, tasks=list(letters(tasks)), mains=list(letters(mains)),
        attacks=attacks, weightings=s["weightings"],
    )  # fmt: skip

if STUDY["table3"]["enabled"]:
    s = STUDY["table3"]
    tasks = sub_tasks("table3")
    mains = sub_mains("table3", tasks)
    seed, attack = seed_of("table3", s["seed"]), attack_of("table3", s["attack"])
    w = weighting_of("table3", s["weighting"])
    ep = dict(
        proxy=epoch_of("table3", s["epochs"]["proxy"], "epochs.proxy"),
        target=epoch_of("table3", s["epochs"]["target"], "epochs.target"),
        arch=arch_of("table3", s["epochs"]["arch"], "epochs.arch"),
    )
    ar = dict(
        proxy=arch_of("table3", s["archs"]["proxy"], "archs.proxy"),
        target=arch_of("table3", s["archs"]["target"], "archs.target"),
        epoch=epoch_of("table3", s["archs"]["epoch"], "archs.epoch"),
    )
    cl = dict(
        arch=arch_of("table3", s["clean"]["arch"], "clean.arch"),
        epoch=epoch_of("table3", s["clean"]["epoch"], "clean.epoch"),
    )
    for arch, epoch in [
        (ep["arch"], ep["proxy"]), (ep["arch"], ep["target"]), (ar["proxy"], ar["epoch"]),
        (ar["target"], ar["epoch"]), (cl["arch"], cl["epoch"]),
    ]:  # fmt: skip
        pair_grid(arch, w, seed, tasks, mains, epoch, attack, s["attacked"])
    SPECS["table3"] = dict(
        attack=attack, seed=seed, tasks=list(letters(tasks)), mains=list(letters(mains)), epochs=ep, archs=ar,
        clean=cl, attacked=s["attacked"], weighting=w,
    )  # fmt: skip

FIGURE1_MODEL = None
if STUDY["figure1"]["enabled"]:
    s = STUDY["figure1"]
    orders = [task_list(o, "study.figure1.orders") for o in s["orders"]]
    for o, raw in zip(orders, s["orders"]):
        unknown = [t for t in o if t not in TASKS]
        if unknown:
            raise ValueError(
                f"config key study.figure1.orders: order {raw!r} uses task(s) {letters(unknown)!r} that are "
                f"not among the study's tasks {letters(TASKS)!r}"
            )
        if set(o) != set(orders[0]):
            raise ValueError(
                f"config key study.figure1.orders: order {raw!r} is not a permutation of {s['orders'][0]!r}; "
                "all orders must enable the same tasks (one model)"
            )
    arch, epoch, seed = (
        arch_of("figure1", s["arch"]),
        epoch_of("figure1", s["epoch"]),
        seed_of("figure1", s["seed"]),
    )
    attack = attack_of("figure1", s["attack"])
    spec = model(arch, "uniform", orders[0], seed, orders[0][0])
    need(spec, epoch, attack, [o[: i + 1] for o in orders for i in range(len(o))])
    FIGURE1_MODEL = (spec.id, epoch)
    SPECS["figure1"] = dict(
        model=spec.id, epoch=epoch, attack=attack, orders=s["orders"]
    )
    FIGURE_OUTPUTS.append("figure1")


def sweep(archs, epochs, attacks, seed, tasks):
    """Single-task and uniform pair models of `tasks`, each attacked on its main and on both tasks."""
    for arch in archs:
        for epoch in epochs:
            for attack in attacks:
                pair_grid(arch, "uniform", seed, tasks, tasks, epoch, attack)


if STUDY["rq1_norm"]["enabled"]:
    s = STUDY["rq1_norm"]
    tasks = sub_tasks("rq1_norm")
    arch, epoch, seed = (
        arch_of("rq1_norm", s["arch"]),
        epoch_of("rq1_norm", s["epoch"]),
        seed_of("rq1_norm", s["seed"]),
    )
    attacks = {
        k: attack_of("rq1_norm", v, f"attacks.{k}") for k, v in s["attacks"].items()
    }
    sweep([arch], [epoch], attacks.values(), seed, tasks)
    SPECS["rq1_norm"] = dict(
        arch=arch, epoch=epoch, seed=seed, tasks=list(letters(tasks)), attacks=attacks
    )

if STUDY["rq1_eps"]["enabled"]:
    s = STUDY["rq1_eps"]
    tasks = sub_tasks("rq1_eps")
    arch, epoch, seed = (
        arch_of("rq1_eps", s["arch"]),
        epoch_of("rq1_eps", s["epoch"]),
        seed_of("rq1_eps", s["seed"]),
    )
    attacks = [attack_of("rq1_eps", a, "attacks") for a in s["attacks"]]
    sweep([arch], [epoch], attacks, seed, tasks)
    SPECS["rq1_eps"] = dict(
        arch=arch, epoch=epoch, seed=seed, tasks=list(letters(tasks)), attacks=attacks
    )

if STUDY["rq1_arch"]["enabled"]:
    s = STUDY["rq1_arch"]
    tasks = sub_tasks("rq1_arch")
    archs = [arch_of("rq1_arch", a, "archs") for a in s["archs"]]
    epoch, seed = epoch_of("rq1_arch", s["epoch"]), seed_of("rq1_arch", s["seed"])
    attack = attack_of("rq1_arch", s["attack"])
    sweep(archs, [epoch], [attack], seed, tasks)
    SPECS["rq1_arch"] = dict(
        archs=archs, epoch=epoch, seed=seed, tasks=list(letters(tasks)), attack=attack
    )

if STUDY["rq1_epochs"]["enabled"]:
    s = STUDY["rq1_epochs"]
    tasks = sub_tasks("rq1_epochs")
    arch, seed = arch_of("rq1_epochs", s["arch"]), seed_of("rq1_epochs", s["seed"])
    epochs = [epoch_of("rq1_epochs", e, "epochs") for e in (s["epochs"] or MILESTONES)]
    attack = attack_of("rq1_epochs", s["attack"])
    sweep([arch], epochs, [attack], seed, tasks)
    SPECS["rq1_epochs"] = dict(
        arch=arch, epochs=epochs, seed=seed, tasks=list(letters(tasks)), attack=attack
    )

TABLES = [n for n in SPECS if n != "figure1"]
FIGURE_OUTPUTS += [n for n in TABLES if n.startswith("rq1_")]
THEORY = STUDY["figure1"]["enabled"] and STUDY["figure1"]["theory"]


# ------------------------------------------------------------------------------------ target lists
DATASET = config["dataset"]["name"]
EVAL_SPLIT = config["evaluation"]["split"]
SPLITS = sorted({"train", "val", EVAL_SPLIT})


def packed_root(wildcards, output):
    """The packed folder a prepare job writes its split into (derived from its outputs)."""
    return os.path.dirname(os.path.dirname(output[0]))


def data_split_dir(wildcards, input):
    """The split folder a job reads (derived from its input files)."""
    return os.path.dirname(input.data[0])


def data_root_dir(wildcards, input):
    """The packed folder holding the train/val/test splits (derived from the input files)."""
    return os.path.dirname(os.path.dirname(input.data[0]))


def packed_files(split, dataset=DATASET):
    """The prepared arrays of one split (what a job reading it depends on)."""
    names = ["rgb.npy", "views.csv", "meta.json"] + [f"{t}.npy" for t in TASKS]
    return [f"resources/{dataset}/packed/{split}/{n}" for n in names]


def raw_dir():
    """Raw Taskonomy layout: synthesized/downloaded under resources/, or an existing folder."""
    root = config["dataset"]["taskonomy"]["root"]
    if config["dataset"]["source"] == "taskonomy" and root is not None:
        return root
    return f"resources/{DATASET}/raw"


def download_args(wildcards):
    """Buildings, tasks, URL and checksums of the Taskonomy download."""
    tx = config["dataset"]["taskonomy"]
    args = f"--buildings {','.join(tx['buildings'])} --tasks {'+'.join(TASKS)}"
    if tx["url_template"]:
        args += f" --url-template {tx['url_template']!r}"
    if tx["md5"]:
        args += f" --md5 {tx['md5']!r}"
    return args + (" --agree-licence" if tx["agree_licence"] else "")


def prepare_args(wildcards):
    """Tasks, resolution, split rule and buildings of the packed arrays."""
    ds = config["dataset"]
    args = f"--tasks {'+'.join(TASKS)} --resolution {config['model']['resolution']}"
    if ds["split_point_threshold"] is not None:
        args += f" --threshold {ds['split_point_threshold']}"
    elif ds["split_csv"]:
        args += f" --split-csv {ds['split_csv']}"
    if ds["buildings"]:
        args += f" --buildings {' '.join(ds['buildings'])}"
    return args


def eval_csvs():
    return sorted(f"results/evals/{m}/epoch{e}/{a}.csv" for (m, e, a) in EVALS)


def checkpoint_files():
    return sorted(
        f"results/models/{m}/epoch{e}.pt" for m, es in EPOCHS.items() for e in es
    )


def all_outputs():
    out = []
    for name in TABLES:
        out += [f"results/{name}.csv", f"results/{name}.md"]
    out += [f"results/{n}.{ext}" for n in FIGURE_OUTPUTS for ext in ("png", "pdf")]
    if THEORY:
        out.append("results/theory.csv")
    if EVALS:
        out += ["results/vulnerability.csv", "results/models.csv"]
    return out


# ------------------------------------------------------------------------------------ input functions
def previous_checkpoint(wildcards):
    """The model's previous needed milestone (training resumes from it), or nothing for the first."""
    earlier = [
        e for e in EPOCHS.get(wildcards.model_id, ()) if e < int(wildcards.epoch)
    ]
    return (
        [f"results/models/{wildcards.model_id}/epoch{max(earlier)}.pt"]
        if earlier
        else []
    )


def resume_flag(wildcards, input):
    return f"--resume-from {input.resume}" if input.resume else ""


def model_params(wildcards):
    """Training arguments of one model (its arch, tasks, weighting, main task and seed)."""
    spec = MODELS[wildcards.model_id]
    return {"arch": spec.arch, "weighting": spec.weighting, "tasks": "+".join(spec.tasks), "main": spec.main,
            "seed": spec.seed}  # fmt: skip


def attack_json(wildcards):
    return json.dumps(ATTACKS[wildcards.attack], sort_keys=True)


def attacked_args(wildcards):
    subsets = EVALS[(wildcards.model_id, int(wildcards.epoch), wildcards.attack)]
    return " ".join(
        f"--attacked {'+'.join(s)}" for s in sorted(subsets, key=lambda s: (len(s), s))
    )


def spec_json(wildcards):
    return json.dumps(SPECS[wildcards.name], sort_keys=True)


def training_params():
    """Training settings that change the trained weights (threads and the milestone list do not)."""
    keys = (
        "batch_size",
        "lr",
        "lr_gamma",
        "hflip",
        "amp",
        "device",
        "val_limit",
        "bn_recalibrate",
    )
    keys += ("reference_init",)
    params = {k: TRAIN[k] for k in keys}
    params["lr_milestones"] = ",".join(str(m) for m in TRAIN["lr_milestones"])
    return params


def evaluation_params():
    """Evaluation settings that change the results (threads do not; the split is in the input path)."""
    return {
        k: config["evaluation"][k] for k in ("limit", "batch_size", "seed", "device")
    }


def train_flags():
    """Training options that are flags on the command line."""
    flags = [
        f"--val-limit {TRAIN['val_limit']}" if TRAIN["val_limit"] is not None else ""
    ]
    flags += ["--hflip" if TRAIN["hflip"] else "", "--amp" if TRAIN["amp"] else ""]
    flags += ["--reference-init" if TRAIN["reference_init"] else ""]
    flags += [f"--decoder {config['model']['decoder']}"]
    flags += [
        f"--bn-recalibrate {TRAIN['bn_recalibrate']}" if TRAIN["bn_recalibrate"] else ""
    ]
    return " ".join(f for f in flags if f)


def limit_flag():
    limit = config["evaluation"]["limit"]
    return f"--limit {limit}" if limit else ""


def theory_checkpoint():
    return (
        f"results/models/{FIGURE1_MODEL[0]}/epoch{FIGURE1_MODEL[1]}.pt"
        if FIGURE1_MODEL
        else []
    )


def theory_attack():
    """The threat model (norm, eps) of the Figure 1 attack: all the theory quantities depend on."""
    if not FIGURE1_MODEL:
        return {}
    attack = ATTACKS[STUDY["figure1"]["attack"]]
    return {"norm": attack["norm"], "eps": attack["eps"]}


def final_logs():
    """Training logs of every checkpoint the study uses (for the trivial-predictor check)."""
    return [p[: -len(".pt")] + ".csv" for p in checkpoint_files()]


wildcard_constraints:
    dataset=re.escape(DATASET),
    split="train|val|test",
    model_id=r"[A-Za-z0-9_]+-[A-Za-z0-9_]+-[A-Za-z0-9_+]+-s\d+",
    epoch=r"\d+",
    attack=r"[A-Za-z0-9_]+",
