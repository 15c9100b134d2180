"""A tunable Triton FlashAttention-2 forward kernel, written to attnbench's kernel contract.

Two candidates share one `@triton.jit` kernel, which reads every tensor through its strides:

- `examples.triton_flash:attention`: q, k, v and the output are (batch, heads, seq, dim);
- `examples.triton_flash:attention_bshd`: the same in (batch, seq, heads, dim), the layout
  flash-attn and most training code keep, so neither pays for a transpose.

Both are factory kernels: attnbench calls `prepare(workload, q, k, v, **config)` once, outside the
timed region (checks, strides, launch grid, compilation), and times the `run(q, k, v)` it returns.
Each point of GRID becomes a candidate of its own, named like
`examples.triton_flash:attention[BLOCK_M=128,BLOCK_N=64,num_warps=8,num_stages=3]`, so one run
of the workflow tunes the kernel per shape.

Supported: float16, bfloat16 and float32 (float32 products in IEEE precision, since TF32 misses
float32's 1e-4 tolerance); head dims that are powers of two from 16 to 256; causal masks aligned
top-left like PyTorch's SDPA (query i sees keys j <= i, also when seq != seq_kv) or bottom-right
like FlashAttention's (the last query sees the last key; a query that sees no key outputs zeros);
grouped-query attention (kv_heads dividing heads). Declined with `Unsupported`, in words: the
backward pass, other head dims, any other mask or score modifier (window, prefix, softcap, ALiBi,
packed sequences, dim_v != dim), CPU tensors (unless TRITON_INTERPRET=1), and configurations that
need more shared memory than the GPU has. Triton is imported when present: without it the module
still imports (CI lists candidates without Triton) and every candidate declines.
"""

from __future__ import annotations

import dataclasses
import os

import torch

from attnbench import Unsupported, Workload, kernel

try:
    import triton
    import triton.language as tl
except ImportError:  # the candidates decline at prepare time instead of failing to import
    triton = None

# Every combination is a candidate: 2 x 3 x 2 x 3 = 36. Hopper (sm_90) runs FlashAttention-2 well
# at 64- or 128-row query blocks with 4 or 8 warps; the key block and the pipeline depth trade
# shared memory against latency hiding. Compiled for sm_90 (Triton 3.9), every point lowers to
# wgmma without spilling; at dim 64 all fit in the 227 KB of shared memory a block may have, at
# dim 128 the 4-stage pipelines of 128-key blocks do not (4 of 36), at dim 256 half the grid does
# not: those decline on such shapes. A literal: the workflow reads it without importing this module.
GRID = {"BLOCK_M": [64, 128], "BLOCK_N": [32, 64, 128], "num_warps": [4, 8], "num_stages": [2, 3, 4]}

DTYPES = ("float16", "bfloat16", "float32")
ALIGNMENTS = ("top_left", "bottom_right")  # of the causal diagonal (attnbench.masks)
# The Workload fields this kernel reads, and those derived from others that it checks instead
# (cu_seqlens_* from seq_lens, alibi_slopes from alibi). Every other field must be at its default.
READ = {"name", "batch", "heads", "kv_heads", "seq", "seq_kv", "dim", "causal", "scale", "dtype", "device",
        "layout", "mode", "causal_alignment", "version"}  # fmt: skip
DERIVED = {"cu_seqlens_q", "cu_seqlens_k", "alibi_slopes"}
LOG2E = 1.4426950408889634
# The CUDA launch grid's second and third dimensions stop at 65535 blocks.
MAX_GRID_Y = 65535


