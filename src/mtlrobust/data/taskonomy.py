"""Read the real Taskonomy on-disk format: discover views, intersect domains, decode PNGs, splits.

Why this module is strict: the reference loaders silently substitute the previous sample on a read
error and decode 16-bit PNGs as int16 (65535 -> -1). Here a bad file raises ``TaskonomyFileError``
naming its path (or is skipped and listed when the caller asks), 16-bit PNGs become uint16, and
views missing in some domain are dropped *and reported* (``TaskonomyIndex.missing``).

Layouts read (first match per (domain, building)): ``{root}/{domain}/taskonomy/{building}/``
(omnitools), ``{root}/{domain}/{building}/`` (taskgrouping), ``{root}/{building}/{domain}/`` (tars).

Splits: the official CSV (``id,train,val,test`` 0/1 flags, CR line endings) by building, or the
paper code's point-id threshold: point < threshold -> train; point >= threshold -> the held-out set,
which is both ``val`` and ``test`` (the original code evaluates on its single held-out set).
"""

from __future__ import annotations

import json
import logging
import re
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
from PIL import Image

from ..files import read_text

if TYPE_CHECKING:  # the registry imports torch: loaded lazily so that `download` does not need it
    from .. import tasks as T

log = logging.getLogger(__name__)

# Excluded from every subset by omnitools (no rgb, or corrupt archives); the download helper imports it.
FORBIDDEN_BUILDINGS = ("mosquito", "tansboro", "tomkins", "darnestown", "brinnon", "rough", "woodbine")
SPLITS = ("train", "val", "test")
SPLIT_CSV_NAME = "train_val_test_split.csv"  # split file synthesize writes and prepare looks for at the root
NAME_RE = re.compile(r"^point_(\d+)_view_(\d+)_domain_(\w+)\.png$")
# PNG modes accepted per raw format (Pillow >= 10.3 opens 16-bit grey as I;16, older as I).
MODES = {"rgb8": ("RGB",), "gray16": ("I;16", "I;16B", "I"), "gray8": ("L",)}


def _registry():
    from .. import tasks

    return tasks


def domain_format(domain: str) -> str:
    """Raw format (rgb8 / gray16 / gray8) of a Taskonomy domain, from the task registry."""
    T = _registry()
    formats = {t.domain: t.raw_format for t in T.TASKS} | {T.DEPTH_MASK_DOMAIN: "gray16"}
    if domain not in formats:
        raise KeyError(f"no task reads domain {domain!r}; known: {sorted(formats)}")
    return formats[domain]


class TaskonomyFileError(RuntimeError):
    """A missing, truncated, corrupt or wrongly formatted Taskonomy file (``.path`` names it)."""

    user_error = True  # the command line reports it as one line (mtlrobust.cli)

    def __init__(self, path: str | Path, reason: str):
        self.path, self.reason = Path(path), reason
        super().__init__(f"{path}: {reason}")


class MissingBuildingsError(ValueError):
    """Buildings requested (e.g. listed in a split) but absent on disk."""


class View(NamedTuple):
    building: str
    point: int
    view: int

    def __str__(self) -> str:
        return f"{self.building}/{self.point}/{self.view}"


def tag_of(domain: str) -> str:
    """File tag of a domain (segment_semantic files are tagged 'segmentsemantic')."""
    return "segmentsemantic" if domain == "segment_semantic" else domain


# ---------------------------------------------------------------------------------------- discovery
def _domain_dirs(root: Path, domain: str) -> dict[str, Path]:
    """building -> folder of this domain, over the three layouts (earlier layouts win)."""
    found: dict[str, Path] = {}
    omni = root / domain / "taskonomy"
    if omni.is_dir():
        found.update({p.name: p for p in sorted(omni.iterdir()) if p.is_dir()})
    flat = root / domain
    if flat.is_dir():
        for p in sorted(flat.iterdir()):
            if p.is_dir() and p.name != "taskonomy" and p.name not in found:
                found[p.name] = p
    for p in sorted(root.iterdir()) if root.is_dir() else ():
        if (p / domain).is_dir() and p.name not in found and p.name != domain:
            found[p.name] = p / domain
    return found


def buildings_on_disk(root: str | Path, domain: str = "rgb") -> list[str]:
    """Buildings that have a folder for ``domain`` in any layout."""
    return sorted(_domain_dirs(Path(root), domain))


