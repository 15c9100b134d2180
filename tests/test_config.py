import copy
import json

import pytest
import yaml
from helpers import ROOT, SCHEMAS
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from attnbench import config as run_config
from attnbench import device, jobs

SCHEMA = str(SCHEMAS / "config.schema.yaml")


@pytest.fixture(autouse=True)
def cuda_usable(monkeypatch):
    """Most tests here check config semantics with device: cuda on a machine without a GPU."""
    monkeypatch.setattr(device, "cuda_unusable_reason", lambda: None)


def default_config():
    return yaml.safe_load((ROOT / "config.yaml").read_text())


def test_default_config_is_valid_and_fills_defaults():
    config = default_config()
    validate(config, SCHEMA)
    assert config["timing"]["mode"] == "auto" and config["stats"]["alpha"] == 0.05


@pytest.mark.parametrize(
    "mutate",
    [
        lambda c: c.update(device="tpu"),
        lambda c: c.update(dtype="float8"),
        lambda c: c.update(candidates=["flash", "not a kernel"]),
        lambda c: c["shapes"][0].update(batch=0),
        lambda c: c["shapes"][0].update(seq="long"),
        lambda c: c["shapes"][0].update(name="../escape"),
        lambda c: c["shapes"][0].update(name="<b>x</b>"),
        lambda c: c["shapes"][0].update(heds=4),
        lambda c: c.update(timing={"min_rounds": 1}),
        lambda c: c.update(stats={"alpha": 1.5}),
        lambda c: c.update(candiates=["flash"]),
        lambda c: c.update(timing={"min_round": 5}),
        lambda c: c.update(report={"titel": "x"}),
    ],
)
def test_schema_rejects_bad_values(mutate):
    config = default_config()
    mutate(config)
    with pytest.raises(WorkflowError):
        validate(config, SCHEMA)


def test_cpu_fallback_replaces_named_keys(monkeypatch):
    monkeypatch.setattr(device, "cuda_unusable_reason", lambda: "no GPU")
    run = run_config.effective(default_config())
    assert run["device"] == "cpu" and run["requested_device"] == "auto"
    assert run["dtype"] == "float32" and "flex" not in run["candidates"]
    assert all(s["seq"] <= 1024 for s in run["shapes"])
    assert run["stats"] == default_config()["stats"]  # not overridden, kept


def test_explicit_device_is_kept(monkeypatch):
    config = default_config()
    config["device"] = "cuda"
    run = run_config.effective(config)
    assert run["device"] == "cuda" and run["shapes"] == config["shapes"]


@pytest.mark.parametrize(
    "mutate,message",
    [
        (lambda c: c["shapes"].append(dict(c["shapes"][0])), "duplicate shape names"),
        (lambda c: c.update(reference="cudnn", candidates=["flash", "math"]), "reference: 'cudnn'"),
        (lambda c: c["shapes"][0].update(kv_heads=5), "not a multiple of kv_heads 5"),
    ],
)
def test_semantic_checks_name_the_field(mutate, message):
    config = default_config()
    config["device"] = "cuda"
    mutate(config)
    with pytest.raises(run_config.ConfigError, match=message):
        run_config.effective(config)


def test_benchmark_spec_carries_everything_that_changes_a_result(tmp_path, monkeypatch):
    (tmp_path / "mykernels.py").write_text("def attn(q, k, v, *, causal, scale):\n    return q\n")
    monkeypatch.chdir(tmp_path)
    config = default_config()
    config.update(device="cuda", candidates=["flash", "mykernels:attn"], reference="flash")
    run = run_config.effective(config)
    name = run["shapes"][0]["name"]
    spec = json.loads(jobs.spec("benchmark", run, name))
    assert spec["shape"]["kv_heads"] == spec["shape"]["heads"] and spec["timing"] == config["timing"]
    before = spec["kernel_hashes"]["mykernels:attn"]
    (tmp_path / "mykernels.py").write_text("def attn(q, k, v, *, causal, scale):\n    return k\n")
    rerun = run_config.effective(config)  # the next snakemake invocation parses again
    after = json.loads(jobs.spec("benchmark", rerun, name))["kernel_hashes"]["mykernels:attn"]
    assert before != after


def test_job_env_sets_startup_variables():
    assert run_config.job_env({"lock": {"seed": 3}}) == "env PYTHONHASHSEED=3"
    assert "CUBLAS_WORKSPACE_CONFIG=:4096:8" in run_config.job_env({"lock": {"deterministic": True}})


def test_device_cuda_without_a_usable_gpu_fails_at_parse_time(monkeypatch):
    monkeypatch.setattr(device, "cuda_unusable_reason", lambda: "no NVIDIA GPU or driver is visible")
    config = default_config()
    config["device"] = "cuda"
    with pytest.raises(run_config.ConfigError, match="device: 'cuda', but no NVIDIA GPU.*use device: auto"):
        run_config.effective(config)
    config["device"] = "auto"
    assert run_config.effective(config)["device"] == "cpu"


@pytest.mark.parametrize("runs_on", ["cpu", "cuda"])
@pytest.mark.parametrize(
    "section,mutate,message",
    [
        ("gpu", lambda c: c["shapes"].append(dict(c["shapes"][0])), "duplicate shape names"),
        ("gpu", lambda c: c.update(reference="cudnn", candidates=["flash", "math"]), "reference: 'cudnn'"),
        ("cpu", lambda c: c["cpu"]["shapes"].append(dict(c["cpu"]["shapes"][0])), "duplicate shape names"),
        ("cpu", lambda c: c["cpu"].update(reference="cudnn", candidates=["math"]), "reference: 'cudnn'"),
    ],
)
def test_every_device_section_is_checked_whatever_device_runs(monkeypatch, runs_on, section, mutate, message):
    """Found by trying it: on a laptop the GPU section's mistakes were accepted and met on the cluster."""
    monkeypatch.setattr(device, "cuda_unusable_reason", lambda: None if runs_on == "cuda" else "no GPU")
    config = default_config()
    mutate(config)
    with pytest.raises(run_config.ConfigError, match=message):
        run_config.effective(config)


def test_effective_leaves_snakemakes_config_as_it_was(monkeypatch):
    monkeypatch.setattr(device, "cuda_unusable_reason", lambda: "no GPU")
    config = default_config()
    before = copy.deepcopy(config)
    run = run_config.effective(config)
    run["shapes"].append({"name": "x"})
    run["timing"]["mode"] = "graph"
    assert config == before
