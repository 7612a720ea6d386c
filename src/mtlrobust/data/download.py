"""Resumable, checksummed downloads of Taskonomy archives into the omnitools layout.

Why not ``omnitools.download``: it needs aria2, a name and e-mail sent to a Google Form, and skips md5
checks by default. This module uses only the standard library (urllib) and, for each (building,
domain) pair:

1. skips forbidden buildings (``mtlrobust.data.taskonomy.FORBIDDEN_BUILDINGS``) and pairs whose
   destination folder already exists (a folder is moved into place in one rename, so one that exists
   is a finished extraction);
2. downloads ``url_template.format(building=..., domain=...)`` (default: the official
   ``https://datasets.epfl.ch/taskonomy/{building}_{domain}.tar``) to
   ``{archive_dir}/{building}_{domain}.tar.part``, resuming a partial file with ``Range: bytes=N-``
   (a server answering 200 restarts it, 416 means it is already whole or must restart),
   retrying transient errors with bounded exponential backoff;
3. checks the md5 (official list: ``https://datasets.epfl.ch/taskonomy/md5sum.txt``, lines
   ``<md5> <filename>``) and renames the file to ``.tar`` only when complete and verified; a mismatch
   moves it aside to ``.tar.md5-mismatch`` (the next run downloads it afresh) and extracts nothing;
4. extracts safely (tarfile ``filter="data"``, absolute / ``..`` members refused, truncation detected)
   into a temporary folder under ``{dest}/.download/`` and moves the ``{domain}/`` (or
   ``{domain}/{building}/``) folder to ``{dest}/{domain}/taskonomy/{building}/``; a corrupt archive is
   moved aside to ``.tar.corrupt`` and nothing is left half-extracted.

Sizes (estimates, see taskonomy-format.md §2.4): the official tiny split (25/5/5 buildings, 24/5/5
downloadable, ~3e5 views) is about 0.4-0.6 TB for the 11 domains of the paper: rgb ~100 GB,
edge_texture ~90, principal_curvature ~75, keypoints3d ~70, normal ~70, keypoints2d ~45,
reshading ~45, edge_occlusion ~36, depth_euclidean ~33, depth_zbuffer ~30, segment_semantic ~3 GB.
The whole dataset is 11.16 TB (537 buildings). ``--dry-run`` asks the server for exact sizes (HEAD).

Licence (Taskonomy ``data/LICENSE``): see ``LICENCE_SUMMARY``; the CLI needs ``--agree-licence``.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import http.client
import io
import logging
import math
import os
import re
import shutil
import string
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from ..files import read_text

log = logging.getLogger(__name__)

OFFICIAL_URL_TEMPLATE = "https://datasets.epfl.ch/taskonomy/{building}_{domain}.tar"
OFFICIAL_MD5_URL = "https://datasets.epfl.ch/taskonomy/md5sum.txt"
# Server domains the task registry does not use but users may want (taskonomy-format.md §2.1).
EXTRA_DOMAINS = (
    "point_info",
    "rgb_large",
    "segment_unsup2d",
    "segment_unsup25d",
    "class_object",
    "class_scene",
    "fragments",
)
SPLITS = ("train", "val", "test", "all")
WORK_DIR = ".download"  # under dest: archives and temporary extraction folders (same file system)
LICENCE_SUMMARY = """\
Taskonomy data licence (StanfordVL/taskonomy data/LICENSE, rev. 2021-10-21), in short:
  * non-commercial research and educational use only (employees of commercial labs may use it for research);
  * no redistribution, in whole or in part, in any format, without written permission;
  * cite/reference the Taskonomy paper (Zamir et al., CVPR 2018) in work that uses the data;
  * the Gibson and 2D-3D-S EULAs appended to the licence also apply.
Read the full text at https://github.com/StanfordVL/taskonomy/blob/master/data/LICENSE"""

_BUILDING_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]*$")  # official names never contain '_'
_CHUNK = 1 << 20
_MAX_BACKOFF_S = 60.0


class DownloadError(RuntimeError):
    """A download, checksum or extraction failed; the message names the URL or file."""

    user_error = True  # the command line reports it as one line (mtlrobust.cli)


