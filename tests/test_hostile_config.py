"""Hostile configs through the real command: each fails before any job runs, with a short message
that names the field and the value (and the closest valid one for a misspelling), no schema dump, a
non-zero exit, and nothing written under results/."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from helpers import CONFIG, CPU_CONFIG, ROOT, copy_workflow, write_config

from attnbench import cli, configfile
from attnbench.config import CONFIG_FILE


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
        ["duplicate shape names", cpu_shape(yaml.safe_load(CONFIG.read_text()))["name"]],
    ),
    "name escaping results/": (lambda c: cpu_shape(c).update(name="../../etc"), ["'../../etc'", "name"]),
    "name with markup": (lambda c: cpu_shape(c).update(name="<img src=x>"), ["'<img src=x>'", "name"]),
    "device cuda without CUDA": (lambda c: c.update(device="cuda"), ["device: 'cuda', but", "device: auto"]),
    # Issue 31: passed validation, then every candidate, the reference too, failed ("timestamp out of
    # range") and the run exited 0.
    "call timeout beyond its bound": (
        lambda c: c["cpu"]["timing"].update(call_timeout_s=1e10),
        ["cpu.timing.call_timeout_s: 10000000000.0 is greater than the maximum of 3600"],
    ),
    # Issue 31: accepted, ran calibrate and the fingerprint, then a 66-line error and "run the same
    # command again", which failed the same way.
    "shape that cannot fit in memory": (
        lambda c: cpu_shape(c).update(batch=10**12),
        ["cpu.shapes: b2_h8_s128_d64: needs at least ", "bytes) this host has: make it smaller"],
    ),
    # Issue 31: reported "not found" (they exist), or accepted and called with the inputs.
    "standard-library kernel": (
        lambda c: c["cpu"]["candidates"].append("os:system"),
        ["cpu.candidates: 'os:system': refused: os is not a kernel module"],
    ),
    "built-in module kernel": (
        lambda c: c["cpu"]["candidates"].append("builtins:eval"),
        ["cpu.candidates: 'builtins:eval': refused: builtins is not a kernel module"],
    ),
    "subprocess kernel": (
        lambda c: c["cpu"]["candidates"].append("subprocess:run"),
        ["cpu.candidates: 'subprocess:run': refused: subprocess is not a kernel module"],
    ),
}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return copy_workflow(tmp_path_factory.mktemp("hostile"))


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_bad_config_stops_before_any_job(workdir, case):
    import torch

    if case == "device cuda without CUDA" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    mutate, expected = CASES[case]
    config = yaml.safe_load(CONFIG.read_text())
    mutate(config)
    write_config(workdir, config)
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


def _bomb(levels: int = 9, indent: str = "    ") -> str:
    """A YAML list whose items are lists of aliases to the item before: 10 ** levels values in ~600
    bytes (issue 31's was 1.3 KB)."""
    lines = [f"{indent}- &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"{indent}- &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


def _mapping_bomb(levels: int = 9) -> str:
    """Mappings of aliases, which Snakemake's update_config copies key by key: 10 ** levels of them."""
    lines = ["bomb0: &m0 {" + ", ".join(f"k{j}: x" for j in range(10)) + "}"]
    lines += [
        f"bomb{i}: &m{i} {{" + ", ".join(f"k{j}: *m{i - 1}" for j in range(10)) + "}"
        for i in range(1, levels)
    ]
    return "\n".join(lines) + "\n"


def _default_text() -> str:
    return yaml.safe_dump(yaml.safe_load(CONFIG.read_text()), sort_keys=False)


# Raw config files, each refused in seconds (the old code hung on the first two for minutes).
FILE_CASES = {
    "alias bomb inside a validated value": (
        lambda: _default_text() + "report:\n  title:\n" + _bomb(),
        [],
        ["config.yaml uses more than 100,000 nodes through aliases"],
    ),
    "alias bomb of mappings": (
        lambda: _default_text() + _mapping_bomb(),
        [],
        ["config.yaml uses more than 100,000 nodes through aliases"],
    ),
    "alias bomb in a --configfile": (
        lambda: "report:\n  title:\n" + _bomb(),
        ["--configfile", "other.yaml"],
        ["other.yaml uses more than 100,000 nodes through aliases"],
    ),
    "file beyond its bound": (
        lambda: _default_text() + "report: {title: " + "x" * (2 * 2**20) + "}\n",
        [],
        ["config.yaml is 2 MiB, more than the 1 MiB a config file may be"],
    ),
    # Found by trying it: Snakemake's "Config file is not valid JSON or YAML", with no line or column.
    "invalid YAML": (
        lambda: "candidates: [flash\nshapes: 3\n",
        [],
        ["config/config.yaml:2:7: expected ',' or ']', but got ':'", "  shapes: 3\n        ^"],
    ),
    "value beyond its bound": (
        lambda: _default_text() + "report: {title: " + "x" * 20_000 + "}\n",
        [],
        ["config.yaml line ", ": a value of 20,000 characters, more than the 10,000 a config value may have"],
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", FILE_CASES, ids=list(FILE_CASES))
def test_a_hostile_config_file_stops_in_seconds(workdir, case):
    """Issue 31: a 1.3 KB alias bomb inside a validated value hung for over 150 s, a 50 MB string value
    over 300 s. Now: refused before Snakemake's loader (config.yaml) or its schema (a --configfile,
    which Snakemake loads before the workflow runs) see them."""
    text, args, expected = FILE_CASES[case]
    (workdir / CONFIG_FILE).parent.mkdir(exist_ok=True)
    (workdir / CONFIG_FILE).write_text(_default_text())
    target = workdir / (args[-1] if args else CONFIG_FILE)
    target.write_text(text())
    shutil.rmtree(workdir / "results", ignore_errors=True)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    began = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "--cores", "1", "--resources", "gpu=1", *args],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, output
    for fragment in expected:
        assert fragment in output, output
    assert len(output.splitlines()) <= 12 and len(output) < 4000, output
    assert not (workdir / "results").exists(), "a job ran or wrote results"
    assert time.monotonic() - began < 60


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a: &a [x, *a]\n", "config.yaml line 1: an alias refers to a value that contains it"),
        ("a: " + "[" * 70 + "]" * 70 + "\n", "config.yaml line 1: nested more than 64 levels deep"),
        (
            "a: &s " + "y" * 9_000 + "\nb: [" + ", ".join(["*s"] * 200) + "]\n",
            "config.yaml expands through aliases to more than 1 MiB of text",
        ),
        ('{"title": "' + "j" * 10_001 + '"}', "config.yaml: title: a value of 10,001 characters"),
        ("a: [" + ", ".join(["1"] * 100_001) + "]\n", "config.yaml uses more than 100,000 nodes"),
    ],
)
def test_a_config_file_beyond_a_bound_is_refused_without_being_loaded(tmp_path, text, message):
    (tmp_path / "config.yaml").write_text(text)
    began = time.monotonic()
    with pytest.raises(configfile.Unbounded) as raised:
        configfile.check_file(tmp_path / "config.yaml")
    assert str(raised.value).startswith(str(tmp_path / message)), str(raised.value)
    assert time.monotonic() - began < 5


def test_a_config_file_that_is_not_yaml_is_refused_at_its_line_and_column(tmp_path, monkeypatch, capsys):
    """Both entry points: the workflow (config.check_files before Snakemake loads the file) and
    `attnbench run FILE` used to name no line ("<unicode string>" at best)."""
    bad = tmp_path / "mine.yaml"
    bad.write_text("shapes: [b1_h2_s32_d16]\ntiming: {max_time_s: 1\nreference: math\n")
    with pytest.raises(configfile.Invalid) as raised:
        configfile.check_file(bad)
    first, line, caret = str(raised.value).splitlines()
    assert first.startswith(f"{bad}:3:10: ") and line == "  reference: math" and caret == "  " + " " * 9 + "^"
    monkeypatch.chdir(tmp_path)
    assert cli.main(["run", "mine.yaml"]) == 2
    err = capsys.readouterr().err
    assert "mine.yaml:3:10: " in err and "<unicode string>" not in err and "Traceback" not in err


@pytest.mark.slow
def test_snakemakes_config_errors_name_the_line_and_carry_no_internal_frame(tmp_path):
    """Through the snakemake CLI: a --configfile that is not YAML (Snakemake loads it before the
    Snakefile's own check and said only "Config file is not valid JSON or YAML"), and a config error,
    which carried the Snakefile's line and two stack frames of attnbench's, also in a dry run."""
    copy_workflow(tmp_path)
    write_config(tmp_path, CPU_CONFIG)
    (tmp_path / "bad.yaml").write_text("device: cpu\ncandidates: [flash\n  reference: math\n")
    (tmp_path / "unknown.yaml").write_text("device: cpu\nbogus_key: 1\n")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    for dry in ([], ["-n"]):
        bad, unknown = (
            subprocess.run(
                [sys.executable, "-m", "snakemake", "--cores", "1", *dry, "--configfile", name],
                cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
            )  # fmt: skip
            for name in ("bad.yaml", "unknown.yaml")
        )
        said = bad.stdout + bad.stderr
        assert bad.returncode != 0 and "attnbench: bad.yaml:3:12: expected ',' or ']'" in said, said
        assert "    reference: math\n             ^" in said, said
        said = unknown.stdout + unknown.stderr
        assert unknown.returncode != 0, said
        assert "attnbench: the config cannot run: top level: unknown key 'bogus_key'" in said, said
        assert said.count("bogus_key") == 1 and 'File "' not in said and "Snakefile" not in said, said


def test_the_repositorys_config_files_are_within_the_bounds():
    configfile.check_files([CONFIG, *sorted((ROOT / "examples").glob("*.yaml"))])
    configfile.check_value(yaml.safe_load((ROOT / "examples" / "decode.yaml").read_text()))
