"""The checkpoint format written by ``mtlrobust train`` and read by evaluate, theory and resumed trainings.

A checkpoint is a plain dict saved with ``torch.save`` and read with ``weights_only=True`` (no pickled
code). Besides the tensors (model, optimizer, scheduler, grad scaler, RNG states) it holds what identifies
the model (model_id, arch, decoder, tasks, weighting, weights, seed, resolution, normalization), the
training settings (``hparams``) and the per-epoch history. It holds no wall-clock time, so the same
study and seed give the same bytes.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path

from . import tasks as T
from .files import torch_save
from .ids import ModelSpec

FORMAT = "mtlrobust-checkpoint/1"
STATE_KEYS = ("model", "optimizer", "scheduler", "scaler", "rng", "running")


def _spec_fields(expect) -> dict:
    if isinstance(expect, ModelSpec):
        return {
            "model_id": expect.id,
            "arch": expect.arch,
            "tasks": list(expect.tasks),
            "weighting": expect.weighting,
            "seed": expect.seed,
        }
    return dict(expect)


def check_expect(meta: Mapping, expect, path) -> None:
    """Raise ValueError naming ``path`` and every field where ``meta`` differs from ``expect``.

    ``expect`` is a ModelSpec or a dict with any of model_id, arch, tasks, weighting, weights, seed,
    epoch, resolution, decoder. Tasks compare as sets of ids (letters allowed), weights per task to 1e-9.
    """
    if expect is None:
        return
    bad = []
    for key, want in _spec_fields(expect).items():
        if key not in meta:
            raise ValueError(f"{path}: cannot check unknown checkpoint field {key!r}")
        have = meta[key]
        if key == "tasks":
            ok = {T.get(t).id for t in want} == set(have)
        elif key == "weights":
            w = {T.get(k).id: float(v) for k, v in want.items()}
            ok = w.keys() == have.keys() and all(abs(w[k] - have[k]) <= 1e-9 for k in w)
        else:
            ok = have == want
        if not ok:
            bad.append(f"{key}: checkpoint has {have!r}, expected {want!r}")
    if bad:
        raise ValueError(f"checkpoint {path} does not match what was asked for: " + "; ".join(bad))


def non_finite_tensors(state: Mapping) -> list[str]:
    """Names of the floating-point tensors of a state dict holding NaN or infinite values."""
    import torch

    return [
        k
        for k, v in state.items()
        if torch.is_tensor(v) and v.is_floating_point() and not bool(torch.isfinite(v).all())
    ]


def _canonical(obj):
    """A copy with every string interned. Pickle writes a string once per distinct object, so without this
    a resumed run (keys read back from a checkpoint) would write other bytes than an uninterrupted one."""
    if isinstance(obj, str):
        return sys.intern(obj)
    if isinstance(obj, dict):
        return {_canonical(k): _canonical(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(_canonical(v) for v in obj)
    return obj


def save(path, ckpt: Mapping) -> None:
    """Write ``ckpt`` atomically, the same bytes for the same content; refuses weights with NaN/inf so no
    broken model is ever written."""
    bad = non_finite_tensors(ckpt["model"])
    if bad:
        raise FloatingPointError(
            f"not writing {path}: the weights of {ckpt.get('model_id', 'the model')} are not finite "
            f"({len(bad)} tensors, e.g. {bad[0]}) after epoch {ckpt.get('epoch')}; lower --lr"
        )
    torch_save(path, _canonical(dict(ckpt)))


def load_checkpoint(path, expect=None, map_location="cpu") -> dict:
    """Read a training checkpoint (full state) and check it against ``expect`` (see ``check_expect``)."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - corrupt/truncated files raise many types
        raise ValueError(f"checkpoint {path} is corrupt or unreadable ({type(e).__name__}: {e})") from e
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        got = ckpt.get("format") if isinstance(ckpt, dict) else type(ckpt).__name__
        raise ValueError(f"{path} is not an mtlrobust checkpoint (format {got!r}, expected {FORMAT!r})")
    check_expect(ckpt, expect, path)
    return ckpt


def checkpoint_meta(ckpt: Mapping) -> dict:
    """The descriptive part of a checkpoint (no tensors of model/optimizer/RNG state)."""
    return {k: v for k, v in ckpt.items() if k not in STATE_KEYS}


def build_model(meta: Mapping):
    """An untrained model with the architecture, tasks and input normalisation recorded in ``meta``."""
    from .models import MultiTaskNet

    return MultiTaskNet(
        meta["arch"], meta["tasks"], normalization=meta["normalization"], decoder=meta["decoder"]
    )


def load_model(path, device="cpu", expect=None):
    """(trained model in eval mode on ``device``, meta dict); strict weights, checked identity."""
    ckpt = load_checkpoint(path, expect=expect, map_location="cpu")
    model = build_model(ckpt)
    try:
        model.load_state_dict(ckpt["model"], strict=True)
    except RuntimeError as e:
        raise ValueError(
            f"checkpoint {path}: weights do not fit {ckpt['arch']} with tasks {ckpt['tasks']}: {e}"
        ) from e
    return model.to(device).eval(), checkpoint_meta(ckpt)


def check_data(meta: Mapping, dataset, path, data) -> None:
    """Refuse data the model was not trained for: another resolution, or no sample at all."""
    if int(dataset.resolution) != int(meta["resolution"]):
        raise ValueError(
            f"{data} holds {dataset.resolution} px images but checkpoint {path} was trained on "
            f"{meta['resolution']} px (prepare the data at the model's resolution)"
        )
    if len(dataset) == 0:
        raise ValueError(f"{data} holds no sample (empty split)")
