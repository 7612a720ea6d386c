"""Atomic file writes: a reader (or a rerun after a crash) sees the old file or the whole new one, never half.

Every stage writes through ``atomic_path``: the data goes to a hidden temporary file next to the target,
which replaces the target only when the write finished. On any error (disk full, the target is a folder,
Ctrl-C) the temporary file is removed, and a full disk is reported as one line naming the target.
"""

from __future__ import annotations

import csv
import errno
import os
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path


class DiskFullError(OSError):
    """No space left while writing a file; the message names the file."""


def raise_if_disk_full(e: BaseException, path) -> None:
    """Re-raise "no space left" (ENOSPC) as one DiskFullError naming ``path``; other errors pass."""
    if isinstance(e, OSError) and e.errno == errno.ENOSPC and not isinstance(e, DiskFullError):
        raise DiskFullError(f"disk full while writing {path}") from e


@contextmanager
def atomic_path(path, *, fsync: bool = True) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it replaces ``path``, on any error it is removed.

    ``fsync`` flushes the data to disk before the rename, so a power cut cannot leave an empty target.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        yield tmp
        if fsync:
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        if path.is_dir():
            raise IsADirectoryError(f"cannot write {path}: it is a folder, expected a file path")
        os.replace(tmp, path)
    except OSError as e:
        raise_if_disk_full(e, path)
        raise
    finally:
        tmp.unlink(missing_ok=True)


def check_output(path, flag: str) -> None:
    """Fail before any work if the output path of ``flag`` is a folder (the final write would fail)."""
    if path is not None and Path(path).is_dir():
        raise IsADirectoryError(f"{flag} {path}: is a folder, expected a file path")


def write_text(path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_csv(path, header: Sequence[str], rows: Iterable[Sequence]) -> Path:
    """Write a CSV (``\\n`` line ends) with ``header`` and ``rows`` atomically."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(header)
        w.writerows(rows)
    return Path(path)


def write_frame(path, df, **to_csv) -> Path:
    """Write a pandas DataFrame as CSV (no index) atomically; ``to_csv`` goes to ``DataFrame.to_csv``."""
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False, **to_csv)
    return Path(path)


def torch_save(path, obj) -> Path:
    """``torch.save(obj)`` to ``path`` atomically."""
    import torch

    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        torch.save(obj, f)
    return Path(path)
