"""The linters stay clean: snakemake --lint, snakefmt --check and ruff (configured in pyproject.toml)."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import ROOT


def run(*command):
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)


@pytest.mark.slow
def test_snakemake_lint_is_clean():
    proc = run(sys.executable, "-m", "snakemake", "--lint")
    assert proc.returncode == 0 and "Congratulations" in proc.stdout + proc.stderr, proc.stdout + proc.stderr


@pytest.mark.parametrize("tool, args", [("snakefmt", ["--check", "."]), ("ruff", ["check", "."])])
def test_formatters_and_linters_are_clean(tool, args):
    path = shutil.which(tool) or str(Path(sys.executable).parent / tool)
    if not Path(path).exists():
        pytest.skip(f"{tool} is not installed (pip install -e '.[test]')")
    proc = run(path, *args)
    assert proc.returncode == 0, proc.stdout + proc.stderr
