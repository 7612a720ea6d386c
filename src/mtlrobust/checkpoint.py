"""The checkpoint format written by ``mtlrobust train`` and read by evaluate, theory and resumed trainings.

A checkpoint is a plain dict saved with ``torch.save`` and read with ``weights_only=True`` (no pickled
code). A milestone's ``epoch{E}.pt`` holds the model weights (float32 as trained, or rounded to float16 with
``train --weights-dtype float16``: half the disk), what identifies the
model (model_id, arch, decoder, tasks, weighting, weights, seed, resolution, normalization), the training
settings (``hparams``) and the per-epoch history: all that evaluate and theory read. The state only a later
milestone needs to continue the run bit for bit (optimizer, scheduler, grad scaler, RNG states: twice the
weights' size with Adam) goes to a separate ``epoch{E}.resume.pt`` (``resume_path``), written only when asked
(``train --keep-resume``; with float16 weights it also holds the float32 ones, so a resumed run continues
from exactly the trained weights); the workflow deletes it once the next milestone exists. A killed run's
``{out}.partial`` holds both in one file. No checkpoint holds wall-clock time, so the same study and seed
give the same bytes.
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Mapping
from pathlib import Path

from . import __version__
from . import tasks as T
from .files import raise_if_disk_full, torch_save
from .ids import ModelSpec

FORMAT = "mtlrobust-checkpoint/1"
RESUME_FORMAT = "mtlrobust-resume/1"
RESUME_KEYS = ("optimizer", "scheduler", "scaler", "rng")  # what a resumed run needs besides the weights
# what identifies a trained model, in the order a checkpoint lists it
IDENTITY = (
    "model_id",
    "arch",
    "decoder",
    "tasks",
    "main",
    "weighting",
    "weights",
    "seed",
    "resolution",
    "normalization",
)
# kept out of the descriptive meta; "running" (loss sums of the current epoch) and "times" (seconds of
# the epochs done) exist only in a killed run's .partial
STATE_KEYS = ("model", *RESUME_KEYS, "running", "times")


def compose(identity: Mapping, *, epoch: int, batch: int, complete: bool, hparams: Mapping, history: list,
            trivial: Mapping, running: Mapping, state: Mapping) -> dict:  # fmt: skip
    """A checkpoint: ``identity`` (the ``IDENTITY`` keys), where the run is (``epoch`` done, ``batch`` of the
    next one, ``complete``), its settings and history, then ``state`` (model, optimizer, scheduler, scaler,
    rng). The key order is part of the bytes, so it is fixed here."""
    return {
        "format": FORMAT,
        "version": __version__,
        **{k: identity[k] for k in IDENTITY},
        "epoch": epoch,
        "batch": batch,
        "complete": complete,
        "hparams": hparams,
        "history": history,
        "trivial": trivial,
        "running": running,
        **{k: state[k] for k in ("model", *RESUME_KEYS)},
    }


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


def resume_path(path) -> Path:
    """Where the resume state of the milestone checkpoint ``path`` lives: epoch3.pt -> epoch3.resume.pt."""
    path = Path(path)
    return path.with_name(path.name.removesuffix(".pt") + ".resume.pt")


def weights_digest(state: Mapping) -> str:
    """SHA-256 of a state dict's names, dtypes, shapes and values: ties a resume file to its weights."""
    import torch

    h = hashlib.sha256()
    for k, v in state.items():
        h.update(f"{k}|{v.dtype}|{tuple(v.shape)}|".encode())
        h.update(v.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _write(path, obj) -> None:
    """``torch_save`` with its write failures as one line naming ``path`` (no partial file is left).

    torch's zip writer turns a failed write (a full disk) into "RuntimeError: [enforce fail at
    inline_container.cc] unexpected pos"; the OSError behind it is that exception's context."""
    try:
        torch_save(path, obj)
    except RuntimeError as e:
        cause = e.__context__
        while cause is not None and not isinstance(cause, OSError):
            cause = cause.__context__
        if cause is None:
            if "unexpected pos" not in str(e):
                raise  # not a failed write: a bug, with its traceback
            raise OSError(f"could not write {path}: the writer stopped short ({e}); is the disk full?") from e
        raise_if_disk_full(cause, path)
        raise OSError(f"could not write {path}: {cause.strerror or cause}") from e


def _check_finite(path, ckpt: Mapping) -> None:
    bad = non_finite_tensors(ckpt["model"])
    if bad:
        raise FloatingPointError(
            f"not writing {path}: the weights of {ckpt.get('model_id', 'the model')} are not finite "
            f"({len(bad)} tensors, e.g. {bad[0]}) after epoch {ckpt.get('epoch')}; lower --lr"
        )


def save(path, ckpt: Mapping) -> None:
    """Write ``ckpt`` (everything in one file: a .partial snapshot) atomically, the same bytes for the same
    content; refuses weights with NaN/inf so no broken model is ever written."""
    _check_finite(path, ckpt)
    _write(path, _canonical(dict(ckpt)))


def stored_weights(path, state: Mapping, dtype: str = "float32") -> Mapping:
    """The weights as a milestone stores them: as trained (float32), or every floating-point tensor rounded
    to float16 (relative error <= 2^-11; refused where a value exceeds float16's range)."""
    if dtype == "float32":
        return state
    if dtype != "float16":
        raise ValueError(f"weights dtype must be float32 or float16, got {dtype!r}")
    import torch

    half = {k: v.to(torch.float16) if v.is_floating_point() else v for k, v in state.items()}
    bad = non_finite_tensors(half)
    if bad:
        raise OverflowError(
            f"not writing {path}: tensor {bad[0]} holds values beyond float16's range (65504); "
            "store float32 weights (train --weights-dtype float32, study key training.weights_dtype)"
        )
    return half


def save_milestone(path, ckpt: Mapping, resumable: bool, dtype: str = "float32") -> None:
    """Write a milestone: the weights (``dtype``, see ``stored_weights``) and meta to ``path``; with
    ``resumable`` first the optimizer, scheduler and RNG state (and float32 weights when those stored are
    not) to ``resume_path(path)``, so weights never stand without the state asked for."""
    _check_finite(path, ckpt)
    weights = stored_weights(path, ckpt["model"], dtype)
    if resumable:
        resume = {
            "format": RESUME_FORMAT,
            "model_id": ckpt["model_id"],
            "epoch": ckpt["epoch"],
            "weights_sha256": weights_digest(weights),
            **({"model": ckpt["model"]} if weights is not ckpt["model"] else {}),
            **{k: ckpt[k] for k in RESUME_KEYS},
        }
        _write(resume_path(path), _canonical(resume))
    meta = {k: v for k, v in ckpt.items() if k not in STATE_KEYS}
    _write(path, _canonical({**meta, "model": weights}))


def _read(path: Path, fmt: str, kind: str, map_location) -> dict:
    """A dict saved by this module (``torch.load`` without pickled code) whose "format" is ``fmt``; a
    corrupt file or another format is a ValueError naming ``path`` and ``kind`` (checkpoint, resume file)."""
    import torch

    what = "checkpoint" if kind == "checkpoint" else "resume state"
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - corrupt/truncated files raise many types
        raise ValueError(f"{what} {path} is corrupt or unreadable ({type(e).__name__}: {e})") from e
    if not isinstance(obj, dict) or obj.get("format") != fmt:
        got = obj.get("format") if isinstance(obj, dict) else type(obj).__name__
        raise ValueError(f"{path} is not an mtlrobust {kind} (format {got!r}, expected {fmt!r})")
    return obj


def load_checkpoint(path, expect=None, map_location="cpu") -> dict:
    """Read a training checkpoint (full state) and check it against ``expect`` (see ``check_expect``)."""

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    ckpt = _read(path, FORMAT, "checkpoint", map_location)
    bad = non_finite_tensors(ckpt.get("model") or {})
    if bad:
        more = f" and {len(bad) - 1} more" if len(bad) > 1 else ""
        raise ValueError(
            f"checkpoint {path}: the weights hold NaN or inf (tensor {bad[0]}{more}); a model with "
            "non-finite weights cannot be evaluated or resumed: retrain it"
        )
    check_expect(ckpt, expect, path)
    return ckpt


def load_training_state(path, check=None, map_location="cpu") -> dict:
    """A milestone's full training state: its weights file plus ``resume_path(path)`` (or a checkpoint that
    holds both, as a .partial or a checkpoint written before the split did). ``check(ckpt, path)`` runs on
    the weights file before the resume file is read, so a settings mismatch is reported as such."""

    ckpt = load_checkpoint(path, map_location=map_location)
    if check is not None:
        check(ckpt, Path(path))
    if all(k in ckpt for k in RESUME_KEYS):
        return ckpt
    rp = resume_path(path)
    if not rp.is_file():
        raise FileNotFoundError(
            f"cannot resume from {path}: its optimizer/scheduler/RNG state {rp} does not exist (train "
            "writes it with --keep-resume; the workflow deletes it once no later milestone needs it)"
        )
    state = _read(rp, RESUME_FORMAT, "resume file", map_location)
    want = {"model_id": ckpt["model_id"], "epoch": ckpt["epoch"]}
    want["weights_sha256"] = weights_digest(ckpt["model"])
    bad = [k for k, v in want.items() if state.get(k) != v]
    if bad:
        raise ValueError(
            f"resume state {rp} does not belong to checkpoint {path} (they differ in {', '.join(bad)}); "
            "retrain that milestone"
        )
    full = [k for k in ("model", *RESUME_KEYS) if k in state]  # "model": float32 beside float16 weights
    return {**ckpt, **{k: state[k] for k in full}}


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
