"""User kernels that misbehave on purpose, to drive every candidate status in the tests."""

import torch
import torch.nn.functional as F


def correct(q, k, v, *, causal, scale):
    return F.scaled_dot_product_attention(q, k, v, is_causal=causal, scale=scale, enable_gqa=True)


def wrong_values(q, k, v, *, causal, scale):
    return correct(q, k, v, causal=causal, scale=scale) * 1.1


def wrong_shape(q, k, v, *, causal, scale):
    return correct(q, k, v, causal=causal, scale=scale)[..., :-1]


def wrong_dtype(q, k, v, *, causal, scale):
    return correct(q, k, v, causal=causal, scale=scale).double()


def returns_nan(q, k, v, *, causal, scale):
    return torch.full_like(q, float("nan"))


def raises(q, k, v, *, causal, scale):
    raise ValueError("this kernel always fails")


def out_of_memory(q, k, v, *, causal, scale):
    raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB (GPU 0; 79.1 GiB total)")
