"""Matplotlib shared by the figures: the Agg backend, readable titles, labels that fit, reproducible files."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import numpy as np

from .. import files, ids


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 9, "axes.titlesize": 10, "svg.hashsalt": "mtlrobust"})
    return plt


_MODEL_ID = re.compile(r"\b[A-Za-z0-9_]+-[A-Za-z0-9_]+-[A-Za-z0-9_+]+-s\d+(?:-adv_[A-Za-z0-9_]+)?\b")

LABEL_SIZE = 8  # bar labels and legends: readable at the PNG's 150 dpi


def readable(text: str) -> str:
    """Text of the plan for a figure: model ids as encoder, paper letters and weighting; eps as ε."""

    def model(m: re.Match) -> str:
        try:
            spec = ids.parse_model_id(m.group(0))
        except (ValueError, KeyError):
            return m.group(0)
        seed = f", seed {spec.seed}" if spec.seed else ""
        adv = f", adversarially trained ({spec.adversarial})" if spec.adversarial else ""
        return f"{spec.arch} model of tasks {spec.letters} ({spec.weighting} weights{seed}{adv})"

    return re.sub(r"\beps\b", "ε", _MODEL_ID.sub(model, text))


def suptitle(fig, text: str, fontsize: float = 9) -> None:
    """The figure's title, readable and wrapped to the figure's width (never clipped at its edges)."""
    chars = max(20, int(fig.get_figwidth() * 72 * 0.92 / (fontsize * 0.55)))
    lines = [w for line in readable(text).split("\n") for w in textwrap.wrap(line, chars) or [""]]
    fig.suptitle("\n".join(lines), fontsize=fontsize)


def fit_labels(fig, ax, texts) -> None:
    """Bar labels that neither overlap nor leave the axes: one rotated line each where side by side ones
    would overlap, and the y-axis raised until every label is inside."""
    r = fig.canvas.get_renderer()
    boxes = [t.get_window_extent(r).padded(3) for t in texts]  # 3 px apart at least
    if any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1 :]):
        for t in texts:
            t.set_text(t.get_text().replace("\n", " "))
            t.set_rotation(90)
    height = ax.get_window_extent(r).height
    lo, hi = ax.get_ylim()
    # a label of height h (axes fraction) anchored at y fits when (y - lo) / (top - lo) <= 0.97 - h
    room = [max(0.97 - t.get_window_extent(r).height / height, 0.3) for t in texts]
    need = [lo + (t.get_position()[1] - lo) / f for t, f in zip(texts, room, strict=True)]
    ax.set_ylim(lo, max([hi, *need]))


def error_bars(t, col) -> np.ndarray:
    v, lo, hi = (t[c].to_numpy(np.float64) for c in (col, f"{col}_lo", f"{col}_hi"))
    return np.nan_to_num(np.vstack([v - lo, hi - v]), nan=0.0)


def save(fig, out_png: Path) -> list[Path]:
    """Write the .png and the .pdf next to it, atomically and without time stamps."""
    out_png = Path(out_png)
    written = []
    for path, fmt, meta in (
        (out_png, "png", {"Software": None}),
        (out_png.with_suffix(".pdf"), "pdf", {"CreationDate": None, "Creator": None}),
    ):
        with files.atomic_path(path) as tmp:
            fig.savefig(tmp, format=fmt, dpi=150, metadata=meta)
        written.append(path)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return written
