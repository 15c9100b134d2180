"""Every part of every output is checked (issue 29): rows and elements beyond the norm-wise error, named
where they are, and the hard input set the built-ins must pass too."""

from dataclasses import replace

import pytest
import torch

from attnbench import candidates
from attnbench.workloads import (
    DEFAULT_TOLERANCE,
    ELEMENT_ATOL,
    ELEMENT_RTOL,
    FP8_ROUNDOFF,
    PADDED,
    ROW_TOLERANCE,
    Shape,
    Workload,
    bounds_for,
    check_output,
    hard_inputs,
    hard_pattern,
    in_layout,
    inputs_in_layout,
    inspect_output,
    make_inputs,
    reference,
    refill_hard_inputs,
    refill_layout,
    relative_error,
)


def shape(**entry):
    return Shape.from_config({"name": "s", "batch": 2, "heads": 4, "seq": 64, "dim": 16, **entry})


def test_unwritten_tail_rows_pass_the_norm_wise_check_but_not_the_rows():
    gen = torch.Generator().manual_seed(0)
    want = torch.randn(4, 16, 4096, 16, generator=gen, dtype=torch.float64)
    got = want.to(torch.bfloat16)
    got[0, 5, -64:] = 0  # the last tile of 64 query rows of one head never written
    # what the check was: norm-wise, under bfloat16's tolerance
    assert relative_error(got, want) < DEFAULT_TOLERANCE["bfloat16"]
    error, why = check_output(got, [want], False, torch.bfloat16)
    assert error == pytest.approx(relative_error(got, want))
    assert why is not None and why.startswith(
        "out: rows 4032-4095 of head 5 (batch 0) off the float64 reference"
    )
    assert "worst row rel. error 1.00" in why
    checked = inspect_output(got, [want], False, torch.bfloat16)
    assert checked.worst_row_error == pytest.approx(1.0)
    assert checked.worst_row == "out: row 4032 of head 5 (batch 0)"
    assert checked.tensors[0].rows_over == 64
    # the same rows named the same whatever the candidate's layout (in_layout says which it is)
    bshd = in_layout([want], "bshd")[0]
    assert check_output(got.transpose(1, 2), [bshd], False, torch.bfloat16)[1] == why


