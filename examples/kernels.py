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
