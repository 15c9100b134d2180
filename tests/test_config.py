import copy
import dataclasses
import json
import re
import subprocess
import sys

import pytest
import yaml
from helpers import CONFIG, ROOT, SCHEMAS, copy_workflow, snakemake, write_config
from snakemake.exceptions import WorkflowError
from snakemake.utils import update_config, validate

from attnbench import capacity, configfile, device, files, jobs, presets
from attnbench import config as run_config
from attnbench.settings import TimingSettings
from attnbench.workloads import Shape

SCHEMA = str(SCHEMAS / "config.schema.yaml")


@pytest.fixture(autouse=True)
def cuda_usable(monkeypatch):
    """Most tests here check config semantics with device: cuda on a machine without a GPU."""
    monkeypatch.setattr(device, "cuda_unusable_reason", lambda: None)


def default_config():
    return yaml.safe_load(CONFIG.read_text())


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
    """attnbench's check rejects what Snakemake's validate rejects (it runs first, in its place)."""
    config = default_config()
    mutate(config)
    with pytest.raises(run_config.ConfigError):
        run_config.validate(config, SCHEMA)
    with pytest.raises(WorkflowError):
        validate(config, SCHEMA)


def test_default_config_passes_attnbenchs_check():
    run_config.validate(default_config(), SCHEMA)


def test_a_misspelt_shape_key_is_named_with_a_suggestion_and_no_schema_dump():
    """Found by trying it: `dimm: 64` was reported as "'dim' is a required property" and 30 lines of
    schema and instance, without naming dimm."""
    config = default_config()
    config["cpu"]["shapes"][0]["dimm"] = config["cpu"]["shapes"][0].pop("dim")
    with pytest.raises(run_config.ConfigError) as raised:
        run_config.validate(config, SCHEMA)
    assert str(raised.value).splitlines() == [
        "cpu.shapes[0] (b2_h8_s128_d64): unknown key 'dimm'; did you mean 'dim'?",
        "cpu.shapes[0] (b2_h8_s128_d64): missing required key 'dim' (or 'preset')",
    ]


@pytest.mark.parametrize(
    "mutate,message",
    [
        (
            lambda c: c.update(candiates=["flash"]),
            "top level: unknown key 'candiates'; did you mean 'candidates'?",
        ),
        (
            lambda c: c.update(dtype="bfloat"),
            "dtype: 'bfloat' is not one of float16, bfloat16, float32; did you mean 'bfloat16'?",
        ),
        (
            lambda c: c["cpu"].update(mode="forwards"),
            "cpu.mode: 'forwards' is not one of forward, forward_backward; did you mean 'forward'?",
        ),
        (
            lambda c: c.update(candidates=["flash", "math", "flashy"]),
            "candidates[2]: unknown candidate 'flashy': use one of flash, efficient, cudnn, math, flex or module:function; did you mean 'flash'?",
        ),
        (
            lambda c: c["timing"].update(max_time_s=-1),
            "timing.max_time_s: -1 is less than or equal to the minimum of 0",
        ),
        (
            lambda c: c["cpu"]["shapes"][2].update(batch=0),
            "cpu.shapes[2].batch (b2_h8_s512_d64): 0 is less than the minimum of 1",
        ),
        (
            lambda c: c.update(lock={"tf32": "x" * 200}),
            "lock.tf32: 'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx... is not of type 'boolean'",
        ),
        (
            lambda c: c["timing"].update(max_time_s="1"),
            "timing.max_time_s: '1' is not of type 'number' (text: quoted in YAML, or inside [...] or {...} of --config, which Snakemake reads as text)",
        ),
        (  # found trying it: --config fail_on_failed_candidates=true is the text 'true' for Snakemake
            lambda c: c.update(fail_on_failed_candidates="true"),
            "fail_on_failed_candidates: 'true' is not of type 'boolean' (on --config, write True: Snakemake reads other spellings as text)",
        ),
        (  # issue 31: passed validation, then every candidate failed with "timestamp out of range", exit 0
            lambda c: c["timing"].update(call_timeout_s=1e10),
            "timing.call_timeout_s: 10000000000.0 is greater than the maximum of 3600",
        ),
        (
            lambda c: c["cpu"]["timing"].update(max_time_s=1e6),
            "cpu.timing.max_time_s: 1000000.0 is greater than the maximum of 86400",
        ),
        (
            lambda c: c.update(calibrate={"warmup_max_s": 7200}),
            "calibrate.warmup_max_s: 7200 is greater than the maximum of 3600",
        ),
    ],
)
def test_schema_errors_name_the_path_and_suggest(mutate, message):
    config = default_config()
    mutate(config)
    with pytest.raises(run_config.ConfigError) as raised:
        run_config.validate(config, SCHEMA)
    assert str(raised.value) == message


