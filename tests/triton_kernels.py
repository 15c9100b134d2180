"""A Triton kernel with an out-of-bounds store: an illegal memory access, which CUDA makes sticky
(tests/test_isolation.py's GPU test, benchmarks/crash_gpu.sh)."""

import torch.nn.functional as F
import triton
import triton.language as tl

# Elements past the output's start: terabytes away, where nothing is mapped.
FAR = 1 << 44
BLOCK = 128


@triton.jit
def _store_far(out_ptr, FAR: tl.constexpr, BLOCK: tl.constexpr):
    offsets = tl.arange(0, BLOCK).to(tl.int64) + FAR
    tl.store(out_ptr + offsets, tl.zeros([BLOCK], dtype=out_ptr.dtype.element_ty))  # no mask


def stores_out_of_bounds(q, k, v, *, causal, scale):
    """The right answer, then a store far past its end."""
    out = F.scaled_dot_product_attention(q, k, v, is_causal=causal, scale=scale, enable_gqa=True)
    _store_far[(1,)](out, FAR, BLOCK)
    return out


CALLS = {"n": 0}  # per process: each crash ends it


# The checks call a candidate a handful of times (three input sets, a repeat on the first, the memory
# footprint): a kernel that is right this often is past its checks; warm-up and 20 timed rounds follow.
RIGHT_CALLS = 12


def stores_out_of_bounds_while_timed(q, k, v, *, causal, scale):
    """Right in its checks, then the store in the warm-up or the timed rounds, where the error surfaces
    at a round's synchronisation, not at its own call. (Right for three calls only, it crashed in the
    checks once they gained two input sets: the H100 run of 2026-12-08.)"""
    CALLS["n"] += 1
    if CALLS["n"] <= RIGHT_CALLS:
        return F.scaled_dot_product_attention(q, k, v, is_causal=causal, scale=scale, enable_gqa=True)
    return stores_out_of_bounds(q, k, v, causal=causal, scale=scale)