class _Transient(Exception):
    """An error worth retrying (connection reset, timeout, 5xx, short read)."""


@dataclass(frozen=True)
class Outcome:
    """What happened to one (building, domain); detail is the destination or the error."""

    building: str
    domain: str
    status: str  # downloaded | skipped | forbidden | failed
    detail: str = ""


# ------------------------------------------------------------------------------------ argument checks
def known_domains() -> tuple[str, ...]:
    """Domains accepted: the task registry's (rgb input, targets, depth mask source) plus EXTRA_DOMAINS."""
    from mtlrobust import tasks

    reg = [tasks.INPUT_DOMAIN, tasks.DEPTH_MASK_DOMAIN, *(t.domain for t in tasks.TASKS)]
    return tuple(dict.fromkeys([*reg, *EXTRA_DOMAINS]))


def validate_domains(domains: Iterable[str]) -> list[str]:
    """Check domain names exactly (omnitools silently matches nothing for 'normals' or 'depth')."""
    out = list(dict.fromkeys(d.strip() for d in domains if d.strip()))
    known = known_domains()
    bad = [d for d in out if d not in known]
    if bad:
        raise ValueError(f"unknown Taskonomy domain(s) {bad}; expected some of: {', '.join(known)}")
    if not out:
        raise ValueError("no domain given")
    return out


def validate_buildings(buildings: Iterable[str]) -> list[str]:
    """Building names become path components, so they must be plain names."""
    out = list(dict.fromkeys(b.strip() for b in buildings if b.strip()))
    bad = [b for b in out if not _BUILDING_RE.match(b)]
    if bad:
        raise ValueError(
            f"invalid building name(s) {bad}: expected letters, digits or '-' (no '_', '/', '..')"
        )
    if not out:
        raise ValueError("no building given")
    return out


def forbidden_buildings() -> frozenset[str]:
    """The official downloader's excluded buildings (single source: mtlrobust.data.taskonomy)."""
    from mtlrobust.data.taskonomy import FORBIDDEN_BUILDINGS

    return frozenset(FORBIDDEN_BUILDINGS)


def read_split_buildings(path: str | os.PathLike, split: str = "all", subset: str = "tiny") -> list[str]:
    """Buildings of an official split CSV (``id,train,val,test``, 0/1 flags, CR line endings).

    ``path`` may be the CSV or a folder holding ``train_val_test_{subset}.csv``. ``split="all"`` takes
    every building flagged in any split.
    """
    if split not in SPLITS:
        raise ValueError(f"split {split!r}: expected one of {SPLITS}")
    path = Path(path)
    if path.is_dir():
        path = path / f"train_val_test_{subset}.csv"
    text = read_text(path, "split CSV (id,train,val,test)").removeprefix("\ufeff")
    with io.StringIO(text, newline=None) as f:  # universal newlines: the official files use '\r'
        reader = csv.DictReader(f)
        cols = [c.strip() for c in reader.fieldnames or []]
        if cols[:1] != ["id"] or not {"train", "val", "test"} <= set(cols):
            raise ValueError(f"{path}: expected header id,train,val,test, got {cols}")
        reader.fieldnames = cols
        out = []
        for row in reader:
            flags = {k: (row[k] or "").strip() == "1" for k in ("train", "val", "test")}
            if (any(flags.values()) if split == "all" else flags[split]) and row["id"].strip():
                out.append(row["id"].strip())
    if not out:
        raise ValueError(f"{path}: no building flagged for split {split!r}")
    return out


