"""Compile ahead (attnbench.ahead): every shape's compiling candidates called once, in parallel
processes, so that the benchmark jobs' compiles hit the disk caches. On the CPU here, with Inductor's
C++ backend standing in for the GPU's Triton."""

import copy
import os

import pytest
from helpers import CPU_CONFIG, ROOT, bench_spec

from attnbench import ahead, files, jobs
from attnbench import config as run_config
from attnbench.workloads import Shape

SCHEMA = ROOT / "workflow" / "schemas" / "compile_ahead.schema.yaml"

KERNEL = """
import os

import torch


@torch.compile(dynamic=False)
def _attend(q, k, v, scale):
    return torch.softmax(q @ k.transpose(-1, -2) * scale, dim=-1) @ v


def attention(q, k, v, *, causal, scale):
    return _attend(q, k, v, scale)


def dies_at_96(q, k, v, *, causal, scale):
    if q.shape[-2] == 96:
        os._exit(3)
    return _attend(q, k, v, scale)
"""


def shape(seq):
    return Shape.from_config({"name": f"s{seq}", "batch": 1, "heads": 2, "seq": seq, "dim": 16}).as_dict()


@pytest.fixture
def kernel_dir(tmp_path, monkeypatch, locked_env):
    """The kernel module importable here and in the processes that compile ahead, and Inductor's cache
    in a directory of the test's own (both see it through the environment)."""
    (tmp_path / "ahead_kernel.py").write_text(KERNEL)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    path = os.pathsep.join([str(tmp_path), str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])
    monkeypatch.setenv("PYTHONPATH", path)
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    return tmp_path


def test_only_flex_and_user_kernels_compile():
    assert ahead.compiles("flex") and ahead.compiles("mine:attention")
    assert not any(ahead.compiles(name) for name in ("flash", "efficient", "cudnn", "math"))


def test_the_job_exists_on_a_gpu_where_a_candidate_compiles_unless_switched_off():
    run = {"device": "cuda", "compile_ahead": True, "candidates": ["flash", "flex"]}
    assert jobs.compiles_ahead(run)
    assert not jobs.compiles_ahead(run | {"compile_ahead": False})
    assert not jobs.compiles_ahead(run | {"candidates": ["flash", "math"]})
    assert not jobs.compiles_ahead(run | {"device": "cpu"})  # each process's start costs more there
    assert run_config.DEFAULTS["compile_ahead"] is True


def test_its_spec_holds_every_shapes_benchmark_spec_with_only_the_compiling_candidates():
    config = copy.deepcopy(CPU_CONFIG)
    config["cpu"]["candidates"] = ["math", "flex", "examples.kernels:naive_attention"]
    run = run_config.effective(config)
    spec = jobs._compile_ahead_spec(run, None)
    assert [one["shape"]["name"] for one in spec["specs"]] == [s["name"] for s in run["shapes"]]
    for one in spec["specs"]:
        benchmark = jobs._benchmark_spec(run, one["shape"]["name"])
        assert one["candidates"] == ["flex", "examples.kernels:naive_attention"]
        # what decides the compiled graph is the benchmark job's: shape, dtype, mode, lock, threads
        assert {k: v for k, v in one.items() if k != "candidates"} == {
            k: v for k, v in benchmark.items() if k != "candidates"
        }


def test_a_changed_shape_list_reruns_nothing():
    """The rule's spec param is not of a built-in type, which Snakemake leaves out when it decides
    what to rerun: editing one shape reruns that shape's jobs, not compile_ahead (and its 16 processes)."""
    from snakemake.persistence import UNREPRESENTABLE, PersistenceBase

    param = jobs.Uncompared('{"specs": []}')
    assert str(param) == '{"specs": []}'
    assert PersistenceBase._serialize_param_builtin(None, param) is UNREPRESENTABLE
    assert PersistenceBase._serialize_param_builtin(None, str(param)) is not UNREPRESENTABLE


@pytest.mark.slow
def test_a_benchmark_job_after_compiling_ahead_compiles_from_the_cache(kernel_dir):
    """The first calls made ahead are the benchmark job's own (the same graph, inputs and settings):
    the job's compile is an FX graph cache hit, not a second compile."""
    from torch._dynamo.utils import counters

    specs = [bench_spec(shape(seq), ["ahead_kernel:attention"]) for seq in (64, 96)]
    document = ahead.run({"device": "cpu", "specs": specs})
    files.validate(files.stamped(document), SCHEMA, source="compile_ahead")
    for name in ("s64", "s96"):
        assert document["shapes"][name]["ahead_kernel:attention"]["error"] is None
        assert document["shapes"][name]["ahead_kernel:attention"]["seconds"] > 0
    counters.clear()
    result = jobs.run("benchmark", bench_spec(shape(96), ["math", "ahead_kernel:attention"]))
    assert result["candidates"]["ahead_kernel:attention"]["status"] == "ok"
    assert counters["inductor"]["fxgraph_cache_hit"] >= 1
    assert counters["inductor"]["fxgraph_cache_miss"] == 0


@pytest.mark.slow
def test_a_process_that_dies_costs_only_its_shapes_and_never_the_job(kernel_dir, monkeypatch):
    monkeypatch.setattr(ahead.host, "available_cpus", lambda: 2)  # one shape per process
    specs = [bench_spec(shape(seq), ["ahead_kernel:dies_at_96"]) for seq in (64, 96)]
    document = ahead.run({"device": "cpu", "specs": specs})
    files.validate(files.stamped(document), SCHEMA, source="compile_ahead")
    assert document["processes"] == 2
    assert document["shapes"]["s64"]["ahead_kernel:dies_at_96"]["error"] is None
    died = document["shapes"]["s96"]["ahead_kernel:dies_at_96"]
    assert died["seconds"] is None and died["error"].startswith("its process ended with 3")


def test_an_error_in_a_first_call_is_recorded_not_raised(locked_env, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "tests"))
    answers = __import__("attnbench.bench", fromlist=["first_calls"]).first_calls(
        bench_spec(shape(64), ["user_kernels:raises", "math"])
    )
    assert answers["math"]["error"] is None and answers["math"]["seconds"] > 0
    assert answers["user_kernels:raises"]["seconds"] is None
    assert answers["user_kernels:raises"]["error"]
