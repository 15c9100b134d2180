"""Masks and score modifiers (attnbench.masks): the cost counts and the float64 reference against a
brute-force reading of the documented semantics, pair by pair."""

import math
from dataclasses import replace

import pytest
import torch

from attnbench import masks
from attnbench.candidates import Unsupported
from attnbench.workloads import Shape, describe_mask, make_inputs, reference

CASES = {
    "dense": {},
    "causal_square": {"causal": True},
    "causal_top_left_short_keys": {"causal": True, "seq": 12, "seq_kv": 7},
    "causal_bottom_right_long_keys": {"causal": True, "seq": 5, "seq_kv": 13, "causal_alignment": "bottom_right"},
    "causal_bottom_right_short_keys": {"causal": True, "seq": 11, "seq_kv": 6, "causal_alignment": "bottom_right"},
    "causal_window": {"causal": True, "window": [3, 0]},
    "two_sided_window": {"window": [2, 2]},
    "open_left_window": {"window": [None, 1]},
    "window_bottom_right": {"causal": True, "window": [2, 0], "seq": 6, "seq_kv": 11, "causal_alignment": "bottom_right"},
    "prefix_lm": {"causal": True, "prefix": 4},
    "prefix_in_a_window": {"causal": True, "prefix": 5, "window": [2, 0]},
    "softcap": {"softcap": 2.0, "causal": True},
    "alibi_6_heads": {"alibi": True, "heads": 6, "kv_heads": 3, "causal": True},
    "alibi_bottom_right": {"alibi": True, "causal": True, "seq": 5, "seq_kv": 9, "causal_alignment": "bottom_right"},
    "value_dim": {"dim_v": 12, "causal": True},
    "scale": {"scale": 0.3},
    "packed": {"seq_lens": [5, 1, 8, 3]},
    "packed_causal_window_softcap": {"seq_lens": [6, 9, 2], "causal": True, "window": [3, 0], "softcap": 3.0},
    "packed_drawn": {"seq_lens": {"min": 2, "max": 7, "total": 23, "seed": 3}, "causal": True, "prefix": 2},
    "decode": {"cache_lens": [5, 9, 3], "batch": 3, "seq": 1},
    "speculative_decode": {"cache_lens": [7, 12], "batch": 2, "seq": 3, "window": [4, 0]},
    "decode_drawn_alibi": {"cache_lens": {"min": 4, "max": 20, "mean": 8, "seed": 2}, "batch": 4, "alibi": True},
    "varlen_cross": {"seq_lens": [2, 5], "seq_lens_kv": [6, 4]},
}


def shape_of(case):
    entry = {"name": "t", "batch": 2, "heads": 4, "kv_heads": 2, "seq": 10, "dim": 8, **CASES[case]}
    return Shape.from_config(entry)


def naive_allowed(shape, i, j):
    """Pair (i, j) from the module docstring's words, one pair at a time."""
    q_offsets, k_offsets = masks.documents(shape)
    qd = max(d for d in range(len(q_offsets) - 1) if q_offsets[d] <= i)
    kd = max(d for d in range(len(k_offsets) - 1) if k_offsets[d] <= j)
    if qd != kd:
        return False
    li, lj = i - q_offsets[qd], j - k_offsets[kd]
    lq, lk = q_offsets[qd + 1] - q_offsets[qd], k_offsets[kd + 1] - k_offsets[kd]
    diagonal = li + (lk - lq if shape.causal_alignment == "bottom_right" else 0)
    ok = True
    if shape.causal:
        ok = lj <= diagonal or lj < shape.prefix
    if shape.window is not None:
        left, right = shape.window
        ok = ok and (left is None or lj >= diagonal - left) and (right is None or lj <= diagonal + right)
    return ok


def naive_bias(shape, h, i, j):
    q_offsets, k_offsets = masks.documents(shape)
    qd = max(d for d in range(len(q_offsets) - 1) if q_offsets[d] <= i)
    li, lj = i - q_offsets[qd], j - k_offsets[qd]
    lq, lk = q_offsets[qd + 1] - q_offsets[qd], k_offsets[qd + 1] - k_offsets[qd]
    diagonal = li + (lk - lq if shape.causal_alignment == "bottom_right" else 0)
    return -masks.alibi_slopes(shape.heads)[h] * abs(diagonal - lj) if shape.alibi else 0.0


