"""The workflow and the code pass the linters CI and reviewers rely on (snakemake --lint, snakefmt, ruff)."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SNAKEFILES = ["Snakefile", "workflow"]


def _run(*cmd: str) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize(
    "study", ["config.yaml", "studies/test.yaml", "studies/paper.yaml", "studies/adversarial.yaml"]
)
def test_snakemake_lint_is_clean(study):
    # --lint parses the whole workflow, so this also checks that each study validates against the schema.
    proc = _run(sys.executable, "-m", "snakemake", "--lint", "--configfile", study)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Congratulations" in proc.stdout + proc.stderr


def test_snakefmt_leaves_the_workflow_unchanged():
    snakefmt = shutil.which("snakefmt")
    assert snakefmt, "snakefmt is not installed (pip install -e '.[test]')"
    proc = _run(snakefmt, "--check", *SNAKEFILES)
    assert proc.returncode == 0, "run `snakefmt Snakefile workflow`\n" + proc.stdout + proc.stderr


def test_ruff_is_clean():
    proc = _run(sys.executable, "-m", "ruff", "check", ".")
    assert proc.returncode == 0, proc.stdout + proc.stderr