def _shared(levels: int, width: int = 10) -> list:
    """What YAML aliases load as: each level a list of `width` references to the one below, so
    `width ** levels` values in a few kilobytes."""
    value: list = ["x"] * width
    for _ in range(levels - 1):
        value = [value] * width
    return value


def test_a_config_of_shared_values_beyond_the_node_budget_is_refused_before_the_schema():
    """Issue 31: an alias bomb inside a validated value hung for over 150 s: jsonschema's message takes
    the repr of the whole expanded value. A million values here (the old code listed them all); the
    same check ends a billion (below, in a child process that would otherwise hang)."""
    config = default_config()
    config["report"] = {"title": _shared(6)}
    with pytest.raises(run_config.ConfigError) as raised:
        run_config.validate(config, SCHEMA)
    assert str(raised.value) == f"the config uses more than {configfile.MAX_NODES:,} nodes through aliases"


def test_a_billion_shared_values_are_refused_in_milliseconds():
    code = (
        "import time, yaml\n"
        "from attnbench import config\n"
        "value = ['x'] * 10\n"
        "for _ in range(8):\n    value = [value] * 10\n"
        "given = yaml.safe_load(open('config/config.yaml'))\n"
        "given['report'] = {'title': value}\n"
        "began = time.perf_counter()\n"
        "for check in (lambda: config.validate(given, 'workflow/schemas/config.schema.yaml'), lambda: config.resolve(given)):\n"
        "    try:\n        check()\n    except config.ConfigError as exc:\n        print(exc)\n"
        "print(time.perf_counter() - began < 1.0)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.stdout.splitlines() == ["the config uses more than 100,000 nodes through aliases"] * 2 + ["True"], (
        proc.stdout + proc.stderr
    )


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (
            lambda c: c.update(report={"title": "x" * 20_000}),
            "the config: report.title: a value of 20,000 characters, more than the 10,000 a config value may have",
        ),
        (
            lambda c: c["cpu"]["shapes"][0].update(name="n" * 50_000),
            "the config: cpu.shapes[0].name: a value of 50,000 characters, more than the 10,000",
        ),
    ],
)
def test_a_value_beyond_its_bound_is_refused_before_the_schema(mutate, message):
    config = default_config()
    mutate(config)
    with pytest.raises(run_config.ConfigError) as raised:
        run_config.validate(config, SCHEMA)
    assert str(raised.value).startswith(message)


def test_a_schema_error_shows_a_bounded_part_of_the_value():
    """Found by trying it: an unknown key of 5,000 characters was printed whole."""
    config = default_config()
    config["k" * 5_000] = 1
    config["lock"] = {"tf32": list(range(500))}
    with pytest.raises(run_config.ConfigError) as raised:
        run_config.validate(config, SCHEMA)
    lines = str(raised.value).splitlines()
    assert lines[0].startswith("top level: unknown key 'kkkkk") and len(lines[0]) <= run_config.MAX_LINE_CHARS
    assert all(len(line) <= run_config.MAX_LINE_CHARS for line in lines), lines
    shown = run_config._short(_shared(9))  # a billion values: a bounded part of them
    assert shown.startswith("[[[[...], [...], [...]") and len(shown) <= run_config.SHOWN_CHARS


