"""A result the kernel did not earn is never reported: dishonest kernels are caught, honest ones pass."""

import json

import pytest
from helpers import GPU_SHAPE, ROOT, SCHEMAS, TINY_SHAPE, bench_spec

from attnbench import SCHEMA_VERSION, audit, autotune, files
from attnbench.bench import run_shape
from attnbench.documents import Analysis, ShapeComparisons, ShapeResult
from attnbench.report import summary_frame
from attnbench.stats import compare_shape

SHAPE = TINY_SHAPE


def spec(candidates, timing=None, **overrides):
    spec = bench_spec(SHAPE, candidates, **overrides)
    return {**spec, "timing": {**spec["timing"], **(timing or {})}}


@pytest.fixture
def kernels(monkeypatch, locked_env):
    monkeypatch.syspath_prepend(str(ROOT / "tests"))


def check_schema(result):
    files.validate(
        {"schema": SCHEMA_VERSION, **files.jsonable(result)}, SCHEMAS / "bench.schema.yaml", source="result"
    )


def test_kernels_that_keep_their_answer_are_incorrect_with_what_was_seen(kernels):
    result = run_shape(
        spec(
            [
                "math",
                "dishonest_kernels:keeps_answer",
                "dishonest_kernels:writes_once",
                "dishonest_kernels:honest",
            ]
        )
    )
    check_schema(result)
    entries = result["candidates"]
    assert entries["math"]["status"] == "ok"
    assert entries["dishonest_kernels:honest"]["status"] == "ok"
    # the second input set (drawn for this run) is written into the same tensors: a kept answer fits
    # only the first
    for name in ("dishonest_kernels:keeps_answer", "dishonest_kernels:writes_once"):
        assert entries[name]["status"] == "incorrect"
        assert entries[name]["reason"].startswith(
            "on the second input set: answer did not change with the inputs"
        )
        assert not entries[name]["samples_ms"]  # never timed


def test_a_kernel_honest_through_its_checks_only_is_caught_after_sampling(kernels):
    """Right for its first calls, then a kept answer: the checks pass, the timed rounds meet the kept
    answer, and the audit after them finds it (the refill's values drawn for this run)."""
    result = run_shape(spec(["math", "dishonest_kernels:keeps_answer_once_timed"]))
    check_schema(result)
    caught = result["candidates"]["dishonest_kernels:keeps_answer_once_timed"]
    assert caught["rel_error"] < 1e-5 and caught["samples_ms"]  # passed its checks and was timed
    assert caught["status"] == "incorrect" and caught["reason"].startswith("timed work not verified")
    assert result["candidates"]["math"]["status"] == "ok"
    assert result["candidates"]["math"]["remeasured"] == ["dishonest_kernels:keeps_answer_once_timed"]


def test_a_kernel_that_writes_into_its_inputs_is_incorrect_and_changes_nothing_of_the_others(kernels):
    alone = run_shape(spec(["math"]))["candidates"]["math"]
    result = run_shape(
        spec(["dishonest_kernels:scales_its_keys", "math", "dishonest_kernels:changes_its_query_once_timed"])
    )
    check_schema(result)
    entries = result["candidates"]
    scaled = entries["dishonest_kernels:scales_its_keys"]
    assert scaled["status"] == "incorrect"
    assert scaled["reason"].startswith("changed its input k in place (called on the first input set)")
    later = entries["dishonest_kernels:changes_its_query_once_timed"]
    assert later["status"] == "incorrect" and later["samples_ms"]
    assert later["reason"].startswith("changed its input q in place (while it was timed)")
    # each candidate has tensors of its own: math saw the values it would have seen alone
    assert entries["math"]["status"] == "ok"
    assert entries["math"]["rel_error"] == pytest.approx(
        alone["rel_error"], rel=1e-6
    )  # answers sealed: scaled and back


def test_the_first_inputs_answers_are_made_again_only_when_a_check_after_sampling_fails(kernels, monkeypatch):
    """No copy of the float64 answers is kept through the timed rounds (0.2 s a shape on an H200): a
    kept answer is still told from a wrong one, by making the answers again from the seed."""
    from attnbench import bench, workloads

    made = []

    def counted(shape, *tensors):
        made.append(shape.name)
        return workloads.reference(shape, *tensors)

    monkeypatch.setattr(bench, "reference", counted)
    honest = run_shape(spec(["math", "dishonest_kernels:honest"]))
    assert {entry["status"] for entry in honest["candidates"].values()} == {"ok"}
    assert len(made) == 4  # the three input sets' answers, and the refilled inputs' for the audit
    made.clear()
    caught = run_shape(spec(["math", "dishonest_kernels:keeps_answer_once_timed"]))
    assert caught["candidates"]["dishonest_kernels:keeps_answer_once_timed"]["status"] == "incorrect"
    # once more for the kept answer's diagnosis, and once for the audit of the candidates measured
    # again without the one caught (bench.remeasure_without_cheats)
    assert len(made) == 6 and caught["candidates"]["math"]["remeasured"] == [
        "dishonest_kernels:keeps_answer_once_timed"
    ]


