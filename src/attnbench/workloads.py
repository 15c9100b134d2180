"""Attention workloads: shapes, their inputs, their cost, and a float64 reference to check outputs against."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

# Backward does five matmuls to forward's two (FlashAttention's convention): 2.5x forward.
BACKWARD_FLOP_FACTOR = 2.5
# ||out - ref|| / ||ref|| that each dtype is expected to meet against float64 (see docs/methodology).
DEFAULT_TOLERANCE = {"float32": 1e-4, "float16": 5e-3, "bfloat16": 2e-2}
# Bounds the float64 score matrix of one reference chunk, so 16k-long sequences fit in memory.
REFERENCE_CHUNK_BYTES = 512 * 2**20
# Tensor layouts a candidate may declare: (batch, heads, seq, dim), the reference's, or (batch, seq, heads, dim).
LAYOUTS = ("bhsd", "bshd")
# Version of the Workload object handed to user kernels; raised when a field changes meaning.
WORKLOAD_VERSION = 1


@dataclass(frozen=True)
class Shape:
    name: str
    batch: int
    heads: int
    kv_heads: int
    seq: int
    seq_kv: int
    dim: int
    causal: bool

    @classmethod
    def from_config(cls, entry: dict[str, Any]) -> Shape:
        """Fill the defaults the config may omit: kv_heads = heads, seq_kv = seq, causal = False."""
        return cls(
            name=str(entry["name"]),
            batch=int(entry["batch"]),
            heads=int(entry["heads"]),
            kv_heads=int(entry.get("kv_heads") or entry["heads"]),
            seq=int(entry["seq"]),
            seq_kv=int(entry.get("seq_kv") or entry["seq"]),
            dim=int(entry["dim"]),
            causal=bool(entry.get("causal", False)),
        )

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def gqa(self) -> bool:
        return self.kv_heads != self.heads

    @property
    def scale(self) -> float:
        return 1.0 / math.sqrt(self.dim)

    def attended_pairs(self) -> int:
        """Query-key pairs per head; causal masks are top-left aligned, as in PyTorch's SDPA."""
        if not self.causal:
            return self.seq * self.seq_kv
        full_rows = max(0, self.seq - self.seq_kv)  # rows past the last key see every key
        ramp = min(self.seq, self.seq_kv)
        return ramp * (ramp + 1) // 2 + full_rows * self.seq_kv


@dataclass(frozen=True)
class Workload:
    """What a candidate is asked to compute: a shape, its dtype and device, the layout of the tensors
    this candidate receives, and whether gradients are timed too. A factory kernel (docs/kernels.md)
    gets it in `prepare(workload, q, k, v)`; the built-in candidates are built from it too.

    causal_alignment: "top_left", PyTorch SDPA's is_causal: query i attends to keys j <= i, also when
    seq != seq_kv. `extras` is where later workload kinds (masks, sequence lengths, KV caches) put
    what they add; `version` rises when a field changes meaning.
    """

    name: str
    batch: int
    heads: int
    kv_heads: int
    seq: int
    seq_kv: int
    dim: int
    causal: bool
    scale: float
    dtype: str
    device: str
    layout: str = "bhsd"
    mode: str = "forward"
    causal_alignment: str = "top_left"
    extras: dict[str, Any] = field(default_factory=dict)
    version: int = WORKLOAD_VERSION

    @classmethod
    def of(cls, shape: Shape, dtype: str, device: str, *, layout: str = "bhsd", mode: str = "forward") -> Workload:
        return cls(
            **{k: v for k, v in shape.as_dict().items()},
            scale=shape.scale,
            dtype=dtype,
            device=device,
            layout=layout,
            mode=mode,
        )

    @property
    def gqa(self) -> bool:
        return self.kv_heads != self.heads

    @property
    def torch_dtype(self) -> Any:
        import torch

        return getattr(torch, self.dtype)


def in_layout(tensors: list[Any] | tuple[Any, ...], layout: str) -> list[Any]:
    """Views of bhsd tensors as `layout` ((batch, seq, heads, dim) for bshd: dims 1 and 2 swapped)."""
    return [t if layout == "bhsd" else t.transpose(1, 2) for t in tensors]


def inputs_in_layout(inputs: tuple[Any, ...], layout: str) -> tuple[Any, ...]:
    """q, k, v and dout made contiguous in `layout` before timing (the same values as `inputs`), so
    that no transpose or copy happens inside the timed region that the kernel does not do itself."""
    if layout == "bhsd":
        return inputs
    made = []
    for tensor in inputs:
        copy = tensor.detach().transpose(1, 2).contiguous()
        made.append(copy.requires_grad_(tensor.requires_grad))
    return tuple(made)


def flops(shape: Shape, direction: str) -> float:
    forward = 4.0 * shape.batch * shape.heads * shape.dim * shape.attended_pairs()
    return forward * (1.0 + BACKWARD_FLOP_FACTOR) if direction == "forward_backward" else forward


def min_bytes(shape: Shape, itemsize: int, direction: str) -> int:
    """Bytes one call must move at least: every input read once, every output written once."""
    q = shape.batch * shape.heads * shape.seq * shape.dim
    kv = shape.batch * shape.kv_heads * shape.seq_kv * shape.dim
    forward = 2 * q + 2 * kv  # read q, k, v; write out
    if direction == "forward":
        return forward * itemsize
    backward = 4 * q + 4 * kv  # read q, k, v, out, dout; write dq, dk, dv
    return (forward + backward) * itemsize


