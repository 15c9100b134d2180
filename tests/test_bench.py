"""Every candidate status on the CPU: ok, unsupported, incorrect, error, oom; nothing lost."""

import pytest
from helpers import ROOT, SCHEMAS, TINY_SHAPE, bench_spec

from attnbench import SCHEMA_VERSION, files
from attnbench.bench import run_shape

SHAPE = TINY_SHAPE


def spec(candidates, **overrides):
    return bench_spec(SHAPE, candidates, **overrides)


@pytest.fixture
def user_kernels(monkeypatch, locked_env):
    monkeypatch.syspath_prepend(str(ROOT / "tests"))


def statuses(result):
    return {name: entry["status"] for name, entry in result["candidates"].items()}


def test_every_status_path_and_the_document_matches_the_schema(user_kernels):
    names = [
        "math",
        "efficient",
        "user_kernels:correct",
        "user_kernels:wrong_values",
        "user_kernels:wrong_shape",
        "user_kernels:wrong_dtype",
        "user_kernels:returns_nan",
        "user_kernels:raises",
        "user_kernels:out_of_memory",
        "user_kernels:says_not_supported",
        "user_kernels:declines",
        "user_kernels:not_implemented",
        "no_such_module:fn",
    ]
    # A CI target no four samples meet: sampling stops on max_rounds, whatever the machine's noise
    # (found when a quiet CI machine met the default 1% at round 4 and the stop reason said so).
    timing = {**bench_spec(SHAPE, [])["timing"], "target_rel_ci": 1e-9}
    result = run_shape(spec(names, timing=timing))
    files.validate(
        {"schema": SCHEMA_VERSION, **files.jsonable(result)}, SCHEMAS / "bench.schema.yaml", source="result"
    )
    assert statuses(result) == {
        "math": "ok",
        "efficient": "unsupported",
        "user_kernels:correct": "ok",
        "user_kernels:wrong_values": "incorrect",
        "user_kernels:wrong_shape": "incorrect",
        "user_kernels:wrong_dtype": "incorrect",
        "user_kernels:returns_nan": "incorrect",
        "user_kernels:raises": "error",
        "user_kernels:out_of_memory": "oom",
        "user_kernels:says_not_supported": "error",
        "user_kernels:declines": "unsupported",
        "user_kernels:not_implemented": "unsupported",
        "no_such_module:fn": "error",
    }
    entries = result["candidates"]
    assert entries["user_kernels:wrong_values"]["rel_error"] == pytest.approx(0.1, rel=1e-3)
    assert "exceeds the float32 tolerance" in entries["user_kernels:wrong_values"]["reason"]
    assert "expected (1, 2, 64, 16)" in entries["user_kernels:wrong_shape"]["reason"]
    assert entries["user_kernels:returns_nan"]["reason"] == "output contains NaN or Inf"
    assert "always fails" in entries["user_kernels:raises"]["reason"]
    assert "20.00 GiB" in entries["user_kernels:out_of_memory"]["reason"]
    # The CPU lacks the backend: said plainly, PyTorch's own words kept in reason_detail.
    assert entries["efficient"]["reason"].startswith("needs CUDA")
    assert "No viable backend" in entries["efficient"]["reason_detail"]
    # A user kernel declines explicitly, never by the wording of an error.
    assert entries["user_kernels:declines"]["reason"] == "only causal shapes; this one is not"
    assert entries["user_kernels:not_implemented"]["reason"] == "GQA is not implemented yet"
    # An error keeps its traceback, down to the kernel's own line.
    for name in ("user_kernels:raises", "user_kernels:says_not_supported", "no_such_module:fn"):
        assert entries[name]["traceback"].startswith("Traceback (most recent call last)")
    assert 'raise ValueError("this kernel always fails")' in entries["user_kernels:raises"]["traceback"]
    assert "ModuleNotFoundError" in entries["no_such_module:fn"]["traceback"]
    for name in ("math", "user_kernels:correct"):
        entry = entries[name]
        assert len(entry["samples_ms"]) == result["timing"]["rounds_kept"] == 4
        assert entry["ci95_ms"][0] <= entry["median_ms"] <= entry["ci95_ms"][1]
        assert entry["rel_ci"] > 0 and entry["target_met"] is False
        assert entry["rel_error"] < 1e-5 and entry["tflops"] > 0
    assert "max_rounds (4) reached" in result["timing"]["stop_reason"]
    for entry in entries.values():
        if entry["status"] != "ok":
            assert entry["samples_ms"] == [] and entry["median_ms"] is None and entry["reason"]