def naive_attention(shape, q, k, v):
    group = shape.heads // shape.kv_heads
    k, v = k.repeat_interleave(group, 1), v.repeat_interleave(group, 1)
    scores = (q @ k.transpose(-1, -2)) * shape.scale
    if shape.softcap:
        scores = shape.softcap * torch.tanh(scores / shape.softcap)
    bias = torch.tensor([[[naive_bias(shape, h, i, j) for j in range(shape.seq_kv)] for i in range(shape.seq)]
                         for h in range(shape.heads)], dtype=torch.float64)
    allowed = torch.tensor([[naive_allowed(shape, i, j) for j in range(shape.seq_kv)] for i in range(shape.seq)])
    scores = (scores + bias).masked_fill(~allowed, -math.inf)
    probs = torch.softmax(scores, dim=-1).nan_to_num(0.0)  # a query that sees no key: zeros
    return probs @ v


@pytest.mark.parametrize("case", CASES)
def test_the_exact_cost_counts_every_attended_pair(case):
    shape = shape_of(case)
    brute = [sum(naive_allowed(shape, i, j) for j in range(shape.seq_kv)) for i in range(shape.seq)]
    assert masks.attended_per_query(shape).tolist() == brute
    assert shape.attended_pairs() == sum(brute)


@pytest.mark.parametrize("case", CASES)
def test_the_reference_and_its_gradients_match_brute_force(case):
    shape = shape_of(case)
    q, k, v, dout = make_inputs(shape, torch.float64, "cpu", seed=1, requires_grad=True)
    got = reference(shape, q, k, v, dout)
    want = naive_attention(shape, q, k, v)
    grads = torch.autograd.grad(want, (q, k, v), dout)
    for name, a, b in zip(("out", "dq", "dk", "dv"), got, [want, *grads]):
        assert a.shape == b.shape, name
        torch.testing.assert_close(a, b.detach(), rtol=1e-9, atol=1e-12, msg=name)


def test_the_reference_works_a_block_of_queries_at_a_time(monkeypatch):
    shape = shape_of("packed_causal_window_softcap")
    q, k, v, dout = make_inputs(shape, torch.float64, "cpu", seed=2, requires_grad=False)
    whole = reference(shape, q, k, v, dout)
    monkeypatch.setattr("attnbench.workloads.REFERENCE_CHUNK_BYTES", 1)  # one query per block
    for a, b in zip(reference(shape, q, k, v, dout), whole):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


def test_alibi_slopes_follow_the_paper():
    assert masks.alibi_slopes(8) == [2 ** -(i + 1) for i in range(8)]
    six = masks.alibi_slopes(6)
    assert six[:4] == masks.alibi_slopes(4) and six[4:] == masks.alibi_slopes(8)[0:4:2]


def test_a_dense_shape_reads_as_it_always_did():
    entry = {"name": "d", "batch": 2, "heads": 4, "seq": 64, "dim": 16, "causal": True}
    assert Shape.from_config(entry).as_dict() == {
        "name": "d", "batch": 2, "heads": 4, "kv_heads": 4, "seq": 64, "seq_kv": 64, "dim": 16, "causal": True
    }
    assert Shape.from_config(entry).attended_pairs() == 64 * 65 // 2


def test_drawn_lengths_are_the_same_everywhere_and_add_up():
    drawn = {"min": 100, "max": 900, "total": 8192, "seed": 7}
    a, b = Shape.from_config({"name": "p", "heads": 2, "dim": 8, "seq_lens": drawn}), None
    b = Shape.from_config({"name": "p", "heads": 2, "dim": 8, "seq_lens": dict(drawn)})
    assert a.seq_lens == b.seq_lens and sum(a.seq_lens) == a.seq == 8192 and min(a.seq_lens) >= 100
    assert Shape.from_config(a.as_dict()) == a  # the spec holds the explicit list


def _bench(shape_entry, names, mode="forward", **overrides):
    from helpers import bench_spec

    from attnbench.bench import run_shape

    shape = Shape.from_config({"name": "m", **shape_entry}).as_dict()
    result = run_shape(bench_spec(shape, names, rounds=3, mode=mode, **overrides))
    return {name: (entry["status"], entry["reason"]) for name, entry in result["candidates"].items()}, result


@pytest.fixture
def kernels_importable(monkeypatch, locked_env):
    from helpers import ROOT

    monkeypatch.syspath_prepend(str(ROOT / "tests"))
    monkeypatch.syspath_prepend(str(ROOT))  # examples.decode_kernels
    monkeypatch.chdir(ROOT / "tests")


