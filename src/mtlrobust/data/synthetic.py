"""Embedded synthetic Taskonomy: procedural rooms ray-cast in numpy, written in the exact on-disk format.

Why: the Taskonomy licence forbids redistribution, so tests and the default study need data that goes
through the *real* reader (``data/taskonomy.py``). Each (building, point) is a room (floor, walls,
ceiling, a window whose pixels are invalid, 4-7 textured boxes / spheres / cylinders of 16 semantic
classes, each class with its own shape, hue and texture); each view is a camera pose inside it. All 11
domains come from one ray cast, so geometry is consistent across domains:

- depth_zbuffer = round(z * 512), depth_euclidean = round(z * sqrt(1 + (u^2 + v^2) / f^2) * 512),
  f = (R / 2) / tan(fov / 2), u, v = pixel-centre offsets; 65535 where invalid (window);
- normal in the (right, down, forward) camera frame, round((n + 1) / 2 * 255), invalid 128,128,128;
- principal_curvature R = k1, G = k2 (m^-1, positive = convex), round((k * 0.03 + 1) / 2 * 254)
  clipped, B = 0, invalid 0,0,0;
- reshading R = G = B = 255 * cos(incidence) for a light at the camera;
- edge_texture / keypoints2d from the blurred rgb (gradient magnitude / determinant of Hessian),
  edge_occlusion / keypoints3d from the depth (keypoints3d scaled per view so that its top 0.3 % is
  >= 40000, which exercises the int16 wrap of 16-bit PNGs);
- segment_semantic: 1 = room, 2..17 = object classes, 0 = window and object borders.

``render_view`` returns the float ground truth with the raw arrays; ``synthesize`` writes a dataset.
Same seed => same bytes (every random draw comes from ``np.random.default_rng`` keyed by
(seed, building, point, view)).
"""

from __future__ import annotations

import argparse
import colorsys
import io
import json
import logging
import math
import os
import shutil
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from ..files import make_temp_dir, raise_if_disk_full
from .taskonomy import SPLIT_CSV_NAME, tag_of

log = logging.getLogger(__name__)

DOMAINS = (
    "rgb", "depth_zbuffer", "depth_euclidean", "normal", "principal_curvature", "reshading",
    "edge_texture", "edge_occlusion", "keypoints2d", "keypoints3d", "segment_semantic",
)  # fmt: skip
LAYOUTS = ("omnitools", "domain_building", "building_domain")
DEPTH_SCALE = 512.0  # raw units per metre
INVALID16 = 65535
CURV_RMIN = 0.03  # metres, the annotator's curvature scale
_NAMES = (
    "alder", "birch", "cedar", "dogwood", "elm", "fir", "ginkgo", "hazel", "ironwood", "juniper", "kapok",
    "larch", "maple", "nutmeg", "oak", "pine", "quince", "rowan", "spruce", "tamarack", "ulmus", "vine",
    "willow", "xylosma", "yew", "zelkova",
)  # fmt: skip
_EPS = 1e-6