def make_inputs(shape: Shape, dtype: Any, device: str, seed: int, requires_grad: bool) -> tuple[Any, ...]:
    """Random normal q, k, v (never zeros: they hide unwritten outputs) and an output gradient."""
    import torch

    gen = torch.Generator(device=device).manual_seed(seed)

    def draw(*size: int) -> torch.Tensor:
        t = torch.randn(*size, generator=gen, device=device, dtype=torch.float32).to(dtype)
        return t.requires_grad_(requires_grad)

    q = draw(shape.batch, shape.heads, shape.seq, shape.dim)
    k = draw(shape.batch, shape.kv_heads, shape.seq_kv, shape.dim)
    v = draw(shape.batch, shape.kv_heads, shape.seq_kv, shape.dim)
    dout = draw(shape.batch, shape.heads, shape.seq, shape.dim).detach()
    return q, k, v, dout


def refill_inputs(inputs: tuple[Any, ...], seed: int) -> None:
    """New random values written into the same tensors (same addresses, same strides), so that an
    answer a kernel kept from earlier calls no longer fits the inputs it is given."""
    import torch

    gen = torch.Generator(device=inputs[0].device).manual_seed(seed)
    with torch.no_grad():
        for tensor in inputs:
            tensor.copy_(torch.randn(tensor.shape, generator=gen, device=tensor.device, dtype=torch.float32))


def refill_layout(tensors: tuple[Any, ...], source: tuple[Any, ...], layout: str) -> None:
    """The values of the bhsd `source` written into `tensors`, its copies in `layout` (same addresses)."""
    import torch

    if layout == "bhsd":
        return
    with torch.no_grad():
        for made, values in zip(tensors, source):
            made.copy_(values.transpose(1, 2))


def reference(shape: Shape, q: Any, k: Any, v: Any, dout: Any | None) -> list[Any]:
    """Float64 attention (and its gradients when dout is given), computed a block of queries at a time."""
    import torch

    group = shape.heads // shape.kv_heads
    q64, k64, v64 = (t.detach().double() for t in (q, k, v))
    k64 = k64.repeat_interleave(group, dim=1)
    v64 = v64.repeat_interleave(group, dim=1)
    rows_per_chunk = max(1, REFERENCE_CHUNK_BYTES // (8 * shape.batch * shape.heads * shape.seq_kv))
    out = torch.empty_like(q64)
    grads = None
    if dout is not None:
        do64 = dout.double()
        grads = [torch.empty_like(q64), torch.zeros_like(k64), torch.zeros_like(v64)]
    cols = torch.arange(shape.seq_kv, device=q64.device)
    for start in range(0, shape.seq, rows_per_chunk):
        stop = min(start + rows_per_chunk, shape.seq)
        qc = q64[:, :, start:stop]
        scores = (qc @ k64.transpose(-1, -2)) * shape.scale
        if shape.causal:
            rows = torch.arange(start, stop, device=q64.device)
            scores.masked_fill_(cols[None, :] > rows[:, None], float("-inf"))
        probs = torch.softmax(scores, dim=-1)
        oc = probs @ v64
        out[:, :, start:stop] = oc
        if grads is not None:
            doc = do64[:, :, start:stop]
            grads[2] += probs.transpose(-1, -2) @ doc
            dprobs = doc @ v64.transpose(-1, -2)
            dscores = probs * (dprobs - (doc * oc).sum(-1, keepdim=True))
            grads[0][:, :, start:stop] = (dscores @ k64) * shape.scale
            grads[1] += (dscores.transpose(-1, -2) @ qc) * shape.scale
        del scores, probs
    if grads is None:
        return [out]
    dq, dk, dv = grads
    fold = (shape.batch, shape.kv_heads, group, shape.seq_kv, shape.dim)
    return [out, dq, dk.view(fold).sum(2), dv.view(fold).sum(2)]


def relative_error(got: Any, want: Any) -> float:
    """||got - want|| / ||want|| in float64; NaN or Inf anywhere in got gives inf."""
    import torch

    got64 = got.detach().to(want.device, torch.float64)
    if not torch.isfinite(got64).all():
        return math.inf
    denom = torch.linalg.vector_norm(want).item()
    return torch.linalg.vector_norm(got64 - want).item() / (denom or 1.0)


def check_output(result: Any, expected: list[Any], backward: bool, dtype: Any) -> tuple[float, str | None]:
    """Relative error of the worst output, or a reason why the output cannot be compared."""
    got = list(result) if backward else [result]
    names = ["out", "dq", "dk", "dv"]
    worst = 0.0
    for name, value, want in zip(names, got, expected):
        if not hasattr(value, "shape") or tuple(value.shape) != tuple(want.shape):
            return (
                float("nan"),
                f"{name} has shape {tuple(getattr(value, 'shape', ()))}, expected {tuple(want.shape)}",
            )
        if value.dtype != dtype:
            return float("nan"), f"{name} has dtype {value.dtype}, expected {dtype}"
        worst = max(worst, relative_error(value, want))
    return worst, None