@pytest.mark.parametrize("mode", ["forward", "forward_backward"])
def test_masked_shapes_run_with_each_candidate_saying_what_it_can(kernels_importable, mode):
    base = {"heads": 4, "kv_heads": 2, "dim": 16}
    names = ["math", "user_kernels:correct", "contract_kernels:documents_one_by_one"]
    packed, result = _bench({**base, "seq_lens": [17, 5, 30], "causal": True}, names, mode)
    assert packed["math"][0] == "ok" and packed["contract_kernels:documents_one_by_one"][0] == "ok", packed
    assert packed["user_kernels:correct"] == ("unsupported", packed["user_kernels:correct"][1])
    assert "packed documents" in packed["user_kernels:correct"][1]
    assert result["candidates"]["contract_kernels:documents_one_by_one"]["layout"] == "thd"
    assert result["flops"] == pytest.approx(2 * 4 * 32 * sum(n * (n + 1) // 2 for n in (17, 5, 30)) * (
        3.5 if mode == "forward_backward" else 1))
    for extra in ({"causal": True, "window": [7, 0]}, {"causal": True, "prefix": 9}, {"alibi": True},
                  {"causal": True, "seq": 24, "seq_kv": 64, "causal_alignment": "bottom_right"}):
        got, _ = _bench({**base, "batch": 2, "seq": extra.pop("seq", 48), **extra}, ["math"], mode)
        assert got["math"][0] == "ok", (extra, got)
    capped, _ = _bench({**base, "batch": 1, "seq": 32, "softcap": 5.0}, ["math"], mode)
    assert capped["math"] == ("unsupported", "SDPA has no soft-capping of the scores (flex has: score_mod)")


@pytest.mark.parametrize("case", CASES)
def test_pytorchs_flexattention_agrees_with_the_reference_on_every_mask(kernels_importable, case):
    """flex (its eager path: the CPU has no compiled flex backward, and compiling takes minutes here)
    is measured against the float64 reference; SDPA's math backend too, except soft-capping."""
    entry = {"batch": 2, "heads": 4, "kv_heads": 2, "seq": 10, "dim": 8, **CASES[case]}
    if "seq_lens" in entry:
        del entry["batch"], entry["seq"]
    if "cache_lens" in entry:
        entry.pop("seq_kv", None)
    got, _ = _bench(entry, ["math", "contract_kernels:flex_eager"])
    assert got["contract_kernels:flex_eager"] == ("ok", None)
    assert got["math"][0] == ("unsupported" if "softcap" in entry else "ok")


def test_each_shape_says_its_attention_pattern_in_words():
    def words(**entry):
        return describe_mask(Shape.from_config({"name": "w", "batch": 1, "heads": 2, "seq": 8, "dim": 8, **entry}).as_dict())

    assert words() == "non-causal" and words(causal=True) == "causal"
    assert words(causal=True, seq_kv=32) == "causal (top-left: assumed, causal_alignment not set)"
    assert words(causal=True, seq_kv=32, causal_alignment="top_left") == "causal"
    assert words(causal=True, seq_kv=32, causal_alignment="bottom_right") == "causal (bottom-right)"
    assert words(causal=True, window=[3, 0], prefix=2, softcap=30.0, alibi=True, dim_v=4) == (
        "causal, window [3, 0], prefix 2, soft-cap 30, ALiBi, dim_v 4"
    )
    assert words(window=[None, 2]) == "non-causal, window [∞, 2]"
    packed = describe_mask(Shape.from_config({"name": "p", "heads": 2, "dim": 8, "seq_lens": [3, 9, 4]}).as_dict())
    assert packed == "non-causal, 3 documents (packed, 3-9 tokens)"


WORKFLOW_SHAPES = [
    {"name": "window", "batch": 1, "heads": 4, "kv_heads": 2, "seq": 96, "dim": 16, "causal": True, "window": [15, 0]},
    {"name": "prefix_lm", "batch": 1, "heads": 2, "seq": 64, "dim": 16, "causal": True, "prefix": 20},
    {"name": "softcap_alibi", "batch": 1, "heads": 4, "seq": 64, "dim": 16, "softcap": 20.0, "alibi": True},
    {"name": "chunked_prefill", "batch": 1, "heads": 2, "seq": 16, "seq_kv": 80, "dim": 16, "causal": True,
     "causal_alignment": "bottom_right"},
    {"name": "assumed", "batch": 1, "heads": 2, "seq": 16, "seq_kv": 80, "dim": 16, "causal": True},
    {"name": "mla", "batch": 1, "heads": 2, "seq": 48, "dim": 24, "dim_v": 16, "causal": True,
     "mode": "forward_backward"},
    {"name": "packed", "heads": 2, "dim": 16, "causal": True, "seq_lens": {"min": 8, "max": 40, "total": 120}},
    {"name": "packed_backward", "heads": 2, "dim": 16, "causal": True, "window": [9, 0], "seq_lens": [30, 50, 20],
     "mode": "forward_backward"},
    {"name": "decode", "batch": 4, "heads": 4, "kv_heads": 1, "dim": 16, "seq": 2,
     "cache_lens": {"min": 8, "max": 90, "mean": 30}},
    {"name": "decode_paged_fp8", "batch": 3, "heads": 4, "kv_heads": 2, "dim": 16,
     "cache_lens": [50, 9, 33], "page_size": 8, "kv_dtype": "float8_e4m3fn"},
]
BACKWARD = {shape["name"] for shape in WORKFLOW_SHAPES if shape.get("mode") == "forward_backward"}


