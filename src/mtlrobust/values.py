"""Parsing of command-line values: attack budgets (0.0314 or "8/255") and JSON objects (specs, weights).

Inputs live in [0, 1], so a budget above 1 (or NaN, or infinite) is always a mistake, most often a
budget meant as "8" for 8/255. One parser for the CLI flags and the study file, so both reject the same.
"""

from __future__ import annotations

import argparse
import json
import math
from fractions import Fraction


def budget(value, name: str, *, positive: bool = False, maximum: float = 1.0) -> float:
    """``value`` (a number or a string like "8/255") as a float in [0, maximum], (0, maximum] if ``positive``.

    ``name`` is the flag or config key the value came from; a ValueError names it and what was expected.
    """
    low = "0 <" if positive else "0 <="
    expected = f"a number or a fraction like 8/255 with {low} value <= {maximum:g}"
    if isinstance(value, bool):
        raise ValueError(f"{name}: expected {expected}, got {value!r}")
    try:
        if isinstance(value, int | float):
            v = float(value)
        else:
            v = float(Fraction(str(value).replace(" ", "")))
    except (ValueError, ZeroDivisionError, TypeError):
        raise ValueError(f"{name}: expected {expected}, got {value!r}") from None
    if not math.isfinite(v) or v < 0 or (positive and v == 0) or v > maximum:
        raise ValueError(f"{name}: expected {expected}, got {value!r}")
    return v


def budget_arg(name: str, **kw):
    """An argparse ``type=`` for ``budget`` (argparse prints the message as ``error: argument NAME: ...``)."""

    def parse(text: str) -> float:
        try:
            return budget(text, name, **kw)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e).removeprefix(f"{name}: ")) from None

    parse.__name__ = name
    return parse


def json_object(value: str, name: str, *, files: bool = False) -> dict:
    """``value`` as a JSON object (with ``files``: or a file holding one); errors name ``name``."""
    text = value
    if files and value.lstrip()[:1] not in ("{", "["):  # JSON text starts so; a file name does not
        from .files import read_text

        try:
            text = read_text(value, "JSON file")
        except OSError as e:
            raise ValueError(
                f"{name} {value}: {e.strerror or e} (expected a JSON file or JSON text)"
            ) from None
        except ValueError as e:
            raise ValueError(f"{name} {e}") from None
        if not text.strip():
            raise ValueError(f"{name} {value}: empty file, expected a JSON object")
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{name}: not valid JSON ({e}): {value[:200]!r}") from None
    if not isinstance(obj, dict):
        raise ValueError(f"{name}: expected a JSON object, got {type(obj).__name__}: {value[:200]!r}")
    return obj