def test_many_schema_errors_are_listed_up_to_a_limit():
    config = default_config()
    config.update({f"extra_{i:02}": i for i in range(15)})
    with pytest.raises(run_config.ConfigError) as raised:
        run_config.validate(config, SCHEMA)
    lines = str(raised.value).splitlines()
    assert len(lines) == run_config.MAX_LISTED + 1 and lines[-1] == "... and 5 more"


def test_cpu_fallback_replaces_named_keys(monkeypatch):
    monkeypatch.setattr(device, "cuda_unusable_reason", lambda: "no GPU")
    run = run_config.resolve(default_config())
    assert run["device"] == "cpu" and run["requested_device"] == "auto"
    assert run["dtype"] == "float32" and "flex" not in run["candidates"]
    assert all(Shape.from_config(s).seq <= 1024 for s in run["shapes"])
    assert run["stats"] == default_config()["stats"]  # not overridden, kept


def test_explicit_device_is_kept(monkeypatch):
    config = default_config()
    config["device"] = "cuda"
    run = run_config.resolve(config)
    assert run["device"] == "cuda"
    config["shapes"] = [s for s in config["shapes"] if "sweep" not in s]  # sweeps: their own test
    assert run_config.resolve(config)["shapes"] == [presets.apply(s) for s in config["shapes"]]


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
        run_config.resolve(config)


def test_benchmark_spec_carries_everything_that_changes_a_result(tmp_path, monkeypatch):
    (tmp_path / "mykernels.py").write_text("def attn(q, k, v, *, causal, scale):\n    return q\n")
    monkeypatch.chdir(tmp_path)
    config = default_config()
    config.update(device="cuda", candidates=["flash", "mykernels:attn"], reference="flash")
    run = run_config.resolve(config)
    name = run["shapes"][0]["name"]
    spec = json.loads(jobs.spec("benchmark", run, name))
    assert spec["shape"]["kv_heads"] == spec["shape"]["heads"]
    # complete: every timing setting written out, the config's where it sets one
    assert spec["timing"] == dataclasses.asdict(TimingSettings()) | config["timing"]
    files.validate(spec, SCHEMAS / "benchspec.schema.yaml", source="spec")
    before = spec["kernel_hashes"]["mykernels:attn"]
    (tmp_path / "mykernels.py").write_text("def attn(q, k, v, *, causal, scale):\n    return k\n")
    rerun = run_config.resolve(config)  # the next snakemake invocation parses again
    after = json.loads(jobs.spec("benchmark", rerun, name))["kernel_hashes"]["mykernels:attn"]
    assert before != after


def test_a_benchmark_spec_missing_a_setting_is_refused_before_anything_runs():
    """A spec from another attnbench or made by hand: the job names the field instead of measuring with
    a default the config never chose."""
    run = run_config.resolve(default_config())
    spec = json.loads(jobs.spec("benchmark", run, run["shapes"][0]["name"]))
    del spec["timing"]["call_timeout_s"]
    with pytest.raises(files.ResultFileError, match=r"spec: field 'timing'.*call_timeout_s"):
        jobs.run("benchmark", spec, SCHEMAS)


@pytest.mark.parametrize(
    "section,candidate,message",
    [
        (
            "candidates",
            "no_such_module_xyz:attn",
            "candidates: 'no_such_module_xyz:attn': module 'no_such_module_xyz' not found (looked in",
        ),
        (
            "cpu",
            "examples.kernels:naive_atention",
            "cpu.candidates: 'examples.kernels:naive_atention': module 'examples.kernels' (",
        ),
    ],
)
def test_a_user_kernel_that_cannot_be_found_fails_at_parse_time(section, candidate, message):
    """Found by trying it: a missing module was met only after the whole run (1 min 43 s, exit 0)."""
    config = default_config()
    (config["cpu"] if section == "cpu" else config)["candidates"].append(candidate)
    with pytest.raises(run_config.ConfigError) as raised:
        run_config.resolve(config)
    assert str(raised.value).startswith(message)
    if section == "cpu":
        assert str(raised.value).endswith(
            "defines no 'naive_atention'; did you mean examples.kernels:naive_attention?"
        )


