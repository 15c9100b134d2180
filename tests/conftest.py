import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCHEMAS = ROOT / "workflow" / "schemas"
WORKFLOW_FILES = ("Snakefile", "workflow", "scripts", "envs", "profiles", "examples")


def copy_workflow(dest: Path) -> Path:
    """The workflow without results or config, for tests that run the snakemake CLI in a fresh folder."""
    for name in WORKFLOW_FILES:
        source = ROOT / name
        (shutil.copytree if source.is_dir() else shutil.copy)(source, dest / name)
    return dest


def pytest_collection_modifyitems(config, items):
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def locked_env(monkeypatch):
    """The start-up variables the workflow's rules set for every job."""
    monkeypatch.setenv("PYTHONHASHSEED", "0")
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
