"""Hostile configs through the real command: each fails before any job runs, with a short message
that names the field and the value (and the closest valid one for a misspelling), no schema dump, a
non-zero exit, and nothing written under results/."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers import ROOT, copy_workflow


def cpu_shape(config: dict) -> dict:
    return config["cpu"]["shapes"][0]


CASES = {
    "misspelt top-level key": (
        lambda c: c.update(candiates=["flash"]),
        ["top level: unknown key 'candiates'; did you mean 'candidates'?"],
    ),
    "misspelt nested key": (
        lambda c: c["cpu"]["timing"].update(min_round=3),
        ["cpu.timing: unknown key 'min_round'; did you mean 'min_rounds'?"],
    ),
    # Found by trying it: reported as "'dim' is a required property" and 30 lines of schema dump.
    "misspelt shape key": (
        lambda c: cpu_shape(c).update(dimm=cpu_shape(c).pop("dim")),
        ["cpu.shapes[0] (b2_h8_s128_d64): unknown key 'dimm'; did you mean 'dim'?"],
    ),
    "misspelt enum value": (
        lambda c: c["cpu"].update(dtype="bfloat"),
        ["cpu.dtype: 'bfloat' is not one of float16, bfloat16, float32; did you mean 'bfloat16'?"],
    ),
    "wrong type": (lambda c: cpu_shape(c).update(seq="long"), ["'long' is not of type 'integer'", "seq"]),
    "non-positive size": (
        lambda c: cpu_shape(c).update(batch=0),
        ["0 is less than the minimum of 1", "batch"],
    ),
    "unknown candidate": (
        lambda c: c["cpu"].update(candidates=["flash", "flashy"]),
        ["cpu.candidates[1]: unknown candidate 'flashy'", "did you mean 'flash'?"],
    ),
    # Found by trying it: met only after the whole run (1 min 43 s), which then exited 0.
    "user kernel whose module is missing": (
        lambda c: c["cpu"]["candidates"].append("mykernel:attn"),
        ["cpu.candidates: 'mykernel:attn': module 'mykernel' not found"],
    ),
    "user kernel whose function is missing": (
        lambda c: c["cpu"]["candidates"].append("examples.kernels:naive_atention"),
        [
            "cpu.candidates: 'examples.kernels:naive_atention': module 'examples.kernels'",
            "defines no 'naive_atention'; did you mean examples.kernels:naive_attention?",
        ],
    ),
    "reference not a candidate": (
        lambda c: c["cpu"].update(reference="cudnn", candidates=["flash", "math"]),
        ["reference: 'cudnn' is not one of candidates"],
    ),
    "duplicate shape names": (
        lambda c: c["cpu"]["shapes"].append(dict(cpu_shape(c))),
        ["duplicate shape names", cpu_shape(yaml.safe_load((ROOT / "config.yaml").read_text()))["name"]],
    ),
    "name escaping results/": (lambda c: cpu_shape(c).update(name="../../etc"), ["'../../etc'", "name"]),
    "name with markup": (lambda c: cpu_shape(c).update(name="<img src=x>"), ["'<img src=x>'", "name"]),
    "device cuda without CUDA": (lambda c: c.update(device="cuda"), ["device: 'cuda', but", "device: auto"]),
}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return copy_workflow(tmp_path_factory.mktemp("hostile"))


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_bad_config_stops_before_any_job(workdir, case):
    import torch

    if case == "device cuda without CUDA" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    mutate, expected = CASES[case]
    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    mutate(config)
    (workdir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    shutil.rmtree(workdir / "results", ignore_errors=True)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "--cores", "1", "--resources", "gpu=1"],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, output
    for fragment in expected:
        assert fragment in output, output
    assert "Failed validating" not in output and len(output.splitlines()) <= 12, output
    assert not (workdir / "results").exists(), "a job ran or wrote results"