# ------------------------------------------------------------------------------------------ checksums
def read_md5_list(path: str | os.PathLike) -> dict[str, str]:
    """Parse an md5sum-style file (``<md5> <filename>`` per line, as the official md5sum.txt)."""
    out = {}
    for n, line in enumerate(read_text(path, "md5sum-style list").splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split(maxsplit=1)
        if len(parts) != 2 or not re.fullmatch(r"[0-9a-fA-F]{32}", parts[0]):
            raise ValueError(f"{path}:{n}: expected '<md5> <filename>', got {line!r}")
        out[_md5_key(parts[1])] = parts[0].lower()
    return out


def _md5_key(name: str) -> str:
    return name.strip().lstrip("*").lstrip("./").lstrip("/")


def md5_for(url: str, md5s: Mapping[str, str] | None) -> str | None:
    """The expected md5 of a URL: the list entry whose (relative) file name ends the URL's path."""
    if not md5s:
        return None
    keyed = {_md5_key(k): v.lower() for k, v in md5s.items()}
    parts = urllib.parse.unquote(urllib.parse.urlsplit(url).path).strip("/").split("/")
    for i in range(len(parts)):
        hit = keyed.get("/".join(parts[i:]))
        if hit:
            return hit
    return None


def file_md5(path: str | os.PathLike) -> str:
    """md5 hex digest of a file, read in 1 MiB chunks (archives reach ~100 GB)."""
    h = hashlib.md5()
    with open(path, "rb") as f:
        while buf := f.read(_CHUNK):
            h.update(buf)
    return h.hexdigest()


# ------------------------------------------------------------------------------------------- transfer
def fetch(
    url: str,
    path: str | os.PathLike,
    *,
    md5: str | None = None,
    retries: int = 5,
    backoff: float = 2.0,
    timeout: float = 60.0,
    progress: bool = True,
    position: int | None = None,
) -> Path:
    """Download ``url`` to ``path`` via ``path.part`` (resumed if present); verify; rename when whole.

    Transient failures are retried, resuming from the bytes already on disk, waiting backoff,
    2*backoff, ... seconds (capped at 60 s); it gives up after ``retries`` + 1 failures in a row
    (an attempt that received bytes restarts the count, so a long file survives a flaky link).
    """
    path = Path(path)
    part = path.with_name(path.name + ".part")
    path.parent.mkdir(parents=True, exist_ok=True)
    failures = 0
    while True:
        before = part.stat().st_size if part.exists() else 0
        try:
            _transfer(url, part, timeout=timeout, progress=progress, position=position)
            break
        except _Transient as exc:
            grew = part.exists() and part.stat().st_size > before
            failures = 1 if grew else failures + 1  # count failures in a row; progress resets the count
            if failures > retries:
                raise DownloadError(
                    f"{url}: giving up after {failures} failed attempt(s) in a row: {exc}"
                ) from None
            delay = min(backoff * 2 ** (failures - 1), _MAX_BACKOFF_S)
            have = part.stat().st_size if part.exists() else 0
            log.warning(
                "%s: %s; retry %d/%d in %.0f s from byte %d", url, exc, failures, retries, delay, have
            )
            time.sleep(delay)
    if md5:
        actual = file_md5(part)
        if actual != md5.lower():
            bad = path.with_name(path.name + ".md5-mismatch")
            os.replace(part, bad)
            raise DownloadError(
                f"checksum mismatch for {path.name} ({url}): expected md5 {md5.lower()}, got {actual}; "
                f"nothing extracted, the file was moved aside to {bad} (the next run downloads it afresh)"
            )
    os.replace(part, path)
    return path


def _open(url: str, offset: int, timeout: float, method: str = "GET"):
    headers = {"User-Agent": "mtlrobust-download"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    return urllib.request.urlopen(
        urllib.request.Request(url, headers=headers, method=method), timeout=timeout
    )


def _content_range(value: str | None) -> tuple[int | None, int | None]:
    """(first byte, total size) of a Content-Range header such as 'bytes 10-99/100' or 'bytes */100'."""
    m = re.match(r"bytes\s+(?:(\d+)-\d+|\*)/(\d+|\*)", value or "")
    if not m:
        return None, None
    first = int(m.group(1)) if m.group(1) else None
    return first, int(m.group(2)) if m.group(2) != "*" else None


def _transfer(url: str, part: Path, *, timeout: float, progress: bool, position: int | None) -> None:
    offset = part.stat().st_size if part.exists() else 0
    try:
        resp = _open(url, offset, timeout)
    except urllib.error.HTTPError as exc:
        code, headers = exc.code, exc.headers
        exc.close()
        if code == 416 and offset:
            if _content_range(headers.get("Content-Range"))[1] == offset:
                return  # the partial file is already whole
            log.warning("%s: server refused to resume at byte %d (HTTP 416); restarting", url, offset)
            part.unlink()
            return _transfer(url, part, timeout=timeout, progress=progress, position=position)
        if code in (408, 425, 429) or code >= 500:
            raise _Transient(f"HTTP {code}") from None
        raise DownloadError(f"{url}: HTTP {code} {exc.reason}") from None
    except (OSError, http.client.HTTPException) as exc:  # URLError, reset, refused, timeout
        raise _Transient(f"{type(exc).__name__}: {exc}") from None
    with resp:
        status = resp.status or 200  # file:// answers None
        start = 0
        if offset and status == 206:
            start, total = _content_range(resp.headers.get("Content-Range"))
            if start != offset:
                part.unlink()
                raise _Transient(f"server resumed at byte {start}, not {offset}; restarting")
        else:
            if offset:
                log.warning(
                    "%s: server ignored the Range request (HTTP %d); restarting from byte 0", url, status
                )
            length = resp.headers.get("Content-Length")
            total = int(length) if length else None
        bar = tqdm(
            total=total,
            initial=start,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            desc=part.name.removesuffix(".part"),
            disable=None if progress else True,
            position=position,
            leave=position is None,
        )
        with bar, open(part, "ab" if start else "wb") as f:
            try:
                while buf := resp.read(_CHUNK):
                    f.write(buf)
                    bar.update(len(buf))
            except (OSError, http.client.HTTPException) as exc:
                raise _Transient(f"{type(exc).__name__} after {f.tell()} bytes: {exc}") from None
    size = part.stat().st_size
    if total is not None and size < total:
        raise _Transient(f"connection closed at byte {size} of {total}")
    if total is not None and size > total:
        part.unlink()
        raise _Transient(f"received {size} bytes, more than the announced {total}; restarting")


def remote_size(url: str, timeout: float = 60.0) -> int | None:
    """Content-Length of a HEAD request (None when the server does not say)."""
    try:
        with _open(url, 0, timeout, method="HEAD") as resp:
            length = resp.headers.get("Content-Length")
    except urllib.error.HTTPError as exc:
        exc.close()
        raise DownloadError(f"{url}: HTTP {exc.code} {exc.reason}") from None
    return int(length) if length else None


# ----------------------------------------------------------------------------------------- extraction
def destination(dest: str | os.PathLike, building: str, domain: str) -> Path:
    """Where a (building, domain) lands: the omnitools layout."""
    return Path(dest) / domain / "taskonomy" / building


def is_complete(dest: str | os.PathLike, building: str, domain: str) -> bool:
    """True when the destination folder exists and holds files (folders only ever appear whole)."""
    d = destination(dest, building, domain)
    return d.is_dir() and any(d.iterdir())


def _safe_filter(member: tarfile.TarInfo, path: str) -> tarfile.TarInfo | None:
    name = member.name
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name) or ".." in Path(name).parts:
        raise DownloadError(f"unsafe member {name!r} (absolute path or '..')")
    return tarfile.data_filter(member, path)


def _find(tmp: Path, building: str, domain: str) -> Path | None:
    """The extracted folder holding ``domain``'s files, at the top or under one wrapper folder."""
    tops = [tmp] + [p for p in tmp.iterdir() if p.is_dir()]  # e.g. a GitHub 'repo-master/' wrapper
    for top in tops:
        for c in (top / domain / building, top / domain, top / building / domain):
            if c.is_dir():
                return c
    return None


def extract(
    archive: str | os.PathLike, dest: str | os.PathLike, building: str, domains: str | Sequence[str]
) -> list[Path]:
    """Extract one archive's domains into ``{dest}/{domain}/taskonomy/{building}/``, all or nothing.

    Per domain the archive may hold ``{domain}/`` (flat files, the official tars),
    ``{domain}/{building}/`` or ``{building}/{domain}/``, at its top or under one wrapper folder
    (a repository snapshot such as the sample building's). A corrupt or unsafe archive, or one that
    lacks a requested domain, raises DownloadError and leaves nothing.
    """
    archive = Path(archive)
    domains = [domains] if isinstance(domains, str) else list(domains)
    work = Path(dest) / WORK_DIR / "tmp"
    work.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"{building}.", dir=work))
    try:
        try:
            with tarfile.open(archive) as tar:  # compression (gz, bz2, xz) is detected
                tar.extractall(tmp, filter=_safe_filter)
                tar.fileobj.seek(tar.offset)
                if tar.fileobj.read(1024) != bytes(1024):
                    raise tarfile.ReadError("no end-of-archive marker: the file is truncated")
        except (tarfile.FilterError, DownloadError) as exc:
            raise DownloadError(f"unsafe archive {archive}: {exc}; nothing was extracted") from None
        except (tarfile.TarError, EOFError) as exc:
            raise DownloadError(f"corrupt archive {archive}: {exc}; nothing was extracted") from None
        found = {d: _find(tmp, building, d) for d in domains}
        missing = [d for d, src in found.items() if src is None or not any(src.iterdir())]
        if missing:
            top = sorted(p.name for p in tmp.iterdir())
            raise DownloadError(
                f"archive {archive} holds no (or an empty) folder for domain(s) {missing} "
                f"(top level: {top}); nothing was extracted"
            )
        finals = []
        for d, src in found.items():
            final = destination(dest, building, d)
            final.parent.mkdir(parents=True, exist_ok=True)
            if final.is_dir() and not any(final.iterdir()):
                final.rmdir()
            os.replace(src, final)
            finals.append(final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return finals


# ---------------------------------------------------------------------------------------- orchestration
def check_template(url_template: str) -> None:
    """A URL template may use only {building} and {domain}."""
    fields = {f for _, f, _, _ in string.Formatter().parse(url_template) if f is not None}
    if not fields <= {"building", "domain"}:
        raise ValueError(
            f"URL template {url_template!r}: unknown fields {sorted(fields - {'building', 'domain'})}"
        )


def download_one(building: str, domain: str, dest: str | os.PathLike, **kw) -> Outcome:
    """Download, verify and extract one (building, domain); raise DownloadError on failure."""
    return download_archive(building, [domain], dest, **kw)[0]


def download_archive(
    building: str,
    domains: Sequence[str],
    dest: str | os.PathLike,
    *,
    url_template: str = OFFICIAL_URL_TEMPLATE,
    md5s: Mapping[str, str] | None = None,
    archive_dir: str | os.PathLike | None = None,
    keep_archive: bool = False,
    position: int | None = None,
    **fetch_kw,
) -> list[Outcome]:
    """Download, verify and extract the archive holding ``domains`` of ``building`` (one outcome each).

    With the official template each archive holds one domain; a template without ``{domain}`` names
    one archive per building holding them all. Raises DownloadError on failure.
    """
    if building in forbidden_buildings():
        msg = f"building {building!r} is excluded by the official downloader (missing or corrupt data)"
        log.warning("skipping %s (%s): %s", building, ", ".join(domains), msg)
        return [Outcome(building, d, "forbidden", msg) for d in domains]
    done = {d for d in domains if is_complete(dest, building, d)}
    for d in sorted(done):
        log.info("skipping %s/%s: already complete (%s exists)", building, d, destination(dest, building, d))
    todo = [d for d in domains if d not in done]
    if todo:
        url = url_template.format(building=building, domain=todo[0])
        name = f"{building}_{todo[0]}.tar" if "{domain}" in url_template else f"{building}.tar"
        archive = Path(archive_dir or Path(dest) / WORK_DIR / "archives") / name
        expected = md5_for(url, md5s)
        if md5s and expected is None:
            log.warning("%s: no md5 listed for it; its content is not verified", url)
        if archive.exists():
            if expected and (actual := file_md5(archive)) != expected:
                bad = archive.with_name(archive.name + ".md5-mismatch")
                os.replace(archive, bad)
                raise DownloadError(
                    f"checksum mismatch for {archive.name} ({url}): expected md5 {expected}, got {actual}; "
                    f"nothing extracted, the file was moved aside to {bad}"
                )
            log.info("%s: using the downloaded archive %s", url, archive)
        else:
            fetch(url, archive, md5=expected, position=position, **fetch_kw)
        try:
            extract(archive, dest, building, todo)
        except DownloadError as exc:
            bad = archive.with_name(archive.name + ".corrupt")
            os.replace(archive, bad)
            raise DownloadError(f"{exc} (from {url}; the archive was moved aside to {bad})") from None
        if not keep_archive:
            archive.unlink()
    return [
        Outcome(building, d, "skipped" if d in done else "downloaded", str(destination(dest, building, d)))
        for d in domains
    ]


def _jobs(buildings: Sequence[str], domains: Sequence[str], url_template: str) -> list[tuple[str, list[str]]]:
    """(building, domains) per archive: one per pair, or one per building if the URL has no {domain}."""
    if "{domain}" in url_template:
        return [(b, [d]) for b in buildings for d in domains]
    return [(b, list(domains)) for b in buildings]


def download(
    buildings: Sequence[str],
    domains: Sequence[str],
    dest: str | os.PathLike,
    *,
    connections: int = 1,
    url_template: str = OFFICIAL_URL_TEMPLATE,
    **kw,
) -> list[Outcome]:
    """Download every (building, domain) pair, ``connections`` archives at a time.

    Failures do not stop the other archives; at the end a DownloadError lists them all.
    Keyword arguments go to ``download_archive`` / ``fetch`` (md5s, retries, backoff, timeout, ...).
    """
    buildings, domains = validate_buildings(buildings), validate_domains(domains)
    check_template(url_template)
    jobs = _jobs(buildings, domains, url_template)

    def one(i_job):
        i, (b, ds) = i_job
        pos = i % connections if connections > 1 else None
        try:
            return download_archive(b, ds, dest, url_template=url_template, position=pos, **kw)
        except DownloadError as exc:
            log.error("%s", exc)
            return [Outcome(b, d, "failed", str(exc)) for d in ds]

    if connections > 1:
        with ThreadPoolExecutor(max_workers=connections) as pool:
            outcomes = [o for group in pool.map(one, enumerate(jobs)) for o in group]
    else:
        outcomes = [o for job in enumerate(jobs) for o in one(job)]
    work = Path(dest) / WORK_DIR
    for empty in (work / "tmp", work / "archives", work):  # tidy up, keep anything still in use
        try:
            empty.rmdir()
        except OSError:
            pass
    failed = list(dict.fromkeys(o.detail for o in outcomes if o.status == "failed"))
    if failed:
        raise DownloadError(
            f"{len(failed)} of {len(jobs)} archives failed:\n" + "\n".join(f"  {f}" for f in failed)
        )
    return outcomes


# ------------------------------------------------------------------------------------------------- CLI
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dest", required=True, help="root of the raw Taskonomy tree (omnitools layout)")
    who = parser.add_mutually_exclusive_group(required=True)
    who.add_argument("--buildings", help="comma-separated building names, e.g. allensville,cosmos")
    who.add_argument(
        "--split-csv", help="official split CSV, or a folder holding train_val_test_{subset}.csv"
    )
    parser.add_argument("--subset", default="tiny", help="subset whose CSV to read from a --split-csv folder")
    parser.add_argument("--split", default="all", choices=SPLITS, help="which buildings of the split CSV")
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--domains", help="comma-separated Taskonomy domains, e.g. rgb,normal,segment_semantic")
    what.add_argument("--tasks", help="task letters/ids (e.g. sdnE); downloads the domains they need")
    parser.add_argument(
        "--url-template",
        default=OFFICIAL_URL_TEMPLATE,
        help="archive URL with {building} and {domain} (no {domain}: one archive per building)",
    )
    parser.add_argument(
        "--md5", help=f"md5sum-style list '<md5> <filename>': file or URL ({OFFICIAL_MD5_URL})"
    )
    parser.add_argument("--agree-licence", action="store_true", help="accept the Taskonomy data licence")
    parser.add_argument("--connections", type=int, default=1, help="archives downloaded in parallel")
    parser.add_argument("--retries", type=int, default=5, help="retries per archive on transient errors")
    parser.add_argument("--timeout", type=float, default=60.0, help="socket timeout in seconds")
    parser.add_argument(
        "--archive-dir", help=f"where archives are downloaded (default DEST/{WORK_DIR}/archives)"
    )
    parser.add_argument("--keep-archives", action="store_true", help="keep the .tar files after extraction")
    parser.add_argument(
        "--dry-run", action="store_true", help="list the archives and their sizes (HEAD) only"
    )


def run(args: argparse.Namespace) -> int:
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(message)s")
    print(LICENCE_SUMMARY)
    if not args.agree_licence:
        print("mtlrobust download: error: --agree-licence not given: re-run with it to accept these terms "
              "and download", file=sys.stderr)  # fmt: skip
        return 2
    try:
        buildings, domains = _plan(args)
    except (ValueError, KeyError, OSError) as exc:
        from ..cli import one_line

        print(f"mtlrobust download: error: {one_line(exc)}", file=sys.stderr)
        return 2
    if args.dry_run:
        return _dry_run(buildings, domains, args)
    try:
        md5s = _md5_list(args.md5, args.dest, args.timeout) if args.md5 else None
        outcomes = download(
            buildings,
            domains,
            args.dest,
            connections=args.connections,
            url_template=args.url_template,
            md5s=md5s,
            archive_dir=args.archive_dir,
            keep_archive=args.keep_archives,
            retries=args.retries,
            timeout=args.timeout,
        )
    except DownloadError as exc:
        log.error("%s", exc)
        return 1
    counts = {s: sum(o.status == s for o in outcomes) for s in ("downloaded", "skipped", "forbidden")}
    log.info("done: %s", ", ".join(f"{n} {s}" for s, n in counts.items()))
    return 0


def _plan(args: argparse.Namespace) -> tuple[list[str], list[str]]:
    """Buildings and domains from the command line, checked before any request."""
    check_template(args.url_template)
    if args.buildings:
        buildings = validate_buildings(args.buildings.split(","))
    else:
        buildings = read_split_buildings(args.split_csv, args.split, args.subset)
    if len(buildings) > 1 and "{building}" not in args.url_template:
        raise ValueError(
            f"--url-template {args.url_template!r} must contain {{building}} for several buildings"
        )
    if args.tasks:
        from mtlrobust import tasks

        domains = tasks.domains_needed(tasks.parse(args.tasks))
    else:
        domains = validate_domains(args.domains.split(","))
    if args.connections < 1 or args.retries < 0:
        raise ValueError("--connections must be >= 1 and --retries >= 0")
    if not (math.isfinite(args.timeout) and args.timeout > 0):
        raise ValueError(f"--timeout: expected a finite number of seconds > 0, got {args.timeout}")
    return buildings, domains


def _md5_list(source: str, dest: str, timeout: float) -> dict[str, str]:
    """Read an md5 list from a file, or fetch it first when given a URL (e.g. OFFICIAL_MD5_URL)."""
    if urllib.parse.urlsplit(source).scheme in ("http", "https", "ftp", "file"):
        source = fetch(source, Path(dest) / WORK_DIR / "md5sum.txt", timeout=timeout, progress=False)
    return read_md5_list(source)


def _dry_run(buildings: list[str], domains: list[str], args: argparse.Namespace) -> int:
    """Print one line per archive (size from a HEAD request, or why it is not needed) and the total."""
    forbidden, total, unknown, errors = forbidden_buildings(), 0, 0, 0
    for b, ds in _jobs(buildings, domains, args.url_template):
        url = args.url_template.format(building=b, domain=ds[0])
        if b in forbidden:
            print(f"{'forbidden':>10}  {url}")
        elif all(is_complete(args.dest, b, d) for d in ds):
            print(f"{'complete':>10}  {url}")
        else:
            try:
                size = remote_size(url, args.timeout)
            except (DownloadError, OSError) as exc:
                errors += 1
                print(f"{'error':>10}  {url}: {exc}")
                continue
            total += size or 0
            unknown += size is None
            print(f"{'?' if size is None else _size(size):>10}  {url}")
    print(f"to download: {_size(total)}" + (f" (+{unknown} archives of unknown size)" if unknown else ""))
    return 1 if errors else 0


def _size(n: int) -> str:
    return tqdm.format_sizeof(n, "B", 1024)
