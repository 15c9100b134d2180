"""What a candidate's call allocates for itself (attnbench.memory.footprint), measured on the CPU
through torch.profiler's memory events; the growth fit across a sweep; the out-of-memory projection."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from helpers import shape_result

from attnbench import candidates, memory
from attnbench.workloads import Shape, Workload

MB = 2**20
SHAPE = Shape.from_config({"name": "s512", "batch": 2, "heads": 8, "seq": 512, "dim": 64})


def _build(name, shape, device):
    return candidates.build(name, Workload.of(shape, "float32", device))


def _inputs(grad: bool = False) -> tuple[torch.Tensor, ...]:
    q, k, v, dout = (torch.randn(2, 8, 512, 64) for _ in range(4))
    if grad:
        q, k, v = (t.requires_grad_() for t in (q, k, v))
    return q, k, v, dout


def with_workspace(nbytes: int):
    """A kernel that allocates `nbytes` for itself, frees it, and returns a new output."""

    def kernel(q, k, v):
        scratch = torch.ones(nbytes // 4)  # float32
        out = torch.empty_like(q).copy_(v) + scratch[0]
        del scratch
        return out

    return kernel


def test_workspace_is_what_the_call_allocates_beyond_its_output():
    inputs = _inputs()
    record = memory.footprint(with_workspace(32 * MB), inputs, backward=False, device="cpu")
    assert record["output_mb"] == pytest.approx(2.0)  # 2 x 8 x 512 x 64 float32
    assert record["inputs_mb"] == pytest.approx(6.0)  # q, k, v
    assert 32 <= record["workspace_mb"] <= 32 + 2 + 0.1  # the scratch, and copy_'s temporary at most
    assert record["allocations"] >= 2 and record["source"] == memory.CPU_SOURCE
    assert record["projected_mb"] == pytest.approx(record["inputs_mb"] + record["workspace_mb"] + 2.0)
    assert record["reserved_growth_mb"] is None and record["backward"] is None


def test_memory_held_before_the_call_is_not_counted():
    """Found on an H200: a peak counted from zero was 2.3 GB for every kernel, 1 GB of it the float64
    reference the job still held. What was allocated before the call is not the kernel's."""
    inputs = _inputs()
    alone = memory.footprint(with_workspace(8 * MB), inputs, backward=False, device="cpu")
    held = torch.ones(64 * MB // 8, dtype=torch.float64)  # a reference of 64 MB, held throughout
    beside = memory.footprint(with_workspace(8 * MB), inputs, backward=False, device="cpu")
    del held
    assert beside["workspace_mb"] == pytest.approx(alone["workspace_mb"], abs=0.1)


def test_math_materialises_the_score_matrix_and_flash_does_not():
    inputs = _inputs()
    math_ = memory.footprint(_build("math", SHAPE, "cpu"), inputs, backward=False, device="cpu")
    flash = memory.footprint(_build("flash", SHAPE, "cpu"), inputs, backward=False, device="cpu")
    scores_mb = 2 * 8 * 512 * 512 * 4 / MB  # one float32 seq x seq matrix per (batch, head): 16 MB
    assert math_["workspace_mb"] >= scores_mb
    assert flash["workspace_mb"] < scores_mb / 10


def test_forward_backward_reports_saved_activations_and_the_backwards_workspace_apart():
    record = memory.footprint(_build("math", SHAPE, "cpu"), _inputs(grad=True), backward=True, device="cpu")
    scores_mb = 2 * 8 * 512 * 512 * 4 / MB
    assert record["saved_mb"] >= scores_mb  # the attention matrix, kept for the backward
    backward = record["backward"]
    assert backward["gradients_mb"] == pytest.approx(6.0)  # dq, dk, dv
    assert backward["workspace_mb"] >= scores_mb and backward["allocations"] > 0
    assert record["inputs_mb"] == pytest.approx(8.0)  # the output gradient too
    assert record["projected_mb"] >= record["inputs_mb"] + record["saved_mb"] + backward["workspace_mb"]


def _bench(seq: int, batch: int, workspaces: dict[str, float | None], status: str = "ok") -> Any:
    return shape_result(
        {
            "shape": {"name": f"s{seq}", "batch": batch, "heads": 4, "seq": seq},
            "candidates": {
                name: {"status": status, "footprint": None if mb is None else {"workspace_mb": mb}}
                for name, mb in workspaces.items()
            },
        }
    )


def test_growth_is_the_exponent_of_workspace_per_batch_and_head_against_seq():
    # 16k tokens per batch: the batch halves as seq doubles, as in the default sweep
    benches = [
        _bench(seq, 16384 // seq, {"quadratic": (16384 // seq) * 4 * seq**2 * 4 / MB,
                                    "linear": (16384 // seq) * 4 * seq * 4 / MB, "nothing": 0.0})
        for seq in (512, 1024, 2048, 4096)
    ]  # fmt: skip
    fits = memory.growth(benches)
    assert fits["quadratic"]["exponent"] == pytest.approx(2.0)
    assert fits["linear"]["exponent"] == pytest.approx(1.0)
    assert fits["quadratic"]["points"] == 4
    assert fits["quadratic"]["reading"] == "materialises a seq x seq matrix"
    assert fits["linear"]["reading"] == "streams (no seq x seq matrix)"
    assert "nothing" not in fits  # no workspace to fit


def test_growth_needs_two_sequence_lengths_and_ok_results():
    fits = memory.growth(
        [_bench(512, 2, {"a": 1.0}), _bench(512, 4, {"a": 2.0}), _bench(1024, 2, {"a": 8.0}, "error")]
    )
    assert fits["a"] == {"exponent": None, "points": 2, "reading": "fewer than two sequence lengths"}


@pytest.mark.parametrize(
    ("projected", "total", "free", "risk"),
    [
        (50.0, 100.0, 90.0, False),
        (86.0, 100.0, 95.0, True),
        (60.0, 100.0, 50.0, True),
        (10.0, None, None, None),
    ],
)
def test_oom_risk_is_the_projection_against_the_device(projected, total, free, risk):
    assert memory.oom_risk(projected, total, free) is risk


@pytest.mark.gpu
def test_gpu_counters_see_the_score_matrix_and_the_allocations():
    """On CUDA the caching allocator's counters: math's seq x seq scores, flash's near nothing
    beyond its output and log-sum-exp, the allocation count, and the reserved growth."""
    shape = Shape.from_config({"name": "s2048", "batch": 2, "heads": 8, "seq": 2048, "dim": 64})
    q, k, v, dout = (torch.randn(2, 8, 2048, 64, device="cuda", dtype=torch.bfloat16) for _ in range(4))
    held = torch.empty(256 * MB, dtype=torch.uint8, device="cuda")  # like the float64 reference: not counted
    records = {
        name: memory.footprint(_build(name, shape, "cuda"), (q, k, v, dout), backward=False, device="cuda")
        for name in ("math", "flash")
    }
    del held
    scores_mb = 2 * 8 * 2048 * 2048 * 2 / MB  # one bf16 seq x seq matrix: 128 MB
    assert records["math"]["workspace_mb"] >= scores_mb
    assert records["flash"]["workspace_mb"] < 2.0  # the log-sum-exp (float32, 2 x 8 x 2048) and little else
    assert records["flash"]["output_mb"] == pytest.approx(4.0)
    for record in records.values():
        assert record["allocations"] >= 1 and record["reserved_growth_mb"] is not None
        assert record["source"] == memory.CUDA_SOURCE and record["peak_mem_mb"] >= 256
    q, k, v = (t.requires_grad_() for t in (q, k, v))
    backward = memory.footprint(_build("flash", shape, "cuda"), (q, k, v, dout), backward=True, device="cuda")
    assert backward["saved_mb"] < 2.0 and backward["backward"]["gradients_mb"] == pytest.approx(12.0)


def test_a_compiled_candidate_is_compiled_once_per_shape(tmp_path, monkeypatch, locked_env):
    """Its first call, the determinism call, the memory measurement, the timed rounds and the audit all
    reach the same compiled graph. The memory measurement used to switch grad mode off, which dynamo
    guards on: FlexAttention compiled twice per shape, 61 of the 323 s of the H200 default sweep, and
    the footprint measured another compilation than the one timed."""
    import importlib
    import sys

    from helpers import bench_spec, compiled_kernel

    from attnbench.bench import run_shape

    (tmp_path / "compiled_kernel.py").write_text(compiled_kernel())
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    shape = Shape.from_config({"name": "s64", "batch": 1, "heads": 2, "seq": 64, "dim": 16}).as_dict()
    result = run_shape(bench_spec(shape, ["math", "compiled_kernel:attention"]))
    assert result["candidates"]["compiled_kernel:attention"]["status"] == "ok"
    compiled = importlib.import_module("compiled_kernel")
    assert compiled.compiles.frame_count == 1
    sys.modules.pop("compiled_kernel", None)


def test_a_decline_costs_no_collection_and_an_error_gets_one(monkeypatch, locked_env):
    """memory.release (a full gc.collect, then the allocator's cache emptied: 0.3 s a candidate on the
    H200, 1.2-1.5 s a decode shape where four SDPA backends decline) only after a failure that may
    have left memory behind, not after a candidate declined."""
    from helpers import bench_spec

    from attnbench import bench

    released = []
    monkeypatch.setattr(memory, "release", lambda device: released.append(device))
    monkeypatch.syspath_prepend(str(__import__("helpers").ROOT / "tests"))
    shape = Shape.from_config({"name": "s64", "batch": 1, "heads": 2, "seq": 64, "dim": 16}).as_dict()

    def releases(names):
        released.clear()
        return bench.run_shape(bench_spec(shape, names))["candidates"], len(released)

    _, baseline = releases(["math"])
    declined, count = releases(["math", "cudnn"])
    assert declined["cudnn"]["status"] == "unsupported" and count == baseline
    failed, count = releases(["math", "user_kernels:raises"])
    assert failed["user_kernels:raises"]["status"] == "error" and count == baseline + 1