@pytest.mark.slow
def test_every_mask_kind_runs_through_the_whole_workflow(tmp_path):
    """On the CPU, from the config to the report: each shape checked against float64, each candidate
    with a result or a one-line reason."""
    import json
    import shutil

    from helpers import ROOT, copy_workflow, snakemake, write_config

    copy_workflow(tmp_path)
    shutil.copy(ROOT / "tests" / "contract_kernels.py", tmp_path)
    section = {
        "dtype": "float32",
        "candidates": ["math", "contract_kernels:flex_eager", "contract_kernels:documents_one_by_one",
                       "examples.decode_kernels:paged_decode"],
        "reference": "math",
        "shapes": WORKFLOW_SHAPES,
        "timing": {"warmup": 1, "warmup_max_s": 0.2, "min_rounds": 6, "max_time_s": 1},
        "calibrate": {"matmul_size": 128, "copy_mb": 8, "rounds": 3},
    }
    config = {"device": "cpu", **section, "cpu": section}
    write_config(tmp_path, config)
    snakemake(tmp_path)
    statuses = {}
    for shape in WORKFLOW_SHAPES:
        bench = json.loads((tmp_path / "results" / "bench" / f"{shape['name']}.json").read_text())
        statuses[shape["name"]] = {name: entry["status"] for name, entry in bench["candidates"].items()}
        assert all(entry["reason"] or entry["status"] == "ok" for entry in bench["candidates"].values())
    flex, docs, paged = "contract_kernels:flex_eager", "contract_kernels:documents_one_by_one", "examples.decode_kernels:paged_decode"
    # flex has no CPU backward (PyTorch says so: unsupported; the gradients are checked through math),
    # and takes no paged or fp8 cache
    cannot = BACKWARD | {"decode_paged_fp8"}
    assert all(found[flex] == ("unsupported" if name in cannot else "ok") for name, found in statuses.items())
    assert statuses["softcap_alibi"]["math"] == "unsupported" and statuses["decode_paged_fp8"]["math"] == "unsupported"
    assert all(found["math"] == "ok" for name, found in statuses.items() if name not in ("softcap_alibi", "decode_paged_fp8"))
    assert statuses["decode_paged_fp8"][paged] == "ok"
    assert all(found[paged] == "unsupported" for name, found in statuses.items() if name != "decode_paged_fp8")
    assert statuses["packed"][docs] == "ok" and statuses["mla"][docs] == "ok"
    assert statuses["window"][docs] == "unsupported"
    report = (tmp_path / "results" / "report" / "report.md").read_text()
    assert "causal (top-left: assumed, causal_alignment not set)" in report
    assert "causal (bottom-right)" in report and "documents (packed," in report
    assert "4 requests (decode: 2 new each, cache" in report and "paged cache (8 per page), float8_e4m3fn cache" in report
    assert "SDPA (math) is given this mask as a dense attn_mask" in report  # math: the only SDPA backend here


def test_the_paged_pool_gathered_through_its_page_table_is_the_contiguous_cache():
    from attnbench.workloads import Workload, inputs_in_layout, paged_pool

    shape = Shape.from_config({"name": "p", "batch": 3, "heads": 4, "kv_heads": 2, "dim": 8, "seq": 2,
                               "cache_lens": [5, 17, 9], "page_size": 4})
    workload = Workload.of(shape, "float32", "cpu", layout="paged")
    assert [len(pages) for pages in workload.page_table] == [2, 5, 3] and workload.num_pages == 10
    assert sorted(p for pages in workload.page_table for p in pages) == list(range(10))
    assert any(b != a + 1 for pages in workload.page_table for a, b in zip(pages, pages[1:]))  # scattered
    q, k, v, dout = make_inputs(shape, torch.float32, "cpu", seed=0, requires_grad=False)
    pool = paged_pool(k, workload)
    assert pool.shape == (10, 4, 2, 8)
    flat = pool.view(-1, 2, 8)
    for (start, stop), pages in zip(zip(workload.cu_seqlens_k, workload.cu_seqlens_k[1:]), workload.page_table):
        gathered = torch.cat([flat[page * 4:(page + 1) * 4] for page in pages])[: stop - start]
        torch.testing.assert_close(gathered, k[0, :, start:stop].transpose(0, 1), rtol=0, atol=0)
    assert int(torch.isnan(pool).any(dim=(2, 3)).sum()) == 40 - 31  # slots past each cache: NaN
    made = inputs_in_layout((q, k, v, dout), "paged", workload)
    assert made[0].shape == (6, 4, 8) and made[2].shape == (10, 4, 2, 8)