def _class_looks() -> tuple[tuple[str, tuple[float, float, float], int, float], ...]:
    """(shape, albedo, texture pattern, texture scale) of object classes 2..17.

    A class must be recognisable from its appearance, as chairs are in real images: otherwise no model
    can beat the majority-class predictor on segmentation. Hues are spread round the colour wheel;
    shape and texture repeat with other periods so that neighbouring hues differ in more than colour.
    """
    looks = []
    for i in range(16):
        r, g, b = colorsys.hsv_to_rgb(i / 16, 0.75, 0.95)
        looks.append((("box", "sphere", "cylinder")[i % 3], (r, g, b), (i // 3) % 3, 0.1 + 0.05 * (i % 4)))
    return tuple(looks)


CLASS_LOOKS = _class_looks()


def building_names(n: int) -> list[str]:
    """n distinct lowercase alphabetic building names (no '_', none of them forbidden)."""
    letters = "abcdefghijklmnopqrstuvwxyz"
    return [
        _NAMES[i % 26] + ("" if i < 26 else letters[(i // 26 - 1) % 26] * (1 + i // 702)) for i in range(n)
    ]


# ------------------------------------------------------------------------------------------- the scene
def _scene(seed: int, building: int, point: int) -> dict:
    """Room size, window and objects of one (building, point); world axes x, y (up), z."""
    rng = np.random.default_rng([seed, building, point, 0])
    size = np.array([rng.uniform(4.0, 7.0), rng.uniform(2.6, 3.2), rng.uniform(4.0, 7.0)])
    wall = int(rng.integers(4))  # window on wall: 0 x=0, 1 x=W, 2 z=0, 3 z=D
    axis = 0 if wall < 2 else 2
    along = 2 if axis == 0 else 0
    width = rng.uniform(1.2, 2.0)
    c = rng.uniform(width / 2 + 0.3, size[along] - width / 2 - 0.3)
    window = {
        "axis": axis,
        "side": wall % 2,
        "along": along,
        "lo": (c - width / 2, 0.9),
        "hi": (c + width / 2, 2.2),
    }
    objects = []
    for _ in range(int(rng.integers(4, 8))):
        label = int(rng.integers(2, 2 + len(CLASS_LOOKS)))
        kind, albedo, pattern, scale = CLASS_LOOKS[label - 2]
        cx, cz = rng.uniform(0.6, size[0] - 0.6), rng.uniform(0.6, size[2] - 0.6)
        o = {
            "kind": kind,
            "label": label,
            "albedo": np.asarray(albedo) * rng.uniform(0.85, 1.0),  # same hue, varying brightness
            "pattern": pattern,
            "scale": scale * rng.uniform(0.8, 1.25),
        }
        if kind == "box":
            half = rng.uniform(0.2, 0.5, 3) * np.array([1.0, 1.5, 1.0])
            o["lo"] = np.array([cx - half[0], 0.0, cz - half[2]])
            o["hi"] = np.array([cx + half[0], 2 * half[1], cz + half[2]])
        elif kind == "sphere":
            r = rng.uniform(0.2, 0.5)
            o["c"], o["r"] = np.array([cx, r + rng.uniform(0.0, 0.8), cz]), r
        else:
            o["c"], o["r"], o["h"] = np.array([cx, 0.0, cz]), rng.uniform(0.15, 0.4), rng.uniform(0.5, 1.6)
        objects.append(o)
    return {"size": size, "window": window, "objects": objects, "sun": _unit(rng.normal(size=3) + [0, 2, 0])}


def _unit(v):
    return np.asarray(v, dtype=np.float64) / np.linalg.norm(v)


def _inside(p: np.ndarray, o: dict, margin: float = 0.25) -> bool:
    if o["kind"] == "box":
        return bool(np.all(p > o["lo"] - margin) and np.all(p < o["hi"] + margin))
    if o["kind"] == "sphere":
        return bool(np.linalg.norm(p - o["c"]) < o["r"] + margin)
    return bool(np.hypot(p[0] - o["c"][0], p[2] - o["c"][2]) < o["r"] + margin and p[1] < o["h"] + margin)


def _camera(
    scene: dict, seed: int, building: int, point: int, view: int
) -> tuple[np.ndarray, np.ndarray, float]:
    """Camera centre, rotation (columns = right, down, forward in world) and fov of one view."""
    rng = np.random.default_rng([seed, building, point, view + 1])
    size = scene["size"]
    for _ in range(100):
        cam = np.array(
            [rng.uniform(0.4, size[0] - 0.4), rng.uniform(1.1, 1.8), rng.uniform(0.4, size[2] - 0.4)]
        )
        if not any(_inside(cam, o) for o in scene["objects"]):
            break
    else:
        raise RuntimeError(
            f"no free camera position in scene (seed {seed}, building {building}, point {point})"
        )
    w = scene["window"]
    if rng.uniform() < 0.35:  # look at the window (invalid pixels in view)
        target = np.zeros(3)
        target[w["axis"]] = w["side"] * size[w["axis"]]
        target[w["along"]] = (w["lo"][0] + w["hi"][0]) / 2
        target[1] = 1.5
    else:
        o = scene["objects"][int(rng.integers(len(scene["objects"])))]
        target = (o["lo"] + o["hi"]) / 2 if o["kind"] == "box" else o["c"] + [0, 0.3, 0]
    target = target + rng.normal(scale=0.3, size=3)
    fwd = target - cam
    if np.linalg.norm(fwd[[0, 2]]) < 0.3:  # avoid looking straight down/up
        fwd[0] += 0.5
    fwd = _unit(fwd)
    down = _unit(np.array([0.0, -1.0, 0.0]) + fwd[1] * fwd)
    right = np.cross(down, fwd)
    return cam, np.stack([right, down, fwd], axis=1), float(rng.uniform(0.9, 1.25))


# ------------------------------------------------------------------------------------------ ray casting
def _hit_room(o, d, size):
    with np.errstate(divide="ignore", invalid="ignore"):
        t_ax = np.where(d > 0, (size - o) / d, -o / np.where(d == 0, np.inf, d))
    t_ax = np.where(np.isfinite(t_ax) & (t_ax > 0), t_ax, np.inf)
    ax = np.argmin(t_ax, axis=1)
    t = t_ax[np.arange(len(d)), ax]
    n = np.zeros_like(d)
    n[np.arange(len(d)), ax] = -np.sign(d[np.arange(len(d)), ax])
    return t, n, ax


def _hit_box(o, d, lo, hi):
    with np.errstate(divide="ignore", invalid="ignore"):
        t1, t2 = (lo - o) / d, (hi - o) / d
    tmin = np.fmax.reduce(np.fmin(t1, t2), axis=1)  # fmin/fmax skip the NaN of 0 * inf
    tmax = np.fmin.reduce(np.fmax(t1, t2), axis=1)
    return np.where((tmax >= tmin) & (tmin > _EPS), tmin, np.inf)


def _box_normal(p, lo, hi):
    dist = np.concatenate([np.abs(p - lo), np.abs(p - hi)], axis=1)
    k = np.argmin(dist, axis=1)
    n = np.zeros_like(p)
    n[np.arange(len(p)), k % 3] = np.where(k < 3, -1.0, 1.0)
    return n


def _hit_sphere(o, d, c, r):
    oc = o - c
    a = np.einsum("ij,ij->i", d, d)
    b = 2 * d @ oc
    disc = b * b - 4 * a * (oc @ oc - r * r)
    t = (-b - np.sqrt(np.maximum(disc, 0))) / (2 * a)
    return np.where((disc >= 0) & (t > _EPS), t, np.inf)


def _hit_cylinder(o, d, c, r, h):
    ox, oz = o[0] - c[0], o[2] - c[2]
    a = d[:, 0] ** 2 + d[:, 2] ** 2
    b = 2 * (d[:, 0] * ox + d[:, 2] * oz)
    disc = b * b - 4 * a * (ox * ox + oz * oz - r * r)
    with np.errstate(divide="ignore", invalid="ignore"):
        ts = (-b - np.sqrt(np.maximum(disc, 0))) / (2 * a)
        ys = o[1] + ts * d[:, 1]
        ts = np.where((disc >= 0) & (ts > _EPS) & (ys >= 0) & (ys <= h), ts, np.inf)
        if o[1] <= h:
            return ts
        tc = (h - o[1]) / d[:, 1]
        xc, zc = ox + tc * d[:, 0], oz + tc * d[:, 2]
    tc = np.where((tc > _EPS) & (xc * xc + zc * zc <= r * r), tc, np.inf)
    return np.minimum(ts, tc)


def _cylinder_normal(p, c, r, h):
    """Normal and side flag (side: curved surface, else top cap) at hit points p."""
    rad = np.hypot(p[:, 0] - c[0], p[:, 2] - c[2])
    side = np.abs(rad - r) < np.abs(p[:, 1] - h)
    n = np.stack([(p[:, 0] - c[0]) / r, np.zeros(len(p)), (p[:, 2] - c[2]) / r], 1)
    return np.where(side[:, None], n, [0.0, 1.0, 0.0]), side


def _texture(p, pattern, scale):
    if pattern == 0:  # solid checker
        return 0.7 + 0.3 * (np.floor(p / scale).sum(1) % 2)
    if pattern == 1:  # stripes
        return 0.75 + 0.25 * np.sin(2 * np.pi * (p[:, 0] + p[:, 1] + p[:, 2]) / scale)
    return 0.8 + 0.2 * np.sin(2 * np.pi * p[:, 1] / scale) * np.cos(2 * np.pi * (p[:, 0] - p[:, 2]) / scale)


def render_view(seed: int, building: int, point: int, view: int, resolution: int) -> dict:
    """Float ground truth and raw (on-disk) arrays of one view.

    Keys: ``depth_z`` / ``depth_e`` (metres, NaN invalid), ``valid`` (bool), ``normal`` ([3, H, W],
    right/down/forward, 0 invalid), ``k1``/``k2`` (m^-1), ``shade`` (cos incidence), ``labels``
    (uint8 before border marking), ``fov`` (rad), ``f`` (pixels), and ``raw`` {domain: array}.
    """
    R = int(resolution)
    scene = _scene(seed, building, point)
    cam, rot, fov = _camera(scene, seed, building, point, view)
    f = (R / 2) / math.tan(fov / 2)
    u = np.arange(R) + 0.5 - R / 2
    uu, vv = np.meshgrid(u, u)  # uu: column offset (right), vv: row offset (down)
    d_cam = np.stack([uu / f, vv / f, np.ones_like(uu)], -1).reshape(-1, 3)
    d = d_cam @ rot.T  # world directions; camera-z component 1, so t is the z-buffer depth
    n_pix = R * R

    t, nrm, ax = _hit_room(cam, d, scene["size"])
    owner = np.full(n_pix, -1)
    for i, o in enumerate(scene["objects"]):
        if o["kind"] == "box":
            ti = _hit_box(cam, d, o["lo"], o["hi"])
        elif o["kind"] == "sphere":
            ti = _hit_sphere(cam, d, o["c"], o["r"])
        else:
            ti = _hit_cylinder(cam, d, o["c"], o["r"], o["h"])
        closer = ti < t
        t[closer] = ti[closer]
        owner[closer] = i
    p = cam + t[:, None] * d
    label = np.ones(n_pix, np.uint8)
    k1 = np.zeros(n_pix)
    k2 = np.zeros(n_pix)
    for i, o in enumerate(scene["objects"]):
        m = owner == i
        label[m] = o["label"]
        if o["kind"] == "box":
            nrm[m] = _box_normal(p[m], o["lo"], o["hi"])
        elif o["kind"] == "sphere":
            nrm[m] = (p[m] - o["c"]) / o["r"]
            k1[m] = k2[m] = 1.0 / o["r"]
        else:
            nrm[m], side = _cylinder_normal(p[m], o["c"], o["r"], o["h"])
            k1[m] = np.where(side, 1.0 / o["r"], 0.0)

    w = scene["window"]
    a, lo, hi = w["axis"], w["lo"], w["hi"]
    on_wall = (owner < 0) & (ax == a) & (np.abs(p[:, a] - w["side"] * scene["size"][a]) < 1e-6)
    in_win = (
        on_wall
        & (p[:, w["along"]] > lo[0])
        & (p[:, w["along"]] < hi[0])
        & (p[:, 1] > lo[1])
        & (p[:, 1] < hi[1])
    )
    valid = ~in_win

    # albedo: room surfaces (floor, walls, ceiling) and objects, solid textures in world coordinates
    albedo = np.empty((n_pix, 3))
    room = owner < 0
    floor = room & (ax == 1) & (p[:, 1] < 1e-6)
    albedo[room] = [0.78, 0.74, 0.68]
    albedo[floor] = np.array([0.55, 0.4, 0.28]) * _texture(p[floor], 1, 0.35)[:, None]
    for i, o in enumerate(scene["objects"]):
        m = owner == i
        albedo[m] = o["albedo"] * _texture(p[m], o["pattern"], o["scale"])[:, None]

    ray_len = np.linalg.norm(d, axis=1)
    cos_cam = np.clip(-(nrm * d).sum(1) / ray_len, 0.0, 1.0)
    sun = np.clip(nrm @ scene["sun"], 0.0, 1.0)
    color = albedo * (0.3 + 0.45 * sun + 0.35 * cos_cam)[:, None]
    color[in_win] = [0.75, 0.85, 1.0]
    noise = np.random.default_rng([seed, building, point, view + 1, 1]).normal(scale=1.5, size=(n_pix, 3))
    rgb = np.clip(np.round(color * 255 + noise), 0, 255).astype(np.uint8).reshape(R, R, 3)

    shape = (R, R)
    valid = valid.reshape(shape)
    z = np.where(valid, t.reshape(shape), np.nan)
    ratio = ray_len.reshape(shape)
    depth_e = z * ratio
    n_cam = (nrm @ rot).reshape(R, R, 3)  # world -> (right, down, forward)
    n_cam[~valid] = 0
    k1, k2 = k1.reshape(shape), k2.reshape(shape)
    shade = np.where(valid, cos_cam.reshape(shape), 0.0)
    labels = np.where(valid, label.reshape(shape), 0).astype(np.uint8)

    raw = {"rgb": rgb}
    raw["depth_zbuffer"] = np.where(valid, np.round(np.nan_to_num(z) * DEPTH_SCALE), INVALID16).astype(
        np.uint16
    )
    raw["depth_euclidean"] = np.where(
        valid, np.round(np.nan_to_num(depth_e) * DEPTH_SCALE), INVALID16
    ).astype(np.uint16)
    nrm8 = np.round((n_cam + 1) / 2 * 255).astype(np.uint8)
    nrm8[~valid] = 128
    raw["normal"] = nrm8
    curv = np.zeros((R, R, 3), np.uint8)
    curv[..., 0] = _curv8(k1)
    curv[..., 1] = _curv8(k2)
    curv[~valid] = 0
    raw["principal_curvature"] = curv
    raw["reshading"] = np.repeat(np.round(shade * 255).astype(np.uint8)[..., None], 3, axis=2)
    raw.update(_filters(rgb, z, valid, R))
    raw["segment_semantic"] = _mark_borders(labels)
    return {
        "depth_z": z, "depth_e": depth_e, "valid": valid, "normal": n_cam.transpose(2, 0, 1),
        "k1": k1, "k2": k2, "shade": shade, "labels": labels, "fov": fov, "f": f, "raw": raw,
    }  # fmt: skip


def _curv8(k: np.ndarray) -> np.ndarray:
    k = np.clip(k, -1 / CURV_RMIN, 1 / CURV_RMIN)
    return np.clip(np.round((k * CURV_RMIN + 1) / 2 * 254), 0, 254).astype(np.uint8)


def _mark_borders(labels: np.ndarray) -> np.ndarray:
    """Label 0 (uncertain) on pixels next to a different label where an object is involved."""
    out = labels.copy()
    obj = labels >= 2
    diff = np.zeros(labels.shape, bool)
    for a, b in ((np.s_[1:, :], np.s_[:-1, :]), (np.s_[:, 1:], np.s_[:, :-1])):
        edge = (labels[a] != labels[b]) & (obj[a] | obj[b])
        diff[a] |= edge & obj[a]
        diff[b] |= edge & obj[b]
    out[diff] = 0
    return out


def _doh(img: np.ndarray, sigma: float) -> np.ndarray:
    hxx = ndimage.gaussian_filter(img, sigma, order=(0, 2))
    hyy = ndimage.gaussian_filter(img, sigma, order=(2, 0))
    hxy = ndimage.gaussian_filter(img, sigma, order=(1, 1))
    return np.abs(hxx * hyy - hxy * hxy) * sigma**4


def _filters(rgb: np.ndarray, z: np.ndarray, valid: np.ndarray, R: int) -> dict:
    """16-bit edge and keypoint domains: from the blurred rgb (texture) and the depth (occlusion)."""
    s = max(1.0, 2.0 * R / 512)
    grey = rgb.astype(np.float32).mean(2)
    g = ndimage.gaussian_filter(grey, s)
    mag = np.hypot(ndimage.sobel(g, 0), ndimage.sobel(g, 1))
    out = {"edge_texture": np.clip(np.round(mag * 25), 0, 65535).astype(np.uint16)}
    zf = np.where(valid, np.nan_to_num(z), np.nanmax(z) if valid.any() else 1.0).astype(np.float32)
    sz = ndimage.gaussian_filter(np.sqrt(zf), s)
    occ = np.hypot(ndimage.sobel(sz, 0), ndimage.sobel(sz, 1))
    out["edge_occlusion"] = np.where(valid, np.clip(np.round(occ * 2000), 0, 65535), 0).astype(np.uint16)
    kp2 = ndimage.gaussian_filter(_doh(grey, 1.5 * s), s)
    out["keypoints2d"] = np.clip(np.round(kp2 * 30), 0, 65535).astype(np.uint16)
    kp3 = ndimage.gaussian_filter(_doh(zf, 1.5 * s), s)
    top = np.quantile(kp3, 0.997)
    kp3 = kp3 * (40000.0 / top) if top > 0 else kp3
    out["keypoints3d"] = np.clip(np.round(kp3), 0, 65000).astype(np.uint16)
    return out


# ------------------------------------------------------------------------------------------------ write
def view_path(
    root: Path, domain: str, building: str, point: int, view: int, layout: str = "omnitools"
) -> Path:
    """Where a view's file goes in one of the three layouts."""
    ext = "json" if domain == "point_info" else "png"
    name = f"point_{point}_view_{view}_domain_{tag_of(domain)}.{ext}"
    if layout == "omnitools":
        return root / domain / "taskonomy" / building / name
    if layout == "domain_building":
        return root / domain / building / name
    if layout == "building_domain":
        return root / building / domain / name
    raise ValueError(f"unknown layout {layout!r}; expected one of {LAYOUTS}")


def split_assignment(names: list[str]) -> dict[str, tuple[int, int, int]]:
    """Building -> (train, val, test) flags: ~70/15/15 with at least one building per split.

    With 2 buildings the second is both val and test, with 1 it is in all three (like the
    official 'debug' subset), so the three splits are never empty.
    """
    n = len(names)
    if n == 1:
        return {names[0]: (1, 1, 1)}
    if n == 2:
        return {names[0]: (1, 0, 0), names[1]: (0, 1, 1)}
    n_val = n_test = max(1, round(0.15 * n))
    n_train = n - n_val - n_test
    flags = [(1, 0, 0)] * n_train + [(0, 1, 0)] * n_val + [(0, 0, 1)] * n_test
    return dict(zip(names, flags, strict=True))


def write_split_csv(path: Path, assignment: dict[str, tuple[int, int, int]]) -> None:
    """Official split CSV format: header id,train,val,test and CR (classic Mac) line endings."""
    lines = ["id,train,val,test"] + [f"{b},{t},{v},{s}" for b, (t, v, s) in assignment.items()]
    Path(path).write_bytes(("\r".join(lines) + "\r").encode())


def _save_png(path: Path, arr: np.ndarray, compress_level: int) -> None:
    """uint16 2-D -> I;16, uint8 2-D -> L, uint8 HxWx3 -> RGB; encoded in memory (~2.5x faster)."""
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG", compress_level=compress_level)
    path.write_bytes(buf.getbuffer())


def synthesize(
    out_dir: str | os.PathLike,
    buildings: int = 3,
    points: int = 2,
    views: int = 3,
    resolution: int = 64,
    seed: int = 0,
    *,
    split_csv: bool = True,
    point_info: bool = True,
    layout: str = "omnitools",
    compress_level: int = 1,
    progress: bool = True,
) -> Path:
    """Write a synthetic dataset (all 11 domains) to ``out_dir``, atomically (temp dir, then rename).

    ``out_dir`` must not exist or be empty. Buildings get ``building_names(buildings)``, points 0..P-1,
    views 0..V-1; with ``split_csv`` the split file ``train_val_test_split.csv`` is written at the root.
    """
    from tqdm import tqdm

    if min(buildings, points, views) < 1 or resolution < 8:
        raise ValueError(
            "need buildings, points, views >= 1 and resolution >= 8, "
            f"got {buildings}, {points}, {views}, {resolution}"
        )
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; expected one of {LAYOUTS}")
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} exists and is not empty; remove it or choose another --out")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = make_temp_dir(out.parent, f".{out.name}.tmp-")
    try:
        names = building_names(buildings)
        made = set()
        jobs = [(b, p, v) for b in range(buildings) for p in range(points) for v in range(views)]
        for b, p, v in tqdm(
            jobs, desc="synthesize", unit="view", disable=None if progress else True, mininterval=1.0
        ):
            gt = render_view(seed, b, p, v, resolution)
            for domain, arr in gt["raw"].items():
                path = view_path(tmp, domain, names[b], p, v, layout)
                if path.parent not in made:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    made.add(path.parent)
                _save_png(path, arr, compress_level)
            if point_info:
                path = view_path(tmp, "point_info", names[b], p, v, layout)
                path.parent.mkdir(parents=True, exist_ok=True)
                info = {"point_uuid": f"{names[b]}-{p}", "view_id": v, "resolution": resolution,
                        "field_of_view_rads": gt["fov"], "building": names[b], "point": p}  # fmt: skip
                path.write_text(json.dumps(info, sort_keys=True))
        if split_csv:
            write_split_csv(tmp / SPLIT_CSV_NAME, split_assignment(names))
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise_if_disk_full(e, out)
        raise
    log.info("wrote %d views x %d domains to %s", len(jobs), len(DOMAINS), out)
    return out


# -------------------------------------------------------------------------------------------------- CLI
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="output folder (must not exist or be empty)")
    parser.add_argument("--buildings", type=int, default=3, help="number of buildings (rooms families)")
    parser.add_argument("--points", type=int, default=2, help="points (scenes) per building")
    parser.add_argument("--views", type=int, default=3, help="views (camera poses) per point")
    parser.add_argument("--resolution", type=int, default=64, help="image side in pixels (Taskonomy: 512)")
    parser.add_argument("--seed", type=int, default=0, help="same seed => same bytes")
    parser.add_argument("--split-csv", action=argparse.BooleanOptionalAction, default=True,
                        help=f"write {SPLIT_CSV_NAME} (id,train,val,test, CR line endings)")  # fmt: skip
    parser.add_argument("--layout", choices=LAYOUTS, default="omnitools", help="on-disk layout")
    parser.add_argument("--compress-level", type=int, default=1, help="PNG zlib level (1 = fast)")


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    synthesize(args.out, args.buildings, args.points, args.views, args.resolution, args.seed,
               split_csv=args.split_csv, layout=args.layout, compress_level=args.compress_level)  # fmt: skip
    return 0