def test_command_line_keys_win_over_the_cpu_section(monkeypatch):
    monkeypatch.setattr(device, "cuda_unusable_reason", lambda: "no GPU")
    config = default_config()
    before = copy.deepcopy(config)
    cpu = run_config.resolve(config)
    overrides = {"candidates": ["flash", "math"], "dtype": "float16", "timing": {"mode": "warm"}}
    run = run_config.resolve(config, overrides=overrides)
    assert (run["candidates"], run["dtype"]) == (["flash", "math"], "float16")
    assert run["timing"] == {**cpu["timing"], "mode": "warm"}  # merged key by key, as Snakemake does
    assert run["shapes"] == cpu["shapes"] and config == before


def test_the_cpu_view_with_command_line_keys_is_checked(monkeypatch):
    monkeypatch.setattr(device, "cuda_unusable_reason", lambda: "no GPU")
    with pytest.raises(
        run_config.ConfigError, match=r"^reference: 'math' is not one of candidates \['flash'\]"
    ):
        run_config.resolve(default_config(), overrides={"candidates": ["flash"]})


def planned_specs(workdir, *args) -> list[dict]:
    """The benchmark jobs' specs that a dry run of the whole workflow plans."""
    out = snakemake(workdir, "--dry-run", "--printshellcmds", "all", *args)
    return [json.loads(spec) for spec in re.findall(r"attnbench benchmark --spec '([^']*)'", out)]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    workdir = copy_workflow(tmp_path_factory.mktemp("overrides"))
    write_config(workdir, yaml.safe_load(CONFIG.read_text()))
    return workdir


@pytest.mark.slow
def test_a_config_override_on_the_command_line_takes_effect_on_the_cpu(workdir):
    """Found by trying it: `--config candidates=[...]` on a CPU machine was replaced by the cpu: section."""
    specs = planned_specs(workdir, "--config", "device=cpu", "candidates=[flash,math]", "timing={mode: warm}")
    cpu = default_config()["cpu"]
    assert sorted(spec["shape"]["name"] for spec in specs) == sorted(shape["name"] for shape in cpu["shapes"])
    for spec in specs:
        assert (spec["device"], spec["candidates"]) == ("cpu", ["flash", "math"])
        assert (
            spec["timing"]["mode"] == "warm" and spec["timing"]["max_time_s"] == cpu["timing"]["max_time_s"]
        )


@pytest.mark.slow
def test_a_configfile_is_not_a_command_line_override(workdir, tmp_path):
    """--configfile replaces config.yaml's keys; its own cpu: section still applies on the CPU."""
    config = default_config()
    config.update(device="cpu", candidates=["flash", "math"])
    config["cpu"]["candidates"] = ["math", "efficient"]
    (tmp_path / "other.yaml").write_text(yaml.safe_dump(config))
    specs = planned_specs(workdir, "--configfile", str(tmp_path / "other.yaml"))
    assert specs and all(spec["candidates"] == ["math", "efficient"] for spec in specs)


def test_job_env_sets_startup_variables():
    assert run_config.job_env({"lock": {"seed": 3}}) == "env PYTHONHASHSEED=3"
    assert "CUBLAS_WORKSPACE_CONFIG=:4096:8" in run_config.job_env({"lock": {"deterministic": True}})


def test_device_cuda_without_a_usable_gpu_fails_at_parse_time(monkeypatch):
    monkeypatch.setattr(device, "cuda_unusable_reason", lambda: "no NVIDIA GPU or driver is visible")
    config = default_config()
    config["device"] = "cuda"
    with pytest.raises(run_config.ConfigError, match="device: 'cuda', but no NVIDIA GPU.*use device: auto"):
        run_config.resolve(config)
    config["device"] = "auto"
    assert run_config.resolve(config)["device"] == "cpu"


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
        run_config.resolve(config)


