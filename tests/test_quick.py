"""`attnbench run`, the quick path: the shape syntax, the config it writes, the command line, and one
run of the whole workflow on the CPU through it (a user kernel from the caller's directory)."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from helpers import ROOT

from attnbench import cli, quick, shape_syntax
from attnbench.config import CONFIG_FILE


@pytest.mark.parametrize(
    "text, fields",
    [
        ("b2_h8_s512_d64", {"batch": 2, "heads": 8, "seq": 512, "dim": 64, "causal": False}),
        ("b2_h8_s512_d64_causal", {"batch": 2, "heads": 8, "seq": 512, "dim": 64, "causal": True}),
        ("d64_causal_s512_h8_b2", {"batch": 2, "heads": 8, "seq": 512, "dim": 64, "causal": True}),
        ("b2_h8_s512_d64_kv2", {"batch": 2, "heads": 8, "seq": 512, "dim": 64, "causal": False, "kv_heads": 2}),
        (  # the default config's own GQA name
            "b2_h8_kv2_s512_d64_gqa",
            {"batch": 2, "heads": 8, "seq": 512, "dim": 64, "causal": False, "kv_heads": 2},
        ),
        ("b1_h8_s128_skv4096_d64", {"batch": 1, "heads": 8, "seq": 128, "dim": 64, "causal": False, "seq_kv": 4096}),
    ],
)
def test_a_compact_shape_keeps_its_name_and_reads_its_fields(text, fields):
    assert shape_syntax.parse_shape(text) == {"name": text, **fields}


def test_a_key_value_shape_is_named_from_its_fields():
    entry = shape_syntax.parse_shape("batch=2,heads=8,seq=1024,dim=64,causal=true,kv_heads=2")
    assert entry == {
        "name": "b2_h8_kv2_s1024_d64_causal",
        "batch": 2,
        "heads": 8,
        "seq": 1024,
        "dim": 64,
        "causal": True,
        "kv_heads": 2,
    }
    assert shape_syntax.parse_shape("batch=1, heads=2, seq=64, dim=16, name=tiny")["name"] == "tiny"
    # a derived name reads back as the same shape
    assert shape_syntax.parse_shape(entry["name"]) == entry


def test_shapes_from_dicts_and_shapes_are_named_and_checked():
    from attnbench.workloads import Shape

    assert shape_syntax.shape_entry({"batch": 1, "heads": 2, "seq": 64, "dim": 16})["name"] == "b1_h2_s64_d16"
    shape = Shape.from_config({"name": "mine", "batch": 1, "heads": 4, "kv_heads": 2, "seq": 8, "dim": 16})
    assert shape_syntax.shape_entry(shape) == {**shape.as_dict(), "name": "mine"}


@pytest.mark.parametrize(
    "text, says",
    [
        ("b2_h8_s512", "missing dim"),
        ("b2_h8_s512_d64_x3", "cannot read 'x3'"),
        ("b2_b4_h8_s512_d64", "'b4' given twice"),
        ("b2_h8_kv3_s512_d64", "not a multiple of kv_heads 3"),
        ("b0_h8_s512_d64", "batch must be a positive integer"),
        ("batch=2,heads=8,seq=512,dim=64,causal=maybe", "causal='maybe' is not true or false"),
        ("batch=2,heads=8,seq=512,dim=sixty", "dim='sixty' is not a positive integer"),
        ("batch=2,heads=8,seq=512,dim=64,width=3", "unknown field 'width'"),
        ("batch=2,heads=8,seq=512,dim=64,name=../x", "shape name '../x'"),
        ("batch=2,heads", "'heads' is not key=value"),
    ],
)
def test_a_shape_that_cannot_be_read_says_why(text, says):
    with pytest.raises(shape_syntax.ShapeError, match=None) as caught:
        shape_syntax.parse_shape(text)
    assert says in str(caught.value)


BASE = {
    "device": "auto",
    "dtype": "bfloat16",
    "candidates": ["flash", "math", "flex"],
    "reference": "math",
    "shapes": [{"name": "big", "batch": 8, "heads": 16, "seq": 4096, "dim": 64}],
    "timing": {"min_rounds": 50, "max_time_s": 20},
    "baseline": "baselines/main.json",
    "cpu": {
        "dtype": "float32",
        "candidates": ["flash", "math", "examples.kernels:naive_attention"],
        "shapes": [{"name": "small", "batch": 1, "heads": 2, "seq": 64, "dim": 16}],
        "timing": {"min_rounds": 20, "max_time_s": 5},
    },
}


def _given(*argv):
    return quick.given_config(cli._parser().parse_args(["run", *argv]))


def test_what_the_user_gives_applies_on_the_cpu_too():
    config = quick.build_config(
        BASE, _given("--candidates", "flash,mine:attn", "--shape", "b1_h2_s32_d16", "--max-time-s", "1")
    )
    assert "baseline" not in config  # the checkout's baseline belongs to its own runs
    # the reference is measured even when not named among the candidates
    assert config["candidates"] == ["flash", "mine:attn", "math"]
    assert config["shapes"] == [shape_syntax.parse_shape("b1_h2_s32_d16")]
    assert config["timing"] == {"min_rounds": 50, "max_time_s": 1.0}
    cpu = config["cpu"]
    assert "candidates" not in cpu and "shapes" not in cpu  # the user's apply on the CPU
    assert cpu["dtype"] == "float32"  # what the user did not give keeps the CPU's default
    assert cpu["timing"] == {"min_rounds": 20, "max_time_s": 1.0}


def test_a_file_gives_config_keys_and_flags_override_it(tmp_path):
    file = tmp_path / "mine.yaml"
    file.write_text(
        yaml.safe_dump(
            {
                "candidates": ["flash", "math"],
                "reference": "flash",
                "dtype": "float16",
                "shapes": ["b1_h2_s32_d16", {"batch": 1, "heads": 2, "seq": 48, "dim": 16, "causal": True}],
                "cpu": {"timing": {"max_time_s": 2}},
            }
        )
    )
    config = quick.build_config(BASE, _given(str(file), "--reference", "math", "--device", "cpu"))
    assert config["device"] == "cpu" and config["reference"] == "math" and config["dtype"] == "float16"
    assert [s["name"] for s in config["shapes"]] == ["b1_h2_s32_d16", "b1_h2_s48_d16_causal"]
    assert "dtype" not in config["cpu"]
    assert config["cpu"]["timing"] == {"min_rounds": 20, "max_time_s": 2}  # the file's own cpu: section


def test_the_same_config_finds_the_same_working_directory(tmp_path):
    config = quick.build_config(BASE, _given("--shape", "b1_h2_s32_d16"))
    again = quick.build_config(BASE, _given("--shape", "b1_h2_s32_d16"))
    other = quick.build_config(BASE, _given("--shape", "b1_h2_s48_d16"))
    assert quick.workdir_for(config, tmp_path) == quick.workdir_for(again, tmp_path)
    assert quick.workdir_for(config, tmp_path) != quick.workdir_for(other, tmp_path)
    assert quick.workdir_for(config, tmp_path).parent == tmp_path / quick.RUNS_DIR


def test_the_workflow_runs_from_the_checkout_with_its_profile(tmp_path, monkeypatch):
    monkeypatch.delenv(quick.CHECKOUT_VARIABLE, raising=False)
    assert quick.checkout() == ROOT  # the editable install's
    command = quick.snakemake_command(ROOT, tmp_path, 1, ["-n"])
    assert command[command.index("--snakefile") + 1] == str(ROOT / quick.SNAKEFILE)
    assert command[command.index("--workflow-profile") + 1] == str(ROOT / "profiles" / "default")
    assert command[command.index("--directory") + 1] == str(tmp_path)
    assert command[-1] == "-n"
    env = quick.job_environment(tmp_path, ROOT)
    assert env["PYTHONPATH"].split(os.pathsep)[0] == str(tmp_path)  # the caller's kernels first


def test_relative_pythonpath_entries_mean_the_callers_directory(tmp_path, monkeypatch):
    """The jobs run in the run's own directory, where `PYTHONPATH=src` would name another folder."""
    monkeypatch.setenv("PYTHONPATH", f"src{os.pathsep}/abs/kernels")
    entries = quick.job_environment(tmp_path, ROOT)["PYTHONPATH"].split(os.pathsep)
    assert entries == [str(tmp_path), str(tmp_path / "src"), "/abs/kernels", str(ROOT)]