@pytest.mark.parametrize(
    "refusal",
    [
        "CUDA out of memory. Tried to allocate 2.00 GiB",
        "[enforce fail at alloc_cpu.cpp:117] can't allocate memory",
    ],
)
def test_a_diagnosis_without_memory_still_calls_the_output_wrong(refusal):
    import torch

    def verify(making_answers):
        return audit.verify(
            torch.ones(2, 3),
            [torch.zeros(2, 3, dtype=torch.float64)],
            making_answers,
            backward=False,
            dtype=torch.float32,
            tolerance=1e-3,
            graph=False,
        )

    def out_of_memory():
        raise (torch.OutOfMemoryError if "CUDA" in refusal else RuntimeError)(refusal)

    why = verify(out_of_memory)
    assert why is not None and why.startswith("timed work not verified: relative error")

    def broken():
        raise ValueError("not a lack of memory")

    with pytest.raises(ValueError):
        verify(broken)  # any other failure is the audit's, as before


def test_every_timed_candidate_records_what_ran_and_determinism(kernels):
    result = run_shape(spec(["math", "examples.kernels:naive_attention"]))
    check_schema(result)
    for entry in result["candidates"].values():
        ran = entry["ran"]
        assert ran["kernels_per_call"] > 0 and ran["kernels"][0]["count"] >= 1
        assert ran["streams"] is None and ran["device_ms"] is None  # the CPU has neither
        assert entry["deterministic"]["identical"] is True
        assert entry["deterministic"]["max_abs_diff"] == 0.0
    names = {k["name"] for k in result["candidates"]["examples.kernels:naive_attention"]["ran"]["kernels"]}
    assert {"softmax", "matmul"} <= names


def test_a_result_above_the_measured_bound_is_untrusted_and_never_ranked(kernels, tmp_path):
    """A ceiling of 1 MFLOP/s makes every honest CPU result 'faster than physics'."""
    ceilings = {"device": "cpu", "matmul": {"float32": {"tflops": 1e-6, "rel_ci": 0.01}}, "cache_bytes": None}
    path = tmp_path / "ceilings.json"
    path.write_text(json.dumps(ceilings))
    result = run_shape(spec(["math", "dishonest_kernels:honest"], ceilings=str(path)))
    check_schema(result)
    assert result["bound"]["limited_by"] == "compute" and result["bound"]["memory_term"] is False
    honest = result["candidates"]["dishonest_kernels:honest"]
    assert honest["status"] == "untrusted"
    assert "faster than measured physics" in honest["reason"]
    assert honest["fraction_of_bound"] > 2.01 and honest["samples_ms"]
    bench = ShapeResult.from_json(result)
    compared = compare_shape(bench, "math")
    assert compared["comparisons"] == []
    assert autotune.fastest(bench) is None
    comparisons = ShapeComparisons.from_json(compared)
    analysis = Analysis.from_json(autotune.analyse([bench], [comparisons]))
    frame = summary_frame([bench], [comparisons], {"matmul": ceilings["matmul"], "copy": {}}, analysis)
    assert not frame["fastest"].any()


def test_bounds_follow_the_roofline_and_the_cache():
    ceilings = {
        "device": "cuda",
        "matmul": {"bfloat16": {"tflops": 100.0, "rel_ci": 0.01}},
        "read": {"gbytes_per_s": 1000.0, "rel_ci": 0.02},
        "cache_bytes": 50 * 2**20,
    }
    # 1e9 flops at 100 TFLOP/s = 0.01 ms; 1e9 bytes at 1 TB/s = 1 ms: memory-bound
    big = audit.bound(ceilings, "bfloat16", 1e9, 10**9, cold=False)
    assert big["limited_by"] == "memory" and big["bound_ms"] == pytest.approx(1.0)
    assert big["intensity"] == pytest.approx(1.0) and big["ceiling_rel_ci"] == 0.02
    assert (
        big["margin"] == 0.10
        and audit.bound({**ceilings, "device": "cpu"}, "bfloat16", 1e9, 10**9, cold=True)["margin"] == 1.0
    )
    # inputs that fit in the L2 may stay there between warm calls: no memory term then...
    small = audit.bound(ceilings, "bfloat16", 1e9, 10**6, cold=False)
    assert small["limited_by"] == "compute" and small["memory_term"] is False
    # ...but a flushed (cold) call reads them from memory
    assert audit.bound(ceilings, "bfloat16", 1e9, 2 * 10**7, cold=True)["limited_by"] == "memory"
    assert audit.bound(ceilings, "float16", 1e9, 10**9, cold=True) is None
    assert audit.bound(None, "bfloat16", 1e9, 10**9, cold=True) is None