def test_a_paged_decode_kernel_is_measured_and_the_built_ins_say_why_not(kernels_importable):
    decode = {"batch": 3, "heads": 4, "kv_heads": 1, "dim": 16, "seq": 2, "cache_lens": [33, 70, 9]}
    names = ["math", "examples.decode_kernels:paged_decode", "contract_kernels:flex_eager", "user_kernels:correct"]
    paged, result = _bench({**decode, "page_size": 16}, names)
    assert paged["examples.decode_kernels:paged_decode"] == ("ok", None), paged
    assert result["candidates"]["examples.decode_kernels:paged_decode"]["layout"] == "paged"
    assert paged["math"][0] == "unsupported" and "the same shape without page_size" in paged["math"][1]
    assert "declare @attnbench.kernel(layout='paged')" in paged["contract_kernels:flex_eager"][1]
    contiguous, _ = _bench(decode, names)
    assert contiguous["math"] == ("ok", None) and contiguous["contract_kernels:flex_eager"] == ("ok", None)
    assert contiguous["examples.decode_kernels:paged_decode"][0] == "unsupported"
    assert contiguous["user_kernels:correct"][0] == "unsupported"  # a plain function is not told the requests
    # the reason names every feature and still ends with its fix, whole (it was cut before "docs/kernels.md")
    assert contiguous["user_kernels:correct"][1].endswith("to receive the workload (docs/kernels.md)")


@pytest.mark.parametrize("kv_dtype", ["float8_e4m3fn", "float8_e5m2"])
def test_an_fp8_cache_is_read_by_the_kernels_that_take_it_against_its_dequantised_values(kernels_importable, kv_dtype):
    decode = {"batch": 3, "heads": 4, "kv_heads": 2, "dim": 16, "seq": 1, "cache_lens": [40, 7, 65], "kv_dtype": kv_dtype}
    got, result = _bench(decode, ["math", "examples.decode_kernels:fp8_decode", "examples.decode_kernels:paged_decode"])
    assert got["examples.decode_kernels:fp8_decode"] == ("ok", None), got
    assert got["math"] == ("unsupported", f"SDPA takes no {kv_dtype} KV cache (q, k and v share one dtype, no"
                           " backend has an fp8 kernel): flex and kernels that read fp8 run this shape")
    assert result["min_bytes"] == 4 * (3 * 4 * 16 * 2) + 2 * 2 * 112 * 16  # q and out in float32, the cache in bytes
    paged, _ = _bench({**decode, "page_size": 8}, ["examples.decode_kernels:paged_decode"])
    assert paged["examples.decode_kernels:paged_decode"] == ("ok", None), paged  # fp8 pages


@pytest.mark.parametrize(
    ("cache", "mode", "layout"),
    [
        ({}, "forward", "padded"),
        ({"seq": 3}, "forward", "padded"),  # speculative decoding: bottom-right causal over each cache
        ({"page_size": 16}, "forward", "pool"),
        ({"kv_dtype": "float8_e4m3fn"}, "forward", "padded"),
        ({"page_size": 8, "kv_dtype": "float8_e5m2"}, "forward", "pool"),
    ],
)
def test_flex_reads_a_decode_batch_padded_paged_and_fp8_against_float64(locked_env, monkeypatch, cache, mode, layout):
    """The built-in flex on a decode batch: the requests padded, with a BlockMask from each cache's
    length; a paged cache as the pool that PyTorch's PagedAttention maps through the workload's
    page table; an fp8 cache with its descale. Eager FlexAttention here (torch.compile takes ~25 s
    per shape on this CPU; it has no backward on the CPU); the same code compiled on the GPU
    (docs/examples/h200-decode)."""
    monkeypatch.setattr(torch, "compile", lambda fn, **options: fn)
    decode = {"batch": 3, "heads": 4, "kv_heads": 2, "dim": 16, "seq": 1, "cache_lens": [40, 7, 65], **cache}
    got, result = _bench(decode, ["math", "flex"], mode)
    assert got["flex"] == ("ok", None) and result["candidates"]["flex"]["layout"] == layout, got
    assert result["candidates"]["flex"]["rel_error"] < 1e-5  # float32 against float64, fp8 values dequantised
    if cache.get("page_size") or cache.get("kv_dtype"):
        assert got["math"][0] == "unsupported"  # SDPA reads neither a paged nor an fp8 cache
    else:
        assert got["math"] == ("ok", None) and result["candidates"]["math"]["layout"] == "padded"