@dataclass
class TaskonomyIndex:
    """Views present in every requested domain, with their files, and what was dropped."""

    root: Path
    domains: list[str]
    views: list[View]
    paths: dict[str, dict[View, Path]]
    missing: list[tuple[View, list[str]]] = field(default_factory=list)  # view, domains lacking it
    absent_buildings: list[str] = field(default_factory=list)  # requested, not on disk (allow_missing)
    forbidden: list[str] = field(default_factory=list)  # requested or on disk, excluded

    def files(self, view: View) -> dict[str, Path]:
        return {d: self.paths[d][view] for d in self.domains}

    def read(self, view: View, tasks: Sequence[T.Task]) -> ViewData:
        return read_view(self.files(view), tasks, view)


def scan(
    root: str | Path,
    tasks_or_domains: Sequence[T.Task] | Sequence[str],
    buildings: Iterable[str] | None = None,
    *,
    allow_missing: bool = False,
) -> TaskonomyIndex:
    """Index the views of ``buildings`` (default: all on disk but the forbidden) in every needed domain.

    Views absent from some domain are dropped, logged as one summary warning, and listed in
    ``index.missing``. A requested building absent on disk raises ``MissingBuildingsError`` unless
    ``allow_missing`` (then it is skipped with a warning). Forbidden buildings are always excluded.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"Taskonomy root {root} is not a folder")
    T = _registry()
    items = list(tasks_or_domains)
    domains = (
        T.domains_needed(items) if items and isinstance(items[0], T.Task) else list(dict.fromkeys(items))
    )
    dirs = {d: _domain_dirs(root, d) for d in domains}
    absent: list[str] = []
    if buildings is None:
        wanted = sorted(set().union(*dirs.values()))
    else:
        wanted = list(dict.fromkeys(buildings))
        absent = sorted(
            b for b in wanted if b not in FORBIDDEN_BUILDINGS and not any(b in dd for dd in dirs.values())
        )
        if absent:
            msg = f"buildings absent under {root} (no folder in any of {domains}): {', '.join(absent)}"
            if not allow_missing:
                raise MissingBuildingsError(msg)
            log.warning("%s; skipped", msg)
    forbidden = [b for b in wanted if b in FORBIDDEN_BUILDINGS]
    if forbidden:
        log.warning("excluded forbidden buildings: %s", ", ".join(forbidden))
    wanted = [b for b in wanted if b not in FORBIDDEN_BUILDINGS]

    paths: dict[str, dict[View, Path]] = {}
    for d in domains:
        tag, got = tag_of(d), {}
        for b in wanted:
            folder = dirs[d].get(b)
            if folder is None:
                continue
            for p in folder.iterdir():
                m = NAME_RE.match(p.name)
                if m and m.group(3) == tag:
                    got[View(b, int(m.group(1)), int(m.group(2)))] = p
        paths[d] = got
    every = set().union(*(set(p) for p in paths.values())) if paths else set()
    views = sorted(set.intersection(*(set(p) for p in paths.values()))) if paths else []
    keep = set(views)
    missing = [(v, [d for d in domains if v not in paths[d]]) for v in sorted(every - keep)]
    if missing:
        ex = "; ".join(f"{v} lacks {','.join(ds)}" for v, ds in missing[:5])
        log.warning(
            "%d of %d views are missing in some domain and were dropped (e.g. %s)",
            len(missing),
            len(every),
            ex,
        )
    paths = {d: {v: p[v] for v in views} for d, p in paths.items()}
    return TaskonomyIndex(root, domains, views, paths, missing, absent, forbidden)


# ------------------------------------------------------------------------------------------- decoding
def read_png(path: str | Path, raw_format: str) -> np.ndarray:
    """Decode one PNG to uint8 [H, W, 3] (rgb8), uint16 [H, W] (gray16) or uint8 [H, W] (gray8).

    Raises ``TaskonomyFileError`` naming the file when it is missing, truncated, corrupt or of the
    wrong PNG mode (16-bit never goes through int16).
    """
    path = Path(path)
    try:
        with Image.open(path) as img:
            if img.format != "PNG":
                raise TaskonomyFileError(path, f"not a PNG file (format {img.format})")
            if img.mode not in MODES[raw_format]:
                raise TaskonomyFileError(
                    path,
                    f"PNG mode {img.mode!r} found, expected {' or '.join(MODES[raw_format])} ({raw_format})",
                )
            img.load()
            if raw_format == "gray16":
                arr = np.asarray(img).astype(np.int64)
                if arr.min(initial=0) < 0 or arr.max(initial=0) > 65535:
                    raise TaskonomyFileError(path, "16-bit PNG values outside 0..65535")
                return arr.astype(np.uint16)
            return np.array(img, dtype=np.uint8)
    except TaskonomyFileError:
        raise
    except FileNotFoundError as e:
        raise TaskonomyFileError(path, "file not found") from e
    except (OSError, SyntaxError, ValueError, EOFError, zlib.error, Image.DecompressionBombError) as e:
        raise TaskonomyFileError(path, f"truncated or corrupt PNG ({type(e).__name__}: {e})") from e


@dataclass
class ViewData:
    """One view: raw arrays per domain, decoded (target, mask) per task id, the depth validity."""

    view: View | None
    raw: dict[str, np.ndarray]
    targets: dict[str, np.ndarray]
    masks: dict[str, np.ndarray]
    valid: np.ndarray | None


def read_view(files: Mapping[str, str | Path], tasks: Sequence[T.Task], view: View | None = None) -> ViewData:
    """Read the domains of one view and decode each task (mask from raw depth_euclidean when needed).

    ``files`` maps domain -> path and must hold ``T.domains_needed(tasks)``; all images must share
    one size, else ``TaskonomyFileError`` names the odd file.
    """
    T = _registry()
    need = T.domains_needed(tasks)
    lacking = [d for d in need if d not in files]
    if lacking:
        raise KeyError(f"view {view}: no file given for domains {lacking}")
    raw = {d: read_png(files[d], domain_format(d)) for d in need}
    size = raw[need[0]].shape[:2]
    for d in need:
        if raw[d].shape[:2] != size:
            raise TaskonomyFileError(
                files[d], f"size {raw[d].shape[:2]} differs from {files[need[0]]} {size}"
            )
    valid = T.depth_valid(raw[T.DEPTH_MASK_DOMAIN]) if T.DEPTH_MASK_DOMAIN in raw else None
    targets, masks = {}, {}
    for t in tasks:
        targets[t.id], masks[t.id] = t.decode(raw[t.domain], valid)
    return ViewData(view, raw, targets, masks, valid)


def read_point_info(root: str | Path, view: View) -> dict:
    """The optional point_info JSON of a view (e.g. ``field_of_view_rads``)."""
    folder = _domain_dirs(Path(root), "point_info").get(view.building)
    if folder is None:
        raise TaskonomyFileError(
            Path(root) / "point_info", f"no point_info folder for building {view.building}"
        )
    p = folder / f"point_{view.point}_view_{view.view}_domain_point_info.json"
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError) as e:
        raise TaskonomyFileError(p, f"unreadable point_info JSON ({e})") from e


# --------------------------------------------------------------------------------------------- splits
def read_split_csv(path: str | Path) -> dict[str, list[str]]:
    """Official split CSV -> {split: buildings}. CR, LF or CRLF line endings; forbidden buildings kept."""
    path = Path(path)
    text = read_text(path, "split CSV (id,train,val,test)").removeprefix("\ufeff")
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if not lines or [c.strip() for c in lines[0].split(",")] != ["id", *SPLITS]:
        raise ValueError(
            f"{path}: expected header 'id,train,val,test', found {lines[0] if lines else 'nothing'!r}"
        )
    out: dict[str, list[str]] = {s: [] for s in SPLITS}
    for i, ln in enumerate(lines[1:], start=2):
        cells = [c.strip() for c in ln.split(",")]
        if len(cells) != 4 or any(c not in ("0", "1") for c in cells[1:]):
            raise ValueError(f"{path}, line {i}: expected 'building,0|1,0|1,0|1', found {ln!r}")
        for s, flag in zip(SPLITS, cells[1:], strict=True):
            if flag == "1":
                out[s].append(cells[0])
    return out


def threshold_split(point: int, split: str, threshold: int, val_threshold: int | None = None) -> bool:
    """Point-id rule: point < threshold is train. Without ``val_threshold`` the paper code's rule: the rest
    is the held-out set (val = test); with it, threshold <= point < val_threshold is val, the rest test."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    if split == "train":
        return point < threshold
    if val_threshold is None:
        return point >= threshold
    return threshold <= point < val_threshold if split == "val" else point >= val_threshold


def select_views(
    views: Iterable[View],
    split: str,
    *,
    split_buildings: Mapping[str, list[str]] | None = None,
    threshold: int | None = None,
    val_threshold: int | None = None,
) -> list[View]:
    """Views of one split: by building (``split_buildings`` from ``read_split_csv``) or point threshold."""
    if (split_buildings is None) == (threshold is None):
        raise ValueError("give exactly one of split_buildings (split CSV) or threshold")
    if split_buildings is not None:
        keep = set(split_buildings[split])
        return [v for v in views if v.building in keep]
    return [v for v in views if threshold_split(v.point, split, threshold, val_threshold)]