def ran(device_ms, unjoined=()):
    return {"device_ms": device_ms, "unjoined_kernels": list(unjoined)}


def test_judge_names_each_kind_of_unearned_result():
    limit = {
        "bound_ms": 1.0,
        "limited_by": "memory",
        "intensity": 2.0,
        "ceiling_rel_ci": 0.02,
        "margin": 0.10,
    }
    assert audit.judge(1.0, ran(0.95), limit) == []
    assert audit.judge(0.9, ran(0.95), limit) == []  # 111% of the bound: inside the margin and CI
    (why,) = audit.judge(0.5, ran(0.45), limit)
    assert why.startswith("faster than measured physics: 200% of the attainable bound (memory-bound")
    (why,) = audit.judge(0.01, ran(0.9), None)
    assert "work outside the timed interval" in why and "90.0x the measured median" in why
    reasons = audit.judge(0.01, ran(0.9, ["flash_fwd_kernel"]), None)
    assert "never waited for" in reasons[0] and "flash_fwd_kernel" in reasons[0]
    assert audit.judge(0.01, ran(None), None) == []  # the CPU: no device time to compare


def test_busy_time_counts_overlapping_kernels_once():
    assert audit._busy_us([(0, 10), (5, 15), (30, 35), (31, 32)]) == 20


@pytest.mark.parametrize(
    "raw, short",
    [
        (
            "void at::native::(anonymous namespace)::cunn_SoftMaxForward<4, float>(float*, float const*, int)",
            "cunn_SoftMaxForward",
        ),
        (
            "void flash::flash_fwd_kernel<Flash_fwd_kernel_traits<128, 128>, true>(Flash_fwd_params)",
            "flash_fwd_kernel",
        ),
        ("triton_tem_fused_0", "triton_tem_fused_0"),
        ("aten::softmax", "softmax"),
    ],
)
def test_kernel_names_are_shortened(raw, short):
    assert audit.short_name(raw) == short


def test_determinism_reports_the_largest_difference():
    import torch

    a = torch.zeros(4)
    assert audit.determinism((a,), [(a.clone(),), (a.clone(),)]) == {"identical": True, "max_abs_diff": 0.0}
    b, c = a.clone(), a.clone()
    b[2] = 0.25
    c[1] = -0.5
    assert audit.determinism(a, [a.clone(), b, c]) == {"identical": False, "max_abs_diff": 0.5}


def test_poison_spares_the_inputs():
    import torch

    q = torch.ones(3)
    out = torch.ones(3)
    audit.poison((out, q[:2]), (q,))
    assert out.isnan().all() and not q.isnan().any()


# --------------------------------------------------------------------------------------- on a GPU


def gpu_spec(candidates, mode):
    return spec(
        candidates, device="cuda", dtype="bfloat16", timing={"mode": mode, "max_time_s": 2}, shape=GPU_SHAPE
    )


@pytest.mark.gpu
@pytest.mark.parametrize("mode", ["cold", "warm", "graph"])
def test_gpu_dishonest_kernels_are_caught_and_honest_ones_pass(kernels, mode):
    names = [
        "flash",
        "cudnn",
        "efficient",
        "flex",
        "dishonest_kernels:keeps_answer",
        "dishonest_kernels:skips_graph_capture",
    ]
    if mode != "graph":  # a stream that never joins cannot be captured into a graph at all
        names.append("dishonest_kernels:unjoined_stream")
    result = run_shape(gpu_spec(names, mode))
    check_schema(result)
    entries = result["candidates"]
    for name in ("flash", "cudnn", "efficient", "flex"):
        assert entries[name]["status"] == "ok", (name, entries[name]["reason"])
        assert entries[name]["ran"]["unjoined_kernels"] == []
    assert entries["dishonest_kernels:keeps_answer"]["status"] == "incorrect"
    assert "did not change with the inputs" in entries["dishonest_kernels:keeps_answer"]["reason"]
    skipped = entries["dishonest_kernels:skips_graph_capture"]
    if mode == "graph":
        assert skipped["status"] == "incorrect" and "not rewritten by a replay" in skipped["reason"]
    else:
        assert skipped["status"] == "ok"  # eager calls do the work: nothing to catch
    if mode != "graph":
        unjoined = entries["dishonest_kernels:unjoined_stream"]
        assert unjoined["status"] == "untrusted"
        assert "never waited for" in unjoined["reason"]


