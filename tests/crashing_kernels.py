"""Kernels that take their process down, or (on the CPU, by its words) the CUDA context, as kernels under
development do: attnbench.isolation must cost them their own result only (tests/test_isolation.py)."""

import ctypes
import os

import torch.nn.functional as F


def honest(q, k, v, *, causal, scale):
    return F.scaled_dot_product_attention(q, k, v, is_causal=causal, scale=scale, enable_gqa=True)


def exits(q, k, v, *, causal, scale):
    """Ends its process at once, as a binding that calls exit() does: no exception, no traceback."""
    os._exit(7)


def aborts(q, k, v, *, causal, scale):
    os.abort()


# Counted per process: each crash ends the process, and the next one starts from zero.
CALLS = {"n": 0}


def _after_checks():
    """True from the call after the checks' five (the first, second and hard input sets, determinism,
    peak memory): the timed rounds."""
    CALLS["n"] += 1
    return CALLS["n"] > 5


def segfaults_while_timed(q, k, v, *, causal, scale):
    """Correct in its checks, then reads address 0 in the timed rounds, where nothing synchronises per call."""
    if _after_checks():
        ctypes.string_at(0)
    return honest(q, k, v, causal=causal, scale=scale)


STICKY = "CUDA error: an illegal memory access was encountered"


def loses_context(q, k, v, *, causal, scale):
    """What torch raises after an out-of-bounds store, on the CPU: the harness must stop measuring."""
    raise RuntimeError(STICKY)


def loses_context_while_timed(q, k, v, *, causal, scale):
    if _after_checks():
        raise RuntimeError(STICKY)
    return honest(q, k, v, causal=causal, scale=scale)
