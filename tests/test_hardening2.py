"""Hardening II (issue 20, items 1, 6 and 9): no output overwrites another output or an input, no NaN or
negative value passes silently, every one-line error names its file or flag, Ctrl-C ends cleanly, and the
data stages' folders honour the umask. Ends with the probe: bad command lines for every stage, each refused
with exit 2 and one line naming the flag or file, leaving every file as it was."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from test_cli_errors import _eval_rows

from mtlrobust import cli
from mtlrobust import files as F
from mtlrobust import metrics as M
from mtlrobust.data import packed
from mtlrobust.evaluate import write_csv as write_eval_csv

CONFIG = str(Path(__file__).resolve().parents[1] / "config.yaml")
PGD = json.dumps({"name": "pgd", "method": "pgd", "norm": "linf", "eps": 8 / 255, "steps": 1})


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def checkpoint(fake_root, tmp_path_factory):
    """A tiny seg + depth_z model (one epoch on 6 views): the one training of this module."""
    out = tmp_path_factory.mktemp("ckpt2") / "epoch1.pt"
    argv = ["train", "--data", fake_root, "--arch", "xception", "--tasks", "sd", "--epochs", "1"]
    argv += ["--batch-size", "3", "--val-limit", "0", "--threads", "1", "--no-progress", "--out", out]
    assert cli.main(list(map(str, argv))) == 0
    return out


def _run(capsys, stage: str, *argv) -> tuple[int, list[str]]:
    """``mtlrobust STAGE ARGV`` in-process: (exit status, non-empty stderr lines)."""
    capsys.readouterr()
    try:
        rc = cli.main([stage, *map(str, argv)])
    except SystemExit as e:  # argparse's own errors
        rc = e.code
    return rc, [line for line in capsys.readouterr().err.splitlines() if line.strip()]


def _snapshot(folder: Path) -> dict:
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------------------------ distinct outputs
def test_check_distinct_follows_symlinks_and_hard_links(tmp_path):
    out = tmp_path / "o.pt"
    out.write_text("checkpoint")
    (tmp_path / "link.pt").symlink_to(out)
    os.link(out, tmp_path / "hard.pt")
    F.check_distinct([("--out", out), ("--log", tmp_path / "other.csv")], [("--data", tmp_path)])
    for other in ("link.pt", "hard.pt", "./o.pt"):
        with pytest.raises(ValueError) as e:
            F.check_distinct([("--out", out), ("--log", tmp_path / other)])
        assert re.fullmatch(
            rf"--out (and --log both name \S*o.pt|\S*o.pt and --log \S*{other} are the same file): "
            "an output must not overwrite another output",
            str(e.value),
        ), str(e.value)
    with pytest.raises(ValueError, match=r"^--inputs and --out both name .*o.pt: .* overwrite an input$"):
        F.check_distinct([("--out", out)], [("--inputs", out)])


def test_train_out_equal_to_log_is_refused_before_any_work(capsys, fake_root, tmp_path):
    out = tmp_path / "o.pt"
    out.write_bytes(b"an earlier checkpoint")
    argv = ["--data", fake_root, "--arch", "xception", "--tasks", "sd", "--epochs", "1", "--out", out]
    rc, err = _run(capsys, "train", *argv, "--log", out)
    assert rc == 2 and err == [f"mtlrobust train: error: --out and --log both name {out}: an output must not "
                               "overwrite another output"]  # fmt: skip
    assert out.read_bytes() == b"an earlier checkpoint" and sorted(tmp_path.iterdir()) == [out]
    rc, err = _run(capsys, "train", *argv[:-1], tmp_path / "o.csv")  # the default log is --out with .csv
    assert rc == 2 and "--out and --log (default: the .csv written next to --out) both name" in err[0]


def test_every_declared_path_is_a_flag_of_its_stage():
    """A renamed flag must not drop out of the check unnoticed; every command is declared."""
    import argparse
    import importlib

    assert set(cli.PATHS) == set(cli.COMMANDS)
    for name, words in cli.PATHS.items():
        parser = argparse.ArgumentParser()
        importlib.import_module(cli.COMMANDS[name][0]).add_arguments(parser)
        dests = {a.dest for a in parser._actions}
        for word in " ".join(words).split():
            for part in word.split("|"):
                assert re.split(r"[.+@]", part)[0] in dests, (name, part)


# ------------------------------------------------------------------------------------- silent NaNs
def _eval_csv(path, edit=None):
    rows = _eval_rows()
    if edit:
        edit(rows)
    write_eval_csv(rows, path)
    return path


def _set(row: int, column: str, value: str):
    from mtlrobust.evaluate import COLUMNS

    def edit(rows):
        rows[row][COLUMNS.index(column)] = value

    return edit


def test_aggregate_keeps_samples_without_a_valid_pixel_but_refuses_odd_values(capsys, tmp_path):
    def both_nan(rows):
        _set(1, "clean_error", "nan")(rows)
        _set(1, "adv_error", "nan")(rows)

    ok = _eval_csv(tmp_path / "ok.csv", both_nan)
    assert _run(capsys, "aggregate", "--inputs", ok, "--out", tmp_path / "v.csv")[0] == 0
    for column, value in [("adv_error", "inf"), ("adv_error", "nan"), ("clean_error", "-0.5"),
                          ("adv_loss", "-1"), ("clean_loss", "nan"), ("clean_loss", "inf")]:  # fmt: skip
        bad = _eval_csv(tmp_path / "bad.csv", _set(2, column, value))
        rc, err = _run(capsys, "aggregate", "--inputs", bad, "--out", tmp_path / "w.csv")
        assert rc == 2 and len(err) == 1, err
        assert f"bad.csv: line 4, column {column} = {float(value)!r}: expected a finite number >= 0" in err[0]
    assert not (tmp_path / "w.csv").exists()


def test_relative_vulnerability_refuses_infinite_and_negative_errors():
    assert M.relative_vulnerability([1.0, float("nan")], [2.0, float("nan")]).n_skipped == 1
    with pytest.raises(ValueError, match=r"adversarial value inf of sample 1: expected a number >= 0 or NaN"):
        M.relative_vulnerability([1.0, 1.0], [2.0, float("inf")])
    with pytest.raises(ValueError, match=r"clean value -1.0 of sample 0"):
        M.relative_vulnerability_ratio_of_means([-1.0], [2.0])


def test_theory_refuses_to_write_nan_rows(capsys, checkpoint, fake_root, tmp_path):
    """Depth's mask is 0 everywhere: its input gradient is zero and Theorem 2's ratio is 0/0."""
    data = shutil.copytree(fake_root / "val", tmp_path / "val")
    np.save(data / "depth_z.mask.npy", np.zeros_like(np.load(data / "depth_z.mask.npy")))
    out = tmp_path / "theory.csv"
    argv = ["--checkpoint", checkpoint, "--data", data, "--norm", "linf", "--eps", "8/255", "--out", out]
    rc, err = _run(capsys, "theory", *argv, "--device", "cpu")
    assert rc == 2 and len(err) == 1, err
    assert re.match(r"mtlrobust theory: error: xception-uniform-seg\+depth_z-s0: theory theorem2 \(.*\) has "
                    r"value nan: a task's input gradient is zero", err[0]), err  # fmt: skip
    assert not out.exists()


def test_large_arrays_are_checked_batch_by_batch(fake_root, tmp_path, monkeypatch):
    data = shutil.copytree(fake_root / "train", tmp_path / "train")
    depth = np.load(data / "depth_z.npy")
    depth[4, 0, 3, 3] = np.inf
    np.save(data / "depth_z.npy", depth)
    with pytest.raises(ValueError, match=r"depth_z.npy: view 4 holds inf, expected finite targets"):
        packed.PackedDataset(data)
    monkeypatch.setattr(packed, "CHECK_AT_OPEN_BYTES", 0)
    ds = packed.PackedDataset(data)  # opens: too large to read in full at the start
    ds.batch([0, 1, 2])
    with pytest.raises(ValueError, match=r"depth_z.npy: view 4 holds inf, expected finite targets"):
        ds.batch([3, 4])


# -------------------------------------------------------------------------------------- Ctrl-C, umask
def test_ctrl_c_is_one_line_and_exit_130_without_a_half_written_output(capsys, tmp_path, monkeypatch):
    from mtlrobust.analysis import aggregate

    good = _eval_csv(tmp_path / "in.csv")

    def interrupted(path, df, **kw):
        with F.atomic_path(path) as tmp:
            tmp.write_text("half")
            raise KeyboardInterrupt

    monkeypatch.setattr(aggregate, "write_frame", interrupted)
    rc, err = _run(capsys, "aggregate", "--inputs", good, "--out", tmp_path / "v.csv")
    assert (rc, err) == (130, ["mtlrobust aggregate: interrupted"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.csv"]


def test_sigint_during_synthesize_leaves_nothing(tmp_path):
    out = tmp_path / "raw"
    argv = [
        sys.executable,
        "-m",
        "mtlrobust",
        "synthesize",
        "--out",
        out,
        "--buildings",
        "40",
        "--views",
        "4",
    ]
    proc = subprocess.Popen(
        list(map(str, argv)), stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True
    )
    deadline = time.monotonic() + 60
    while not list(tmp_path.glob(".raw.tmp-*/*")) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert [line for line in err.splitlines() if line.strip()] == ["mtlrobust synthesize: interrupted"]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002])
def test_data_stage_folders_honour_the_umask(synthetic_raw, tmp_path, mask):
    from mtlrobust.data.synthetic import synthesize

    old = os.umask(mask)
    try:
        raw = synthesize(tmp_path / "raw", 1, 1, 1, 16, progress=False)
        (split,) = packed.prepare(synthetic_raw, tmp_path / "packed", "s", 32, ["val"], progress=False)
    finally:
        os.umask(old)
    for folder in (raw, split):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o777 & ~mask, folder


# ------------------------------------------------------------------------------------------- probe
@dataclass
class Ctx:
    """One probe case's folder and the module's shared (read-only) data."""

    tmp: Path
    root: Path  # packed train/ val/ (seg, depth_z)
    ckpt: Path

    def file(self, name: str, content: bytes | str = b"") -> Path:
        p = self.tmp / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(content.encode() if isinstance(content, str) else content)
        return p

    def link(self, name: str, target: Path, hard: bool = False) -> Path:
        """A symbolic (or hard) link ``name`` to ``target``."""
        p = self.tmp / name
        os.link(target, p) if hard else p.symlink_to(target)
        return p

    def split(self, edit=None, name="data") -> Path:
        """A copy of the val split, changed by ``edit(folder)``."""
        d = shutil.copytree(self.root / "val", self.tmp / name)
        if edit:
            edit(d)
        return d

    def packed_root(self, edit=None) -> Path:
        """A copy of train/ and val/, the train split changed by ``edit(folder)``."""
        shutil.copytree(self.root, self.tmp / "root")
        if edit:
            edit(self.tmp / "root" / "train")
        return self.tmp / "root"

    def evals(self, edit=None, name="e.csv") -> Path:
        return _eval_csv(self.tmp / name, edit)


def _npy(name, change):
    def edit(d):
        np.save(d / name, change(np.load(d / name)))

    return edit


def _nan_depth(a):
    a = a.copy()
    a[1, 0, 2, 2] = np.nan
    return a


def _seg_40(a):
    a = a.copy()
    a[1, 0, 0] = 40
    return a


def _truncate(name):
    def edit(d):
        (d / name).write_bytes((d / name).read_bytes()[:200])

    return edit


def _write(name, content):
    def edit(d):
        (d / name).write_bytes(content)

    return edit


NON_UTF8 = b"\xff\xfe not text \x80"
# Broken splits (edit of a split folder, the file named in the error).
BAD_SPLITS = {
    "nan-depth": (_npy("depth_z.npy", _nan_depth), r"depth_z.npy: view 1 holds nan, expected finite targets"),
    "inf-depth": (
        _npy("depth_z.npy", lambda a: np.where(a > 0, np.inf, a)),
        r"depth_z.npy: view 0 holds inf",
    ),
    "seg-range": (_npy("seg.npy", _seg_40), r"seg.npy: view 1 holds 40, expected labels 0..17"),
    "complex-rgb": (_npy("rgb.npy", lambda a: a.astype(complex)), r"rgb.npy: complex128 .* expected uint8"),
    "float-rgb": (_npy("rgb.npy", lambda a: a / 255.0), r"rgb.npy: float64 .* expected uint8"),
    "rgb-3d": (_npy("rgb.npy", lambda a: a[:, 0]), r"rgb.npy: uint8 \[.*\] array, expected uint8"),
    "depth-fewer-rows": (
        _npy("depth_z.npy", lambda a: a[:1]),
        r"depth_z.npy: 1 rows, expected [26] \(as many as rgb.npy\)",
    ),
    "mask-fewer-rows": (_npy("seg.mask.npy", lambda a: a[:1]), r"seg.mask.npy: 1 rows, expected [26]"),
    "depth-float64": (_npy("depth_z.npy", lambda a: a.astype(np.float64)), r"depth_z.npy: float64"),
    "depth-channels": (_npy("depth_z.npy", lambda a: np.repeat(a, 2, 1)), r"depth_z.npy: float32 \[2, 2,"),
    "truncated-rgb": (_truncate("rgb.npy"), r"rgb.npy: truncated or corrupt .npy \(expected \d+ bytes"),
    "truncated-depth": (_truncate("depth_z.npy"), r"depth_z.npy: truncated or corrupt .npy"),
    "text-rgb": (_write("rgb.npy", b"not an array"), r"rgb.npy: not a .npy array"),
    "empty-rgb": (_write("rgb.npy", b""), r"rgb.npy: not a .npy array"),
    "no-rgb": (lambda d: (d / "rgb.npy").unlink(), r"rgb.npy: No such file"),
    "empty-meta": (_write("meta.json", b""), r"meta.json: empty file"),
    "invalid-meta": (_write("meta.json", b"{tasks"), r"meta.json: not valid JSON"),
    "non-utf8-meta": (_write("meta.json", NON_UTF8), r"meta.json: not UTF-8 text \(byte 0xff at offset 0\)"),
    "list-meta": (_write("meta.json", b"[1]"), r"meta.json: expected a JSON object with keys"),
    "meta-resolution": (
        _write("meta.json", b'{"tasks": ["seg", "depth_z"], "resolution": "32"}'),
        r"meta.json: 'resolution' must be an integer",
    ),
    "meta-tasks": (_write("meta.json", b'{"tasks": ["sx"], "resolution": 32}'), r"meta.json: 'tasks' must"),
    "no-meta": (lambda d: (d / "meta.json").unlink(), r"meta.json not found"),
    "non-utf8-views": (_write("views.csv", NON_UTF8), r"views.csv: not UTF-8 text"),
    "views-header": (_write("views.csv", b"a,b\n"), r"views.csv: expected the header building,point,view"),
    "views-rows": (_write("views.csv", b"building,point,view\nb,0,0\n"), r"views.csv has 1 rows, rgb.npy 2"),
    "views-point": (_write("views.csv", b"building,point,view\nb,x,0\nb,1,0\n"), r"views.csv:2: expected"),
}


def _steps_csv(path: Path) -> Path:
    """A complete steps CSV (steptrace's format): 2 samples, 2 steps, attacked and measured seg."""
    from mtlrobust import steptrace

    rows = [
        ["m", "2", "pgd", "pgd", "seg", str(i), "seg", str(t), "1.0", "0.5"]
        for i in range(2)
        for t in range(3)
    ]
    steptrace.write_csv(rows, path)
    return path


def _cases():  # noqa: C901 (one table of cases, grouped by stage)
    """(id, stage, build) with build(ctx) -> (argv, regex the error line must match)."""
    cases = []

    def case(id_, stage):
        def add(build):
            cases.append((f"{stage}:{id_}", stage, build))
            return build

        return add

    # ---------------------------------------------------------------------------------- synthesize
    for flag, value, match in [
        ("--points", "0", r"points, views >= 1"),
        ("--views", "0", r"points, views >= 1"),
        ("--buildings", "0", r"buildings"),
        ("--resolution", "4", r"resolution >= 8"),
        ("--resolution", "x", r"argument --resolution: invalid int value: 'x'"),
        ("--seed", "1.5", r"argument --seed: invalid int"),
        ("--layout", "flat", r"argument --layout"),
        ("--compress-level", "z", r"argument --compress-level"),
        ("--bogus", "1", r"unrecognized arguments: --bogus"),
    ]:
        case(f"{flag}={value}", "synthesize")(
            lambda c, f=flag, v=value, m=match: (["--out", c.tmp / "s", f, v], m)
        )
    case("out-not-empty", "synthesize")(
        lambda c: (["--out", c.file("full/x").parent], r"full exists and is not empty")
    )
    case("out-is-a-file", "synthesize")(lambda c: (["--out", c.file("f")], r"/f: Not a directory"))
    case("no-out", "synthesize")(lambda c: ([], r"the following arguments are required: --out"))

    # ------------------------------------------------------------------------------------ download
    def dl(c, *extra, who=("--buildings", "allensville"), dry=True):
        """A download command line (a dry run unless ``dry=False``: each case fails before any request)."""
        argv = ["--dest", c.tmp / "raw", *who, "--domains", "rgb", "--agree-licence", *extra]
        return argv + ["--dry-run"] * dry

    for value in ("nan", "inf", "-inf", "0", "-1", "1e-400"):
        case(f"timeout={value}", "download")(
            lambda c, v=value: (
                dl(c, f"--timeout={v}"),
                r"--timeout: expected a finite number of seconds > 0",
            )
        )
    case("timeout=x", "download")(lambda c: (dl(c, "--timeout", "x"), r"argument --timeout: invalid float"))
    case("no-licence", "download")(
        lambda c: ([a for a in dl(c) if a != "--agree-licence"], r"--agree-licence not given")
    )
    case("connections=0", "download")(lambda c: (dl(c, "--connections", "0"), r"--connections must be >= 1"))
    case("retries=-1", "download")(lambda c: (dl(c, "--retries", "-1"), r"--retries >= 0"))
    case("bad-building", "download")(lambda c: (dl(c, who=("--buildings", "../x")), r"\.\./x"))
    case("bad-domain", "download")(
        lambda c: (
            ["--dest", c.tmp / "raw", "--buildings", "a", "--domains", "rgbz", "--agree-licence"],
            r"rgbz",
        )
    )
    case("bad-tasks", "download")(
        lambda c: (["--dest", c.tmp / "raw", "--buildings", "a", "--tasks", "q", "--agree-licence"], r"'q'")
    )
    case("url-field", "download")(lambda c: (dl(c, "--url-template", "http://x/{bad}"), r"\{bad\}|bad"))
    case("split-csv-missing", "download")(
        lambda c: (dl(c, who=("--split-csv", c.tmp / "no.csv")), r"no.csv: No such file")
    )
    case("split-csv-non-utf8", "download")(
        lambda c: (dl(c, who=("--split-csv", c.file("s.csv", NON_UTF8))), r"s.csv: not UTF-8 text")
    )
    case("split-csv-empty", "download")(
        lambda c: (dl(c, who=("--split-csv", c.file("s.csv"))), r"s.csv: expected header id,train,val,test")
    )
    case("md5-non-utf8", "download")(
        lambda c: (dl(c, "--md5", c.file("md5.txt", NON_UTF8), dry=False), r"md5.txt: not UTF-8 text")
    )
    case("md5-malformed", "download")(
        lambda c: (
            dl(c, "--md5", c.file("md5.txt", "zz x.tar\n"), dry=False),
            r"md5.txt:1: expected '<md5> <filename>'",
        )
    )
    case("archive-dir=dest", "download")(
        lambda c: (dl(c, "--archive-dir", c.tmp / "raw"), r"--dest and --archive-dir both name .*raw")
    )
    case("dest=split-csv", "download")(
        lambda c: (
            [
                "--dest",
                c.file("s.csv", "id,train,val,test\n"),
                "--split-csv",
                c.tmp / "s.csv",
                "--domains",
                "rgb",
                "--agree-licence",
            ],
            r"--split-csv and --dest both name .*s.csv",
        )
    )

    # ------------------------------------------------------------------------------------- prepare
    def prep(c, *extra, raw=None):
        raw = raw or c.tmp / "noraw"
        return ["--raw", raw, "--out", c.tmp / "p", "--tasks", "sd", "--resolution", "32", *extra]

    case("raw-missing", "prepare")(lambda c: (prep(c), r"noraw.*not found"))
    case("resolution=x", "prepare")(lambda c: (prep(c)[:-1] + ["x"], r"argument --resolution"))
    case("tasks=q", "prepare")(lambda c: (prep(c)[:5] + ["q", "--resolution", "32"], r"unknown task 'q'"))
    case("split=x", "prepare")(lambda c: (prep(c, "--split", "x"), r"argument --split: invalid choice"))
    case("csv-and-threshold", "prepare")(
        lambda c: (prep(c, "--split-csv", "a", "--threshold", "3"), r"not allowed with argument")
    )
    case("threshold=x", "prepare")(lambda c: (prep(c, "--threshold", "x"), r"argument --threshold"))
    case("split-csv-missing", "prepare")(
        lambda c: (prep(c, "--split-csv", c.tmp / "no.csv", raw=c.tmp), r"split CSV .*no.csv not found")
    )
    case("split-csv-non-utf8", "prepare")(
        lambda c: (prep(c, "--split-csv", c.file("s.csv", NON_UTF8), raw=c.tmp), r"s.csv: not UTF-8 text")
    )
    case("split-csv-empty", "prepare")(
        lambda c: (prep(c, "--split-csv", c.file("s.csv"), raw=c.tmp), r"s.csv: expected header")
    )
    case("split-csv-header", "prepare")(
        lambda c: (prep(c, "--split-csv", c.file("s.csv", "a,b\n"), raw=c.tmp), r"s.csv: expected header")
    )
    case("split-csv-row", "prepare")(
        lambda c: (
            prep(c, "--split-csv", c.file("s.csv", "id,train,val,test\nb,1,x,0\n"), raw=c.tmp),
            r"s.csv, line 2: expected",
        )
    )
    case("out=raw", "prepare")(
        lambda c: (
            ["--raw", c.tmp, "--out", c.tmp, "--tasks", "s", "--resolution", "32"],
            r"--raw and --out both name",
        )
    )
    case("out=split-csv", "prepare")(
        lambda c: (
            [
                "--raw",
                c.tmp,
                "--out",
                c.file("s.csv"),
                "--split-csv",
                c.tmp / "s.csv",
                "--tasks",
                "s",
                "--resolution",
                "32",
            ],
            r"--split-csv and --out both name .*s.csv",
        )
    )

    # --------------------------------------------------------------------------------------- train
    def tr(c, *extra, data=None):
        out = ["--out", c.tmp / "m" / "epoch1.pt"] if "--out" not in extra else []
        return [
            "--data",
            data or c.root,
            "--arch",
            "xception",
            "--tasks",
            "sd",
            "--epochs",
            "1",
            *out,
            *extra,
        ]

    from test_cli_errors import TRAIN_BAD

    for extra, match in TRAIN_BAD:
        case(" ".join(extra), "train")(lambda c, e=extra, m=match: (tr(c, *e), m))
    case("out=log", "train")(
        lambda c: (
            tr(c, "--out", c.tmp / "o.pt", "--log", c.tmp / "o.pt"),
            r"--out and --log both name .*o.pt",
        )
    )
    case("out=default-log", "train")(lambda c: (tr(c, "--out", c.tmp / "o.csv"), r"--log \(default: .*o.csv"))
    case("log-symlink-to-out", "train")(
        lambda c: (
            tr(c, "--out", c.file("o.pt", "x"), "--log", c.link("l.csv", c.tmp / "o.pt")),
            r"--out \S*o.pt and --log \S*l.csv are the same file",
        )
    )
    case("log-hardlink-to-out", "train")(
        lambda c: (
            tr(c, "--out", c.file("o.pt", "x"), "--log", c.link("h.csv", c.tmp / "o.pt", hard=True)),
            r"--out .*o.pt and --log .*h.csv are the same file",
        )
    )
    case("out=resume-from", "train")(
        lambda c: (
            tr(c, "--out", c.file("e.pt", "x"), "--resume-from", c.tmp / "e.pt"),
            r"--resume-from and --out both name .*e.pt",
        )
    )
    case("log=resume-log", "train")(
        lambda c: (
            tr(c, "--resume-from", c.file("m/epoch0.pt", "x"), "--log", c.file("m/epoch0.csv", "x")),
            r"the .csv read next to --resume-from and --log both name .*epoch0.csv",
        )
    )
    case("log=out.resume.pt", "train")(
        lambda c: (
            tr(c, "--out", c.tmp / "e.pt", "--log", c.tmp / "e.resume.pt"),
            r"--log and the .resume.pt written next to --out both name .*e.resume.pt",
        )
    )
    case("out=pretrained", "train")(
        lambda c: (
            tr(c, "--out", c.file("w.pt", "x"), "--pretrained", c.tmp / "w.pt"),
            r"--pretrained and --out both name",
        )
    )
    for key in (
        "nan-depth",
        "seg-range",
        "complex-rgb",
        "depth-fewer-rows",
        "truncated-rgb",
        "empty-meta",
        "non-utf8-meta",
        "non-utf8-views",
    ):
        case(f"data:{key}", "train")(
            lambda c, k=key: (tr(c, data=c.packed_root(BAD_SPLITS[k][0])), BAD_SPLITS[k][1])
        )

    # ------------------------------------------------------------------------------------ evaluate
    def ev(c, *extra, data=None, ckpt=None, spec=PGD, out=True):
        argv = ["--checkpoint", ckpt or c.ckpt, "--data", data or c.root / "val", "--attack-json", spec]
        return argv + [
            "--attacked",
            "sd",
            "--device",
            "cpu",
            *(["--out", c.tmp / "e.csv"] if out else []),
            *extra,
        ]

    for key, (edit, match) in BAD_SPLITS.items():
        case(f"data:{key}", "evaluate")(lambda c, e=edit, m=match: (ev(c, data=c.split(e)), m))
    case("out=steps-out", "evaluate")(
        lambda c: (ev(c, "--steps-out", c.tmp / "e.csv"), r"--out and --steps-out both name .*e.csv")
    )
    case("steps-out-symlink", "evaluate")(
        lambda c: (
            ev(c, "--steps-out", c.link("s.csv", c.tmp / "e.csv")),
            r"--out \S*e.csv and --steps-out \S*s.csv are the same file",
        )
    )
    case("out=checkpoint", "evaluate")(
        lambda c: (
            ev(c, "--out", shutil.copy(c.ckpt, c.tmp / "c.pt"), ckpt=c.tmp / "c.pt", out=False),
            r"--checkpoint and --out both name .*c.pt",
        )
    )
    case("steps-out=checkpoint", "evaluate")(
        lambda c: (
            ev(c, "--steps-out", shutil.copy(c.ckpt, c.tmp / "c.pt"), ckpt=c.tmp / "c.pt"),
            r"--checkpoint and --steps-out both name",
        )
    )
    case("out=data", "evaluate")(lambda c: (ev(c, "--out", c.root / "val", out=False), r"--data and --out"))
    for spec, match in [
        ("{", r"--attack-json: not valid JSON"),
        ("[1]", r"--attack-json: expected a JSON object"),
        ('{"method": "pgd"}', r"--attack-json lacks key"),
        ("", r"--attack-json"),
        (json.dumps({**json.loads(PGD), "eps": 8}), r"eps"),
        (json.dumps({**json.loads(PGD), "eps": "nan"}), r"eps"),
        (json.dumps({**json.loads(PGD), "method": "zzz"}), r"zzz"),
        (json.dumps({**json.loads(PGD), "steps": -1}), r"steps"),
    ]:
        case(f"spec:{spec[:40]}", "evaluate")(lambda c, s=spec, m=match: (ev(c, spec=s), m))
    for extra, match in [
        (["--attacked", "n"], r"--attacked 'n'"),
        (["--attacked", "q"], r"--attacked 'q'"),
        (["--batch-size", "0"], r"--batch-size must be >= 1"),
        (["--limit", "0"], r"--limit must be >= 1"),
        (["--batch-size", "x"], r"argument --batch-size"),
        (["--device", "tpu"], r"argument --device"),
        (["--loss-reduction", "x"], r"argument --loss-reduction"),
        (["--seed", "x"], r"argument --seed"),
    ]:
        case(" ".join(extra), "evaluate")(lambda c, e=extra, m=match: (ev(c, *e), m))
    case("checkpoint-missing", "evaluate")(lambda c: (ev(c, ckpt=c.tmp / "no.pt"), r"no.pt does not exist"))
    case("checkpoint-empty", "evaluate")(lambda c: (ev(c, ckpt=c.file("c.pt")), r"c.pt"))
    case("checkpoint-text", "evaluate")(lambda c: (ev(c, ckpt=c.file("c.pt", NON_UTF8)), r"c.pt"))
    case("checkpoint-cut", "evaluate")(
        lambda c: (ev(c, ckpt=c.file("c.pt", c.ckpt.read_bytes()[:999])), r"c.pt is corrupt or unreadable")
    )

    # ----------------------------------------------------------------------------------- aggregate
    def ag(c, *inputs, out=None):
        return ["--inputs", *inputs, "--out", out or c.tmp / "v.csv"]

    case("out=input", "aggregate")(
        lambda c: (ag(c, c.evals(), out=c.tmp / "e.csv"), r"--inputs and --out both name")
    )
    case("out=input-symlink", "aggregate")(
        lambda c: (
            ag(c, c.evals(), out=c.link("l.csv", c.tmp / "e.csv")),
            r"--inputs \S*e.csv and --out \S*l.csv are the same",
        )
    )
    case("out=input-hardlink", "aggregate")(
        lambda c: (ag(c, c.evals(), out=c.link("h.csv", c.tmp / "e.csv", hard=True)), r"are the same file")
    )
    case("out=listed-input", "aggregate")(
        lambda c: (
            ["--inputs-from", c.file("list.txt", f"{c.evals()}\n"), "--out", c.tmp / "e.csv"],
            r"a file listed in --inputs-from and --out both name .*e.csv",
        )
    )
    case("out=inputs-from", "aggregate")(
        lambda c: (
            ["--inputs-from", c.file("list.txt", "x.csv\n"), "--out", c.tmp / "list.txt"],
            r"--inputs-from and --out both name .*list.txt",
        )
    )
    for column in ("clean_loss", "adv_loss", "clean_error", "adv_error"):
        for value in ("inf", "-inf", "nan", "-0.25"):
            case(f"{column}={value}", "aggregate")(
                lambda c, k=column, v=value: (
                    ag(c, c.evals(_set(3, k, v))),
                    rf"e.csv: line 5, column {k} = {float(v)!r}: expected a finite",
                )
            )
    case("non-utf8-csv", "aggregate")(lambda c: (ag(c, c.file("e.csv", NON_UTF8)), r"e.csv: not UTF-8 text"))
    case("empty-csv", "aggregate")(lambda c: (ag(c, c.file("e.csv")), r"e.csv: empty file"))
    case("header-only", "aggregate")(
        lambda c: (ag(c, c.file("e.csv", "model_id\n")), r"e.csv: .*(missing column|incomplete)")
    )
    case("non-utf8-list", "aggregate")(
        lambda c: (
            ["--inputs-from", c.file("l.txt", NON_UTF8), "--out", c.tmp / "v.csv"],
            r"--inputs-from .*l.txt: not UTF-8 text",
        )
    )
    case("missing-list", "aggregate")(
        lambda c: (["--inputs-from", c.tmp / "l.txt", "--out", c.tmp / "v.csv"], r"--inputs-from .*l.txt")
    )
    case("missing-input", "aggregate")(lambda c: (ag(c, c.tmp / "no.csv"), r"no.csv: cannot read"))
    case("no-input", "aggregate")(lambda c: (["--out", c.tmp / "v.csv"], r"no evaluation CSV given"))
    case("out-folder", "aggregate")(lambda c: (ag(c, c.evals(), out=c.tmp), r"is a folder"))
    case("epoch-text", "aggregate")(lambda c: (ag(c, c.evals(_set(0, "epoch", "x"))), r"e.csv: .*'epoch'"))
    case("duplicate", "aggregate")(
        lambda c: (ag(c, c.evals(), c.evals(name="f.csv")), r"appears in several inputs")
    )
    case("cut", "aggregate")(
        lambda c: (
            ag(c, c.file("c.csv", "".join(c.evals().read_text().splitlines(True)[:4]))),
            r"c.csv: incomplete evaluation CSV",
        )
    )

    # -------------------------------------------------------------------------- tables and figures
    for stage, derived in (("tables", ".md"), ("figures", ".pdf")):
        ext = ".csv" if stage == "tables" else ".png"
        layout = json.dumps({"layout": "grid" if stage == "tables" else "bars"})  # its inputs are read

        def tb(c, *extra, spec=layout, out=None, inputs=None, ext=ext):
            return [
                "--spec",
                spec,
                "--inputs",
                *(inputs or [c.evals()]),
                "--out",
                out or c.tmp / f"t{ext}",
                *extra,
            ]

        case("out=input", stage)(
            lambda c, tb=tb: (tb(c, out=c.evals()), r"--inputs and --out both name .*e.csv")
        )
        case(f"out=*{derived}", stage)(
            lambda c, tb=tb, d=derived: (
                tb(c, out=c.tmp / f"t{d}"),
                rf"--out and the \{d} written next to --out",
            )
        )
        case("out=spec", stage)(
            lambda c, tb=tb: (
                tb(c, spec=str(c.file("s.json", "{}")), out=c.tmp / "s.json"),
                r"--spec and --out both name .*s.json",
            )
        )
        case("spec-missing", stage)(
            lambda c, tb=tb: (tb(c, spec=str(c.tmp / "s.json")), r"--spec .*s.json: No such")
        )
        case("spec-empty", stage)(
            lambda c, tb=tb: (tb(c, spec=str(c.file("s.json"))), r"--spec .*s.json: empty file")
        )
        case("spec-non-utf8", stage)(
            lambda c, tb=tb: (tb(c, spec=str(c.file("s.json", NON_UTF8))), r"--spec .*s.json: not UTF-8 text")
        )
        case("spec-invalid", stage)(lambda c, tb=tb: (tb(c, spec="{x"), r"--spec: not valid JSON"))
        case("spec-list", stage)(lambda c, tb=tb: (tb(c, spec="[]"), r"--spec: expected a JSON object"))
        case("input-non-utf8", stage)(
            lambda c, tb=tb: (tb(c, inputs=[c.file("e.csv", NON_UTF8)]), r"e.csv: not UTF-8 text")
        )
        case("input-inf", stage)(
            lambda c, tb=tb: (
                tb(c, inputs=[c.evals(_set(0, "adv_error", "inf"))]),
                r"e.csv: line 2, column adv_error",
            )
        )
        case("input-negative", stage)(
            lambda c, tb=tb: (
                tb(c, inputs=[c.evals(_set(1, "clean_error", "-1"))]),
                r"e.csv: line 3, column clean",
            )
        )
        case("input-missing", stage)(
            lambda c, tb=tb: (tb(c, inputs=[c.tmp / "no.csv"]), r"no.csv: cannot read")
        )
    steps_spec = json.dumps({"layout": "steps", "attacks": ["pgd"], "steps": [2]})
    for stage in ("tables", "figures"):
        case("steps-spec-no-marks", stage)(
            lambda c, s=stage: (
                [
                    "--spec",
                    steps_spec,
                    "--inputs",
                    _steps_csv(c.tmp / "pgd.steps.csv"),
                    "--out",
                    c.tmp / "f.png",
                ],
                r"--spec \{.*: missing key 'marks'",
            )
        )
    case("steps-csv-non-utf8", "figures")(
        lambda c: (
            ["--spec", steps_spec, "--inputs", c.file("pgd.steps.csv", NON_UTF8), "--out", c.tmp / "f.png"],
            r"pgd.steps.csv: not UTF-8 text",
        )
    )
    case("out=cells", "tables")(
        lambda c: (
            ["--spec", "{}", "--inputs", c.evals(), "--out", c.tmp / "t.csv", "--cells", c.tmp / "t.csv"],
            r"--out and --cells both name .*t.csv",
        )
    )
    case("cells=out.md", "tables")(
        lambda c: (
            ["--spec", "{}", "--inputs", c.evals(), "--out", c.tmp / "t.csv", "--cells", c.tmp / "t.md"],
            r"the .md written next to --out and --cells both name .*t.md",
        )
    )
    case("cells=input", "tables")(
        lambda c: (
            ["--spec", "{}", "--inputs", c.evals(), "--out", c.tmp / "t.csv", "--cells", c.tmp / "e.csv"],
            r"--inputs and --cells both name .*e.csv",
        )
    )

    # -------------------------------------------------------------------------------------- theory
    def th(c, *extra, data=None, ckpt=None, eps="8/255", out=None):
        return [
            "--checkpoint",
            ckpt or c.ckpt,
            "--data",
            data or c.root / "val",
            "--norm",
            "linf",
            "--eps",
            eps,
            "--device",
            "cpu",
            "--out",
            out or c.tmp / "t.csv",
            *extra,
        ]

    for eps in ("8", "nan", "inf", "-1/255", "8/0", "x"):
        case(f"eps={eps}", "theory")(lambda c, e=eps: (th(c, eps=e), r"argument --eps: expected"))
    case("norm=l1", "theory")(lambda c: (th(c)[:4] + ["--norm", "l1"] + th(c)[6:], r"argument --norm"))
    case("orders=sx", "theory")(lambda c: (th(c, "--orders", "sx"), r"--orders 'sx'"))
    case("orders=n", "theory")(lambda c: (th(c, "--orders", "n"), r"--orders 'n'"))
    case("batch-size=0", "theory")(lambda c: (th(c, "--batch-size", "0"), r"--batch-size must be >= 1"))
    case("out=checkpoint", "theory")(
        lambda c: (
            th(c, ckpt=shutil.copy(c.ckpt, c.tmp / "c.pt"), out=c.tmp / "c.pt"),
            r"--checkpoint and --out both name .*c.pt",
        )
    )
    for key in ("nan-depth", "seg-range", "complex-rgb", "truncated-depth", "empty-meta", "mask-fewer-rows"):
        case(f"data:{key}", "theory")(
            lambda c, k=key: (th(c, data=c.split(BAD_SPLITS[k][0])), BAD_SPLITS[k][1])
        )
    case("checkpoint-missing", "theory")(lambda c: (th(c, ckpt=c.tmp / "no.pt"), r"no.pt"))

    # -------------------------------------------------------------------------------------- claims
    def cl(c, *extra, cells=None, out=None):
        return [
            "--cells",
            cells or c.file("cells.csv", "output,value,lo,hi,n\n"),
            "--out",
            out or c.tmp / "c.csv",
            *extra,
        ]

    case("out=cells", "claims")(lambda c: (cl(c, out=c.tmp / "cells.csv"), r"--cells and --out both name"))
    case("out=*.md", "claims")(
        lambda c: (cl(c, out=c.tmp / "c.md"), r"--out and the .md written next to --out")
    )
    case("cells=out.md", "claims")(
        lambda c: (
            cl(c, cells=c.file("c.md", "output,value,lo,hi,n\n")),
            r"--cells and the .md written next to",
        )
    )
    case("cells-missing", "claims")(lambda c: (cl(c, cells=c.tmp / "no.csv"), r"no.csv"))
    case("cells-non-utf8", "claims")(lambda c: (cl(c, cells=c.file("x.csv", NON_UTF8)), r"x.csv"))
    case("cells-empty", "claims")(lambda c: (cl(c, cells=c.file("x.csv")), r"x.csv"))
    case("cells-columns", "claims")(
        lambda c: (cl(c, cells=c.file("x.csv", "a,b\n1,2\n")), r"x.csv: not a cell")
    )
    for flag, value in [
        ("--reliable-share", "0"),
        ("--reliable-share", "x"),
        ("--min-correlation", "2"),
        ("--margin", "-1"),
        ("--dominance-share", "1.5"),
        ("--margin", "nan"),
    ]:
        case(f"{flag}={value}", "claims")(lambda c, f=flag, v=value: (cl(c, f, v), re.escape(f)))

    # ----------------------------------------------------------------------------------- recommend
    def rc_(c, *extra, spec="{}", out=None):
        return ["--spec", spec, "--inputs", c.evals(), "--out", out or c.tmp / "r.csv", *extra]

    case("out=input", "recommend")(lambda c: (rc_(c, out=c.tmp / "e.csv"), r"--inputs and --out both name"))
    case("out=*.md", "recommend")(
        lambda c: (rc_(c, out=c.tmp / "r.md"), r"--out and the .md written next to")
    )
    case("out=listed", "recommend")(
        lambda c: (
            rc_(c, "--inputs-from", c.file("l.txt", f"{c.tmp / 'r.csv'}\n")),
            r"a file listed in --inputs-from and --out both name .*r.csv",
        )
    )
    case("out=configfile", "recommend")(
        lambda c: (
            ["--configfile", c.file("s.yaml", "a: 1\n"), "--out", c.tmp / "s.yaml"],
            r"--configfile and --out both name .*s.yaml",
        )
    )
    case("spec-missing", "recommend")(lambda c: (rc_(c, spec=str(c.tmp / "s.json")), r"--spec .*s.json"))
    case("spec-non-utf8", "recommend")(
        lambda c: (rc_(c, spec=str(c.file("s.json", NON_UTF8))), r"--spec .*s.json: not UTF-8")
    )
    case("spec-empty", "recommend")(lambda c: (rc_(c, spec=str(c.file("s.json"))), r"--spec .*s.json: empty"))
    case("spec-no-pairs", "recommend")(lambda c: (rc_(c), r"spec key pairs"))
    case("list-non-utf8", "recommend")(
        lambda c: (rc_(c, "--inputs-from", c.file("l.txt", NON_UTF8)), r"l.txt: not UTF-8")
    )

    # ---------------------------------------------------------------------------------------- plan
    case("configfile-missing", "plan")(lambda c: (["--configfile", c.tmp / "s.yaml"], r"s.yaml"))
    case("configfile-non-utf8", "plan")(
        lambda c: (["--configfile", c.file("s.yaml", b"a: \xff\n")], r"s.yaml")
    )
    case("configfile-empty", "plan")(lambda c: (["--configfile", c.file("s.yaml")], r"s.yaml|study"))
    case("configfile-syntax", "plan")(lambda c: (["--configfile", c.file("s.yaml", "a: [\n")], r"s.yaml"))
    case("configfile-list", "plan")(lambda c: (["--configfile", c.file("s.yaml", "- 1\n")], r"s.yaml|study"))
    case("epoch-images=x", "plan")(
        lambda c: (["--configfile", CONFIG, "--epoch-images", "x"], r"argument --epoch-images")
    )
    case("per-epoch-seconds", "plan")(
        lambda c: (["--configfile", CONFIG, "--per-epoch-seconds", "{x"], r"--per-epoch-seconds")
    )
    case("no-configfile", "plan")(lambda c: ([], r"required: --configfile"))
    case("per-epoch-seconds-non-utf8", "plan")(
        lambda c: (
            ["--configfile", CONFIG, "--per-epoch-seconds", c.file("s.json", NON_UTF8)],
            r"s.json: not UTF-8 text",
        )
    )
    return cases


CASES = _cases()


@pytest.mark.parametrize("stage, build", [(s, b) for _, s, b in CASES], ids=[i for i, _, _ in CASES])
def test_probe_bad_input_is_one_line_naming_it(capsys, fake_root, checkpoint, tmp_path, stage, build):
    """Exit 2, one error line naming the flag or file, no traceback, and every file as it was."""
    work = tmp_path / "work"
    work.mkdir()
    argv, match = build(Ctx(work, fake_root, checkpoint))
    before = _snapshot(work)
    rc, err = _run(capsys, stage, *argv)
    assert rc == 2, err
    assert "Traceback" not in "\n".join(err), err
    errors = [line for line in err if f"mtlrobust {stage}: error: " in line]
    assert len(errors) == 1 and err[-1] == errors[0], err
    if not any(line.startswith("usage:") for line in err):  # argparse's come after its usage lines
        assert len(err) == 1, err
    assert re.search(match, err[-1]), err[-1]
    assert _snapshot(work) == before  # nothing written, nothing destroyed
