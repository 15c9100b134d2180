"""The workflow's own linters stay clean: snakemake --lint and snakefmt --check."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT


def run(*command):
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_snakemake_lint_is_clean():
    proc = run(sys.executable, "-m", "snakemake", "--lint")
    assert proc.returncode == 0 and "Congratulations" in proc.stdout + proc.stderr, proc.stdout + proc.stderr


def test_snakefmt_check_is_clean():
    snakefmt = shutil.which("snakefmt") or str(Path(sys.executable).parent / "snakefmt")
    if not Path(snakefmt).exists():
        pytest.skip("snakefmt is not installed (pip install -e '.[test]')")
    proc = run(snakefmt, "--check", ".")
    assert proc.returncode == 0, proc.stdout + proc.stderr
