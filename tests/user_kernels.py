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


def says_not_supported(q, k, v, *, causal, scale):
    """A bug whose message happens to contain "not supported": still an error, not a decline."""
    raise ValueError("head dim 64 is not supported by this lookup table (index out of range)")


def declines(q, k, v, *, causal, scale):
    from attnbench import Unsupported

    raise Unsupported("only causal shapes; this one is not")


def not_implemented(q, k, v, *, causal, scale):
    raise NotImplementedError("GQA is not implemented yet")


def out_of_memory(q, k, v, *, causal, scale):
    raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB (GPU 0; 79.1 GiB total)")


def allocates_too_much(q, k, v, *, causal, scale):
    """A real allocation failure: a 256 TiB workspace that no allocator can give."""
    workspace = torch.empty(2**48, dtype=torch.uint8, device=q.device)
    return correct(q, k, v, causal=causal, scale=scale) + workspace[0]


def hangs(q, k, v, *, causal, scale):
    import time

    time.sleep(3600)


CALLS = {"n": 0}


def hangs_while_timed(q, k, v, *, causal, scale):
    """Correct for its first calls (the check passes), then hangs inside the timed rounds."""
    CALLS["n"] += 1
    if CALLS["n"] > 4:
        import time

        time.sleep(3600)
    return correct(q, k, v, causal=causal, scale=scale)
