"""The one ``--device`` resolver of the torch stages: auto picks CUDA when present; cuda without it fails."""

from __future__ import annotations

CHOICES = ("auto", "cpu", "cuda")


def resolve(name: str, flag: str = "--device"):
    """``torch.device`` for ``name`` (auto, cpu or cuda); a ValueError naming ``flag`` if unusable."""
    import torch

    if name not in CHOICES:
        raise ValueError(f"{flag} {name!r}: expected one of {', '.join(CHOICES)}")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"{flag} cuda: CUDA is not available on this machine (use {flag} auto or cpu)")
    return torch.device(name)