def test_without_a_checkout_run_says_what_to_do(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(quick.CHECKOUT_VARIABLE, str(tmp_path))
    assert cli.main(["run", "--shape", "b1_h2_s32_d16"]) == 2
    err = capsys.readouterr().err
    assert f"no {quick.SNAKEFILE}" in err and "pip install -e ." in err and quick.CHECKOUT_VARIABLE in err


def test_a_bad_shape_or_config_stops_before_the_workflow(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["run", "--shape", "b1_h2_s32"]) == 2
    assert "missing dim" in capsys.readouterr().err
    assert cli.main(["run", "--shape", "b1_h2_s32_d16", "--candidates", "flash,nosuchmodule:attn"]) == 2
    assert "nosuchmodule" in capsys.readouterr().err
    (tmp_path / "mine.yaml").write_text("shapes: [b1_h2_s32_d16]\ntimming: {max_time_s: 1}\n")
    assert cli.main(["run", "mine.yaml"]) == 2
    assert "unknown key 'timming'; did you mean 'timing'?" in capsys.readouterr().err
    assert not (tmp_path / quick.RUNS_DIR).exists()


def test_help_leads_with_run_and_calls_the_job_commands_internal(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    text = capsys.readouterr().out
    assert "attnbench.compare" in text
    commands = text.split("positional arguments:", 1)[1].split("options:", 1)[0]
    assert commands.split()[:2] == ["COMMAND", "run"]
    internal = ("fingerprint", "calibrate", "benchmark", "compare", "autotune", "report", "worker")
    for command in internal:
        assert f"{command}" in commands
    assert commands.count("internal, run by the workflow") == len(internal)
    with pytest.raises(SystemExit):
        cli.main(["--version"])
    assert capsys.readouterr().out.strip() == "attnbench 0.1.0"
    with pytest.raises(SystemExit):
        cli.main(["gate", "verdict.json", "--", "-n"])  # only run passes arguments on to snakemake


QUICK_KERNELS = """
import torch.nn.functional as F


def attention(q, k, v, *, causal, scale):
    return F.scaled_dot_product_attention(q, k, v, is_causal=causal, scale=scale)


def wrong(q, k, v, *, causal, scale):
    return attention(q, k, v, causal=causal, scale=scale) * 1.1
"""


def _attnbench(cwd, *args):
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    began = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "attnbench", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )
    return proc.returncode, proc.stdout + proc.stderr, time.monotonic() - began


@pytest.mark.slow
def test_attnbench_run_end_to_end_on_the_cpu(tmp_path):
    """The whole workflow in a directory of its own, the user's kernels found from where the command
    ran, the headline and the report's path at the end; a failed candidate fails the run only with
    --fail-on-failed; the same command again finds the finished run and measures nothing."""
    (tmp_path / "quick_kernels.py").write_text(QUICK_KERNELS)
    args = [
        "run",
        "--shape", "b1_h2_s64_d16",
        "--candidates", "flash,quick_kernels:attention,quick_kernels:wrong",
        "--max-time-s", "1",
    ]  # fmt: skip
    code, out, seconds = _attnbench(tmp_path, *args, "--fail-on-failed")
    print(f"first run: {seconds:.0f} s")
    assert code == 1, out  # quick_kernels:wrong is incorrect
    (workdir,) = (tmp_path / quick.RUNS_DIR).iterdir()
    assert f"attnbench run: working directory {workdir}" in out
    report = workdir / "results" / "report" / "report.html"
    assert report.stat().st_size > 0 and str(report) in out
    assert "b1_h2_s64_d16" in out.rsplit("working directory", 1)[1]
    config = yaml.safe_load((workdir / CONFIG_FILE).read_text())
    assert config["cpu"]["timing"]["max_time_s"] == 1
    bench = yaml.safe_load((workdir / "results" / "bench" / "b1_h2_s64_d16.json").read_text())
    statuses = {name: entry["status"] for name, entry in bench["candidates"].items()}
    assert statuses == {
        "flash": "ok",
        "quick_kernels:attention": "ok",
        "quick_kernels:wrong": "incorrect",
        "math": "ok",
    }

    code, again, seconds = _attnbench(tmp_path, *args)
    print(f"second run: {seconds:.0f} s")
    assert code == 0, again
    assert "Nothing to be done" in again and str(report) in again
    assert list((tmp_path / quick.RUNS_DIR).iterdir()) == [workdir]
