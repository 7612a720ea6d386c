"""The command-line arguments of the workflow's jobs, built from the config and the plan.

Every function returns one canonical string: flags in a fixed order and values quoted for the shell, so a
rule's params compare equal whenever the values are (whatever the study file's key order).
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Mapping

from .ids import ModelSpec


def q(value) -> str:
    """One shell word."""
    return shlex.quote(str(value))


def flags(*pairs) -> str:
    """``--flag value`` words in the given order; None/False values are left out, True is a bare switch."""
    words = []
    for flag, value in pairs:
        if value is None or value is False:
            continue
        words.append(flag if value is True else f"{flag} {q(value)}")
    return " ".join(words)


def words(flag: str, values) -> str:
    """`` --flag v1 v2 ...`` for a list option (nothing when it is empty or None)."""
    return f" {flag} " + " ".join(map(q, values)) if values else ""


def synthesize(config: dict) -> str:
    s = config["dataset"]["synthetic"]
    return flags(*((f"--{k}", s[k]) for k in ("buildings", "points", "views", "resolution", "seed")))


def download(config: dict, tasks) -> str:
    """Buildings, tasks, URL and checksums of the Taskonomy download."""
    tx = config["dataset"]["taskonomy"]
    return flags(("--buildings", ",".join(tx["buildings"])), ("--tasks", "+".join(tasks)),
                 ("--url-template", tx["url_template"]), ("--md5", tx["md5"]),
                 ("--agree-licence", tx["agree_licence"]))  # fmt: skip


def prepare(config: dict, tasks) -> str:
    """Tasks, resolution, split rule and buildings of the packed arrays."""
    ds = config["dataset"]
    split_csv = ds["split_csv"] if ds["split_point_threshold"] is None else None
    args = flags(("--tasks", "+".join(tasks)), ("--resolution", config["model"]["resolution"]),
                 ("--threshold", ds["split_point_threshold"]), ("--val-threshold", ds["split_point_val"]),
                 ("--split-csv", split_csv))  # fmt: skip
    return args + words("--buildings", ds["buildings"])


def model(m: ModelSpec, adversarial: Mapping | None = None) -> str:
    """Arch, tasks, weighting, main task and seed of one model; for an adversarially trained one also its
    setting (``adversarial``: the plan's setting name -> {attack, tasks, share}). A standard model's words
    are those it always had, so its trained checkpoints stay current."""
    args = flags(("--arch", m.arch), ("--tasks", "+".join(m.tasks)), ("--weighting", m.weighting),
                 ("--main", m.main), ("--seed", m.seed))  # fmt: skip
    if m.adversarial is None:
        return args
    a = (adversarial or {}).get(m.adversarial)
    if a is None:
        raise KeyError(
            f"model {m.id}: no adversarial setting {m.adversarial!r} (config key training.adversarial)"
        )
    spec = {k: v for k, v in a["attack"].items() if k != "name"}  # renaming the attack retrains nothing
    attack = json.dumps(spec, sort_keys=True, separators=(",", ":"))
    return f"{args} " + flags(("--adversarial", m.adversarial), ("--adv-attack-json", attack),
                              ("--adv-tasks", a["tasks"]), ("--adv-share", a["share"]))  # fmt: skip


def schedule(config: dict, arch: str) -> dict:
    """The training settings of ``arch``'s models: ``training`` with its ``per_arch`` overrides."""
    t = config["training"]
    return {**t, **(t.get("per_arch") or {}).get(arch, {})}


def training(config: dict, arch: str | None = None) -> str:
    """Training settings that change the stored weights (threads and the milestone list do not).

    Defaults of keys added later (optimizer adam, loss_reduction valid, weights_dtype float32) are left out,
    so the command of a study that does not set them is unchanged and its trained models stay current."""
    t = schedule(config, arch) if arch else config["training"]
    sgd = t.get("optimizer", "adam") == "sgd"
    reduction = t.get("loss_reduction", "valid")
    return flags(("--optimizer", "sgd" if sgd else None), ("--momentum", t.get("momentum") if sgd else None),
                 ("--batch-size", t["batch_size"]), ("--lr", t["lr"]),
                 ("--lr-milestones", ",".join(map(str, t["lr_milestones"]))), ("--lr-gamma", t["lr_gamma"]),
                 ("--loss-reduction", reduction if reduction != "valid" else None),
                 ("--val-limit", t["val_limit"]), ("--hflip", t["hflip"]), ("--amp", t["amp"]),
                 ("--reference-init", t["reference_init"]), ("--decoder", config["model"]["decoder"]),
                 ("--bn-recalibrate", t["bn_recalibrate"] or None), ("--device", t["device"]),
                 ("--weights-dtype", "float16" if t.get("weights_dtype") == "float16" else None))  # fmt: skip


def attacked(subsets) -> str:
    """``--attacked`` per subset (tuples of task ids), smaller subsets first."""
    return " ".join(flags(("--attacked", "+".join(s))) for s in sorted(subsets, key=lambda s: (len(s), s)))


def evaluation(config: dict) -> str:
    """Evaluation settings that change the results (threads do not; the split is in the input path)."""
    e = config["evaluation"]
    reduction = config["training"].get("loss_reduction", "valid")
    return flags(("--batch-size", e["batch_size"]), ("--limit", e["limit"]), ("--seed", e["seed"]),
                 ("--loss-reduction", reduction if reduction != "valid" else None),
                 ("--device", e["device"]))  # fmt: skip


def theory(config: dict, theory: dict | None) -> str:
    """The threat model (norm, eps) and orders of Figure 1's model: all the theory depends on."""
    if not theory:
        return ""
    e = config["evaluation"]
    args = flags(("--norm", theory["norm"]), ("--eps", theory["eps"]), ("--limit", e["limit"]),
                 ("--device", e["device"]))  # fmt: skip
    return args + words("--orders", theory["orders"])
