"""Two user kernels for the one-inference CPU check (examples/one_inference.yaml, issue 30).

Both are plain attnbench kernels, called as f(q, k, v, causal=..., scale=...) with q of shape
(batch, heads, seq, dim) and k, v of shape (batch, kv_heads, seq_kv, dim); they return the output
shaped like q, in q's dtype. Causal is top-left (SDPA's is_causal), the only mask they are given.

sdpa_wrapper      PyTorch's SDPA behind one more Python call: as fast as the backend PyTorch picks
                  (flash on the CPU), so autotune's comparison of the two lands near 1x, the "same"
                  side of the rule.
explicit_softmax  The textbook formula, softmax(Q K^T * scale) V, written out step by step in
                  float32 (max, exp, sum and divide as separate tensors): slower than every fused
                  backend, and than math once the score matrix outgrows the caches (the "slower" side).
"""

import torch
import torch.nn.functional as F


def sdpa_wrapper(q, k, v, *, causal, scale):
    """scaled_dot_product_attention with the backend PyTorch picks (GQA through enable_gqa)."""
    return F.scaled_dot_product_attention(
        q, k, v, is_causal=causal, scale=scale, enable_gqa=q.shape[1] != k.shape[1]
    )


def explicit_softmax(q, k, v, *, causal, scale):
    """softmax(Q K^T * scale) V in float32, every step its own tensor, then cast to q's dtype."""
    group = q.shape[1] // k.shape[1]
    qf = q.float()
    kf = k.float().repeat_interleave(group, dim=1)
    vf = v.float().repeat_interleave(group, dim=1)
    scores = torch.matmul(qf, kf.transpose(-1, -2)) * scale
    if causal:
        keep = torch.ones(q.shape[-2], k.shape[-2], dtype=torch.bool, device=q.device).tril()
        scores = scores.masked_fill(~keep, float("-inf"))
    shifted = scores - scores.amax(dim=-1, keepdim=True)
    weights = torch.exp(shifted)
    probs = weights / weights.sum(dim=-1, keepdim=True)
    return torch.matmul(probs, vf).to(q.dtype)
