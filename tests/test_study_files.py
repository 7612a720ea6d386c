"""Study files as a careless or hostile user writes them (issues 19 and 20): each is refused when it loads,
before the schema or any job, with one line naming the file, the line and the key, by `mtlrobust plan`
(exit 2) and by `snakemake -n` alike; the schema ships inside the package; the download has a target without
wildcards and the Taskonomy licence is checked before any job."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from mtlrobust import cli, study

REPO = Path(__file__).resolve().parents[1]
TEST_STUDY = REPO / "studies" / "test.yaml"
BASE = TEST_STUDY.read_text()
PAPER = (REPO / "studies" / "paper.yaml").read_text()


def swap(old: str, new: str, text: str = BASE) -> tuple[str, int]:
    """``text`` with ``old`` replaced by ``new`` on the one line holding it, and that line's number."""
    lines = text.splitlines()
    (i,) = [i for i, line in enumerate(lines) if old in line]
    lines[i] = lines[i].replace(old, new)
    return "\n".join(lines) + "\n", i + 1


def added(section: str, line: str) -> tuple[str, int]:
    """test.yaml with ``line`` inserted after the line ``section:``, and its line number."""
    lines = BASE.splitlines()
    i = lines.index(f"{section}:") + 1
    return "\n".join([*lines[:i], line, *lines[i:]]) + "\n", i + 1


def laughs(levels: int = 9, mapping: bool = False) -> str:
    """A billion-laughs study: each level holds nine aliases of the one before (9**levels values)."""
    if mapping:
        rows = ["a0: &a0 {x: lol}"] + [
            f"a{i}: &a{i} {{" + ", ".join(f"k{j}: *a{i - 1}" for j in range(9)) + "}"
            for i in range(1, levels)
        ]
    else:
        rows = ['a0: &a0 ["lol", "lol"]'] + [
            f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, levels)
        ]
    return "\n".join(rows) + "\n"


# test.yaml without split_point_val, its line kept (as a comment) so that the line numbers stay
NO_VAL = swap("split_point_val: 8", "# split_point_val: 8")[0]


def below(text_line: tuple[str, int]) -> tuple[str, int]:
    """A swap whose new text spans two lines, naming the second."""
    return text_line[0], text_line[1] + 1


def key_line(key: str) -> int:
    return BASE.splitlines().index(f"{key}:") + 1


