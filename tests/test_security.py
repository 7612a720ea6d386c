"""Shell safety (issue 12, part 1): every study value that reaches a job's command line is either rejected
before any job, with the config key named, or reaches the job as exactly one argv word.

Checked three ways: on the plan's command strings (every hostile value x every key), on the commands a
Snakemake dry run prints, and on a real run of the data rules from a raw folder whose path holds a space and
shell syntax, after which no file ``pwned`` may exist.
"""

from __future__ import annotations

import copy
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from snakemake_interface_common.exceptions import WorkflowError

from mtlrobust import commands, study

REPO = Path(__file__).resolve().parents[1]
TEST_STUDY = yaml.safe_load((REPO / "studies" / "test.yaml").read_text())
NAME = TEST_STUDY["dataset"]["name"]
HOSTILE = [
    "alder; touch pwned #",
    "$(touch pwned)",
    "`touch pwned`",
    "'",
    '"',
    'a b\'"; touch pwned; echo "c',
    "$HOME {x} * ~",
]
# The dry runs (~4 CPU-s each) take the example and one value holding every hostile pattern above.
DRY_RUN_VALUES = [HOSTILE[0], "a b'c\"d; touch pwned; `touch pwned` $(touch pwned) $HOME {x} * ~ #"]

# Every study key whose value reaches a command line, and how a value is put there.
SETTERS = {
    "dataset.name": lambda c, v: c["dataset"].update(name=v),
    "dataset.buildings": lambda c, v: c["dataset"].update(buildings=[v]),
    "dataset.split_csv": lambda c, v: c["dataset"].update(split_csv=v),
    "dataset.taskonomy.root": lambda c, v: c["dataset"]["taskonomy"].update(root=v),
    "dataset.taskonomy.buildings": lambda c, v: c["dataset"]["taskonomy"].update(buildings=[v]),
    "dataset.taskonomy.url_template": lambda c, v: c["dataset"]["taskonomy"].update(url_template=v),
    "dataset.taskonomy.md5": lambda c, v: c["dataset"]["taskonomy"].update(md5=v),
    "attacks": lambda c, v: c["attacks"].update({v: {"method": "none"}}),  # the name: an evaluation file name
    "attacks.pgd": lambda c, v: c["attacks"]["pgd"].update(random_start=v),  # a string inside --attack-json
    "attacks.wgd": lambda c, v: c["attacks"]["wgd"].update(options={"variant": v}),
}
# Names (path components, file names) are rejected; paths and URLs pass as one word (the flag they follow).
NAMES = {"dataset.name", "dataset.buildings", "dataset.taskonomy.buildings", "attacks", "attacks.pgd",
         "attacks.wgd"}  # fmt: skip
FLAGS = {"dataset.split_csv": "--split-csv", "dataset.taskonomy.url_template": "--url-template",
         "dataset.taskonomy.md5": "--md5"}  # fmt: skip


def base(source: str = "taskonomy", **dataset) -> dict:
    """The test study on Taskonomy data (download when no root), split by the buildings' CSV."""
    config = copy.deepcopy(TEST_STUDY)
    config["dataset"].update(source=source, split_point_threshold=None, split_point_val=None, **dataset)
    config["dataset"].setdefault("taskonomy", {}).setdefault("agree_licence", True)
    return config


def outcome(config: dict):
    """The plan, or the error message of a rejected study."""
    try:
        return study.build(study.validated(config))
    except (study.StudyError, WorkflowError) as e:
        return str(e)


def names_key(message: str, key: str) -> bool:
    schema_path = "On instance" + "".join(f"['{k}']" for k in key.split("."))
    return f"config key {key}" in message or schema_path in message


def accepted(key: str, value: str) -> bool:
    """Whether the checks let ``value`` through at ``key`` (a path key rejects braces in the root only)."""
    if key in NAMES:
        return False
    if key == "dataset.taskonomy.url_template":  # a template's fields are only {building} and {domain}
        return "{" not in value
    return not (key == "dataset.taskonomy.root" and "{" in value)


def words_after(argv: list[str], flag: str) -> str:
    assert argv.count(flag) == 1, argv
    return argv[argv.index(flag) + 1]


@pytest.mark.parametrize("value", HOSTILE)
@pytest.mark.parametrize("key", sorted(SETTERS))
def test_hostile_value_is_rejected_naming_the_key_or_is_one_word(key, value):
    config = base()
    SETTERS[key](config, value)
    plan = outcome(config)
    if not accepted(key, value):
        assert isinstance(plan, str), f"{key}={value!r} was accepted"
        assert names_key(plan, key), plan
        return
    assert not isinstance(plan, str), plan
    argv = shlex.split(commands.download(plan.config, plan.tasks)) + shlex.split(
        commands.prepare(plan.config, plan.tasks)
    )
    if key in FLAGS:
        assert words_after(argv, FLAGS[key]) == value
    assert "touch" not in argv  # nothing of a value became a word of its own


