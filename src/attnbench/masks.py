"""Which keys each query attends to, and what is added to its scores: one definition for the float64
reference, FlexAttention's mask_mod and score_mod, SDPA's attn_mask, and the exact cost.

Positions are global (0 .. seq-1 queries, 0 .. seq_kv-1 keys); a packed batch of documents concatenates
them, and a query attends only within its own document, where the masks below apply to positions local
to the document. Per document with Lq queries and Lk keys, query i and key j:

- alignment: the query's diagonal is key i + offset, offset 0 (top_left, PyTorch SDPA's is_causal) or
  Lk - Lq (bottom_right, FlashAttention's and FlashInfer's: the last query sees the last key);
- causal: j <= i + offset;
- window (left, right): i + offset - left <= j <= i + offset + right (a side given as None is
  unbounded); a causal window of W tokens is (W - 1, 0);
- prefix N (prefix-LM, with causal): keys j < N are seen by every query, besides what causal allows
  (the window, when there is one, bounds them too);
- softcap c: scores become c * tanh(scores / c) (after scaling, before the bias and the softmax);
- ALiBi: -slope_h * |i + offset - j| is added to the scores (FlashAttention's convention), slopes
  the geometric sequence of the ALiBi paper.

A query that sees no key (bottom_right with more queries than keys) outputs zeros, as FlashAttention
does, and contributes no gradient.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Protocol


class Shape(Protocol):
    """What of a workload's shape (attnbench.workloads.Shape) its mask and score modification read:
    a protocol, so this module stands below workloads, which builds its inputs from it."""

    heads: int
    seq: int
    seq_kv: int
    causal: bool
    causal_alignment: str | None
    window: tuple[int | None, int | None] | None
    prefix: int
    softcap: float
    alibi: bool
    seq_lens: tuple[int, ...] | None
    seq_lens_kv: tuple[int, ...] | None

ALIGNMENTS = ("top_left", "bottom_right")


def alibi_slopes(heads: int) -> list[float]:
    """The ALiBi paper's slopes: 2^(-8/n), 2^(-16/n), ... for n the heads; for heads not a power of two,
    those of the closest smaller power, then every other slope of the next (Press et al., 2022)."""

    def power_of_two(n: int) -> list[float]:
        start = 2 ** (-(2 ** -(math.log2(n) - 3)))
        return [start ** (i + 1) for i in range(n)]

    if math.log2(heads).is_integer():
        return power_of_two(heads)
    closest = 2 ** math.floor(math.log2(heads))
    return power_of_two(closest) + power_of_two(2 * closest)[0::2][: heads - closest]


def documents(shape: Shape) -> tuple[list[int], list[int]]:
    """Cumulative query and key offsets of the shape's documents (one document unless packed; a
    decode request is a document of its new queries and its cache)."""
    if shape.seq_lens is None:
        return [0, shape.seq], [0, shape.seq_kv]

    def cumulative(lengths: tuple[int, ...]) -> list[int]:
        offsets = [0]
        for length in lengths:
            offsets.append(offsets[-1] + length)
        return offsets

    return cumulative(shape.seq_lens), cumulative(shape.seq_lens_kv or shape.seq_lens)


def is_masked(shape: Shape) -> bool:
    """Whether any query attends to fewer than all keys (beyond plain top-left causal, SDPA's own)."""
    return shape.causal or shape.window is not None or shape.seq_lens is not None


class Positions:
    """Index tensors that turn global positions into (document, local position, offset) on one device."""

    def __init__(self, shape: Shape, device: Any) -> None:
        import torch

        q_offsets, k_offsets = documents(shape)
        self.q_doc = _doc_ids(q_offsets, device)
        self.k_doc = _doc_ids(k_offsets, device)
        self.q_start = torch.tensor(q_offsets[:-1], device=device)[self.q_doc]
        self.k_start = torch.tensor(k_offsets[:-1], device=device)[self.k_doc]
        lengths_q = torch.tensor([b - a for a, b in zip(q_offsets, q_offsets[1:])], device=device)
        lengths_k = torch.tensor([b - a for a, b in zip(k_offsets, k_offsets[1:])], device=device)
        shift = lengths_k - lengths_q if shape.causal_alignment == "bottom_right" else torch.zeros_like(lengths_q)
        self.q_shift = shift[self.q_doc]  # the alignment offset of each query's document
        self.packed = shape.seq_lens is not None

    def diagonal(self, q_idx: Any) -> Any:
        """The local key position on each query's diagonal (i + offset)."""
        return q_idx - self.q_start[q_idx] + self.q_shift[q_idx]


def _doc_ids(offsets: list[int], device: Any) -> Any:
    import torch

    lengths = torch.tensor([b - a for a, b in zip(offsets, offsets[1:])], device=device)
    return torch.repeat_interleave(torch.arange(len(lengths), device=device), lengths)


def mask_mod(shape: Shape, device: Any) -> Callable[[Any, Any, Any, Any], Any] | None:
    """FlexAttention's mask_mod(b, h, q_idx, kv_idx) -> allowed, built from tensor operations only, so the
    reference calls it on broadcast index tensors too; None when every query sees every key."""
    if not is_masked(shape):
        return None
    at = Positions(shape, device)
    causal, window, prefix = shape.causal, shape.window, shape.prefix

    def allowed(b: Any, h: Any, q_idx: Any, kv_idx: Any) -> Any:
        diagonal = at.diagonal(q_idx)
        key = kv_idx - at.k_start[kv_idx]
        ok = at.q_doc[q_idx] == at.k_doc[kv_idx] if at.packed else (key >= 0)
        if causal:
            seen = key <= diagonal
            if prefix:
                seen = seen | (key < prefix)
            ok = ok & seen
        if window is not None:
            left, right = window
            if left is not None:
                ok = ok & (key >= diagonal - left)
            if right is not None:
                ok = ok & (key <= diagonal + right)
        return ok

    return allowed


def score_mod(shape: Shape, device: Any) -> Callable[[Any, Any, Any, Any, Any], Any] | None:
    """FlexAttention's score_mod(score, b, h, q_idx, kv_idx) for soft-capping and ALiBi; None without."""
    if not shape.softcap and not shape.alibi:
        return None
    import torch

    at = Positions(shape, device)
    cap = shape.softcap
    slopes = torch.tensor(alibi_slopes(shape.heads), device=device, dtype=torch.float32) if shape.alibi else None

    def modified(score: Any, b: Any, h: Any, q_idx: Any, kv_idx: Any) -> Any:
        if cap:
            score = cap * torch.tanh(score / cap)
        if slopes is not None:
            distance = (at.diagonal(q_idx) - (kv_idx - at.k_start[kv_idx])).abs()
            score = score - slopes.to(score.dtype)[h] * distance
        return score

    return modified


def attended_per_query(shape: Shape) -> Any:
    """How many keys each query attends to (a numpy array of seq counts), from intervals, not by
    enumerating pairs: the exact cost of a 128k-token shape stays cheap."""
    import numpy as np

    q_offsets, k_offsets = documents(shape)
    counts = []
    for (qa, qb), (ka, kb) in zip(zip(q_offsets, q_offsets[1:]), zip(k_offsets, k_offsets[1:])):
        lq, lk = qb - qa, kb - ka
        diagonal = np.arange(lq) + (lk - lq if shape.causal_alignment == "bottom_right" else 0)
        lo = np.zeros(lq, dtype=np.int64)
        hi = np.full(lq, lk - 1, dtype=np.int64)
        if shape.causal:  # causal keys and prefix keys both start at 0: their union is one interval
            hi = np.minimum(hi, np.maximum(diagonal, shape.prefix - 1))
        if shape.window is not None:
            left, right = shape.window
            if left is not None:
                lo = np.maximum(lo, diagonal - left)
            if right is not None:
                hi = np.minimum(hi, diagonal + right)
        count = np.maximum(hi - lo + 1, 0)
        counts.append(count)
    return np.concatenate(counts) if counts else np.zeros(0, dtype=np.int64)