if triton is not None:

    @triton.jit
    def _attend_blocks(
        acc,
        l_i,
        m_i,
        q,
        k_ptrs,
        v_ptrs,
        stride_kn,
        stride_vn,
        offs_m,
        offs_n,
        lo,
        hi,
        seq_kv,
        diagonal,
        qk_scale,
        BLOCK_N: tl.constexpr,
        MASKED: tl.constexpr,
        CAUSAL: tl.constexpr,
        PRECISION: tl.constexpr,
    ):
        """Fold key blocks [lo, hi) into the running softmax (m_i: row max, l_i: row sum, acc: the
        unnormalised output). Scores are in log2 units (scale * log2 e), so exp2 does the exponent.
        MASKED is a compile-time flag: the blocks wholly inside the sequence and below the causal
        diagonal load and score without any predicate, and only the few at the edges pay for one."""
        for start_n in range(lo, hi, BLOCK_N):
            start_n = tl.multiple_of(start_n, BLOCK_N)
            cols = start_n + offs_n
            if MASKED:
                k = tl.load(k_ptrs + start_n * stride_kn, mask=cols[:, None] < seq_kv, other=0.0)
            else:
                k = tl.load(k_ptrs + start_n * stride_kn)
            qk = tl.dot(q, tl.trans(k), input_precision=PRECISION) * qk_scale
            if MASKED:
                keep = cols[None, :] < seq_kv
                if CAUSAL:
                    keep = keep & (cols[None, :] <= offs_m[:, None] + diagonal)  # key j <= query i + offset
                qk = tl.where(keep, qk, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(qk, 1))
            m_sub = m_new
            if MASKED:
                # A row that has seen no key yet (bottom-right alignment, more queries than keys) has
                # m_new = -inf: subtract 0 instead, so its p and alpha are 0, not -inf - -inf = NaN.
                # Unmasked blocks are seen whole by every row: there m_new is always finite.
                m_sub = tl.where(m_new == float("-inf"), 0.0, m_new)
            p = tl.math.exp2(qk - m_sub[:, None])
            alpha = tl.math.exp2(m_i - m_sub)  # rescales what earlier blocks accumulated
            l_i = l_i * alpha + tl.sum(p, 1)
            if MASKED:
                v = tl.load(v_ptrs + start_n * stride_vn, mask=cols[:, None] < seq_kv, other=0.0)
            else:
                v = tl.load(v_ptrs + start_n * stride_vn)
            acc = tl.dot(p.to(v.dtype), v, acc * alpha[:, None], input_precision=PRECISION)
            m_i = m_new
        return acc, l_i, m_i

    @triton.jit
    def _attention_forward(
        Q,
        K,
        V,
        Out,
        stride_qb,
        stride_qh,
        stride_qs,
        stride_qd,
        stride_kb,
        stride_kh,
        stride_ks,
        stride_kd,
        stride_vb,
        stride_vh,
        stride_vs,
        stride_vd,
        stride_ob,
        stride_oh,
        stride_os,
        stride_od,
        heads,
        group,
        seq_q,
        seq_kv,
        diagonal,
        qk_scale,
        HEAD_DIM: tl.constexpr,
        BLOCK_M: tl.constexpr,
        BLOCK_N: tl.constexpr,
        CAUSAL: tl.constexpr,
        PRECISION: tl.constexpr,
    ):
        """One program: BLOCK_M queries of one (batch, head) against all the keys they may see.
        Strides are given per (batch, head, seq, dim) whatever the memory layout, which is how one
        kernel serves bhsd and bshd."""
        pid_m = tl.program_id(0)
        if CAUSAL:
            # The last query blocks see the most keys: start them first, so the short ones fill in
            # the tail of the launch instead of leaving SMs idle at its end.
            pid_m = tl.num_programs(0) - 1 - pid_m
        pid_bh = tl.program_id(1)
        # 64-bit base offsets: batch * heads * seq * dim passes 2**31 elements on large shapes.
        off_b = (pid_bh // heads).to(tl.int64)
        off_h = (pid_bh % heads).to(tl.int64)
        off_kv = off_h // group  # GQA: query heads [j * group, (j + 1) * group) read kv head j

        offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        offs_n = tl.arange(0, BLOCK_N)
        offs_d = tl.arange(0, HEAD_DIM)
        # fmt: off
        q_ptrs = Q + off_b * stride_qb + off_h * stride_qh + offs_m[:, None] * stride_qs + offs_d[None, :] * stride_qd
        k_ptrs = K + off_b * stride_kb + off_kv * stride_kh + offs_n[:, None] * stride_ks + offs_d[None, :] * stride_kd
        v_ptrs = V + off_b * stride_vb + off_kv * stride_vh + offs_n[:, None] * stride_vs + offs_d[None, :] * stride_vd
        o_ptrs = Out + off_b * stride_ob + off_h * stride_oh + offs_m[:, None] * stride_os + offs_d[None, :] * stride_od
        # fmt: on

        q = tl.load(q_ptrs, mask=offs_m[:, None] < seq_q, other=0.0)
        m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
        l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
        acc = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)

        if CAUSAL:
            # Query i sees keys j <= i + diagonal (0 top-left, seq_kv - seq bottom-right). Keys past
            # this block's last diagonal are masked for every row: their blocks are skipped. Keys up
            # to its first diagonal are visible to every row: those blocks need no mask.
            hi = tl.minimum(seq_kv, (pid_m + 1) * BLOCK_M + diagonal)
            unmasked = tl.maximum(tl.minimum(seq_kv, pid_m * BLOCK_M + diagonal + 1), 0) // BLOCK_N * BLOCK_N
        else:
            hi = seq_kv
            unmasked = seq_kv // BLOCK_N * BLOCK_N
        acc, l_i, m_i = _attend_blocks(
            acc, l_i, m_i, q, k_ptrs, v_ptrs, stride_ks, stride_vs, offs_m, offs_n, 0, unmasked,
            seq_kv, diagonal, qk_scale, BLOCK_N, False, CAUSAL, PRECISION,
        )  # fmt: skip
        acc, l_i, m_i = _attend_blocks(
            acc, l_i, m_i, q, k_ptrs, v_ptrs, stride_ks, stride_vs, offs_m, offs_n, unmasked, hi,
            seq_kv, diagonal, qk_scale, BLOCK_N, True, CAUSAL, PRECISION,
        )  # fmt: skip

        out = acc / tl.where(l_i == 0.0, 1.0, l_i)[:, None]  # a row that saw no key: zeros
        tl.store(o_ptrs, out.to(Out.dtype.element_ty), mask=offs_m[:, None] < seq_q)


