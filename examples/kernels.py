"""Example user kernels: how to plug your own attention into attnbench.

A candidate named "examples.kernels:naive_attention" is imported from the working directory and
called as naive_attention(q, k, v, causal=..., scale=...) with q of shape (batch, heads, seq, dim)
and k, v of shape (batch, kv_heads, seq_kv, dim); it returns the output shaped like q.
"""

import torch


def naive_attention(q, k, v, *, causal, scale):
    """Materialises the whole score matrix: correct, and the baseline every fused kernel beats."""
    group = q.shape[1] // k.shape[1]
    k = k.repeat_interleave(group, dim=1)
    v = v.repeat_interleave(group, dim=1)
    scores = (q @ k.transpose(-1, -2)) * scale
    if causal:
        mask = torch.ones(q.shape[-2], k.shape[-2], dtype=torch.bool, device=q.device).tril()
        scores = scores.masked_fill(~mask, float("-inf"))
    return torch.softmax(scores, dim=-1) @ v


# The ratchet demo (docs/examples/ratchet-h100): a kernel whose slowdown is known. It runs PyTorch's
# SDPA and then recomputes EXTRA_HEADS of its heads; with 20 heads, one extra head is 5% more work.
# Editing this number changes the module's source hash, so the workflow reruns its benchmarks.
EXTRA_HEADS = 0


def sdpa_with_extra_heads(q, k, v, *, causal, scale):
    """SDPA (the backend PyTorch picks), plus EXTRA_HEADS heads computed again and discarded
    (eager PyTorch runs every launched kernel, so the extra work is real)."""
    sdpa = torch.nn.functional.scaled_dot_product_attention
    gqa = q.shape[1] != k.shape[1]
    out = sdpa(q, k, v, is_causal=causal, scale=scale, enable_gqa=gqa)
    for _ in range(EXTRA_HEADS // q.shape[1]):  # whole extra passes
        sdpa(q, k, v, is_causal=causal, scale=scale, enable_gqa=gqa)
    if EXTRA_HEADS % q.shape[1]:
        heads = slice(0, EXTRA_HEADS % q.shape[1])
        group = q.shape[1] // k.shape[1]
        kv_heads = slice(0, max(1, heads.stop // group))
        sdpa(q[:, heads], k[:, kv_heads], v[:, kv_heads], is_causal=causal, scale=scale, enable_gqa=gqa)
    return out
