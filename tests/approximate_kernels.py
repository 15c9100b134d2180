"""Kernels that approximate on purpose: the right answer scaled by 1.01, a 1% norm-wise error (beyond
float32's tolerance), declared or not."""

import torch

import attnbench


def _off_by_one_percent(q, k, v, causal, scale):
    return torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=causal, scale=scale) * 1.01


def undeclared(q, k, v, *, causal, scale):
    return _off_by_one_percent(q, k, v, causal, scale)


@attnbench.kernel(tolerance=3e-2)
def declared(q, k, v, *, causal, scale):
    return _off_by_one_percent(q, k, v, causal, scale)


@attnbench.kernel(tolerance=3e-3)
def declared_too_tight(q, k, v, *, causal, scale):
    return _off_by_one_percent(q, k, v, causal, scale)


@attnbench.kernel(tolerance=3e-2)
def approximate_on_hard_inputs(q, k, v, *, causal, scale):
    """Exact on random inputs, 1% off where a query or key holds an outlier (the hard input set)."""
    exact = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=causal, scale=scale)
    return exact * 1.01 if max(q.abs().max(), k.abs().max()) > 6 else exact