def test_effective_leaves_snakemakes_config_as_it_was(monkeypatch):
    monkeypatch.setattr(device, "cuda_unusable_reason", lambda: "no GPU")
    config = default_config()
    before = copy.deepcopy(config)
    run = run_config.resolve(config)
    run["shapes"].append({"name": "x"})
    run["timing"]["mode"] = "graph"
    assert config == before


def _run_with_shapes(shapes):
    config = default_config()
    config["device"] = "cpu"
    config["cpu"]["shapes"] = shapes
    run_config.validate(config, SCHEMA)
    return run_config.resolve(config)


def test_a_shape_may_name_a_model_preset_and_state_what_differs():
    run = _run_with_shapes([{"name": "g", "preset": "gemma-2-9b", "batch": 1, "seq": 512, "causal": True},
                            {"name": "m", "preset": "mistral-7b-v0.1", "batch": 1, "seq": 512, "causal": True,
                             "window": None}])
    gemma, mistral = run["shapes"]
    assert (gemma["heads"], gemma["kv_heads"], gemma["dim"], gemma["softcap"], gemma["window"]) == (16, 8, 256, 50.0, [4095, 0])
    assert "window" not in mistral and mistral["dim"] == 128  # the shape's null turned the window off
    with pytest.raises(run_config.ConfigError, match="did you mean"):
        _run_with_shapes([{"name": "x", "preset": "llama-3.1-7b", "batch": 1, "seq": 64}])


@pytest.mark.parametrize(
    ("shape", "message"),
    [
        ({"prefix": 8}, "prefix .* needs causal: true"),
        ({"seq_lens": [8, 8]}, "leave out batch, seq and seq_kv"),
        ({"seq_lens": {"min": 9, "max": 3, "total": 40}, "batch": None, "seq": None}, "min 9 is above max 3"),
    ],
)
def test_shapes_that_cannot_be_measured_are_refused_before_any_job(shape, message):
    entry = {"name": "s", "batch": 1, "heads": 2, "seq": 64, "dim": 16, **shape}
    entry = {k: v for k, v in entry.items() if v is not None}
    with pytest.raises(run_config.ConfigError, match=message):
        _run_with_shapes([entry])


@pytest.mark.parametrize(
    ("shape", "message"),
    [
        ({"cache_lens": [64, 80]}, "cache_lens lists 2 requests, batch is 3"),
        ({"cache_lens": [64, 80, 2], "seq": 4}, "a cache of 2 keys is shorter than the 4 new queries"),
        ({"cache_lens": {"min": 10, "max": 20, "mean": 30}}, "mean 30 is not between"),
        ({"cache_lens": [64, 80, 96], "causal_alignment": "top_left"}, "bottom-right aligned"),
        ({"cache_lens": [64, 80, 96], "seq_kv": 8}, "leave out seq_kv"),
        # fp8 queries read an fp8 cache of their format: without its descale an fp8 output falls below
        # e4m3's normal range; with e5m2's it overflows e4m3
        ({"cache_lens": [64, 80, 96], "q_dtype": "float8_e4m3fn"}, "q_dtype float8_e4m3fn needs kv_dtype"),
        ({"cache_lens": [64, 80, 96], "q_dtype": "float8_e4m3fn", "kv_dtype": "float8_e5m2"}, "needs kv_dtype"),
    ],
)
def test_decode_shapes_that_cannot_be_measured_are_refused_before_any_job(shape, message):
    entry = {"name": "d", "batch": 3, "heads": 4, "kv_heads": 1, "dim": 16, **shape}
    with pytest.raises(run_config.ConfigError, match=message):
        _run_with_shapes([entry])


def test_a_decode_shape_is_a_batch_of_requests_against_their_own_caches():
    run = _run_with_shapes([{"name": "d", "batch": 3, "heads": 4, "kv_heads": 1, "dim": 16, "seq": 2,
                             "cache_lens": {"min": 8, "max": 64, "mean": 20, "seed": 5}}])
    shape = Shape.from_config(run["shapes"][0])
    assert shape.seq_lens == (2, 2, 2) and len(shape.seq_lens_kv) == 3 and shape.seq == 6
    assert shape.causal and shape.causal_alignment == "bottom_right" and shape.seq_kv == sum(shape.seq_lens_kv)