def _interpreting() -> bool:
    """Triton's interpreter (TRITON_INTERPRET=1, set before triton is imported) runs kernels on CPU
    tensors with numpy: how this kernel is tested on machines without a GPU."""
    return os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "on", "yes")


def _as_bhsd(strides: tuple[int, ...], layout: str) -> tuple[int, ...]:
    """A tensor's strides in (batch, head, seq, dim) order, whatever its layout."""
    b, first, second, d = strides
    return (b, first, second, d) if layout == "bhsd" else (b, second, first, d)


def asked_beyond_dense(workload: Workload) -> list[str]:
    """The workload fields that ask for more than dense (causal) attention, as "name=value": a mask,
    a score modifier, packed sequences, another value head dim, or any field added after this was
    written. Any field this kernel does not read must be at its default; a later attnbench may add
    one, and it is safer to decline by name than to compute something else."""
    asked = []
    for item in dataclasses.fields(workload):
        if item.name in READ or item.name in DERIVED:
            continue
        value = getattr(workload, item.name)
        if item.default is not dataclasses.MISSING:
            default = item.default
        elif item.default_factory is not dataclasses.MISSING:
            default = item.default_factory()
        else:
            default = dataclasses.MISSING
        if item.name == "dim_v":
            default = workload.dim
        if value != default:
            asked.append(f"{item.name}={value!r}")
    return asked


