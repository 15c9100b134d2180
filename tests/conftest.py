import atexit
import os
import shutil
import tempfile

import pytest

# What attnbench remembers across runs (attnbench.files.cache_dir: torch's CUDA answer, ceilings) goes
# to a folder of this test session's own: no test reuses what a developer's runs or another session
# measured. Set before attnbench is imported; the workflow's subprocesses inherit it.
os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="attnbench-test-cache-")
atexit.register(shutil.rmtree, os.environ["XDG_CACHE_HOME"], ignore_errors=True)


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
