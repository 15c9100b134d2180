"""The environment fingerprint: schema, the CPU case, git state, the NVML lookup (faked here)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import pytest
import torch

from attnbench import SCHEMA_VERSION, env, files, lock

SCHEMA = Path(__file__).resolve().parents[1] / "workflow" / "schemas" / "fingerprint.schema.yaml"

needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
needs_no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present")


@pytest.fixture(autouse=True)
def isolated_git(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Keep the user's git configuration and any repository above tmp_path out of the tests."""
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", "/dev/null")
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))


def validated(fp: dict[str, Any]) -> dict[str, Any]:
    """What files.write_json would write: stamped, JSON-clean and valid against the schema."""
    payload = files.jsonable({"schema": SCHEMA_VERSION, **fp})
    files.validate(payload, SCHEMA, source="fingerprint")
    json.dumps(payload)
    return payload


def test_cpu_fingerprint_matches_schema(tmp_path: Path) -> None:
    lock_state = lock.state()
    fp = env.fingerprint("cpu", lock_state, workflow_dir=tmp_path)
    validated(fp)
    assert "schema" not in fp
    assert fp["device"] == "cpu"
    assert fp["gpu"] is None
    assert isinstance(fp["gpu_reason"], str) and fp["gpu_reason"]
    assert fp["lock"] == lock_state
    assert fp["torch"]["version"] == torch.__version__
    assert fp["cpu"]["model"] and fp["cpu"]["logical_cores"] >= 1
    assert set(fp["packages"]) == set(env.PACKAGES)
    assert fp["packages"]["torch"] is not None
    assert set(fp["env_vars"]) == set(env.ENV_VARS)


def test_env_vars_are_recorded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    fp = env.fingerprint("cpu", {}, workflow_dir=tmp_path)
    assert fp["env_vars"]["CUDA_VISIBLE_DEVICES"] == "1"
    assert fp["env_vars"]["OMP_NUM_THREADS"] is None


@needs_no_cuda
def test_cpu_build_reason_and_cuda_refused(tmp_path: Path) -> None:
    fp = env.fingerprint("cpu", {}, workflow_dir=tmp_path)
    assert fp["gpu_reason"].startswith("device is cpu: ")
    with pytest.raises(RuntimeError, match="device is cuda but"):
        env.fingerprint("cuda", {}, workflow_dir=tmp_path)
    with pytest.raises(RuntimeError, match="device is cuda but"):
        env.device_summary("cuda")


def test_unknown_device_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="device must be one of"):
        env.fingerprint("gpu", {}, workflow_dir=tmp_path)
    with pytest.raises(ValueError, match="device must be one of"):
        env.device_summary("cuda:0")


def test_device_summary_cpu(tmp_path: Path) -> None:
    summary = env.device_summary("cpu")
    assert set(summary) == {"name", "index", "uuid"}
    assert isinstance(summary["name"], str) and summary["name"]
    assert summary["index"] is None and summary["uuid"] is None
    assert summary["name"] == env.fingerprint("cpu", {}, workflow_dir=tmp_path)["cpu"]["model"]


@needs_git
def test_git_outside_a_repository(tmp_path: Path) -> None:
    git = env.fingerprint("cpu", {}, workflow_dir=tmp_path)["git"]
    assert git["commit"] is None and git["dirty"] is None
    assert "not a git repository" in git["reason"]


def test_git_not_installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    git = env.fingerprint("cpu", {}, workflow_dir=tmp_path)["git"]
    assert git == {"commit": None, "dirty": None, "diff_digest": None, "reason": "git is not installed"}