def _power_of_two(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


def _prepare(
    workload: Workload, q, k, v, layout: str, BLOCK_M: int, BLOCK_N: int, num_warps: int, num_stages: int
):
    """Checks, strides, launch grid and compilation, all outside the timed region; returns `run`."""
    config = f"BLOCK_M={BLOCK_M}, BLOCK_N={BLOCK_N}, num_warps={num_warps}, num_stages={num_stages}"
    if triton is None:
        raise Unsupported("triton is not installed")
    if workload.mode != "forward":
        raise Unsupported(f"forward only: this example has no backward pass (mode {workload.mode})")
    if workload.version != 1:
        raise Unsupported(f"written for Workload version 1, got {workload.version}")
    asked = asked_beyond_dense(workload)
    if asked:
        raise Unsupported(f"dense attention with a causal mask only; not {', '.join(asked)}")
    if workload.causal_alignment not in ALIGNMENTS:
        raise Unsupported(
            f"causal alignment {workload.causal_alignment}: supported are {', '.join(ALIGNMENTS)}"
        )
    if workload.dtype not in DTYPES:
        raise Unsupported(f"dtype {workload.dtype}: supported are {', '.join(DTYPES)}")
    if not (_power_of_two(workload.dim) and 16 <= workload.dim <= 256):
        raise Unsupported(f"head dim {workload.dim}: needs a power of two from 16 to 256")
    if workload.heads % workload.kv_heads:
        raise Unsupported(f"heads {workload.heads} is not a multiple of kv_heads {workload.kv_heads}")
    if q.device.type != "cuda" and not _interpreting():
        raise Unsupported(f"Triton needs a CUDA device, not {q.device.type} (or TRITON_INTERPRET=1)")
    if not all(_power_of_two(n) and n >= 16 for n in (BLOCK_M, BLOCK_N)):
        raise Unsupported(f"{config}: block sizes must be powers of two of at least 16")
    if workload.batch * workload.heads > MAX_GRID_Y:
        raise Unsupported(
            f"batch * heads = {workload.batch * workload.heads} exceeds the grid's limit {MAX_GRID_Y}"
        )

    def shaped(heads: int, seq: int) -> tuple[int, ...]:
        b, d = workload.batch, workload.dim
        return (b, heads, seq, d) if layout == "bhsd" else (b, seq, heads, d)

    for name, tensor, want in (
        ("q", q, shaped(workload.heads, workload.seq)),
        ("k", k, shaped(workload.kv_heads, workload.seq_kv)),
        ("v", v, shaped(workload.kv_heads, workload.seq_kv)),
    ):
        if tuple(tensor.shape) != want or tensor.dtype != workload.torch_dtype:
            raise ValueError(
                f"{name} is {tuple(tensor.shape)} {tensor.dtype}, expected {want} {workload.torch_dtype} ({layout})"
            )
    # Rows are addressed with 32-bit offsets within one (batch, head): keep them in range.
    seq_dim = 2 if layout == "bhsd" else 1
    longest = max(t.stride(seq_dim) * t.shape[seq_dim] for t in (q, k, v))
    if longest >= 2**31:
        raise Unsupported(f"one head spans {longest} elements; 32-bit row offsets stop at 2**31")

    shape = tuple(q.shape)
    out = torch.empty(shape, dtype=q.dtype, device=q.device)  # for the strides and the first launch
    strides = (
        *_as_bhsd(q.stride(), layout),
        *_as_bhsd(k.stride(), layout),
        *_as_bhsd(v.stride(), layout),
        *_as_bhsd(out.stride(), layout),
    )
    grid = (triton.cdiv(workload.seq, BLOCK_M), workload.batch * workload.heads)
    # The causal diagonal: query i sees keys j <= i + diagonal.
    diagonal = workload.seq_kv - workload.seq if workload.causal_alignment == "bottom_right" else 0
    scalars = (workload.heads, workload.heads // workload.kv_heads, workload.seq, workload.seq_kv, diagonal)
    qk_scale = workload.scale * LOG2E
    constants = dict(
        HEAD_DIM=workload.dim,
        BLOCK_M=BLOCK_M,
        BLOCK_N=BLOCK_N,
        CAUSAL=workload.causal,
        PRECISION="ieee" if workload.dtype == "float32" else "tf32",  # tf32 is ignored for 16-bit inputs
        num_warps=num_warps,
        num_stages=num_stages,
    )

    def launch(q, k, v, out):
        _attention_forward[grid](q, k, v, out, *strides, *scalars, qk_scale, **constants)
        return out

    if q.device.type == "cuda":
        # Compile now and learn whether this configuration fits the GPU: Triton raises
        # OutOfResources at the first launch when the kernel needs more shared memory than there is.
        try:
            launch(q, k, v, out)
        except triton.runtime.OutOfResources as exc:
            unit = " bytes" if "memory" in exc.name else ""
            raise Unsupported(
                f"{config} at dim {workload.dim} in {workload.dtype}: needs {exc.required}{unit} of {exc.name},"
                f" this GPU has {exc.limit}{unit}"
            ) from None

    def run(q, k, v):
        """The timed call: one launch into a fresh output, as flash-attn allocates one. It assumes the
        tensors `prepare` saw (same shapes and strides), as attnbench guarantees."""
        return launch(q, k, v, torch.empty(shape, dtype=q.dtype, device=q.device))

    return run


@kernel(factory=True, layout="bhsd", grid=GRID)
def attention(workload: Workload, q, k, v, *, BLOCK_M=128, BLOCK_N=64, num_warps=8, num_stages=3):
    """FlashAttention-2 forward on (batch, heads, seq, dim) tensors."""
    return _prepare(workload, q, k, v, "bhsd", BLOCK_M, BLOCK_N, num_warps, num_stages)


@kernel(factory=True, layout="bshd", grid=GRID)
def attention_bshd(workload: Workload, q, k, v, *, BLOCK_M=128, BLOCK_N=64, num_warps=8, num_stages=3):
    """FlashAttention-2 forward on (batch, seq, heads, dim) tensors: the same kernel, other strides."""
    return _prepare(workload, q, k, v, "bshd", BLOCK_M, BLOCK_N, num_warps, num_stages)


__all__ = ["GRID", "attention", "attention_bshd"]