END = len(BASE.splitlines())  # lines appended to test.yaml start at END + 1
# (id, file content, line named or None, texts the one-line error must hold). Bytes are written as they are.
CASES = [
    # ---- the file itself: refused by the loader before the schema sees it
    ("larger-than-1-mib", BASE + ("# padding " + "x" * 90 + "\n") * 11000, None,
     ["larger than 1048576 bytes"]),
    ("one-mib-of-keys", "".join(f"k{i}: {i}\n" for i in range(120000)), None, ["larger than 1048576 bytes"]),
    ("half-a-mib-of-keys", "".join(f"k{i}: {i}\n" for i in range(40000)), 10000,
     ["more than 20000 values"]),
    ("billion-laughs-lists", laughs(), 2, ["YAML alias *a0", "not allowed"]),
    ("billion-laughs-mappings", laughs(mapping=True), 2, ["YAML alias *a0"]),
    ("alias-of-a-scalar", swap("  epochs: 2", "  epochs: &e 2")[0] + "x: *e\n", END + 1, ["YAML alias *e"]),
    ("merge-key-alias", BASE + "base: &b {epochs: 2}\nother:\n  <<: *b\n", END + 3, ["YAML alias *b"]),
    ("duplicate-top-key", BASE + "training:\n  epochs: 3\n", END + 1,
     ["duplicate key training", f"first at line {key_line('training')}"]),
    ("duplicate-nested-key", *below(swap("  epochs: 2", "  epochs: 2\n  epochs: 3")),
     ["duplicate key training.epochs", "first at line 20"]),
    ("duplicate-attack", *swap("  apgd: {method", "  pgd: {method"), ["duplicate key attacks.pgd"]),
    ("duplicate-flow-key", *swap("{buildings: 1, points: 10", "{buildings: 1, buildings: 10"),
     ["duplicate key dataset.synthetic.buildings"]),
    ("non-utf8-comment", b"# caf\xe9\n" + BASE.encode(), 1, ["byte 0xe9 at offset 5", "not UTF-8"]),
    ("non-utf8-value", BASE.encode().replace(b"name: synthetic_test", b"name: \xff"), 5,
     ["byte 0xff", "not UTF-8"]),
    ("utf16-file", BASE.encode("utf-16"), 1, ["byte 0xff at offset 0", "not UTF-8"]),
    ("latin1-value", ("dataset:\n  name: Zürich\n").encode("latin-1"), 2, ["byte 0xfc", "not UTF-8"]),
    ("unclosed-flow-list", swap("tasks: [s, d]", "tasks: [s, d")[0], 15,
     ["YAML syntax error", "flow sequence at line 14"]),
    ("unclosed-quote", swap("eps: 0.5,", "eps: '0.5,")[0], END + 1,
     ["YAML syntax error", f"quoted scalar at line {swap('eps: 0.5,', '')[1]}"]),
    ("bad-indentation", *swap("  batch_size: 8", "   batch_size: 8"), ["YAML syntax error"]),
    ("tab-indentation", *swap("  batch_size: 8", "\tbatch_size: 8"), ["YAML syntax error"]),
    ("mapping-in-a-value", *swap("  lr: 0.001", "  lr: 0.001: 2"), ["YAML syntax error"]),
    ("two-documents", BASE + "---\ntasks: [s]\n", None, ["YAML syntax error", "single document"]),
    ("top-level-list", "- dataset\n- tasks\n", None, ["expected a mapping of config keys", "got a list"]),
    ("top-level-string", "just words\n", None, ["expected a mapping of config keys", "got a str"]),
    ("nested-40-levels", "x: " + "[" * 40 + "]" * 40 + "\n", 1, ["nested deeper than 32 levels"]),
    ("control-character", BASE.replace("# Not meant", "# Not \x07meant"), 2, ["YAML syntax error"]),
    ("python-tag", *swap("  lr: 0.001", "  lr: !!python/object/apply:os.system [echo]"), ["YAML error"]),
    ("unknown-tag", *swap("  lr: 0.001", "  lr: !fast 0.001"), ["YAML error", "!fast"]),
    ("unhashable-key", BASE + "? [a, b]\n: 1\n", END + 1, ["YAML error", "unhashable key"]),
    # ---- integers given as floats (JSON Schema counts 4.0 as an integer) and values beyond their maximum
    ("eval-batch-size-float", *swap("  batch_size: 4", "  batch_size: 4.0"),
     ["evaluation.batch_size", "4.0 is not of type 'integer'"]),
    ("eval-batch-size-1e9", *swap("  batch_size: 4", "  batch_size: 1.0e+9"),
     ["evaluation.batch_size", "is not of type 'integer'"]),
    ("eval-batch-size-1e9-plain", *swap("  batch_size: 4", "  batch_size: 1e9"),
     ["evaluation.batch_size", "'1e9' is not of type 'integer'"]),
    ("eval-batch-size-huge", *swap("  batch_size: 4", "  batch_size: 1000000000"),
     ["evaluation.batch_size", "greater than the maximum of 4096"]),
    ("train-batch-size-float", *swap("  batch_size: 8", "  batch_size: 8.0"),
     ["training.batch_size", "integer"]),
    ("train-batch-size-huge", *swap("  batch_size: 8", "  batch_size: 100000"),
     ["training.batch_size", "maximum"]),
    ("epochs-float", *swap("  epochs: 2", "  epochs: 2.0"),
     ["training.epochs", "2.0 is not of type 'integer'"]),
    ("epochs-huge", *swap("  epochs: 2", "  epochs: 1000000"), ["training.epochs", "maximum of 10000"]),
    ("epochs-bool", *swap("  epochs: 2", "  epochs: true"),
     ["training.epochs", "True is not of type 'integer'"]),
    ("epochs-null", *swap("  epochs: 2", "  epochs: null"),
     ["training.epochs", "None is not of type 'integer'"]),
    ("epochs-string", *swap("  epochs: 2", "  epochs: two"), ["training.epochs", "'two' is not of type"]),
    ("epochs-zero", *swap("  epochs: 2", "  epochs: 0"), ["training.epochs", "less than the minimum of 1"]),
    ("milestone-float", *swap("milestones: [1, 2]", "milestones: [1.0, 2]"),
     ["training.milestones", "integer"]),
    ("limit-float", *swap("  limit: 4", "  limit: 4.5"), ["evaluation.limit", "integer"]),
    ("limit-huge", *swap("  limit: 4", "  limit: 100000000000"), ["evaluation.limit", "maximum"]),
    ("threads-huge", *added("evaluation", "  threads: 100000"), ["evaluation.threads", "maximum of 256"]),
    ("seed-float", *swap("seeds: [0]", "seeds: [0.0]"), ["seeds", "integer"]),
    ("seed-beyond-2-32", *swap("seeds: [0]", "seeds: [4294967296]"), ["seeds", "maximum of 4294967295"]),
    ("steps-float", *swap("pgd: {method: pgd, norm: linf, eps: 8/255, step_size: 2/255, steps: 2}",
                          "pgd: {method: pgd, norm: linf, eps: 8/255, step_size: 2/255, steps: 2.5}"),
     ["attacks.pgd.steps", "integer"]),
    ("steps-huge", *swap("eps: 16/255, step_size: 4/255, steps: 2",
                         "eps: 16/255, step_size: 4/255, steps: 10000000"),
     ["attacks.pgd_eps16.steps", "maximum of 10000"]),
    ("restarts-huge", *swap("apgd: {method: apgd, norm: linf, eps: 8/255, steps: 2}",
                            "apgd: {method: apgd, norm: linf, eps: 8/255, steps: 2, restarts: 5000}"),
     ["attacks.apgd.restarts", "maximum of 100"]),
    ("synthetic-points-huge", *swap("points: 10", "points: 1000000000"),
     ["dataset.synthetic.points", "maximum"]),
    ("synthetic-resolution-huge", *swap("resolution: 32, seed", "resolution: 65536, seed"),
     ["dataset.synthetic.resolution", "maximum of 1024"]),
    ("model-resolution-huge", *swap("  resolution: 32", "  resolution: 8192"),
     ["model.resolution", "maximum"]),
    ("max-orders-huge", *swap("figure1_orders: {}", "figure1_orders: {max_orders: 100000}"),
     ["study.figure1_orders.max_orders", "maximum of 720"]),
    ("table-sets-size-12", *swap("sizes: [2]", "sizes: [12]"), ["study.table_sets.sizes", "maximum of 11"]),
    ("val-limit-negative", *added("training", "  val_limit: -1"), ["training.val_limit", "minimum"]),
    ("threshold-float", *swap("split_point_threshold: 6", "split_point_threshold: 6.0"),
     ["dataset.split_point_threshold", "6.0 is not of type 'integer', 'null'"]),
    # ---- other schema mistakes: one line naming the key
    ("unknown-top-key", BASE + "trainig:\n  epochs: 3\n", END + 1, ["config key trainig: unknown key"]),
    ("unknown-nested-key", *added("training", "  epoch: 3"), ["config key training.epoch: unknown key"]),
    ("section-as-list", BASE.replace("evaluation:\n  split: test\n  limit: 4\n  batch_size: 4\n  device: cpu",
                                     "evaluation:\n  - split: test\n  - limit: 4"),
     key_line("evaluation"),
     ["evaluation", "not of type 'object'"]),
    ("tasks-as-string", *swap("tasks: [s, d]", "tasks: sd"),
     ["config key tasks", "'sd' is not of type 'array'"]),
    ("tasks-empty", *swap("tasks: [s, d]", "tasks: []"), ["config key tasks", "should be non-empty"]),
    ("unknown-task", *swap("tasks: [s, d]", "tasks: [s, x]"), ["config key tasks.1", "does not match"]),
    ("architecture-unknown", *swap("architectures: [resnet18, resnet50]", "architectures: [resnet18, vgg]"),
     ["config key architectures.1", "'vgg' is not one of"]),
    ("weighting-unknown", *swap("weightings: [uniform, paper]", "weightings: [uniform, equal]"),
     ["config key weightings.1"]),
    ("split-unknown", *swap("  split: test", "  split: holdout"), ["config key evaluation.split"]),
    ("source-unknown", *swap("source: synthetic", "source: imagenet"), ["config key dataset.source"]),
    ("lr-string", *swap("  lr: 0.001", "  lr: fast"), ["config key training.lr"]),
    ("lr-negative", *swap("  lr: 0.001", "  lr: -0.1"), ["config key training.lr"]),
    ("dataset-name-date", *swap("name: synthetic_test", "name: 2020-01-01"), ["config key dataset.name"]),
    ("dataset-name-int", *swap("name: synthetic_test", "name: 12"), ["config key dataset.name"]),
    ("attacks-as-list", re.sub(r"(?m)^  (\w+: \{method)", r"  - \1", BASE), key_line("attacks"),
     ["config key attacks"]),
    ("attack-without-method", *swap("apgd: {method: apgd, norm: linf,", "apgd: {norm: linf,"),
     ["config key attacks.apgd", "'method' is a required property"]),
    ("attack-unknown-norm", *swap("apgd: {method: apgd, norm: linf", "apgd: {method: apgd, norm: l3"),
     ["config key attacks.apgd.norm"]),
    ("seeds-empty", *swap("seeds: [0]", "seeds: []"), ["config key seeds"]),
    ("decoder-unknown", *swap("decoder: skip", "decoder: unet"), ["config key model.decoder"]),
    ("resolution-not-32", *swap("  resolution: 32", "  resolution: 48"),
     ["config key model.resolution", "multiple of 32"]),
    # ---- the plan's own checks (StudyError), located in the file
    ("main-not-in-tasks", *swap("table1: {mains: [s]", "table1: {mains: [n]"),
     ["config key study.table1.mains", "'n'"]),
    ("epoch-not-a-milestone", *swap("rq1_epochs: {epochs: [1, 2]}", "rq1_epochs: {epochs: [1, 3]}"),
     ["config key study.rq1_epochs.epochs", "epoch 3"]),
    ("unknown-attack-name", *swap("table2: {mains: [s], attacks: [apgd, wgd, wgd_paper]}",
                                  "table2: {mains: [s], attacks: [apgd, cw]}"),
     ["config key study.table2.attacks", "'cw'"]),
    ("eps-zero", *swap("eps: 0.5,", "eps: 0,"), ["config key attacks.pgd_l2.eps"]),
    ("eps-above-one", *swap("pgd: {method: pgd, norm: linf, eps: 8/255,", "pgd: {method: pgd, eps: 3,"),
     ["config key attacks.pgd.eps", "<= 1"]),
    ("l2-eps-not-budget-matched", *swap("l2_matched: pgd_l2_matched}", "l2_matched: pgd_l2}"),
     ["config key study.rq1_norm.attacks.l2_matched", "has eps 0.5", "is 1.7388"]),
    ("milestone-beyond-epochs", *swap("milestones: [1, 2]", "milestones: [1, 5]"),
     ["config key training.milestones", "beyond training.epochs=2"]),
    ("lr-milestone-at-epochs", *swap("lr_milestones: []", "lr_milestones: [2]"),
     ["config key training.lr_milestones", "never take effect"]),
    ("threshold-empties-held-out", *swap("split_point_threshold: 6", "split_point_threshold: 10"),
     ["config key dataset.split_point_threshold", "val and test empty"]),
    ("split-val-empties-test", *swap("split_point_val: 8", "split_point_val: 10"),
     ["config key dataset.split_point_val", "leaves test empty"]),
    ("split-val-below-threshold", *swap("split_point_val: 8", "split_point_val: 6"),
     ["config key dataset.split_point_val", "needs dataset.split_point_threshold below it"]),
    ("fgsm-with-steps", *swap("apgd: {method: apgd,", "apgd: {method: fgsm,"),
     ["config key attacks.apgd", "steps"]),
    ("orders-not-permutations", *swap("orders: [sd, ds]", "orders: [sd, s]"),
     ["config key study.figure1.orders"]),
    ("split-csv-missing", *below(swap("split_point_threshold: 6",
                                      "split_point_threshold: null\n  split_csv: no.csv", NO_VAL)),
     ["config key dataset.split_csv", "'no.csv' is not a file"]),
    ("split-csv-a-folder", *below(swap("split_point_threshold: 6",
                                       "split_point_threshold: null\n  split_csv: studies", NO_VAL)),
     ["config key dataset.split_csv", "'studies' is not a file"]),
    ("url-template-unknown-field", *below(swap("  source: synthetic",
                                               "  source: synthetic\n  taskonomy: {url_template: 'https://x/{bldg}.tar'}")),
     ["config key dataset.taskonomy.url_template", "unknown fields"]),
]  # fmt: skip