def test_flex_declines_a_paged_cache_in_forward_backward_and_fp8_takes_no_gradient(locked_env):
    """A paged pool is read in decode, and an fp8 cache or fp8 queries hold no gradient: every
    candidate declines them in forward_backward before its inputs are made (flex's pool gradients
    would otherwise come back in the pool's shape and be called incorrect)."""
    decode = {"batch": 3, "heads": 4, "kv_heads": 2, "dim": 16, "seq": 1, "cache_lens": [40, 7, 65]}
    paged, _ = _bench({**decode, "page_size": 16}, ["math", "flex"], "forward_backward")
    assert paged["flex"] == ("unsupported", "a paged KV cache is read in decode: forward only")
    fp8, _ = _bench({**decode, "kv_dtype": "float8_e5m2"}, ["flex", "examples.decode_kernels:fp8_decode"],
                    "forward_backward")
    assert fp8["flex"] == fp8["examples.decode_kernels:fp8_decode"] == (
        "unsupported", "float8_e5m2 KV cache takes no gradient: forward only")


def test_a_top_left_packed_batch_is_not_taken_for_a_padded_decode_batch():
    """Equal query lengths against longer keys, causal top-left: not the decode batch's bottom-right
    mask, so SDPA and flex keep the dense mask (or the BlockMask) of the real alignment."""
    from attnbench.workloads import takes_padded

    top_left = Shape.from_config({"name": "t", "heads": 2, "dim": 8, "seq_lens": [2, 2], "seq_lens_kv": [5, 6],
                                  "causal": True})
    assert top_left.causal_alignment is None and not takes_padded(top_left)
    bottom_right = replace(top_left, causal_alignment="bottom_right")
    assert takes_padded(bottom_right) and not takes_padded(replace(bottom_right, window=(2, 0)))


def test_flex_declines_a_paged_cache_it_cannot_read_as_a_decode_batch():
    from attnbench.candidates import check_layout, declaration
    from attnbench.workloads import Workload

    packed = Shape.from_config({"name": "p", "heads": 2, "dim": 8, "seq_lens": [3, 5], "seq_lens_kv": [9, 12],
                                "page_size": 4})  # unequal new queries: no padded batch
    work = Workload.of(packed, "float32", "cpu")
    assert declaration("flex", work).layout == "bhsd"
    with pytest.raises(Unsupported, match="flex reads a contiguous KV cache unless the shape is a decode batch"):
        check_layout("flex", "bhsd", work)


@pytest.mark.parametrize("fp8", ["float8_e4m3fn", "float8_e5m2"])
def test_fp8_queries_reach_the_kernels_that_read_them_checked_at_the_formats_rounding(kernels_importable, fp8):
    """q in fp8 (q_dtype) with an fp8 cache, contiguous and paged: the user kernels dequantise it; the
    check's tolerance is the format's unit roundoff (an fp8 output can be no closer), q's bytes one
    each; SDPA declines. (flex reads fp8 queries on the GPU; Inductor's CPU backend takes no fp8.)"""
    from attnbench.workloads import DEFAULT_TOLERANCE, FP8_ROUNDOFF

    decode = {"batch": 3, "heads": 4, "kv_heads": 2, "dim": 16, "seq": 2, "cache_lens": [40, 7, 65],
              "kv_dtype": fp8, "q_dtype": fp8}
    got, result = _bench(decode, ["math", "examples.decode_kernels:fp8_decode"])
    fp8_decode = result["candidates"]["examples.decode_kernels:fp8_decode"]
    assert got["examples.decode_kernels:fp8_decode"] == ("ok", None), got
    assert fp8_decode["tolerance"] == DEFAULT_TOLERANCE["float32"] + FP8_ROUNDOFF[fp8]
    assert fp8_decode["rel_error"] < 1e-5  # float32 compute
    assert got["math"][0] == "unsupported" and got["math"][1].startswith("SDPA takes no")
    assert result["min_bytes"] == 1 * (3 * 2 * 4 * 16) + 4 * (3 * 2 * 4 * 16) + 2 * 2 * 112 * 16  # q, out, cache
    # a tolerance set for the run dtype (config `tolerance:`) keeps the format's roundoff on top
    _, result = _bench(decode, ["examples.decode_kernels:fp8_decode"], tolerance=1e-3)
    assert result["candidates"]["examples.decode_kernels:fp8_decode"]["tolerance"] == 1e-3 + FP8_ROUNDOFF[fp8]
    paged, result = _bench({**decode, "page_size": 8}, ["examples.decode_kernels:paged_decode"])
    assert paged["examples.decode_kernels:paged_decode"] == ("ok", None), paged