def test_a_sweep_makes_one_named_shape_per_combination():
    run = _run_with_shapes([{"name": "llama", "preset": "llama-3.1-8b", "causal": True,
                             "sweep": {"batch": [1, 16], "cache_lens": [{"min": 64, "max": 512, "mean": 128},
                                                                   {"min": 1024, "max": 4096, "mean": 1500}]}}])
    names = [s["name"] for s in run["shapes"]]
    assert names == ["llama_b1_cache0", "llama_b1_cache1", "llama_b16_cache0", "llama_b16_cache1"]
    assert run["shapes"][0]["heads"] == 32 and run["shapes"][2]["batch"] == 16
    with pytest.raises(run_config.ConfigError, match="cache_lens lists 16 requests, batch is 1"):
        _run_with_shapes([{"name": "x", "preset": "llama-3.1-8b", "sweep": {"batch": [1], "cache_lens": [[300] * 16]}}])
    with pytest.raises(run_config.ConfigError, match="missing batch and seq"):
        _run_with_shapes([{"name": "x", "preset": "llama-3.1-8b", "sweep": {"batch": [1, 2]}}])


def test_older_stats_settings_still_run_and_a_contradicting_one_is_refused(monkeypatch):
    """Issue 30: n_resamples and seed no longer do anything (accepted so older configs run); the
    interval's confidence is 1 - alpha, so a config asking for another is refused before the run, as
    is a resolution above the threshold (a `same` beside an interval wholly outside the band)."""
    monkeypatch.setattr(device, "cuda_unusable_reason", lambda: "no GPU")
    config = default_config()
    config["stats"] = {"alpha": 0.05, "n_resamples": 2000, "seed": 3, "confidence": 0.95}
    run_config.validate(config, SCHEMA)
    run = run_config.resolve(config)
    assert jobs.stats_settings(run) == {"alpha": 0.05}
    config["stats"] = {"alpha": 0.05, "confidence": 0.9}
    with pytest.raises(run_config.ConfigError, match=r"stats: confidence 0.9 is not 1 - alpha \(0.95\)"):
        run_config.resolve(config)
    config["stats"] = {"threshold": 0.01, "resolution": 0.02}
    with pytest.raises(run_config.ConfigError, match="stats: resolution 0.02 exceeds threshold 0.01"):
        run_config.resolve(config)
    config["stats"] = {}
    config["ratchet"] = {"threshold": 0.01}  # its default resolution, 2%, is above that
    with pytest.raises(run_config.ConfigError, match="ratchet: resolution 0.02 exceeds threshold 0.01"):
        run_config.resolve(config)


def test_a_shape_that_cannot_fit_in_memory_is_refused_before_any_job(monkeypatch):
    """Issue 31: `batch: 10**12` was accepted, ran calibrate and the fingerprint, then failed with a
    66-line error and "run the same command again", which failed the same way."""
    monkeypatch.setattr(device, "cuda_unusable_reason", lambda: "no GPU")
    config = default_config()
    config["cpu"]["shapes"][0]["batch"] = 10**12
    with pytest.raises(run_config.ConfigError) as raised:
        run_config.resolve(config)
    message = str(raised.value)
    assert message.startswith("cpu.shapes: b2_h8_s128_d64: needs at least ")
    has = capacity.host_bytes()
    assert f"more than the {capacity.gib(has)} ({has:,} bytes) this host has" in message
    assert "inputs " in message and "float64 reference " in message and "math's own inputs" in message
    assert "\n" not in message


