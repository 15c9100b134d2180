import pytest
import torch
import torch.nn.functional as F

from attnbench.workloads import Shape, flops, make_inputs, min_bytes, reference, relative_error


def shape(**overrides):
    base = {"name": "s", "batch": 2, "heads": 4, "seq": 48, "dim": 16}
    return Shape.from_config({**base, **overrides})


def test_defaults_fill_kv_heads_and_seq_kv():
    s = shape()
    assert (s.kv_heads, s.seq_kv, s.causal) == (4, 48, False)


@pytest.mark.parametrize("seq,seq_kv", [(48, 48), (32, 48), (48, 32)])
def test_causal_pairs_count_the_top_left_mask(seq, seq_kv):
    s = shape(seq=seq, seq_kv=seq_kv, causal=True)
    mask = torch.ones(seq, seq_kv, dtype=torch.bool).tril()
    assert s.attended_pairs() == int(mask.sum())


def test_flops_and_bytes():
    s = shape()
    assert flops(s, "forward") == 4 * 2 * 4 * 16 * 48 * 48
    assert flops(s, "forward_backward") == 3.5 * flops(s, "forward")
    q_elems = 2 * 4 * 48 * 16
    assert min_bytes(s, 2, "forward") == 2 * (4 * q_elems)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("kv_heads,seq_kv", [(4, 48), (2, 40)])
def test_reference_matches_autograd_of_float64_sdpa(causal, kv_heads, seq_kv, monkeypatch):
    monkeypatch.setattr("attnbench.workloads.REFERENCE_CHUNK_BYTES", 8 * 2 * 4 * seq_kv * 7)  # 7-row chunks
    s = shape(causal=causal, kv_heads=kv_heads, seq_kv=seq_kv)
    q, k, v, dout = make_inputs(s, torch.float64, "cpu", seed=3, requires_grad=True)
    out = F.scaled_dot_product_attention(q, k, v, is_causal=causal, scale=s.scale, enable_gqa=True)
    want = [out, *torch.autograd.grad(out, (q, k, v), dout)]
    got = reference(s, q, k, v, dout)
    for g, w in zip(got, want):
        assert relative_error(g, w.detach()) < 1e-12


def test_relative_error_flags_non_finite():
    ref = torch.ones(3, dtype=torch.float64)
    assert relative_error(torch.tensor([1.0, float("nan"), 1.0]), ref) == float("inf")
    assert relative_error(torch.tensor([1.0, 1.0, 1.1]), ref) == pytest.approx(0.1 / 3**0.5)