def test_fp8_queries_hold_fp8_values_and_refill_to_them():
    from attnbench.workloads import FP8_DESCALE, Workload, fp8_representable, inputs_in_layout, refill_inputs

    shape = Shape.from_config({"name": "q", "batch": 2, "heads": 2, "dim": 8, "seq": 1, "cache_lens": [5, 9],
                               "q_dtype": "float8_e5m2"})
    q, k, v, dout = inputs = make_inputs(shape, torch.float32, "cpu", seed=0, requires_grad=False)
    assert torch.equal(q, fp8_representable(q, "float8_e5m2")) and not torch.equal(k, fp8_representable(k, "float8_e5m2"))
    refill_inputs(inputs, 1, shape)
    assert torch.equal(q, fp8_representable(q, "float8_e5m2"))
    made = inputs_in_layout(inputs, "thd", Workload.of(shape, "float32", "cpu", layout="thd"))
    assert made[0].dtype == torch.float8_e5m2 and made[1].dtype == torch.float32 and made[3].dtype == torch.float32
    torch.testing.assert_close(made[0].float() * FP8_DESCALE["float8_e5m2"], q[0].transpose(0, 1), rtol=0, atol=0)


def test_fp8_values_are_exactly_what_the_cache_holds():
    from attnbench.workloads import FP8_DESCALE, fp8_representable

    x = torch.randn(1000) * 3
    for kv_dtype, descale in FP8_DESCALE.items():
        held = fp8_representable(x, kv_dtype)
        again = (held / descale).to(getattr(torch, kv_dtype)).to(torch.float32) * descale
        assert torch.equal(held, again)  # already on the fp8 grid: a second rounding changes nothing
        assert ((held - x).abs() <= 0.126 * x.abs()).all()  # within half of e5m2's coarser spacing


def _packed(causal, device="cpu", **extra):
    from attnbench.workloads import Workload

    entry = {"name": "p", "heads": 4, "dim": 16, "seq_lens": [17, 5, 30], "causal": causal, **extra}
    return Workload.of(Shape.from_config(entry), "float32", device, layout="thd")


def test_sdpa_gets_nested_tensors_only_for_packed_documents_on_cuda():
    from attnbench import candidates
    from attnbench.workloads import Workload

    on_cuda = _packed(True, "cuda")
    assert [candidates.sdpa_takes_jagged(n, on_cuda) for n in candidates.SDPA_BACKENDS] == [True, True, True, False]
    assert candidates.declaration("flash", on_cuda).layout == "thd"
    assert candidates.declaration("math", on_cuda).layout == "bhsd"  # math takes no causal jagged input
    assert not candidates.sdpa_takes_jagged("flash", _packed(True, "cpu"))  # no fused jagged kernel on the CPU
    assert candidates.declaration("flash", _packed(True, "cpu")).layout == "bhsd"
    for extra in ({"window": [7, 0]}, {"prefix": 3}, {"alibi": True}, {"softcap": 5.0}):
        assert not candidates.sdpa_takes_jagged("flash", _packed(True, "cuda", **extra)), extra
    decode = Shape.from_config({"name": "d", "batch": 3, "heads": 4, "dim": 16, "cache_lens": [9, 40, 17]})
    assert not candidates.sdpa_takes_jagged("flash", Workload.of(decode, "float32", "cuda"))
    dense = Shape.from_config({"name": "e", "batch": 2, "heads": 4, "seq": 32, "dim": 16, "causal": True})
    assert not candidates.sdpa_takes_jagged("flash", Workload.of(dense, "float32", "cuda"))


def test_nested_tensors_keep_each_document_to_itself_and_a_decline_gives_pytorchs_words():
    """The jagged path on the CPU, where only math takes nested tensors, and only without causal: the
    answer, in thd, is the float64 reference's; causal is declined with the reason PyTorch logs."""
    from torch.nn.attention import SDPBackend

    from attnbench import candidates
    from attnbench.workloads import in_layout, inputs_in_layout

    work = _packed(False)
    q, k, v, dout = make_inputs(work, torch.float32, "cpu", 0, False)
    thd = inputs_in_layout((q, k, v, dout), "thd", work)
    assert thd[0].shape == (52, 4, 16)
    run = candidates._jagged_sdpa("math", SDPBackend.MATH, work, thd[:3], {})
    want = in_layout([reference(work, q.double(), k.double(), v.double(), None)[0]], "thd")[0]
    torch.testing.assert_close(run(*thd[:3]).double(), want, atol=1e-5, rtol=1e-5)
    with pytest.raises(candidates.Unsupported, match="math on nested .jagged. tensors: Nested tensors for query / key"):
        candidates._jagged_sdpa("math", SDPBackend.MATH, _packed(True), thd[:3], {})


def test_a_backend_given_nested_tensors_is_measured_in_thd_or_says_why_not(kernels_importable, monkeypatch):
    """Through run_shape: the backend's inputs are made in thd before timing, and a decline (here the
    CPU, which has no fused jagged kernel) is `unsupported` in words, never an error."""
    from attnbench import candidates

    takes = candidates.sdpa_takes_jagged
    monkeypatch.setattr(candidates, "sdpa_takes_jagged", lambda name, w: takes(name, replace(w, device="cuda")))
    got, result = _bench({"heads": 4, "dim": 16, "seq_lens": [17, 5, 30], "causal": True}, ["math", "flash"])
    assert got["math"][0] == "ok" and result["candidates"]["math"]["layout"] == "bhsd"
    assert got["flash"] == ("unsupported", "flash on nested (jagged) tensors: PyTorch has no flash kernel for nested tensors on cpu")