def test_a_gpu_shape_is_checked_against_the_gpus_memory(monkeypatch):
    monkeypatch.setattr(capacity, "gpu_bytes", lambda: 80 * 2**30)
    config = default_config()
    config["device"] = "cuda"
    run_config.resolve(config)  # every default shape fits an 80 GiB GPU
    # math's score matrix alone: 16 x 131072^2 bfloat16 values, 512 GiB
    config["shapes"].append({"name": "long", "batch": 1, "heads": 16, "seq": 131072, "dim": 128})
    with pytest.raises(run_config.ConfigError, match=r"^shapes: long: needs at least 5\d\d GiB \(\d[\d,]+ bytes\) of GPU"
                       r" memory .* more than the 80 GiB \(85,899,345,920 bytes\) the largest GPU here has"):
        run_config.resolve(config)
    # where there is no GPU to ask, the GPU section is held to what any GPU has
    monkeypatch.setattr(device, "cuda_unusable_reason", lambda: "no GPU")
    config["device"] = "auto"
    config["shapes"][-1]["batch"] = 10**12
    with pytest.raises(run_config.ConfigError, match=r"^shapes: long: .* any GPU made has"):
        run_config.resolve(config)


@pytest.mark.parametrize("example", ["decode.yaml", "triton_flash.yaml", "sageattention.yaml", None])
def test_the_default_and_example_shapes_fit_an_80_gib_gpu(monkeypatch, example):
    monkeypatch.setattr(capacity, "gpu_bytes", lambda: 80 * 2**30)
    config = default_config()
    if example:
        update_config(config, yaml.safe_load((ROOT / "examples" / example).read_text()))
    config["device"] = "cuda"
    run = run_config.resolve(config)
    for shape in run["shapes"]:
        assert capacity.need(shape, run["dtype"], run["mode"], run["reference"]).total < 20 * 2**30


def test_the_memory_bound_counts_what_every_job_holds():
    """A lower bound: one input set (q, k, v, the output gradient), float64 copies of them with the
    reference's output and a chunk of its scores, and math's score matrix."""
    shape = {"name": "s", "batch": 2, "heads": 4, "seq": 256, "dim": 32}
    need = capacity.need(shape, "float32", "forward", "math")
    elements = 2 * 4 * 256 * 32
    assert need.inputs == 4 * elements * 4
    assert need.reference == 4 * elements * 8 + 2 * 4 * 256 * 256 * 8
    # its answers, own inputs, output, opened answers, the output in float64, the score matrix
    assert need.candidate == elements * 8 + 4 * elements * 4 + elements * 4 + 2 * elements * 8 + 2 * 4 * 256 * 256 * 4
    assert need.total == need.inputs + max(need.reference, need.candidate)
    assert capacity.need(shape, "float32", "forward", "flash").candidate == need.candidate - 2 * 4 * 256 * 256 * 4
    # a drawn decode batch counts each request's cache at its minimum, never drawing the lengths
    decode = {"name": "d", "batch": 10**9, "heads": 8, "dim": 64, "cache_lens": {"min": 1024, "max": 4096, "mean": 2048}}
    assert capacity.need(decode, "bfloat16", "forward", "math").inputs >= 10**9 * 1024 * 8 * 64 * 2 * 2


def test_a_standard_library_kernel_is_refused_as_such_at_parse():
    config = default_config()
    config["candidates"].append("os:system")
    with pytest.raises(run_config.ConfigError, match=r"^candidates: 'os:system': refused: os is not a kernel module"):
        run_config.resolve(config)


def test_a_kernel_whose_signature_cannot_take_the_call_is_refused_at_parse(tmp_path, monkeypatch):
    (tmp_path / "mykernels.py").write_text("def attn(q, k, v):\n    return q\n")
    monkeypatch.chdir(tmp_path)
    config = default_config()
    config["candidates"].append("mykernels:attn")
    with pytest.raises(
        run_config.ConfigError,
        match=r"^candidates: 'mykernels:attn': refused: attn\(q, k, v\) cannot be called as attnbench calls it,"
        r" attn\(q, k, v, causal=..., scale=...\): it has no parameter 'causal'$",
    ):
        run_config.resolve(config)
