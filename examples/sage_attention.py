"""SageAttention 1.0.6 (int8 QK, Triton; `pip install sageattention==1.0.6`) as attnbench candidates
that declare their approximation: its outputs are off the float64 reference by more than bfloat16's
tolerance on purpose, so each declares TOLERANCE (@attnbench.kernel(tolerance=...)) and is `ok` but
approximate, ranked apart from the exact kernels (docs/kernels.md).

- `examples.sage_attention:hnd`: q, k, v in (batch, heads, seq, dim), SageAttention's "HND";
- `examples.sage_attention:nhd`: the same in (batch, seq, heads, dim), its "NHD";
- `examples.sage_attention:hnd_smooth_k`: with SageAttention's default smooth_k, which subtracts k's
  mean *in place* in 1.0.6 (`k -= km` in sageattention/core.py): attnbench would call that kernel
  incorrect for changing its input, so this one smooths a copy of k, the copy timed with the call.

Factory kernels: the checks run once in `prepare`, outside the timed region. Declined with
`Unsupported`, in words: no CUDA or no sageattention, head dims other than 64, 96 and 128, masks
beyond causal (and causal with seq != seq_kv, which SageAttention does not align), the backward.
"""

from __future__ import annotations

from attnbench import Unsupported, Workload, kernel
from examples.triton_flash import asked_beyond_dense

# The norm-wise relative error against float64 these candidates declare they may reach (int8 Q and K
# per block, fp16 V): a declaration to check against what the bench files' accuracy records.
TOLERANCE = 3e-2
HEAD_DIMS = (64, 96, 128)


def _prepare(workload: Workload, q, k, v, layout: str, smooth_k: bool):
    """Checks, once, outside the timed region; returns `run`."""
    try:
        from sageattention import sageattn
    except ImportError as exc:
        raise Unsupported(f"sageattention is not installed ({exc})") from None
    if workload.version != 1:
        raise Unsupported(f"written for Workload version 1, got {workload.version}")
    if workload.mode != "forward":
        raise Unsupported(f"forward only: SageAttention has no backward pass (mode {workload.mode})")
    if q.device.type != "cuda":
        raise Unsupported(f"SageAttention needs a CUDA device, not {q.device.type}")
    if asked := asked_beyond_dense(workload):
        raise Unsupported(f"dense attention with a causal mask only; not {', '.join(asked)}")
    if workload.causal and workload.seq != workload.seq_kv:
        raise Unsupported("causal only where seq == seq_kv: SageAttention aligns no other diagonal")
    if workload.dim not in HEAD_DIMS:
        raise Unsupported(f"head dim {workload.dim}: SageAttention 1.0.6 has {', '.join(map(str, HEAD_DIMS))}")
    tensor_layout = "HND" if layout == "bhsd" else "NHD"

    def run(q, k, v):
        # smooth_k subtracts k's mean in place: on a copy, so the inputs stay the inputs
        keys = k.clone() if smooth_k else k
        return sageattn(
            q, keys, v, tensor_layout=tensor_layout, is_causal=workload.causal, sm_scale=workload.scale,
            smooth_k=smooth_k,
        )  # fmt: skip

    return run


@kernel(factory=True, tolerance=TOLERANCE)
def hnd(workload: Workload, q, k, v):
    return _prepare(workload, q, k, v, "bhsd", smooth_k=False)


@kernel(factory=True, layout="bshd", tolerance=TOLERANCE)
def nhd(workload: Workload, q, k, v):
    return _prepare(workload, q, k, v, "bshd", smooth_k=False)


@kernel(factory=True, tolerance=TOLERANCE)
def hnd_smooth_k(workload: Workload, q, k, v):
    return _prepare(workload, q, k, v, "bhsd", smooth_k=True)
