"""Atomic file writes: a reader (or a rerun after a crash) sees the old file or the whole new one, never half.

Every stage writes through ``atomic_path``: the data goes to a hidden temporary file next to the target,
which replaces the target only when the write finished. On any error (disk full, the target is a folder,
Ctrl-C) the temporary file is removed, and a full disk is reported as one line naming the target.
Also here: the check that no output overwrites another output or an input (``check_distinct``, run by
``cli.main`` for every stage), UTF-8 reads that name their file, and temporary folders that honour the umask.
"""

from __future__ import annotations

import csv
import errno
import os
import tempfile
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


def umask() -> int:
    """The process's umask (read by setting it and restoring it at once)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def make_temp_dir(parent, prefix: str) -> Path:
    """A new hidden folder in ``parent`` with the permissions ``mkdir`` gives (mode 0777 less the umask).

    ``tempfile.mkdtemp`` makes 0700 folders; a stage renames its temporary folder into place, so without
    this every dataset it writes would be private whatever the user's umask."""
    tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    tmp.chmod(0o777 & ~umask())
    return tmp


def read_text(path, what: str = "file") -> str:
    """The UTF-8 text of ``path``; errors name the file (ValueError for bytes that are not UTF-8).

    ``what`` says what the file should be: "PATH: not UTF-8 text (byte 0xff at offset 3), expected a WHAT"."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        bad = e.object[e.start : e.start + 1].hex()
        raise ValueError(
            f"{path}: not UTF-8 text (byte 0x{bad} at offset {e.start}), expected a {what}"
        ) from None


# ------------------------------------------------------------------------------------ distinct paths
def _same(a: Path, b: Path) -> bool:
    """Whether two paths name one file: equal once resolved (symlinks followed), or hard links of one."""
    try:
        if a.resolve() == b.resolve():
            return True
        return os.path.samefile(a, b)
    except (OSError, RuntimeError):  # one does not exist (yet), or a symlink loop: the stage reports it
        return a.absolute() == b.absolute()


def check_distinct(outputs: Sequence[tuple[str, object]], inputs: Sequence[tuple[str, object]] = ()) -> None:
    """Fail before any work if an output path is another output or an input: writing it would destroy one.

    ``outputs`` and ``inputs`` are (label, path) pairs, a label being the flag ("--log") or what derives the
    path from one; None paths (not given) are skipped. The ValueError names both labels and the path."""
    outs = [(label, Path(p)) for label, p in outputs if p is not None]
    ins = [(label, Path(p)) for label, p in inputs if p is not None]
    for i, (label, path) in enumerate(outs):
        others = [(o, q, "another output") for o, q in outs[:i]] + [(o, q, "an input") for o, q in ins]
        for other, where, role in others:
            if _same(path, where):
                names = (f"{other} and {label} both name {path}" if path == where
                         else f"{other} {where} and {label} {path} are the same file")  # fmt: skip
                raise ValueError(f"{names}: an output must not overwrite {role}")


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