def test_rows_off_in_several_heads_and_batches_are_said_together():
    want = torch.randn(2, 8, 256, 16, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    got = want.clone().to(torch.float32)
    got[:, 2:5, 100:104] *= 1.5
    checked = inspect_output(got, [want], False, torch.float32)
    assert checked.where == (
        "out: rows 100-103 of heads 2-4 (batches 0-1) off the float64 reference (worst row rel. error 0.50,"
        f" bound {ROW_TOLERANCE['float32']:.2g})"
    )
    assert checked.reason is None  # norm-wise already beyond float32's tolerance: the caller says so


def decode_shape(requests=512):
    return Shape.from_config(
        {
            "name": "decode",
            "batch": requests,
            "heads": 8,
            "kv_heads": 2,
            "dim": 16,
            "cache_lens": {"min": 4, "max": 24, "mean": 10, "seed": 0},
        }
    )


@pytest.mark.parametrize("layout", ["bhsd", PADDED, "thd"])
def test_one_wrong_request_of_a_decode_batch_is_named(layout):
    s = decode_shape()
    workload = Workload.of(s, "bfloat16", "cpu")
    q, k, v, _ = make_inputs(s, torch.bfloat16, "cpu", 0, False)
    (want,) = in_layout(reference(s, q, k, v, None), layout, workload)
    got = want.to(torch.bfloat16)
    wrong = 2 * ROW_TOLERANCE["bfloat16"]
    # one head of request 3 off by twice the row bound
    if layout == PADDED:  # (requests, heads, new queries, dim)
        got[3, 6] *= 1 + wrong
    elif layout == "thd":  # (tokens, heads, dim): request 3's one new query is token 3
        got[3, 6] *= 1 + wrong
    else:  # bhsd: one row of all the requests' new queries
        got[0, 6, 3] *= 1 + wrong
    assert relative_error(got, want) < DEFAULT_TOLERANCE["bfloat16"]
    error, why = check_output(got, [want], False, torch.bfloat16)
    assert why is not None and why.startswith("out: row 0 of head 6 (request 3) off the float64 reference"), (
        why
    )


def test_a_wrong_document_of_a_packed_batch_is_named_with_its_own_rows():
    s = shape(seq_lens=[40, 300, 100, 60], heads=8, causal=True)
    workload = Workload.of(s, "float32", "cpu")
    q, k, v, _ = make_inputs(s, torch.float32, "cpu", 0, False)
    (want,) = in_layout(reference(s, q, k, v, None), "bhsd", workload)
    got = want.to(torch.float32)
    got[0, 1, 40 + 300 + 10 : 40 + 300 + 12] = 0  # rows 10-11 of document 2
    checked = inspect_output(got, [want], False, torch.float32)
    assert checked.where.startswith("out: rows 10-11 of head 1 (document 2) off the float64 reference")


def test_an_element_spike_is_named_where_it_is():
    dtype = torch.float32
    bounds = bounds_for(dtype)
    want = torch.randn(2, 4, 256, 256, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    want[1, 2, 17, 3] = 0.0
    got = want.to(dtype)
    row_rms = want[1, 2, 17].square().mean().sqrt().item()
    spike = 4 * bounds.atol * row_rms  # four times the element bound there
    got[1, 2, 17, 3] = spike
    assert relative_error(got, want) < bounds.norm
    assert spike / torch.linalg.vector_norm(want[1, 2, 17]) < bounds.row  # its row stays within the row bound
    error, why = check_output(got, [want], False, dtype)
    assert why == (
        f"out: 1 element beyond atol {ELEMENT_ATOL['float32']:g} x its row's RMS + rtol {ELEMENT_RTOL['float32']:g}"
        f" x |want|, first at batch 1 head 2 row 17 col 3 (off by {spike:.3g}, want 0)"
    )
    checked = inspect_output(got, [want], False, dtype)
    assert checked.element_violations == 1 and checked.element_ratio == pytest.approx(4.0, rel=1e-3)


def test_gradients_are_checked_and_named_by_key_rows_of_kv_heads():
    s = shape(heads=8, kv_heads=2, seq=512, causal=True)
    q, k, v, dout = make_inputs(s, torch.float32, "cpu", 0, True)
    expected = reference(s, q, k, v, dout)
    got = [t.to(torch.float32) for t in expected]
    got[3][1, 1, 500:] = 0  # dv of the last 12 keys of kv head 1 never written
    assert relative_error(got[3], expected[3]) < DEFAULT_TOLERANCE["float32"] * 100  # hardly moves dv's norm
    checked = inspect_output(tuple(got), expected, True, torch.float32)
    assert "dv: key rows 500-511 of kv head 1 (batch 1) off the float64 reference" in checked.where


def test_nan_and_mismatches_are_said_as_before_and_a_wrong_whole_is_left_to_the_tolerance():
    want = torch.randn(2, 3, 8, 4, dtype=torch.float64)
    got = want.float()
    got[0, 0, 0, 0] = float("nan")
    assert check_output(got, [want], False, torch.float32) == (
        float("inf"),
        None,
    )  # "output contains NaN or Inf"
    assert check_output(want.float()[..., :-1], [want], False, torch.float32)[1] == (
        "out has shape (2, 3, 8, 3), expected (2, 3, 8, 4)"
    )
    assert check_output(want.half(), [want], False, torch.float32)[1] == (
        "out has dtype torch.float16, expected torch.float32"
    )
    # every row off: the norm-wise error is beyond the tolerance, and the caller's words say so (and the
    # audit's diagnosis of an answer that did not change with the inputs still runs)
    error, why = check_output(want.float() * 1.1, [want], False, torch.float32)
    assert error == pytest.approx(0.1) and why is None


def test_fp8_queries_widen_the_row_and_element_bounds_by_their_rounding():
    s = shape(q_dtype="float8_e4m3fn", kv_dtype="float8_e4m3fn")
    plain, fp8 = bounds_for("bfloat16"), bounds_for("bfloat16", s)
    roundoff = FP8_ROUNDOFF["float8_e4m3fn"]
    assert fp8.norm == pytest.approx(plain.norm + roundoff)
    assert fp8.row == pytest.approx(plain.row + roundoff) and fp8.rtol == pytest.approx(plain.rtol + roundoff)
    assert bounds_for("bfloat16", shape(kv_dtype="float8_e5m2")) == plain  # an fp8 cache: shared values
    # an output rounded to e4m3 (what flex returns with fp8 queries) passes every bound of the shape's,
    # told by the workload; bfloat16's own norm-wise tolerance it does not meet
    want = torch.randn(2, 4, 64, 16, dtype=torch.float64)
    rounded = (want / 2**-5).to(torch.float8_e4m3fn).to(torch.bfloat16) * 2**-5
    workload = Workload.of(s, "bfloat16", "cpu")
    checked = inspect_output(rounded, [want], False, torch.bfloat16, workload=workload)
    assert checked.bounds == fp8 and checked.where is None and checked.norm_error <= fp8.norm
    assert inspect_output(rounded, [want], False, torch.bfloat16).norm_error > plain.norm


def test_hard_inputs_are_finite_representable_and_hard():
    s = shape(heads=8, kv_heads=2, seq=256, dim=64, causal=True)
    q, k, v, dout = hard_inputs(s, torch.bfloat16, "cpu", 5, True)
    standard = make_inputs(s, torch.bfloat16, "cpu", 5, True)
    for made, plain in zip((q, k, v, dout), standard):
        assert made.shape == plain.shape and made.dtype == plain.dtype and torch.isfinite(made).all()
    assert [t.requires_grad for t in (q, k, v, dout)] == [True, True, True, False]
    pattern = hard_pattern(s, "cpu")
    assert torch.equal(v, standard[2])  # the same draws
    # no gradient flows back from the hard rows
    assert torch.equal(dout, standard[3].masked_fill(pattern[None, :, :, None] != 0, 0.0))
    scores = (q.double() @ k.double().repeat_interleave(4, dim=1).transpose(-1, -2)) * s.scale
    scores = scores.masked_fill(~torch.ones(256, 256, dtype=torch.bool).tril(), float("-inf"))
    past_first = torch.arange(256) >= 16  # rows that see 16 keys or more
    rows = scores[:, (pattern == 1) & past_first]
    seen = rows > float("-inf")
    # scores near overflow: exp of most of them overflows float16 unless the maximum is subtracted
    assert (rows[seen] > 11).double().mean() > 0.3 and rows.amax(-1).min() > 11
    assert torch.isinf(torch.exp(rows.half())).any(-1).all()
    weights = torch.softmax(scores, dim=-1)
    assert weights[:, (pattern == 2) & past_first].amax(-1).min() > 0.9  # nearly one-hot
    assert (q[:, pattern == 3] == 0).all()  # all-equal scores
    assert (pattern == 0).double().mean() >= 0.5  # random rows in between
    # the values are the dtype's own, and fp8 inputs hold fp8 values
    s8 = shape(seq=64, dim=64, q_dtype="float8_e4m3fn", kv_dtype="float8_e5m2")
    q8, k8, _, _ = hard_inputs(s8, torch.bfloat16, "cpu", 5, False)
    assert torch.equal((q8 / 2**-5).to(torch.float8_e4m3fn).to(torch.bfloat16) * 2**-5, q8)
    assert torch.equal((k8 / 2**-12).to(torch.float8_e5m2).to(torch.bfloat16) * 2**-12, k8)


def test_hard_values_are_written_into_the_same_tensors():
    s = decode_shape(requests=8)
    inputs = make_inputs(s, torch.float32, "cpu", 0, True)
    addresses = [t.data_ptr() for t in inputs]
    refill_hard_inputs(inputs, 7, s)
    assert [t.data_ptr() for t in inputs] == addresses
    for made, hard in zip(inputs, hard_inputs(s, torch.float32, "cpu", 7, True)):
        assert torch.equal(made, hard)


def run_candidate(name, s, dtype, backward):
    """Candidate `name` built as the benchmark builds it, checked on the standard inputs and then on
    the hard set written into its own tensors: the two OutputChecks (None where it declines)."""
    mode = "forward_backward" if backward else "forward"
    workload = Workload.of(s, dtype, "cpu", mode=mode)
    torch_dtype = getattr(torch, dtype)
    inputs = make_inputs(s, torch_dtype, "cpu", 0, backward)
    layout = candidates.declaration(name, workload).layout
    tensors = inputs_in_layout(inputs, layout, workload)
    kernel = candidates.build(name, replace(workload, layout=layout), tensors[:3])
    checks = []
    for hard in (False, True):
        if hard:
            refill_hard_inputs(inputs, 0, s)
            refill_layout(tensors, inputs, layout, workload)
        expected = reference(s, *inputs[:3], inputs[3] if backward else None)
        q, k, v, dout = tensors
        try:
            out = kernel(q, k, v)
        except RuntimeError as exc:
            if candidates.unsupported_reason(name, "cpu", exc, []) is not None:
                return None
            raise
        result = (out, *torch.autograd.grad(out, (q, k, v), dout)) if backward else out
        checks.append(inspect_output(result, in_layout(expected, layout, workload), backward, torch_dtype))
    return checks


SHAPES = {
    "causal": {"batch": 2, "heads": 4, "seq": 192, "dim": 64, "causal": True},
    "gqa": {"batch": 1, "heads": 8, "kv_heads": 2, "seq": 160, "dim": 64, "causal": True},
    "documents": {"heads": 4, "dim": 64, "causal": True, "seq_lens": [37, 128, 91]},
    "decode": {"batch": 6, "heads": 8, "kv_heads": 2, "dim": 64, "cache_lens": [17, 200, 64, 5, 129, 33]},
}


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("case", sorted(SHAPES))
@pytest.mark.parametrize("name", ["math", "flash", "efficient"])
def test_the_built_ins_pass_on_standard_and_hard_inputs(name, case, dtype):
    s = Shape.from_config({"name": case, **SHAPES[case]})
    checks = run_candidate(name, s, dtype, backward=case != "decode")
    if checks is None:
        assert name == "efficient"  # PyTorch has no CPU implementation of it
        return
    for checked in checks:
        assert checked.reason is None and checked.where is None, checked.where
        assert checked.norm_error <= DEFAULT_TOLERANCE[dtype]
        assert 0 < checked.worst_row_error <= ROW_TOLERANCE[dtype]


def test_a_row_that_sees_no_key_is_zeros_and_a_kernel_returning_zeros_there_passes():
    # bottom-right causal with more queries than keys: the first 24 queries of each head see no key
    s = shape(batch=2, heads=8, seq=1024, seq_kv=1000, dim=32, causal=True, causal_alignment="bottom_right")
    inputs = hard_inputs(s, torch.bfloat16, "cpu", 0, False)
    (want,) = reference(s, *inputs[:3], None)
    assert torch.equal(want[:, :, :24], torch.zeros_like(want[:, :, :24]))
    assert torch.linalg.vector_norm(want[:, :, 24:], dim=-1).min() > 0
    checks = run_candidate("math", s, "bfloat16", backward=False)  # SDPA returns zeros where nothing is seen
    assert all(checked.where is None for checked in checks)
    # a kernel that lets such rows see the first key (its diagonal clamped at 0) is told where
    got = want.to(torch.bfloat16)
    got[1, 3, :24] = inputs[2][1, 3 // 4, 0]
    checked = inspect_output(got, [want], False, torch.bfloat16)
    assert checked.where.startswith("out: rows 0-23 of head 3 (batch 1) off the float64 reference"), (
        checked.where
    )
    assert checked.worst_row_error > 1  # against the floor: the reference's own row norm is zero
