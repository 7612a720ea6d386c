"""Config checks the schema cannot express: each raises StudyError naming the config key."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

from .. import tasks as T
from .. import values


class StudyError(ValueError):
    """A study the schema accepts but that cannot run; the message names the config key."""


L2_MAX = 1000.0  # largest L2 eps/step size: an L2 radius may exceed 1 (the [0, 1]^d cube's corner is sqrt(d))


def budget(value, key: str, maximum: float = 1.0) -> float:
    """An eps/step size as a float in (0, maximum]: a number or an "8/255"-style string (values.budget)."""
    try:
        return values.budget(value, f"config key {key}", positive=True, maximum=maximum)
    except ValueError as e:
        raise StudyError(str(e)) from None


def task_list(value, key: str) -> list[str]:
    """Task letters/ids -> task ids (order kept as given), with the config key named in errors."""
    if value is not None and len(value) == 0:
        raise StudyError(f"config key {key}: expected a non-empty list of task letters, got []")
    try:
        return [t.id for t in T.parse(list(value))]
    except (KeyError, ValueError) as e:
        raise StudyError(f"config key {key}: {e.args[0]}") from None


def letter(task_id: str) -> str:
    return T.get(task_id).letter


def eps_label(eps: float) -> str:
    """8/255 for eps = 0.0313..., else the number."""
    k = eps * 255
    return f"{round(k)}/255" if eps > 0 and abs(k - round(k)) < 1e-6 else f"{eps:.4g}"


# Dataset keys holding a path or URL: passed to the jobs as single shell words, so any character is safe
# there, but a control character, a leading '-' (read as a flag) or, in an input path, braces (read by
# Snakemake as a wildcard) cannot work.
PATH_KEYS = ("split_csv", "taskonomy.root", "taskonomy.url_template", "taskonomy.md5")


def check_settings(config: dict) -> None:
    """Values the schema lets through but no job can use, rejected before any job (naming the key)."""
    t = config["training"]
    per_arch = t.get("per_arch") or {}
    unused = [a for a in per_arch if a not in config["architectures"]]
    if unused:
        raise StudyError(
            f"config key training.per_arch: {unused} not in config key architectures "
            f"{config['architectures']}"
        )
    for prefix, v in [("training", t)] + [(f"training.per_arch.{a}", v) for a, v in per_arch.items()]:
        for key in ("lr", "lr_gamma"):
            if key in v and not math.isfinite(v[key]):
                raise StudyError(f"config key {prefix}.{key}: expected a finite number > 0, got {v[key]}")
        late = [m for m in v.get("lr_milestones", ()) if m >= t["epochs"]]
        if late:
            raise StudyError(
                f"config key {prefix}.lr_milestones: {late} never take effect with training.epochs="
                f"{t['epochs']} (the rate drops after a milestone's epoch); expected milestones < "
                "training.epochs"
            )
    check_paths(config["dataset"])
    check_splits(config)


def check_paths(ds: dict) -> None:
    """Path and URL keys of ``dataset``: usable as one command-line word (and the root as an input)."""
    for key in PATH_KEYS:
        value = ds
        for k in key.split("."):
            value = value[k]
        if value is None:
            continue
        if not value.strip() or any(ord(c) < 32 or ord(c) == 127 for c in value):
            raise StudyError(
                f"config key dataset.{key}: expected a path or URL without control characters, got {value!r}"
            )
        if value.startswith("-"):
            raise StudyError(f"config key dataset.{key}: {value!r} would read as a flag; write ./{value}")
    root = ds["taskonomy"]["root"]
    if root is not None and ("{" in root or "}" in root):
        raise StudyError(
            f"config key dataset.taskonomy.root: {root!r} has braces, which Snakemake reads as a wildcard in "
            "an input path; rename or link the folder"
        )
    template = ds["taskonomy"]["url_template"]
    if template is not None:
        from ..data.download import check_template

        try:
            check_template(template)
        except ValueError as e:
            raise StudyError(f"config key dataset.taskonomy.url_template: {e}") from None
        if "{building}" not in template and len(ds["taskonomy"]["buildings"]) > 1:
            raise StudyError(
                f"config key dataset.taskonomy.url_template: {template!r} has no {{building}} but "
                f"dataset.taskonomy.buildings lists {len(ds['taskonomy']['buildings'])} buildings"
            )


def check_split_points(ds: dict) -> None:
    """split_point_val needs split_point_threshold below it; without it the paper's point split (val = test)
    is used, with a warning: settings chosen on val would be tuned on the test views."""
    thr, val = ds["split_point_threshold"], ds["split_point_val"]
    if val is not None and (thr is None or val <= thr):
        raise StudyError(
            f"config key dataset.split_point_val: {val} needs dataset.split_point_threshold below it (got "
            f"{thr}): train = point id < threshold, val = threshold <= id < split_point_val, test = the rest"
        )
    if thr is not None and val is None:
        warnings.warn(
            "dataset.split_point_threshold without dataset.split_point_val is the paper code's point split: "
            "val and test are the same views, so any setting chosen on val is tuned on the test views; set "
            "dataset.split_point_val for distinct val and test views",
            stacklevel=2,
        )


def check_splits(config: dict) -> None:
    """Synthetic data: the buildings exist and each split the jobs read has views (train: >= 2)."""
    ds = config["dataset"]
    thr = ds["split_point_threshold"]
    if ds["source"] != "synthetic" or (thr is None and ds["split_csv"] is not None):
        check_split_points(ds)
        return  # the real data (or a user's split CSV) are only known when prepared
    from ..data.synthetic import building_names, split_assignment

    syn = ds["synthetic"]
    names = building_names(syn["buildings"])
    chosen = ds["buildings"] or names
    unknown = [b for b in chosen if b not in names]
    if unknown:
        raise StudyError(
            f"config key dataset.buildings: {unknown} are not synthetic buildings; expected some of {names} "
            f"(dataset.synthetic.buildings={syn['buildings']})"
        )
    points, per_point = syn["points"], syn["views"] * len(chosen)
    if thr is not None:
        if thr >= points:
            raise StudyError(
                f"config key dataset.split_point_threshold: {thr} puts every point in train and leaves val "
                f"and test empty (dataset.synthetic.points={points}: point ids 0..{points - 1}); expected 1 "
                f"to {points - 1}"
            )
        check_split_points(ds)
        val_end = ds["split_point_val"] or points
        if val_end >= points and ds["split_point_val"] is not None:
            raise StudyError(
                f"config key dataset.split_point_val: {val_end} leaves test empty (dataset.synthetic.points="
                f"{points}: point ids 0..{points - 1}); expected {thr + 1} to {points - 1}"
            )
        held_out = (points - thr) * per_point
        views = {"train": thr * per_point, "val": held_out, "test": held_out}
        if ds["split_point_val"] is not None:
            views.update(val=(val_end - thr) * per_point, test=(points - val_end) * per_point)
        key = "dataset.split_point_threshold"
    else:
        check_split_points(ds)
        flags = split_assignment(names)
        splits = ("train", "val", "test")
        views = {s: sum(flags[b][i] for b in chosen) * points * syn["views"] for i, s in enumerate(splits)}
        key = "dataset.buildings"
    for split in dict.fromkeys(("train", "val", config["evaluation"]["split"])):
        if views[split] == 0:
            raise StudyError(
                f"config key {key}: the {split} split gets no views (views per split {views} with buildings "
                f"{chosen}); training reads train and val, attacks evaluation.split"
            )
    if views["train"] < 2:
        raise StudyError(
            f"config key {key}: the train split gets {views['train']} view; training needs >= 2 "
            "(BatchNorm needs two samples per batch)"
        )


def check_inputs(config: dict) -> None:
    """A split CSV the study reads exists (no rule makes it): checked when a study file is loaded, relative to
    the working directory, as the prepare job reads it."""
    ds = config["dataset"]
    path = ds["split_csv"]
    if path is not None and ds["split_point_threshold"] is None and not Path(path).is_file():
        raise StudyError(
            f"config key dataset.split_csv: {path!r} is not a file (relative to {Path.cwd()}); expected the "
            "id,train,val,test CSV, or null for the raw folder's train_val_test_split.csv"
        )


def downloads(config: dict) -> bool:
    """Whether the study's raw data come from a Taskonomy download (no synthetic data, no existing root)."""
    ds = config["dataset"]
    return ds["source"] == "taskonomy" and ds["taskonomy"]["root"] is None


def raw_present(config: dict) -> bool:
    """The download's folder resources/{name}/raw (relative to the working directory) exists, not empty."""
    raw = Path("resources") / config["dataset"]["name"] / "raw"
    return raw.is_dir() and any(raw.iterdir())


def check_licence(config: dict) -> None:
    """A study that downloads Taskonomy must accept its licence, unless the raw folder is there already."""
    if downloads(config) and not config["dataset"]["taskonomy"]["agree_licence"] and not raw_present(config):
        raise StudyError(
            "config key dataset.taskonomy.agree_licence: false, but the study downloads Taskonomy into "
            f"resources/{config['dataset']['name']}/raw (not there yet); set it to true to accept the data "
            "licence (non-commercial research use, README 'Real Taskonomy'), or set dataset.taskonomy.root "
            "to an existing raw folder"
        )