def test_result_records_lock_device_and_settings(user_kernels):
    result = run_shape(spec(["math"]))
    assert result["lock"]["deterministic"] is False and result["lock"]["env"]["PYTHONHASHSEED"] == "0"
    assert result["timing"]["method"] == "perf_counter_ns"
    assert result["timing"]["flush_l2"] is False  # no L2 to flush on the CPU, and it says so
    assert result["device_info"]["uuid"] is None


def test_forward_backward_checks_gradients(user_kernels):
    result = run_shape(spec(["math", "user_kernels:correct"], mode="forward_backward"))
    assert statuses(result) == {"math": "ok", "user_kernels:correct": "ok"}
    assert result["flops"] == pytest.approx(3.5 * 4 * 2 * 16 * (64 * 65 / 2))


def test_lock_refuses_to_run_without_its_startup_variables(monkeypatch):
    monkeypatch.delenv("PYTHONHASHSEED", raising=False)
    with pytest.raises(RuntimeError, match="PYTHONHASHSEED"):
        run_shape(spec(["math"]))


def test_cuda_requested_without_cuda_is_a_clear_error(locked_env):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(RuntimeError, match="torch.cuda.is_available"):
        run_shape(spec(["math"], device="cuda"))


@pytest.mark.gpu
def test_gpu_statuses_and_memory(user_kernels):
    result = run_shape(
        spec(["flash", "efficient", "cudnn", "math", "user_kernels:correct"], device="cuda", dtype="bfloat16")
    )
    entries = result["candidates"]
    assert entries["math"]["status"] == "ok"
    assert entries["math"]["peak_mem_mb"] > 0 and result["memory"]["device_total_mb"] > 0
    assert result["device_info"]["uuid"].startswith("GPU-")


@pytest.mark.gpu
def test_gpu_timing_modes_graphs_flush_and_clocks(user_kernels):
    import torch

    l2 = torch.cuda.get_device_properties(torch.cuda.current_device()).L2_cache_size
    tiny = run_shape(spec(["flash", "math"], device="cuda", dtype="bfloat16"))  # microseconds: auto -> graph
    assert tiny["timing"]["mode"] == "graph" and tiny["timing"]["flush_l2"] is False
    assert "auto: fastest candidate" in tiny["timing"]["mode_reason"]
    assert tiny["candidates"]["flash"]["calls_per_sample"] > 1
    clocks = tiny["timing"]["clocks"]
    assert clocks["source"] == "nvml" and clocks["mean_sm_mhz"] > 0
    assert len(clocks["sm_mhz_per_round"]) == tiny["timing"]["rounds_run"]
    for mode in ("cold", "warm"):
        timing = {"mode": mode, "warmup": 1, "min_rounds": 10, "max_rounds": 10}
        result = run_shape(spec(["flash", "math"], device="cuda", dtype="bfloat16", timing=timing))
        assert result["timing"]["mode"] == mode
        assert result["timing"]["flush_bytes"] == (2 * l2 if mode == "cold" else None)
        assert all(
            len(c["samples_ms"]) == 10 and c["calls_per_sample"] == 1 for c in result["candidates"].values()
        )


