"""attnbench.calibrate: ceilings are measured once per device, driver, software, measuring code and
settings, and reused by later runs (a new working directory paid 2 s on an H200, 8 s on a 2-core CPU)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from helpers import SCHEMAS

from attnbench import SCHEMA_VERSION, calibrate, env, files, jobs, report
from attnbench.report.sections.environment import ceilings_section

SMALL = {"matmul_size": 64, "copy_mb": 1, "rounds": 2, "max_time_s": 0.2, "warmup_max_s": 0.05}
SPEC = {"device": "cpu", "dtypes": ["float32"], "settings": SMALL, "lock": {"seed": 0}}


@pytest.fixture
def machine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> SimpleNamespace:
    """A remembered-ceilings folder of this test's own, the machine's identity as the test says, and
    the measurements counted."""
    monkeypatch.setattr(calibrate, "REMEMBERED", files.Memo(tmp_path / "ceilings"))
    here = SimpleNamespace(identity=env.identity("cpu"), measured=0, busy=False)
    monkeypatch.setattr(calibrate.env, "identity", lambda device: copy.deepcopy(here.identity))
    measure = calibrate.measure_ceilings

    def counted(*args, **kwargs):
        here.measured += 1
        measured = measure(*args, **kwargs)
        # busy as the test says, not as this shared machine happens to be while the suite runs
        measured["host"] |= {"busy": here.busy, "why": "other processes kept 1.9 of the 2 cores busy" if here.busy else None}
        return measured

    monkeypatch.setattr(calibrate, "measure_ceilings", counted)
    return here


def check_schema(document: dict) -> None:
    files.validate({"schema": SCHEMA_VERSION, **files.jsonable(document)}, SCHEMAS / "ceilings.schema.yaml", source="ceilings")


def test_a_second_run_reuses_the_ceilings_and_says_so(machine: SimpleNamespace, locked_env) -> None:
    first = calibrate.ceilings(SPEC)
    second = calibrate.ceilings(SPEC)
    assert machine.measured == 1
    check_schema(first)
    check_schema(second)
    assert "reused" not in first and first["measured_at"]
    assert second["reused"]["measured_at"] == first["measured_at"]
    assert Path(second["reused"]["from"]) == calibrate.REMEMBERED.path(calibrate.reuse_key(SPEC))
    assert {k: v for k, v in second.items() if k != "reused"} == json.loads(json.dumps(files.jsonable(first)))


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda spec, machine: spec["settings"].update(matmul_size=32), id="settings"),
        pytest.param(lambda spec, machine: spec.update(dtypes=["bfloat16"]), id="dtypes"),
        pytest.param(lambda spec, machine: spec["lock"].update(float32_matmul_precision="high"), id="lock"),
        pytest.param(lambda spec, machine: spec.update(threads=1), id="threads"),
        pytest.param(lambda spec, machine: machine.identity["cpu"].update(model="another CPU"), id="device"),
        pytest.param(lambda spec, machine: machine.identity["host"].update(hostname="another-host"), id="host"),
        pytest.param(lambda spec, machine: machine.identity["torch"].update(version="9.9.9"), id="torch"),
        pytest.param(lambda spec, machine: machine.identity["packages"].update(numpy="0.1"), id="package"),
    ],
)
def test_a_changed_input_device_or_software_measures_again(machine: SimpleNamespace, locked_env, change) -> None:
    import torch

    spec = copy.deepcopy(SPEC)
    calibrate.ceilings(spec)
    change(spec, machine)
    try:
        again = calibrate.ceilings(spec)
    finally:
        torch.set_float32_matmul_precision("highest")  # the lock case sets it for this process
    assert machine.measured == 2 and "reused" not in again


@pytest.fixture
def gpu(monkeypatch: pytest.MonkeyPatch) -> dict:
    """env.identity("cuda") on this CPU machine: the GPU NVML would describe (edit it to change it)."""
    import torch

    board = {
        "uuid": "GPU-1",
        "driver_version": "580.1",
        "power_limit_w": 700,
        "nvml_error": None,
        "temperature_c": 40,
        "clocks": {"sm_mhz": 1980, "sm_max_mhz": 1980, "mem_mhz": 2619, "mem_max_mhz": 2619},
    }
    monkeypatch.setattr(env, "_gpu", lambda index: copy.deepcopy(board))
    monkeypatch.setattr(env.device_module, "require", lambda device: None)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    return board


def test_a_gpu_with_another_board_driver_power_limit_or_top_clock_is_not_the_same_machine(gpu: dict) -> None:
    spec = {**SPEC, "device": "cuda"}
    keys = {json.dumps(calibrate.reuse_key(spec), sort_keys=True)}
    for field, value in (("uuid", "GPU-2"), ("driver_version", "590.2"), ("power_limit_w", 500)):
        gpu[field] = value
        keys.add(json.dumps(calibrate.reuse_key(spec), sort_keys=True))
    gpu["clocks"]["sm_max_mhz"] = 1500
    keys.add(json.dumps(calibrate.reuse_key(spec), sort_keys=True))
    assert len(keys) == 5


def test_the_fingerprints_moments_do_not_stop_a_reuse(gpu: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    """Temperature, current clocks and the Slurm job change between two runs on the same machine."""
    monkeypatch.setenv("SLURM_JOB_ID", "1")
    before = env.identity("cuda")
    gpu.update(temperature_c=71, clocks={**gpu["clocks"], "sm_mhz": 1410, "mem_mhz": 1593})
    monkeypatch.setenv("SLURM_JOB_ID", "2")
    assert env.identity("cuda") == before
    assert before["gpu"]["clocks"] == {"sm_max_mhz": 1980, "mem_max_mhz": 2619}


def test_another_attnbench_or_schema_version_measures_again(machine: SimpleNamespace, locked_env, monkeypatch, tmp_path) -> None:
    calibrate.ceilings(SPEC)
    for path in files.PACKAGE_DIR.glob("*.py"):
        (tmp_path / path.name).write_bytes(path.read_bytes())
    (tmp_path / "timing.py").write_text((tmp_path / "timing.py").read_text() + "\n# edited\n")
    monkeypatch.setattr(files, "PACKAGE_DIR", tmp_path)
    assert "reused" not in calibrate.ceilings(SPEC) and machine.measured == 2
    assert "reused" in calibrate.ceilings(SPEC)
    monkeypatch.setattr(calibrate, "SCHEMA_VERSION", calibrate.SCHEMA_VERSION + 1)
    assert "reused" not in calibrate.ceilings(SPEC) and machine.measured == 3


def test_ceilings_older_than_a_week_or_measured_on_a_busy_host_are_measured_again(
    machine: SimpleNamespace, locked_env, monkeypatch
) -> None:
    first = calibrate.ceilings(SPEC)
    measured_at = calibrate.dt.datetime.fromisoformat(first["measured_at"])
    monkeypatch.setattr(calibrate, "_now", lambda: measured_at + calibrate.REUSE_MAX_AGE)
    assert "reused" in calibrate.ceilings(SPEC)
    monkeypatch.setattr(calibrate, "_now", lambda: measured_at + calibrate.REUSE_MAX_AGE * 1.01)
    machine.busy = True
    busy = calibrate.ceilings(SPEC)
    assert machine.measured == 2 and busy["host"]["busy"]
    machine.busy = False
    assert "reused" not in calibrate.ceilings(SPEC) and machine.measured == 3  # the busy one was not kept


def test_reuse_false_measures_again_and_remembers_the_new_ceilings(machine: SimpleNamespace, locked_env) -> None:
    first = calibrate.ceilings(SPEC)
    forced = calibrate.ceilings({**SPEC, "reuse": False})
    assert machine.measured == 2 and "reused" not in forced
    later = calibrate.ceilings(SPEC)  # the same key: reuse: false is a switch, not a setting
    assert machine.measured == 2 and later["reused"]["measured_at"] == forced["measured_at"] >= first["measured_at"]


def test_an_unreadable_or_unwritable_memory_costs_a_measurement_only(
    machine: SimpleNamespace, locked_env, monkeypatch, tmp_path
) -> None:
    calibrate.ceilings(SPEC)
    calibrate.REMEMBERED.path(calibrate.reuse_key(SPEC)).write_text("{not json")
    assert "reused" not in calibrate.ceilings(SPEC) and machine.measured == 2
    calibrate.REMEMBERED.remember(calibrate.reuse_key(SPEC), {"matmul": {}})  # no copy, no measured_at
    assert "reused" not in calibrate.ceilings(SPEC) and machine.measured == 3
    (tmp_path / "a file").write_text("")
    monkeypatch.setattr(calibrate, "REMEMBERED", files.Memo(tmp_path / "a file" / "ceilings"))
    assert "reused" not in calibrate.ceilings(SPEC)
    assert "reused" not in calibrate.ceilings(SPEC) and machine.measured == 5


def test_the_switch_is_in_the_jobs_spec_only_when_off() -> None:
    run = {"device": "cpu", "dtype": "float32", "lock": None}
    assert "reuse" not in json.loads(jobs.spec("calibrate", run))
    assert "reuse" not in json.loads(jobs.spec("calibrate", run | {"calibrate": {"reuse": True, "rounds": 3}}))
    off = json.loads(jobs.spec("calibrate", run | {"calibrate": {"reuse": False}}))
    assert off["reuse"] is False and "reuse" not in off["settings"]


def test_the_report_says_when_the_ceilings_were_reused() -> None:
    ceilings = {"device": "cpu", "device_name": "AMD EPYC", "matmul": {}, "copy": None, "measured_at": "2026-12-01T10:00:00+00:00"}
    (said,) = [b.text for b in ceilings_section(ceilings, []).blocks if isinstance(b, report.Para)]
    assert said == "Measured on AMD EPYC at 2026-12-01T10:00:00+00:00."
    reused = ceilings | {"reused": {"from": "x", "measured_at": ceilings["measured_at"]}}
    (said,) = [b.text for b in ceilings_section(reused, []).blocks if isinstance(b, report.Para)]
    assert "Reused by this run" in said and "calibrate: {reuse: false}" in said
