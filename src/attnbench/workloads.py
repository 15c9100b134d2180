"""Attention workloads: shapes, their inputs, their cost, and a float64 reference to check outputs against."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from attnbench import masks

# Backward does five matmuls to forward's two (FlashAttention's convention): 2.5x forward.
BACKWARD_FLOP_FACTOR = 2.5
# ||out - ref|| / ||ref|| that each dtype is expected to meet against float64 (see docs/methodology).
DEFAULT_TOLERANCE = {"float32": 1e-4, "float16": 5e-3, "bfloat16": 2e-2}
# Bounds the float64 score matrix of one reference chunk, so 16k-long sequences fit in memory.
REFERENCE_CHUNK_BYTES = 512 * 2**20
# Tensor layouts a candidate may declare: (batch, heads, seq, dim), the reference's; (batch, seq, heads,
# dim); (total tokens, heads, dim), every row's tokens one after another, with the workload's
# cu_seqlens (FlashAttention's varlen layout; a packed batch of documents is one row); and paged, for a
# shape with page_size: q thd, k and v as pools of pages (num_pages, page_size, kv_heads, dim) that the
# workload's page_table maps (vLLM's and FlashInfer's paged KV cache).
LAYOUTS = ("bhsd", "bshd", "thd", "paged")
# An fp8 KV cache (kv_dtype): one power-of-two descale per tensor (so that dequantising is exact in
# every run dtype), chosen for standard-normal data: |x| up to 14 is representable, beyond it clamped.
FP8_DESCALE = {"float8_e4m3fn": 2.0**-5, "float8_e5m2": 2.0**-12}
FP8_MAX = {"float8_e4m3fn": 448.0, "float8_e5m2": 57344.0}
# The unit roundoff of each fp8 format (2^-(mantissa bits + 1)): a kernel given fp8 queries may return
# its output in fp8 (FlexAttention does), each element then off by up to this much relative to its
# value (the cache's descale keeps the output in the format's normal range: config.py requires the
# cache in the same format), so a shape with fp8 queries gets this on top of the run dtype's tolerance.
FP8_ROUNDOFF = {"float8_e4m3fn": 2.0**-4, "float8_e5m2": 2.0**-3}
# Version of the Workload object handed to user kernels; raised when a field changes meaning.
WORKLOAD_VERSION = 1


# The mask and score fields a shape may add (attnbench.masks says what each means), with the value that
# means "none": a shape that leaves them at these is the dense attention of earlier configs, and its
# spec (hence its jobs' parameters) is what it was.
MASK_DEFAULTS: dict[str, Any] = {
    "causal_alignment": None,  # top_left, unless the config says: a shape records whether it did
    "window": None,
    "prefix": 0,
    "softcap": 0.0,
    "alibi": False,
    "softmax_scale": None,
    "seq_lens": None,
    "seq_lens_kv": None,
    "page_size": 0,
    "kv_dtype": None,
    "q_dtype": None,
}


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
    dim_v: int = 0  # the value head dim; from_config makes it dim when the config does not set it
    causal_alignment: str | None = None  # None: not stated, top_left (masks.ALIGNMENTS)
    window: tuple[int | None, int | None] | None = None
    prefix: int = 0
    softcap: float = 0.0
    alibi: bool = False
    softmax_scale: float | None = None
    seq_lens: tuple[int, ...] | None = None  # a packed batch of documents: each one's queries
    seq_lens_kv: tuple[int, ...] | None = None  # and each one's keys, when they differ (decode: its cache)
    page_size: int = 0  # a paged KV cache: tokens per page (0: contiguous)
    kv_dtype: str | None = None  # an fp8 KV cache: float8_e4m3fn or float8_e5m2 (FP8_DESCALE)
    q_dtype: str | None = None  # fp8 queries, likewise

    @classmethod
    def from_config(cls, entry: dict[str, Any]) -> Shape:
        """Fill the defaults the config may omit: kv_heads = heads, seq_kv = seq, causal = False, dim_v =
        dim, no mask beyond causal. A packed batch (`seq_lens`, a list or a seeded distribution, and
        `seq_lens_kv` when its keys differ) is one row of all its tokens. A decode batch (`cache_lens`:
        each of `batch` requests brings `seq` new queries, default 1, against its own cache) is such a
        packed batch, causal and bottom-right aligned: the new queries see the whole cache."""
        lengths, kv_lengths = _documents(entry)
        seq = sum(lengths) if lengths else int(entry["seq"])
        window = entry.get("window")
        decode = entry.get("cache_lens") is not None
        return cls(
            name=str(entry["name"]),
            batch=1 if lengths else int(entry["batch"]),
            heads=int(entry["heads"]),
            kv_heads=int(entry.get("kv_heads") or entry["heads"]),
            seq=seq,
            seq_kv=sum(kv_lengths or lengths) if lengths else int(entry.get("seq_kv") or seq),
            dim=int(entry["dim"]),
            causal=decode
            or bool(entry.get("causal", False)),  # decode is causal (the schema fills causal: false)
            dim_v=int(entry.get("dim_v") or entry["dim"]),
            causal_alignment=entry.get("causal_alignment") or ("bottom_right" if decode else None),
            window=None if window is None else (window[0], window[1]),
            prefix=int(entry.get("prefix") or 0),
            softcap=float(entry.get("softcap") or 0.0),
            alibi=bool(entry.get("alibi", False)),
            softmax_scale=None if entry.get("scale") is None else float(entry["scale"]),
            seq_lens=lengths,
            seq_lens_kv=kv_lengths,
            page_size=int(entry.get("page_size") or 0),
            kv_dtype=entry.get("kv_dtype"),
            q_dtype=entry.get("q_dtype"),
        )

    def as_dict(self) -> dict[str, Any]:
        """The fields, without those at their "none" value (MASK_DEFAULTS, dim_v == dim): a dense shape
        reads as it always did; packed lengths as the explicit list they resolved to."""
        fields = asdict(self)
        if fields["dim_v"] == self.dim:
            del fields["dim_v"]
        for key, none in MASK_DEFAULTS.items():
            if fields[key] == none:
                del fields[key]
        if "window" in fields:
            fields["window"] = list(fields["window"])
        for key in ("seq_lens", "seq_lens_kv"):
            if key in fields:
                fields[key] = list(fields[key])
        if "softmax_scale" in fields:
            fields["scale"] = fields.pop("softmax_scale")
        return fields

    @property
    def gqa(self) -> bool:
        return self.kv_heads != self.heads

    @property
    def scale(self) -> float:
        return self.softmax_scale if self.softmax_scale is not None else 1.0 / math.sqrt(self.dim)

    def attended_pairs(self) -> int:
        """Query-key pairs per head, counted from the mask (attnbench.masks.attended_per_query)."""
        if not masks.is_masked(self):
            return self.seq * self.seq_kv
        return int(masks.attended_per_query(self).sum())


def describe_mask(shape: dict[str, Any]) -> str:
    """The shape's attention pattern in words, for the report and the terminal: "causal", "causal
    (bottom-right), window [4095, 0], soft-cap 50", "3 documents (packed, 17-30 tokens)"... A causal
    shape with seq != seq_kv that did not state its alignment says which was assumed."""
    parts = []
    if shape.get("causal"):
        alignment = shape.get("causal_alignment")
        if alignment is None and shape["seq"] != shape.get("seq_kv", shape["seq"]):
            parts.append("causal (top-left: assumed, causal_alignment not set)")
        else:
            parts.append("causal" if alignment in (None, "top_left") else "causal (bottom-right)")
    else:
        parts.append("non-causal")
    if shape.get("window") is not None:
        left, right = ("∞" if side is None else side for side in shape["window"])
        parts.append(f"window [{left}, {right}]")
    if shape.get("prefix"):
        parts.append(f"prefix {shape['prefix']}")
    if shape.get("softcap"):
        parts.append(f"soft-cap {shape['softcap']:g}")
    if shape.get("alibi"):
        parts.append("ALiBi")
    if shape.get("dim_v") is not None and shape["dim_v"] != shape["dim"]:
        parts.append(f"dim_v {shape['dim_v']}")
    if shape.get("scale") is not None:
        parts.append(f"scale {shape['scale']:.4g}")
    if shape.get("page_size"):
        parts.append(f"paged cache ({shape['page_size']} per page)")
    if shape.get("kv_dtype"):
        parts.append(f"{shape['kv_dtype']} cache")
    if shape.get("q_dtype"):
        parts.append(f"{shape['q_dtype']} queries")
    lengths, kv_lengths = shape.get("seq_lens"), shape.get("seq_lens_kv")
    if lengths and kv_lengths and len(set(lengths)) == 1:
        parts.append(
            f"{len(lengths)} requests (decode: {lengths[0]} new each, cache {min(kv_lengths)}-{max(kv_lengths)} keys)"
        )
    elif lengths and kv_lengths:
        parts.append(
            f"{len(lengths)} documents (packed, {min(lengths)}-{max(lengths)} queries,"
            f" {min(kv_lengths)}-{max(kv_lengths)} keys)"
        )
    elif lengths:
        parts.append(f"{len(lengths)} documents (packed, {min(lengths)}-{max(lengths)} tokens)")
    return ", ".join(parts)


def _documents(entry: dict[str, Any]) -> tuple[tuple[int, ...] | None, tuple[int, ...] | None]:
    """Each document's (or decode request's) query lengths and, when they differ, key lengths."""
    if entry.get("cache_lens") is not None:
        requests = int(entry["batch"])
        return (int(entry.get("seq") or 1),) * requests, resolve_cache_lens(entry["cache_lens"], requests)
    if entry.get("seq_lens") is None:
        return None, None
    kv = entry.get("seq_lens_kv")
    return resolve_seq_lens(entry["seq_lens"]), (None if kv is None else tuple(int(n) for n in kv))


def page_table(cu_seqlens_k: list[int], page_size: int) -> tuple[tuple[int, ...], ...]:
    """Each request's pages in a shared pool, shuffled (numpy's generator, seed 0) so that a request's
    pages are scattered and contiguous reads are never an accident of allocation; () unless paged."""
    if not page_size:
        return ()
    import numpy as np

    counts = [-(-(b - a) // page_size) for a, b in zip(cu_seqlens_k, cu_seqlens_k[1:])]
    order = np.random.default_rng(0).permutation(sum(counts)).tolist()
    table, used = [], 0
    for count in counts:
        table.append(tuple(order[used : used + count]))
        used += count
    return tuple(table)


def resolve_cache_lens(given: list[int] | dict[str, Any], requests: int) -> tuple[int, ...]:
    """Each decode request's cache length: the list given, or `requests` lengths drawn with numpy's
    generator seeded by `seed` (default 0) from a Beta(2, b) scaled to [min, max], b chosen so that its
    mean is `mean` (serving traces are skewed: most requests short, a few long), rounded."""
    if isinstance(given, list):
        return tuple(int(n) for n in given)
    import numpy as np

    low, high, mean = int(given["min"]), int(given["max"]), float(given["mean"])
    if high == low:
        return (low,) * requests
    fraction = min(max((mean - low) / (high - low), 1e-3), 1 - 1e-3)
    rng = np.random.default_rng(int(given.get("seed", 0)))
    drawn = rng.beta(2.0, 2.0 * (1 - fraction) / fraction, size=requests)
    return tuple(int(round(low + (high - low) * x)) for x in drawn)


def resolve_seq_lens(given: list[int] | dict[str, Any]) -> tuple[int, ...]:
    """A packed batch's document lengths: the list given, or drawn uniformly between `min` and `max`
    with numpy's generator seeded by `seed` (default 0) until `total` tokens, the last one cut to fit
    (and dropped if that leaves it under `min`, its tokens going to the one before): the same lengths
    on every machine and run."""
    if isinstance(given, list):
        return tuple(int(n) for n in given)
    import numpy as np

    low, high, total = int(given["min"]), int(given["max"]), int(given["total"])
    rng = np.random.default_rng(int(given.get("seed", 0)))
    lengths: list[int] = []
    while sum(lengths) < total:
        lengths.append(int(min(rng.integers(low, high + 1), total - sum(lengths))))
    if len(lengths) > 1 and lengths[-1] < low:
        lengths[-2] += lengths.pop()
    return tuple(lengths)


@dataclass(frozen=True, kw_only=True)
class Workload(Shape):
    """What a candidate is asked to compute: a shape with its masks (the Shape fields), its dtype and
    device, the layout of the tensors this candidate receives, and whether gradients are timed too. A
    factory kernel (docs/kernels.md) gets it in `prepare(workload, q, k, v)`; the built-in candidates
    are built from it.

    The mask fields mean what attnbench.masks says (causal_alignment "top_left" is PyTorch SDPA's
    is_causal, "bottom_right" FlashAttention's; window (left, right); prefix; softcap; alibi with
    `alibi_slopes`); `scale` is the softmax scale. A packed batch has `seq_lens` and the cumulative
    offsets `cu_seqlens_q` and `cu_seqlens_k` (FlashAttention's varlen arguments; for other shapes the
    rows one after another); its tensors are one row of all tokens (batch 1; in the thd layout, (total
    tokens, heads, dim)). `extras` is where later workload kinds (KV caches) put what they add;
    `version` rises when a field changes meaning.
    """

    dtype: str = "float32"
    device: str = "cpu"
    layout: str = "bhsd"
    mode: str = "forward"
    alibi_slopes: tuple[float, ...] | None = None
    cu_seqlens_q: tuple[int, ...] = ()
    cu_seqlens_k: tuple[int, ...] = ()
    page_table: tuple[tuple[int, ...], ...] = ()  # per request (document), its pages in the pool, in order
    num_pages: int = 0
    kv_descale: float = 1.0  # an fp8 cache holds k / kv_descale and v / kv_descale
    q_descale: float = 1.0  # fp8 queries hold q / q_descale
    extras: dict[str, Any] = field(default_factory=dict)
    version: int = WORKLOAD_VERSION

    @classmethod
    def of(
        cls, shape: Shape, dtype: str, device: str, *, layout: str = "bhsd", mode: str = "forward"
    ) -> Workload:
        if shape.seq_lens is None:  # thd: the batch's rows one after another
            cu_q = [row * shape.seq for row in range(shape.batch + 1)]
            cu_k = [row * shape.seq_kv for row in range(shape.batch + 1)]
        else:
            cu_q, cu_k = masks.documents(shape)
        given = {f.name: getattr(shape, f.name) for f in fields(Shape)}
        return cls(
            **given | {"causal_alignment": shape.causal_alignment or "top_left"},
            dtype=dtype,
            device=device,
            layout=layout,
            mode=mode,
            alibi_slopes=tuple(masks.alibi_slopes(shape.heads)) if shape.alibi else None,
            cu_seqlens_q=tuple(cu_q),
            cu_seqlens_k=tuple(cu_k),
            page_table=page_table(cu_k, shape.page_size),
            num_pages=sum(-(-(b - a) // shape.page_size) for a, b in zip(cu_k, cu_k[1:]))
            if shape.page_size
            else 0,
            kv_descale=FP8_DESCALE[shape.kv_dtype] if shape.kv_dtype else 1.0,
            q_descale=FP8_DESCALE[shape.q_dtype] if shape.q_dtype else 1.0,
        )

    @property
    def shape(self) -> Shape:
        """The shape this workload was made from (its mask and score fields included)."""
        return Shape(**{f.name: getattr(self, f.name) for f in fields(Shape)})

    @property
    def torch_dtype(self) -> Any:
        import torch

        return getattr(torch, self.dtype)

    def kv_slots(self, device: Any) -> Any:
        """For every key of the one-row cache (request after request), its slot in the flattened pool."""
        import torch

        slots = []
        for (start, stop), pages in zip(zip(self.cu_seqlens_k, self.cu_seqlens_k[1:]), self.page_table):
            token = torch.arange(stop - start, device=device)  # a request at a time, not a key at a time
            pool = torch.tensor(pages, device=device, dtype=torch.long)
            slots.append(pool[token // self.page_size] * self.page_size + token % self.page_size)
        return torch.cat(slots) if slots else torch.zeros(0, device=device, dtype=torch.long)

    def features(self) -> list[str]:
        """What this workload asks beyond dense attention with top-left causal, in words: a kernel that
        implements none of it can decline any workload where this is not empty."""
        said = [
            "bottom-right causal alignment"
            if self.causal and self.causal_alignment == "bottom_right"
            else "",
            "a sliding window" if self.window is not None else "",
            "a prefix-LM mask" if self.prefix else "",
            "soft-capping" if self.softcap else "",
            "ALiBi" if self.alibi else "",
            "packed documents" if self.seq_lens is not None else "",
            f"a value head dim of {self.dim_v}" if self.dim_v != self.dim else "",
            f"a paged KV cache (pages of {self.page_size})" if self.page_size else "",
            f"an fp8 KV cache ({self.kv_dtype})" if self.kv_dtype else "",
            f"fp8 queries ({self.q_dtype})" if self.q_dtype else "",
        ]
        return [words for words in said if words]


def to_layout(tensor: Any, layout: str) -> Any:
    """A bhsd tensor as `layout`: bshd swaps dims 1 and 2 (a view); thd is (batch * seq, heads, dim),
    all tokens of all rows one after another (FlashAttention's varlen layout; a copy unless contiguous).
    A query-shaped tensor (q, the output, its gradient) in the paged layout is thd."""
    if layout == "bhsd":
        return tensor
    bshd = tensor.transpose(1, 2)
    if layout == "bshd":
        return bshd
    return bshd.reshape(-1, tensor.shape[1], tensor.shape[3])


def paged_pool(tensor: Any, workload: Workload, fill: float = float("nan")) -> Any:
    """k or v (bhsd, one row of every request's cache) scattered into a pool of pages, (num_pages,
    page_size, kv_heads, dim), as the workload's page table says; slots past a request's length hold
    NaN, so a kernel that reads them is caught (`fill`: what they hold instead)."""
    tokens = to_layout(tensor, "thd")
    pool = tokens.new_full((workload.num_pages * workload.page_size, *tokens.shape[1:]), fill)
    pool[workload.kv_slots(tokens.device)] = tokens
    return pool.view(workload.num_pages, workload.page_size, *tokens.shape[1:])


def fp8_format(shape: Shape | Workload, role: int) -> str | None:
    """The fp8 format input `role` (0 q, 1 k, 2 v, 3 the output's gradient) is held in, if any."""
    return {0: shape.q_dtype, 1: shape.kv_dtype, 2: shape.kv_dtype}.get(role)


def fp8_representable(tensor: Any, kv_dtype: str) -> Any:
    """`tensor` rounded to what its fp8 cache holds, back in its own dtype (exactly: the descale is a
    power of two): the values every candidate and the float64 reference then share."""
    import torch

    limit = FP8_MAX[kv_dtype] * FP8_DESCALE[kv_dtype]
    quantised = (tensor.detach().clamp(-limit, limit) / FP8_DESCALE[kv_dtype]).to(getattr(torch, kv_dtype))
    return quantised.to(tensor.dtype) * FP8_DESCALE[kv_dtype]


PADDED = "padded"
"""The built-ins' decode layout (not one a user kernel declares): the requests as a batch, q and the
output (requests, heads, new queries, dim), k and v (requests, kv_heads, longest cache, dim) with zeros
past each request's cache, which a key-padding mask hides (`padded_mask`; flex skips the blocks)."""
POOL = "pool"
"""flex's paged layout (PyTorch's experimental PagedAttention; not one a user kernel declares): q and
the output as in PADDED, k and v the pool of pages as one row, (1, kv_heads, num_pages * page_size,
dim), pages where the workload's page table puts them, zeros in the slots no request fills."""


def takes_padded(shape: Shape) -> bool:
    """Whether a shape can be a padded batch: a decode batch (caches of their own lengths), every
    request with as many new queries, and no mask beyond the cache's bottom-right causal (a packed
    batch with top-left causal documents is not one)."""
    return (
        shape.seq_lens_kv is not None
        and (not shape.causal or shape.causal_alignment == "bottom_right")
        and len(set(shape.seq_lens or ())) == 1
        and shape.window is None
        and not shape.prefix
        and not shape.alibi
    )


def padded(tensor: Any, is_kv: bool, workload: Workload) -> Any:
    """A one-row bhsd tensor as the padded batch: query-shaped ones by reshaping (every request has as
    many new queries), k and v scattered into their request's row, zeros past its cache."""
    tokens = to_layout(tensor, "thd")
    requests = len(workload.cu_seqlens_k) - 1
    if not is_kv:
        return tokens.reshape(requests, -1, *tokens.shape[1:]).transpose(1, 2)
    longest = padded_length(workload)
    rows = tokens.new_zeros((requests * longest, *tokens.shape[1:]))
    rows[padded_slots(workload, tokens.device)] = tokens
    return rows.view(requests, longest, *tokens.shape[1:]).transpose(1, 2)


def padded_length(workload: Workload) -> int:
    """The longest cache: every request's row of keys is this long."""
    return max(workload.seq_lens_kv or (0,))


def padded_queries(workload: Workload) -> int:
    """The new queries of each request (the same for all in a padded batch)."""
    return (workload.seq_lens or (1,))[0]


def padded_slots(workload: Workload, device: Any) -> Any:
    """For every key of the one-row cache, its row-major slot in (requests, longest cache)."""
    import torch

    cu = torch.tensor(workload.cu_seqlens_k, device=device)
    request = torch.repeat_interleave(torch.arange(len(cu) - 1, device=device), cu.diff())
    return request * padded_length(workload) + torch.arange(int(cu[-1]), device=device) - cu[request]


def padded_mask_mod(workload: Workload, device: Any) -> Any:
    """Which padded keys each new query sees, as a FlexAttention mask_mod of (request, head, query,
    key): its own request's cache, bottom-right causal over it."""
    import torch

    lengths = torch.tensor(workload.seq_lens_kv, device=device)
    queries = padded_queries(workload)

    def seen(request: Any, head: Any, row: Any, col: Any) -> Any:
        cached = col < lengths[request]
        return cached & (col <= lengths[request] - queries + row) if workload.causal else cached

    return seen


def padded_mask(workload: Workload, device: Any) -> Any:
    """`padded_mask_mod` as SDPA's boolean attn_mask, (requests, 1, new queries, longest cache)."""
    import torch

    request = torch.arange(len(workload.seq_lens_kv or ()), device=device).view(-1, 1, 1, 1)
    row = torch.arange(padded_queries(workload), device=device).view(1, 1, -1, 1)
    col = torch.arange(padded_length(workload), device=device).view(1, 1, 1, -1)
    return padded_mask_mod(workload, device)(request, None, row, col)


def pool_row(tensor: Any, workload: Workload) -> Any:
    """k or v (bhsd, one row of every request's cache) as the POOL layout: the pages of `paged_pool`
    (zeros where no request's key is: flex reads whole pages, and masks what it must not see)."""
    pages = paged_pool(tensor, workload, fill=0.0)
    return pages.view(1, -1, *pages.shape[2:]).transpose(1, 2)


def _converted(tensor: Any, layout: str, role: int, workload: Workload | None) -> Any:
    """Input `role` (0 q, 1 k, 2 v, 3 dout) of the bhsd inputs as `layout`, in fp8 where the workload's
    cache (k, v) or queries (q) are."""
    is_kv = role in (1, 2)
    if layout in (PADDED, POOL) or (layout == "paged" and is_kv):
        assert workload is not None, f"the {layout} layout needs the workload's cache lengths and pages"
    if layout in (PADDED, POOL) and not is_kv:
        tensor = padded(tensor, False, workload)
    elif layout == PADDED:
        tensor = padded(tensor, True, workload)
    elif layout == POOL:
        tensor = pool_row(tensor, workload)
    elif layout == "paged" and is_kv:
        tensor = paged_pool(tensor, workload)
    else:
        tensor = to_layout(tensor, "thd" if layout == "paged" else layout)
    fp8 = fp8_format(workload, role) if workload is not None else None
    if fp8:
        import torch

        return (tensor / FP8_DESCALE[fp8]).to(getattr(torch, fp8))
    return tensor


def in_layout(
    tensors: list[Any] | tuple[Any, ...], layout: str, workload: Workload | None = None
) -> list[Any]:
    """bhsd tensors (the reference's answers: the output, then dq, dk, dv) as `layout`, to compare a
    candidate's answers with (POOL, like paged, is read in decode: the output only)."""
    if layout in (PADDED, POOL):
        assert workload is not None, "the padded layout needs the workload's cache lengths"
        return [padded(t, role in (2, 3), workload) for role, t in enumerate(tensors)]
    return [to_layout(t, "thd" if layout == "paged" else layout) for t in tensors]


def inputs_in_layout(
    inputs: tuple[Any, ...], layout: str, workload: Workload | None = None
) -> tuple[Any, ...]:
    """q, k, v and dout made contiguous in `layout` before timing (the same values as `inputs`), so
    that no transpose or copy happens inside the timed region that the kernel does not do itself; k and
    v in fp8 for an fp8 cache (the workload's kv_dtype), q for fp8 queries (q_dtype)."""
    if layout == "bhsd" and (workload is None or not (workload.kv_dtype or workload.q_dtype)):
        return inputs
    made = []
    for role, tensor in enumerate(inputs):
        copy = _converted(tensor.detach(), layout, role, workload).contiguous()
        made.append(copy.requires_grad_(tensor.requires_grad and copy.itemsize > 1))  # fp8 takes no gradient
    return tuple(made)


def refill_layout(
    tensors: tuple[Any, ...], source: tuple[Any, ...], layout: str, workload: Workload | None = None
) -> None:
    """The values of the bhsd `source` written into `tensors`, its copies in `layout` (same addresses)."""
    import torch

    if tensors is source:
        return
    with torch.no_grad():
        for role, (made, values) in enumerate(zip(tensors, source)):
            made.copy_(_converted(values, layout, role, workload))


def flops(shape: Shape, direction: str) -> float:
    """2 * pairs * dim for the scores and 2 * pairs * dim_v for the weighted values, per head."""
    forward = 2.0 * shape.batch * shape.heads * (shape.dim + shape.dim_v) * shape.attended_pairs()
    return forward * (1.0 + BACKWARD_FLOP_FACTOR) if direction == "forward_backward" else forward


def min_bytes(shape: Shape, itemsize: int, direction: str) -> int:
    """Bytes one call must move at least: every input read once, every output written once; a paged
    cache's keys and values by whole pages, an fp8 cache's (and fp8 queries) at one byte each."""
    q = shape.batch * shape.heads * shape.seq * shape.dim * (1 if shape.q_dtype else itemsize)
    out = shape.batch * shape.heads * shape.seq * shape.dim_v * itemsize
    keys = shape.seq_kv
    if shape.page_size:  # whole pages are read: each request's last one, partly filled, too
        _, cu_k = masks.documents(shape)
        keys = sum(-(-(b - a) // shape.page_size) * shape.page_size for a, b in zip(cu_k, cu_k[1:]))
    kv_itemsize = 1 if shape.kv_dtype else itemsize
    k = shape.batch * shape.kv_heads * keys * shape.dim * kv_itemsize
    v = shape.batch * shape.kv_heads * keys * shape.dim_v * kv_itemsize
    forward = q + k + v + out  # read q, k, v; write out
    if direction == "forward":
        return forward
    backward = 2 * (q + k + v) + 2 * out  # read q, k, v, out, dout; write dq, dk, dv
    return forward + backward


def make_inputs(shape: Shape, dtype: Any, device: str, seed: int, requires_grad: bool) -> tuple[Any, ...]:
    """Random normal q, k, v (never zeros: they hide unwritten outputs) and an output gradient."""
    import torch

    gen = torch.Generator(device=device).manual_seed(seed)

    def draw(*size: int) -> torch.Tensor:
        t = torch.randn(*size, generator=gen, device=device, dtype=torch.float32).to(dtype)
        return t.requires_grad_(requires_grad)

    q = draw(shape.batch, shape.heads, shape.seq, shape.dim)
    k = draw(shape.batch, shape.kv_heads, shape.seq_kv, shape.dim)
    v = draw(shape.batch, shape.kv_heads, shape.seq_kv, shape.dim_v)
    # every candidate and the reference see the values an fp8 cache (or fp8 queries) hold
    q, k, v = (
        fp8_representable(t, fp8).requires_grad_(requires_grad) if (fp8 := fp8_format(shape, role)) else t
        for role, t in enumerate((q, k, v))
    )
    dout = draw(shape.batch, shape.heads, shape.seq, shape.dim_v).detach()
    return q, k, v, dout


def refill_inputs(inputs: tuple[Any, ...], seed: int, shape: Shape | None = None) -> None:
    """New random values written into the same tensors (same addresses, same strides), so that an
    answer a kernel kept from earlier calls no longer fits the inputs it is given (k and v rounded to
    what an fp8 cache holds, q to what fp8 queries hold, for `shape`)."""
    import torch

    gen = torch.Generator(device=inputs[0].device).manual_seed(seed)
    with torch.no_grad():
        for role, tensor in enumerate(inputs):
            tensor.copy_(torch.randn(tensor.shape, generator=gen, device=tensor.device, dtype=torch.float32))
            fp8 = fp8_format(shape, role) if shape is not None else None
            if fp8:
                tensor.copy_(fp8_representable(tensor, fp8))


def reference(shape: Shape, q: Any, k: Any, v: Any, dout: Any | None) -> list[Any]:
    """Float64 attention with the shape's masks and score modifiers (attnbench.masks), and its gradients
    when dout is given (float64 autograd), computed a block of queries at a time so that the score
    matrix of long sequences fits in memory. A query that sees no key outputs zeros."""
    import torch

    group = shape.heads // shape.kv_heads
    batch, kv_heads = shape.batch, shape.kv_heads
    k64, v64 = (t.detach().double().requires_grad_(dout is not None) for t in (k, v))
    q64 = q.detach().double()
    allowed = masks.mask_mod(shape, q64.device)
    modify = masks.score_mod(shape, q64.device)
    # float64 scores, probabilities and (for gradients) what autograd keeps: about four copies
    copies = 4 if dout is not None else 1
    rows_per_chunk = max(1, REFERENCE_CHUNK_BYTES // (8 * copies * shape.batch * shape.heads * shape.seq_kv))
    out = torch.empty(
        shape.batch, shape.heads, shape.seq, shape.dim_v, dtype=torch.float64, device=q64.device
    )
    grads = None
    if dout is not None:
        grads = [torch.empty_like(q64), torch.zeros_like(k64), torch.zeros_like(v64)]
    cols = torch.arange(shape.seq_kv, device=q64.device)
    # Query heads grouped under the kv head they read (head h reads kv head h // group), so that k and v
    # are broadcast, never copied per query head: a long decode cache stays one copy in float64.
    heads = torch.arange(shape.heads, device=q64.device).view(1, kv_heads, group, 1, 1)
    keys, values = k64.unsqueeze(2), v64.unsqueeze(2)
    for start in range(0, shape.seq, rows_per_chunk):
        stop = min(start + rows_per_chunk, shape.seq)
        rows = torch.arange(start, stop, device=q64.device)
        qc = q64[:, :, start:stop].requires_grad_(dout is not None)
        with torch.set_grad_enabled(dout is not None):
            grouped = qc.view(batch, kv_heads, group, stop - start, shape.dim)
            scores = (grouped @ keys.transpose(-1, -2)) * shape.scale
            if modify is not None:
                scores = modify(scores, None, heads, rows.view(1, 1, 1, -1, 1), cols.view(1, 1, 1, 1, -1))
            if allowed is not None:
                scores = scores.masked_fill(~allowed(None, None, rows[:, None], cols[None, :]), float("-inf"))
            top = scores.amax(dim=-1, keepdim=True).detach()
            weights = torch.exp(scores - torch.where(torch.isinf(top), 0.0, top))
            total = weights.sum(dim=-1, keepdim=True)
            grouped_out = (weights @ values) / torch.where(total > 0, total, 1.0)  # no key seen: zeros
            oc = grouped_out.view(batch, shape.heads, stop - start, shape.dim_v)
        out[:, :, start:stop] = oc.detach()
        if grads is not None:
            dq, dk, dv = torch.autograd.grad(oc, (qc, k64, v64), dout[:, :, start:stop].double())
            grads[0][:, :, start:stop] = dq
            grads[1] += dk
            grads[2] += dv
        del scores, weights, oc
    if grads is None:
        return [out]
    return [out, *grads]


def tolerance_for(dtype: str, shape: Shape) -> float:
    """||out - ref|| / ||ref|| a candidate must meet: the run dtype's (DEFAULT_TOLERANCE), plus with fp8
    queries that format's rounding of an fp8 output (FP8_ROUNDOFF)."""
    run = DEFAULT_TOLERANCE[dtype]
    return run + FP8_ROUNDOFF[shape.q_dtype] if shape.q_dtype else run


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
