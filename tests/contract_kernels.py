"""User kernels in each form and layout of the kernel contract (docs/kernels.md), for the tests. The
decode kernels (layout paged, an fp8 cache) are examples/decode_kernels.py."""

import time

import torch
import torch.nn.functional as F

from attnbench import Unsupported, kernel

GRID = {"BLOCK": [8, 16, 32]}


def _sdpa(q, k, v, causal, scale):
    return F.scaled_dot_product_attention(q, k, v, is_causal=causal, scale=scale, enable_gqa=True)


def _require_bshd(workload, *tensors):
    """Raises unless the tensors are contiguous (batch, seq, heads, dim): made so before timing."""
    q, k, v = tensors
    want_q = (workload.batch, workload.seq, workload.heads, workload.dim)
    want_kv = (workload.batch, workload.seq_kv, workload.kv_heads, workload.dim)
    if (tuple(q.shape), tuple(k.shape), tuple(v.shape)) != (want_q, want_kv, want_kv):
        raise AssertionError(f"not bshd: {tuple(q.shape)}")
    if not all(t.is_contiguous() for t in tensors):
        raise AssertionError("bshd inputs are not contiguous")


@kernel(factory=True)
def factory_bhsd(workload, q, k, v):
    """Setup that takes a while (planning, compilation): timed apart, never in the samples."""
    time.sleep(0.05)
    causal, scale = workload.causal, workload.scale

    def run(q, k, v):
        return _sdpa(q, k, v, causal, scale)

    return run


@kernel(layout="bshd")
def plain_bshd(q, k, v, *, causal, scale):
    out = _sdpa(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), causal, scale)
    return out.transpose(1, 2)


@kernel(factory=True, layout="bshd")
def factory_bshd(workload, q, k, v):
    _require_bshd(workload, q, k, v)
    if workload.layout != "bshd" or workload.version < 1:
        raise AssertionError(f"workload says {workload.layout}")

    def run(q, k, v):
        _require_bshd(workload, q, k, v)
        out = _sdpa(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), workload.causal, workload.scale)
        return out.transpose(1, 2)

    return run


@kernel(layout="bshd")
def bshd_answers_in_bhsd(q, k, v, *, causal, scale):
    """Declares bshd and returns bhsd: its output does not match the reference in its layout."""
    return _sdpa(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), causal, scale)


@kernel(factory=True, layout="bshd")
def bshd_keeps_its_first_answer(workload, q, k, v):
    """Computes once and hands back that answer ever after: the audit refills the bshd inputs too."""
    kept = []

    def run(q, k, v):
        if not kept:
            kept.append(_sdpa(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), workload.causal,
                              workload.scale).transpose(1, 2).contiguous())
        return kept[0].clone()

    return run


@kernel(grid=GRID)
def tiled(q, k, v, *, causal, scale, BLOCK):
    """A configuration is passed as keyword arguments; BLOCK=8 has a bug."""
    out = _sdpa(q, k, v, causal, scale)
    return out * 1.1 if BLOCK == 8 else out


@kernel(factory=True, grid=[{"BLOCK_M": 16, "stages": 2}, {"BLOCK_M": 128, "stages": 3}])
def tuned(workload, q, k, v, *, BLOCK_M, stages):
    if BLOCK_M > workload.seq:
        raise Unsupported(f"BLOCK_M={BLOCK_M} is longer than the sequence ({workload.seq})")

    def run(q, k, v):
        return _sdpa(q, k, v, workload.causal, workload.scale)

    return run


@kernel(factory=True)
def returns_no_callable(workload, q, k, v):
    return _sdpa(q, k, v, workload.causal, workload.scale)


@kernel(factory=True, layout="thd")
def documents_one_by_one(workload, q, k, v):
    """A packed batch in the thd layout: each document attended alone (causal within it), found from
    cu_seqlens; declines what it does not implement."""
    if workload.window is not None or workload.prefix or workload.softcap or workload.alibi:
        raise Unsupported("documents with plain causal or full attention only")
    if workload.causal and workload.causal_alignment != "top_left":
        raise Unsupported("top-left causal only")
    if tuple(q.shape) != (workload.cu_seqlens_q[-1], workload.heads, workload.dim):
        raise AssertionError(f"not thd: {tuple(q.shape)}")
    cu_q, cu_k = workload.cu_seqlens_q, workload.cu_seqlens_k
    spans = list(zip(zip(cu_q, cu_q[1:]), zip(cu_k, cu_k[1:])))

    def run(q, k, v):
        outs = []
        for (qa, qb), (ka, kb) in spans:  # each (1, heads, length, dim)
            one = [q[qa:qb].transpose(0, 1)[None], *(t[ka:kb].transpose(0, 1)[None] for t in (k, v))]
            outs.append(_sdpa(*one, workload.causal, workload.scale)[0].transpose(0, 1))
        return torch.cat(outs)

    return run


@kernel(factory=True)
def flex_eager(workload, q, k, v):
    """PyTorch's FlexAttention without torch.compile (its eager path: slow, and it warns so), from the
    workload's mask and score modifiers: every mask kind on the CPU in seconds."""
    import warnings

    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    from attnbench import masks

    shape = workload.shape
    allowed, modify = masks.mask_mod(shape, q.device), masks.score_mod(shape, q.device)
    block_mask = None if allowed is None else create_block_mask(
        allowed, None, None, workload.seq, workload.seq_kv, device=q.device
    )

    def run(q, k, v):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return flex_attention(q, k, v, score_mod=modify, block_mask=block_mask, scale=workload.scale,
                                  enable_gqa=workload.gqa)

    return run

