"""Progress lines for a job's log: a stage's stderr goes to a file under logs/, where tqdm's bar is off,
so train and evaluate write one flushed line per epoch or attack batch with the elapsed time and an ETA."""

from __future__ import annotations

import sys


def clock(seconds: float) -> str:
    """Seconds as h:mm:ss."""
    s = int(round(max(seconds, 0.0)))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


def timing(elapsed: float, done: int, total: int) -> str:
    """ "elapsed H:MM:SS, ETA H:MM:SS", the ETA being the mean time of the ``done`` units x those left."""
    eta = elapsed / done * (total - done) if done else 0.0
    return f"elapsed {clock(elapsed)}, ETA {clock(eta)}"


def line(text: str) -> None:
    """Write one progress line to stderr now (not when a buffer fills: the log is read while it grows)."""
    print(text, file=sys.stderr, flush=True)