def write(tmp_path: Path, content) -> Path:
    path = tmp_path / "study.yaml"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    return path


def plan_error(path: Path, capsys) -> str:
    """The one line `mtlrobust plan` prints for a refused study (exit 2, nothing on stdout)."""
    code = cli.main(["plan", "--configfile", str(path)])
    out, err = capsys.readouterr()
    lines = err.splitlines()
    assert code == 2 and not out, (code, out, err)
    assert len(lines) == 1, err
    return lines[0]


@pytest.mark.parametrize("content, line, texts", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_study_file_is_one_line_naming_file_line_and_key(
    tmp_path, monkeypatch, capsys, content, line, texts
):
    monkeypatch.chdir(REPO)  # split_csv paths are relative to the working directory
    path = write(tmp_path, content)
    message = plan_error(path, capsys)
    where = f"mtlrobust plan: error: {path}:{line}:" if line else f"mtlrobust plan: error: {path}:"
    assert message.startswith(where), message
    for text in texts:
        assert text in message, message
    assert "Traceback" not in message


def test_probe_has_enough_distinct_cases():
    """The hardening issue's probe tried 72 study files; this one tries at least as many, each distinct."""
    assert len(CASES) >= 72 and len({c[0] for c in CASES}) == len(CASES)
    assert len({c[1] for c in CASES}) == len(CASES)


def test_every_probe_file_is_one_change_from_a_study_that_loads(monkeypatch):
    monkeypatch.chdir(REPO)
    assert study.load(TEST_STUDY).models


@pytest.mark.parametrize("content", [laughs(12), laughs(12, mapping=True), BASE + "#" * (8 << 20),
                                     "".join(f"k{i}: {i}\n" for i in range(70000))],
                         ids=["laughs-lists", "laughs-mappings", "8-mib", "70000-keys"])  # fmt: skip
def test_hostile_files_are_refused_in_well_under_a_second(tmp_path, content):
    path = write(tmp_path, content)
    start = time.perf_counter()
    with pytest.raises(study.StudyError):
        study.load(path)
    assert time.perf_counter() - start < 1.0


def test_missing_study_file_and_a_folder_are_one_line(tmp_path, capsys):
    missing = tmp_path / "nope.yaml"
    message = plan_error(missing, capsys)
    assert (
        message
        == f"mtlrobust plan: error: {missing}: cannot read the study file: " + "No such file or directory"
    )
    assert "cannot read the study file" in plan_error(tmp_path, capsys)


def test_empty_file_is_the_default_study_and_keys_keep_their_lines(tmp_path):
    config, lines = study.read(write(tmp_path, "# only a comment\n"))
    assert config == {} and lines == {}
    config, lines = study.read(TEST_STUDY)
    assert lines["training.epochs"] == 20 and lines["dataset.synthetic.points"] == 9
    assert config["tasks"] == ["s", "d"]


def test_schema_is_package_data_and_the_workflow_has_no_copy():
    assert study.SCHEMA.is_file()
    assert Path(str(study.SCHEMA)).parts[-3:] == ("mtlrobust", "schemas", "config.schema.yaml")
    assert not (REPO / "workflow" / "schemas").exists()
    schema = yaml.safe_load(study.SCHEMA.read_text())
    assert schema["properties"]["evaluation"]["properties"]["batch_size"]["maximum"] == 4096
    # every integer key with a maximum says so in its description (the user reads it there)
    training = schema["properties"]["training"]["properties"]
    assert "at most 10000" in training["epochs"]["description"]
    assert "at most 4096" in training["batch_size"]["description"]


def test_licence_is_refused_unless_the_raw_folder_is_there(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config, _ = study.read(REPO / "studies" / "paper.yaml")
    config = study.validated(config)
    with pytest.raises(study.StudyError, match=r"^config key dataset\.taskonomy\.agree_licence: false"):
        study.check_licence(config)
    raw = tmp_path / "resources" / "taskonomy" / "raw"
    raw.mkdir(parents=True)
    with pytest.raises(study.StudyError):  # an empty folder is not the data
        study.check_licence(config)
    (raw / "rgb").mkdir()
    study.check_licence(config)  # there: no download is planned
    config["dataset"]["taskonomy"]["root"] = str(tmp_path)
    (raw / "rgb").rmdir()
    study.check_licence(config)  # an existing root: nothing to download


def test_plan_warns_about_the_licence_and_still_estimates(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["plan", "--configfile", str(REPO / "studies" / "paper.yaml"), "--json"]) == 0
    out, err = capsys.readouterr()
    assert err.startswith("mtlrobust plan: warning: config key dataset.taskonomy.agree_licence")
    assert '"jobs"' in out


# ------------------------------------------------------------------------------------------ snakemake
def snakemake(workdir: Path, study_text, *args: str) -> subprocess.CompletedProcess:
    path = write(workdir, study_text)
    cmd = [sys.executable, "-m", "snakemake", "-n", *args, "--snakefile", str(REPO / "Snakefile"), "--cores",
           "1", "--directory", str(workdir), "--configfile", str(path)]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


SNAKEMAKE_CASES = ["billion-laughs-lists", "duplicate-nested-key", "eval-batch-size-float", "epochs-float",
                   "larger-than-1-mib", "split-csv-missing", "unknown-nested-key"]  # fmt: skip


@pytest.mark.parametrize("name", SNAKEMAKE_CASES)
def test_snakemake_refuses_the_same_files_with_the_same_line(tmp_path, name):
    _, content, line, texts = next(c for c in CASES if c[0] == name)
    start = time.perf_counter()
    proc = snakemake(tmp_path, content)
    assert proc.returncode != 0
    path = tmp_path / "study.yaml"
    where = f"Study error: {path}:{line}:" if line else f"Study error: {path}:"
    assert proc.stderr.splitlines()[-1].startswith(where), proc.stdout + proc.stderr
    assert all(t in proc.stderr.splitlines()[-1] for t in texts), proc.stderr
    assert "Exception" not in proc.stdout + proc.stderr and 'File "' not in proc.stdout + proc.stderr
    assert time.perf_counter() - start < 60


def test_download_target_has_no_wildcards_and_needs_the_licence(tmp_path):
    agreed = swap("agree_licence: false", "agree_licence: true", PAPER)[0]
    proc = snakemake(tmp_path, agreed, "download")
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = dict(re.findall(r"^(\w+)\s+(\d+)$", proc.stdout, re.M))
    assert jobs == {"download_archives": "1", "download": "1", "total": "2"}, proc.stdout
    refused = snakemake(tmp_path, PAPER, "download")
    assert refused.returncode != 0
    assert "config key dataset.taskonomy.agree_licence: false" in refused.stdout + refused.stderr
    (tmp_path / "resources" / "taskonomy" / "raw" / "rgb").mkdir(parents=True)  # the raw data are there
    there = snakemake(tmp_path, PAPER, "download")
    assert there.returncode == 0, there.stderr[-3000:]
    assert "Nothing to be done" in there.stdout + there.stderr, there.stdout