def test_a_check_that_fails_after_sampling_keeps_the_candidates_samples(kernels, monkeypatch):
    """The profiler failing for one candidate must not throw its timing away (nor anyone else's)."""
    real = audit.RoundProfile.summary
    calls = []

    def flaky(self, name, calls_per_sample=1):
        calls.append(name)
        if name == "math":
            raise RuntimeError("profiler could not start")
        return real(self, name, calls_per_sample)

    monkeypatch.setattr(audit.RoundProfile, "summary", flaky)
    result = run_shape(spec(["math", "dishonest_kernels:honest"]))
    check_schema(result)
    failed, other = result["candidates"]["math"], result["candidates"]["dishonest_kernels:honest"]
    assert failed["status"] == "error"
    assert failed["reason"] == "after sampling, the audit failed: RuntimeError: profiler could not start"
    assert 'raise RuntimeError("profiler could not start")' in failed["traceback"]  # kept, as for any error
    assert failed["samples_ms"] and failed["median_ms"] is not None and failed["tolerance"] is not None
    assert other["status"] == "ok" and other["ran"]["kernels_per_call"] > 0


def test_the_profiled_call_is_a_timed_round_drawn_at_random(kernels, monkeypatch):
    """Not a separate call after sampling that a kernel could recognise: one of the sampling rounds,
    drawn from the OS's randomness, whose samples are not kept."""
    from attnbench import timing

    drawn = []
    real = timing._RANDOM.randrange

    def spy(n):
        drawn.append(n)
        return real(n)

    monkeypatch.setattr(timing._RANDOM, "randrange", spy)
    result = run_shape(
        spec(["math", "examples.kernels:naive_attention"], timing={"min_rounds": 6, "max_rounds": 6})
    )
    assert drawn == [6]
    assert 0 <= result["timing"]["profiled_round"] < 6
    assert result["timing"]["rounds_run"] == 6  # the profiled round is not one of them
    assert all(len(entry["samples_ms"]) == 6 for entry in result["candidates"].values())


@pytest.mark.gpu
def test_gpu_the_profilers_events_hold_what_a_chrome_trace_of_the_same_session_holds(kernels, tmp_path):
    """audit.profile reads the events torch.profiler parsed instead of exporting a Chrome trace and
    reading it back: per session, the same device work, streams and order."""
    import torch
    from dishonest_kernels import unjoined_stream
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.profiler import ProfilerActivity, profile

    q, k, v = (torch.randn(2, 8, 1024, 64, device="cuda", dtype=torch.bfloat16) for _ in range(3))

    def sdpa(backend):
        def call():
            with sdpa_kernel(backend):
                return torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)

        return call

    calls = [sdpa(b) for b in (SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH)]
    calls.append(lambda: unjoined_stream(q, k, v, causal=True, scale=None).add_(1))
    for index, call in enumerate(calls):
        call()
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            call()
            torch.cuda._sleep(1)
            torch.cuda.synchronize()
        path = tmp_path / f"trace-{index}.json"
        prof.export_chrome_trace(str(path))
        events = json.loads(path.read_text())["traceEvents"]
        traced = sorted(
            (e["args"]["correlation"], e["name"], e["args"]["stream"], round(e["dur"], 1))
            for e in events
            if e.get("cat") in ("kernel", "gpu_memcpy", "gpu_memset")
        )
        read = sorted(
            (a.correlation, a.name, a.stream, round(a.end_us - a.start_us, 1))
            for a in audit.device_activity(prof)
        )
        assert [row[:3] for row in read] == [row[:3] for row in traced]
        assert [row[3] for row in read] == pytest.approx([row[3] for row in traced], abs=0.11)
        assert "spin_kernel" in read[-1][1]  # the marker, launched last
    assert len({a.stream for a in audit.device_activity(prof)}) == 2  # the side stream's copy is seen