@needs_git
def test_git_commit_and_dirty(tmp_path: Path) -> None:
    def git(*args: str) -> None:
        subprocess.run(
            ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@e.org", *args],
            check=True,
            capture_output=True,
        )

    tracked = tmp_path / "tracked.txt"
    tracked.write_text("one\n")
    git("init", "-q")
    git("add", "tracked.txt")
    git("commit", "-q", "-m", "first")

    clean = env.fingerprint("cpu", {}, workflow_dir=tmp_path)["git"]
    assert re.fullmatch(r"[0-9a-f]{40}", clean["commit"])
    assert clean["dirty"] is False and clean["reason"] is None

    (tmp_path / "untracked.txt").write_text("not code that ran\n")
    assert env.fingerprint("cpu", {}, workflow_dir=tmp_path)["git"]["dirty"] is False

    tracked.write_text("two\n")
    dirty = env.fingerprint("cpu", {}, workflow_dir=tmp_path)["git"]
    assert dirty["dirty"] is True and dirty["commit"] == clean["commit"]
    assert clean["diff_digest"] is None and re.fullmatch(r"sha256:[0-9a-f]{64}", dirty["diff_digest"])
    tracked.write_text("three\n")
    assert env.git_state(tmp_path)["diff_digest"] != dirty["diff_digest"]
    assert env.git_key(tmp_path) == f"{clean['commit']} dirty {env.git_state(tmp_path)['diff_digest']}"


# NVML faked: torch device 0 is NVML device 1 (as with CUDA_VISIBLE_DEVICES=1), which exercises
# the UUID lookup and the per-query fallback without a GPU.

TORCH_UUID = "11111111-2222-3333-4444-555555555555"


class FakeNVMLError(Exception):
    pass


class FakeNotSupported(FakeNVMLError):
    pass


def fake_pynvml(boards: list[str], migs: dict[int, list[str]] | None = None) -> types.ModuleType:
    """A pynvml with `boards` as NVML UUIDs in NVML order; migs[i] are board i's MIG instances."""
    migs = migs or {}
    nv = types.ModuleType("pynvml")
    nv.shutdowns = 0  # type: ignore[attr-defined]

    def shutdown() -> None:
        nv.shutdowns += 1  # type: ignore[attr-defined]

    def not_supported(*_: Any) -> Any:
        raise FakeNotSupported("Not Supported")

    def mig_handle(board: int, j: int) -> tuple[int, int]:
        if j >= len(migs.get(board, [])):
            raise FakeNVMLError("Not Found")
        return (board, j)

    def uuid(handle: Any) -> str:
        return migs[handle[0]][handle[1]] if isinstance(handle, tuple) else boards[handle]

    nv.__dict__.update(
        NVMLError=FakeNVMLError,
        NVML_CLOCK_SM=1,
        NVML_CLOCK_MEM=2,
        NVML_TEMPERATURE_GPU=0,
        nvmlInit=lambda: None,
        nvmlShutdown=shutdown,
        nvmlDeviceGetCount=lambda: len(boards),
        nvmlDeviceGetHandleByIndex=lambda i: i,
        nvmlDeviceGetUUID=uuid,
        nvmlDeviceGetIndex=lambda board: board,
        nvmlDeviceGetMaxMigDeviceCount=lambda board: 7 if board in migs else not_supported(),
        nvmlDeviceGetMigDeviceHandleByIndex=mig_handle,
        nvmlSystemGetDriverVersion=lambda: "580.159.04",
        nvmlDeviceGetClockInfo=lambda board, kind: 1000 * (board + 1) + kind,
        nvmlDeviceGetMaxClockInfo=lambda board, kind: 2000 * (board + 1) + kind,
        nvmlDeviceGetEnforcedPowerLimit=lambda board: 700_000,
        nvmlDeviceGetTemperature=not_supported,
        nvmlDeviceGetEccMode=lambda board: [1, 0],
        nvmlDeviceGetMigMode=lambda board: [int(board in migs), 0],
        nvmlDeviceGetPersistenceMode=lambda board: 0,
        nvmlDeviceGetPciInfo=lambda board: types.SimpleNamespace(busId=f"0000:{board:02X}:00.0"),
    )
    return nv


@pytest.fixture
def fake_torch_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        env,
        "_torch_gpu",
        lambda index: {
            "index": index,
            "name": "Fake H100",
            "uuid": f"GPU-{TORCH_UUID}",
            "compute_capability": "9.0",
            "sm_count": 132,
            "l2_cache_mb": 50.0,
            "memory_total_mb": 81000.0,
        },
    )