def snakemake(workdir: Path, config: dict, *args: str) -> subprocess.CompletedProcess:
    """The repository's workflow on ``config`` (written to workdir/study.yaml) inside ``workdir``."""
    (workdir / "study.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    cmd = [sys.executable, "-m", "snakemake", *args, "--snakefile", str(REPO / "Snakefile"), "--cores", "1",
           "--directory", str(workdir), "--configfile", str(workdir / "study.yaml")]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600)


def dry_run(workdir: Path, config: dict) -> subprocess.CompletedProcess:
    """``snakemake -n -p`` of the packed test split (the data rules only)."""
    return snakemake(workdir, config, "-n", "-p", f"resources/{NAME}/packed/test/rgb.npy")


def printed_commands(proc: subprocess.CompletedProcess) -> dict[str, list[str]]:
    """mtlrobust subcommand -> its argv, from the shell commands a dry run prints."""
    out = {}
    for line in (proc.stdout + proc.stderr).splitlines():
        command = line.strip().removeprefix("Shell command: ")
        if command.startswith("python -m mtlrobust "):
            argv = shlex.split(command)
            out[argv[3]] = argv
    return out


@pytest.mark.slow
@pytest.mark.parametrize("value", DRY_RUN_VALUES)
def test_dry_run_prints_hostile_values_as_one_word(tmp_path, value):
    workdir = tmp_path / "work dir"
    workdir.mkdir()
    (workdir / value).write_text("id,train,val,test\n")  # a split CSV must exist (relative to the workdir)
    # download: the URL template (its own fields are braces too) and checksum list; prepare: the split CSV
    config = base(split_csv=value)
    url = "https://example.org/{building}_{domain}.tar"
    url += f"#{value}" if accepted("dataset.taskonomy.url_template", value) else ""
    config["dataset"]["taskonomy"].update(url_template=url, md5=value)
    proc = dry_run(workdir, config)
    assert proc.returncode == 0, proc.stderr[-3000:]
    cmds = printed_commands(proc)
    assert set(cmds) == {"download", "prepare"}, proc.stdout
    assert words_after(cmds["download"], "--url-template") == url
    assert words_after(cmds["download"], "--md5") == value
    assert words_after(cmds["prepare"], "--split-csv") == value
    # an existing raw folder whose path has a space (and the value, where a root may hold it)
    root = tmp_path / (f"raw {value}" if accepted("dataset.taskonomy.root", value) else "raw dir")
    root.mkdir()
    config = base(split_csv=value)
    config["dataset"]["taskonomy"]["root"] = str(root)
    cmds = printed_commands(proc := dry_run(workdir, config))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert set(cmds) == {"prepare"}, proc.stdout
    assert words_after(cmds["prepare"], "--raw") == str(root)
    assert words_after(cmds["prepare"], "--split-csv") == value
    for argv in cmds.values():
        assert "touch" not in argv
    assert not list(tmp_path.rglob("pwned*"))


@pytest.mark.slow
def test_data_rules_run_from_a_hostile_root_with_a_space(tmp_path):
    """Synthesize into a working folder with a space, then prepare from a raw root and split CSV whose names
    hold shell syntax: the arrays are written and no command ran."""
    workdir = tmp_path / "work dir"
    workdir.mkdir()
    synth = copy.deepcopy(TEST_STUDY)
    synth["dataset"].update(split_point_threshold=None, split_point_val=None)
    raw = f"resources/{NAME}/raw"
    proc = snakemake(workdir, synth, raw)
    assert proc.returncode == 0, proc.stderr[-3000:]

    hostile = "raw $(touch pwned) `touch pwned`; touch pwned #'\" x"
    root = tmp_path / hostile
    shutil.move(workdir / raw, root)
    split_csv = tmp_path / "split 'a\"; touch pwned #$(touch pwned).csv"
    shutil.copy(root / "train_val_test_split.csv", split_csv)
    config = base(split_csv=str(split_csv))
    config["dataset"]["taskonomy"]["root"] = str(root)
    packed = workdir / "resources" / NAME / "packed" / "test"
    proc = snakemake(workdir, config, f"resources/{NAME}/packed/test/rgb.npy")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (packed / "rgb.npy").stat().st_size > 0
    assert (packed / "seg.npy").is_file() and (packed / "depth_z.npy").is_file()
    for folder in (tmp_path, REPO, Path.cwd()):
        assert not list(folder.glob("pwned*")), folder
    assert not list(tmp_path.rglob("pwned*"))