@pytest.mark.parametrize("mode", ["forward", "forward_backward"])
def test_sdpa_gets_a_decode_batch_padded_to_its_longest_cache(kernels_importable, mode):
    """Not one row with a block-diagonal mask (requests x the work): the requests as a batch, each cache
    padded to the longest and hidden by a key-padding mask; checked against float64, gradients too."""
    entry = {"batch": 4, "heads": 4, "kv_heads": 1, "dim": 16, "seq": 2, "cache_lens": [26, 17, 24, 11]}
    got, result = _bench(entry, ["math", "cudnn", "contract_kernels:flex_eager"], mode)
    assert got["math"] == ("ok", None) and result["candidates"]["math"]["layout"] == "padded"
    # a decline is recorded with what it was offered (the report names only the backends that took it)
    assert got["cudnn"][0] == "unsupported" and result["candidates"]["cudnn"]["layout"] == "padded"
    assert result["candidates"]["contract_kernels:flex_eager"].get("layout", "bhsd") == "bhsd"
    pairs = result["pairs"]
    assert pairs["padded"] == 4 * 2 * 26 and pairs["dense"] == 8 * 78  # vs 624 as one row
    assert pairs["attended"] == sum(2 * n - 1 for n in (26, 17, 24, 11))  # bottom-right causal, 2 queries
    # the work SDPA wastes is bench's to record, per candidate: the padded batch's for an SDPA
    # backend, none for a kernel that reads the caches as they are (the report reads it, never derives it)
    assert result["candidates"]["math"]["dense_mask_work"] == pairs["padded"] / pairs["attended"]
    assert result["candidates"]["contract_kernels:flex_eager"]["dense_mask_work"] is None


def test_sdpa_given_a_dense_mask_records_the_work_it_computes_over_the_work_asked(kernels_importable):
    got, result = _bench({"batch": 1, "heads": 2, "dim": 16, "seq": 32, "causal": True, "window": [3, 0]}, ["math"])
    pairs = result["pairs"]
    assert got["math"] == ("ok", None) and pairs["sdpa_dense_mask"]
    assert result["candidates"]["math"]["dense_mask_work"] == pytest.approx(pairs["dense"] / pairs["attended"])

    # the report shows what bench recorded; a file written before bench recorded it, what its pairs say
    from attnbench import autotune
    from attnbench.documents import Analysis, ShapeComparisons, ShapeResult
    from attnbench.report.data import summary_frame
    from attnbench.stats import compare_shape

    def shown(document):
        bench = ShapeResult.from_json(document)
        compared = ShapeComparisons.from_json(compare_shape(bench, "math"))
        frame = summary_frame([bench], [compared], {"matmul": {}, "copy": {}}, Analysis.from_json(autotune.analyse([bench], [compared])))
        return frame.set_index("candidate").loc["math", "dense_mask_work"]

    result["candidates"]["math"]["dense_mask_work"] = 123.0
    assert shown(result) == 123.0
    # a file written before bench recorded it: schema 3 without a minor version, and no dense_mask_work
    del result["schema_minor"], result["candidates"]["math"]["dense_mask_work"]
    assert shown(result) == pytest.approx(pairs["dense"] / pairs["attended"])


def test_the_padded_batch_holds_each_request_in_its_row_and_the_mask_sees_exactly_its_pairs():
    from attnbench.workloads import Workload, padded, padded_mask, padded_slots

    shape = Shape.from_config({"name": "d", "batch": 3, "heads": 2, "dim": 4, "seq": 2, "cache_lens": [5, 9, 3]})
    work = Workload.of(shape, "float32", "cpu")
    k = torch.randn(1, 2, 17, 4)
    rows = padded(k, True, work)
    assert rows.shape == (3, 2, 9, 4)
    for request, (start, stop) in enumerate([(0, 5), (5, 14), (14, 17)]):
        torch.testing.assert_close(rows[request, :, : stop - start], k[0, :, start:stop])
        assert (rows[request, :, stop - start :] == 0).all()  # finite: masked keys times a zero weight
    assert padded_slots(work, "cpu").tolist() == [*range(0, 5), *range(9, 18), *range(18, 21)]
    q = torch.randn(1, 2, 6, 4)
    torch.testing.assert_close(padded(q, False, work)[1], q[0, :, 2:4])
    assert int(padded_mask(work, "cpu").sum()) == shape.attended_pairs()