def test_a_real_allocation_failure_is_oom_with_its_size_and_the_rest_still_runs(user_kernels):
    result = run_shape(spec(["user_kernels:allocates_too_much", "math", "user_kernels:correct"]))
    entry = result["candidates"]["user_kernels:allocates_too_much"]
    assert entry["status"] == "oom" and entry["reason"].startswith("Tried to allocate 262144.00 GiB")
    assert statuses(result)["math"] == statuses(result)["user_kernels:correct"] == "ok"
    next_shape = run_shape(spec(["math"], shape={**SHAPE, "name": "next", "seq": 32}))
    assert statuses(next_shape) == {"math": "ok"}


def test_a_hanging_kernel_times_out_and_nothing_else_is_lost(user_kernels):
    import user_kernels as kernels

    kernels.CALLS["n"] = 0
    timing = {"warmup": 1, "warmup_max_s": 0.2, "min_rounds": 4, "max_rounds": 6, "call_timeout_s": 0.5}
    names = ["user_kernels:hangs", "user_kernels:hangs_while_timed", "math"]
    result = run_shape(spec(names, timing=timing))
    entries = result["candidates"]
    assert entries["user_kernels:hangs"]["status"] == "timeout"
    assert entries["user_kernels:hangs_while_timed"]["status"] == "timeout"
    assert "call_timeout_s = 0.5 s" in entries["user_kernels:hangs_while_timed"]["reason"]
    assert entries["math"]["status"] == "ok" and len(entries["math"]["samples_ms"]) >= 4


def test_unsupported_combinations_say_why_and_the_run_goes_on(locked_env):
    gqa = {**SHAPE, "name": "gqa", "heads": 4, "kv_heads": 2}
    result = run_shape(spec(["efficient", "cudnn", "flash", "math"], shape=gqa))
    for name in ("efficient", "cudnn"):  # no CPU kernel for these backends, for any shape
        assert result["candidates"][name]["status"] == "unsupported"
        assert result["candidates"][name]["reason"].startswith("needs CUDA")
        assert "No viable backend" in result["candidates"][name]["reason_detail"]
    assert statuses(result)["flash"] == statuses(result)["math"] == "ok"


def test_a_candidate_whose_inputs_changed_beside_a_cheat_is_measured_again_not_blamed():
    """On an H100 (2026-12-07) flash was called incorrect, "changed its input q in place (while it was
    timed)", in rounds it shared with a kernel whose side stream never joined (untrusted): that work's
    stray writes can land in memory the allocator has since given to a neighbour. Such a candidate is
    now measured again without the candidates caught, alone if none was, and its own calls decide; a
    candidate that had the rounds to itself is its own culprit."""
    from types import SimpleNamespace

    from attnbench.bench import remeasure_without_cheats
    from attnbench.results import Status

    def entries(**statuses):
        return {name: {"status": status, "reason": None if status == Status.OK else "..."} for name, status in statuses.items()}

    def rounds(found):
        return SimpleNamespace(samples={name: [1.0] for name in found})

    shared = entries(flash=Status.INCORRECT, cheat=Status.UNTRUSTED, math=Status.OK)
    again = remeasure_without_cheats(shared, dict.fromkeys(shared), rounds(shared), ["flash"])
    assert sorted(again) == ["flash", "math"]
    assert shared["flash"] == {"status": Status.OK, "reason": None} and shared["cheat"]["status"] == Status.UNTRUSTED

    none_caught = entries(flash=Status.INCORRECT, math=Status.OK)
    assert sorted(remeasure_without_cheats(none_caught, dict.fromkeys(none_caught), rounds(none_caught), ["flash"])) == ["flash"]

    alone = entries(flash=Status.INCORRECT)
    assert remeasure_without_cheats(alone, dict.fromkeys(alone), rounds(alone), ["flash"]) == {}
    assert alone["flash"]["status"] == Status.INCORRECT

    honest = entries(flash=Status.OK, math=Status.OK)
    assert remeasure_without_cheats(honest, dict.fromkeys(honest), rounds(honest), []) == {}