@pytest.mark.usefixtures("fake_torch_gpu")
def test_nvml_device_found_by_uuid(monkeypatch: pytest.MonkeyPatch) -> None:
    nv = fake_pynvml(["GPU-00000000-0000-0000-0000-000000000000", f"GPU-{TORCH_UUID.upper()}"])
    monkeypatch.setitem(sys.modules, "pynvml", nv)
    gpu = env._gpu(0)
    # torch's device 0 (pinned by CUDA_VISIBLE_DEVICES) is the host's GPU 1, as nvidia-smi numbers it.
    assert gpu["index"] == 1 and gpu["uuid"] == f"GPU-{TORCH_UUID}"
    assert gpu["nvml_error"] is None
    assert gpu["pci_bus_id"] == "0000:01:00.0"  # NVML device 1, not 0
    clocks = {"sm_mhz": 2001, "sm_max_mhz": 4001, "mem_mhz": 2002, "mem_max_mhz": 4002}
    assert gpu["clocks"] == clocks
    assert gpu["driver_version"] == "580.159.04"
    assert gpu["power_limit_w"] == 700.0
    assert gpu["temperature_c"] is None  # NotSupported: that field alone is None
    assert gpu["ecc_mode"] is True and gpu["mig_mode"] is False and gpu["persistence_mode"] is False
    assert nv.shutdowns == 1  # type: ignore[attr-defined]


@pytest.mark.usefixtures("fake_torch_gpu")
def test_nvml_mig_instance_reads_its_board(monkeypatch: pytest.MonkeyPatch) -> None:
    nv = fake_pynvml(
        ["GPU-00000000-0000-0000-0000-000000000000", "GPU-99999999-0000-0000-0000-000000000000"],
        migs={1: ["MIG-aaaaaaaa-0000-0000-0000-000000000000", f"MIG-{TORCH_UUID}"]},
    )
    monkeypatch.setitem(sys.modules, "pynvml", nv)
    gpu = env._gpu(0)
    assert gpu["nvml_error"] is None
    assert gpu["pci_bus_id"] == "0000:01:00.0" and gpu["mig_mode"] is True


@pytest.mark.usefixtures("fake_torch_gpu")
def test_nvml_without_the_device_keeps_torch_fields(monkeypatch: pytest.MonkeyPatch) -> None:
    nv = fake_pynvml(["GPU-00000000-0000-0000-0000-000000000000"])
    monkeypatch.setitem(sys.modules, "pynvml", nv)
    gpu = env._gpu(0)
    assert "LookupError" in gpu["nvml_error"]
    assert gpu["sm_count"] == 132 and gpu["uuid"] == f"GPU-{TORCH_UUID}"
    assert gpu["driver_version"] is None and gpu["pci_bus_id"] is None
    assert gpu["clocks"] == dict.fromkeys(["sm_mhz", "sm_max_mhz", "mem_mhz", "mem_max_mhz"])
    assert nv.shutdowns == 1  # type: ignore[attr-defined]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_fingerprint(tmp_path: Path) -> None:
    fp = env.fingerprint("cuda", lock.state(), workflow_dir=tmp_path)
    validated(fp)
    gpu = fp["gpu"]
    assert fp["device"] == "cuda" and fp["gpu_reason"] is None
    assert gpu["uuid"].startswith("GPU-") and gpu["sm_count"] > 0
    assert gpu["index"] == torch.cuda.current_device()
    assert re.fullmatch(r"\d+\.\d+", gpu["compute_capability"])
    assert gpu["memory_total_mb"] > 0 and gpu["l2_cache_mb"] > 0
    assert gpu["nvml_error"] is None, gpu["nvml_error"]
    assert gpu["driver_version"] and gpu["pci_bus_id"]
    assert gpu["clocks"]["sm_max_mhz"] > 0
    assert fp["torch"]["cuda"] == torch.version.cuda
    assert env.device_summary("cuda") == {k: gpu[k] for k in ("name", "index", "uuid")}
