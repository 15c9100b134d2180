"""Attention workloads: shapes, their inputs, their cost, and a float64 reference to check outputs against."""

from __future__ import annotations

import math
from bisect import bisect_right
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
DEFAULT_LAYOUT = LAYOUTS[0]  # a candidate's unless it declares another; every file before schema 3.1
# An fp8 KV cache (kv_dtype): one power-of-two descale per tensor (so that dequantising is exact in
# every run dtype), chosen for standard-normal data: |x| up to 14 is representable, beyond it clamped.
FP8_DESCALE = {"float8_e4m3fn": 2.0**-5, "float8_e5m2": 2.0**-12}
FP8_MAX = {"float8_e4m3fn": 448.0, "float8_e5m2": 57344.0}
# The unit roundoff of each fp8 format (2^-(mantissa bits + 1)): a kernel given fp8 queries may return
# its output in fp8 (FlexAttention does), each element then off by up to this much relative to its
# value (the cache's descale keeps the output in the format's normal range: config.py requires the
# cache in the same format), so a shape with fp8 queries gets this on top of the run dtype's tolerance.
FP8_ROUNDOFF = {"float8_e4m3fn": 2.0**-4, "float8_e5m2": 2.0**-3}
# Beyond the norm-wise error, check_output bounds each row and each element of every output (issue 29):
# a kernel that leaves a tail tile unwritten, or one element wrong, stays under the norm-wise tolerance at
# long sequences, not under these. A row (a query row of one head of the output or dq; a key row of one kv
# head of dk, dv) is off when ||got - want|| / max(||want||, ROW_FLOOR x the tensor's RMS row norm) exceeds
# ROW_TOLERANCE (the floor: a row whose reference is about zero, a query that sees no key, counts against
# the tensor's scale, not its own); an element when |got - want| > ELEMENT_ATOL x its row's RMS element
# (from the same floored norm) + ELEMENT_RTOL x |want| (atol in units of the row: a kernel's error in an
# element follows the sums that make its row, and rows differ by orders of magnitude, causal dk's first
# keys against its last). fp8 queries add FP8_ROUNDOFF to both relative bounds, as tolerance_for does to the
# norm-wise one; an fp8 cache adds nothing (its dequantised values are the inputs every kernel and the
# reference share). Set from the worst cases that `python benchmarks/error_bounds.py --device cpu` (and
# `--device cuda`) measured for every built-in and example kernel on the shapes of config/config.yaml and
# examples/*.yaml, standard and hard inputs (hard_inputs), forward and backward, with a margin: its tables
# are docs/validation/error-bounds-cpu.txt and error-bounds-h100-earlier-hard-set.txt (an earlier hard set).
ROW_TOLERANCE = {"float32": 1e-3, "float16": 0.04, "bfloat16": 0.3}
ELEMENT_ATOL = {"float32": 1e-3, "float16": 0.12, "bfloat16": 1.0}
ELEMENT_RTOL = {"float32": 1e-3, "float16": 0.03, "bfloat16": 0.1}
ROW_FLOOR = 0.5
# The hard input set (hard_inputs): query rows take turns, by row and head, at HARD_PATTERNS: dense random
# scores (0); scores about HARD_SCORE (1: exp of a score above 11 overflows float16, so a kernel must
# subtract the row's maximum; the row's largest are a few above it); one key's score HARD_PEAK above the
# rest's typical (2: nearly one-hot); and all-equal scores (3: a zero query, whose output is the mean of
# the values it sees). Pattern 1 comes from HARD_KEY_OFFSET added to the first HARD_FEATURES features of
# every other key and subtracted from the others': such a row's scores sit about HARD_SCORE on half its
# keys and as far below on the rest. (The same offset on every key would shift each row's scores by a
# constant, but make dq a cancelling sum that the GPU's bfloat16 matmuls lose as the sequence grows:
# naive_attention's dq went from 0.007 off at 512 tokens to 0.031 at 16,384 on an H100.) No value is
# larger than HARD_MAX_VALUE (an fp8 cache or fp8 queries hold up to 14). Scores this high are what a
# kernel that rounds scores and weights to the run dtype (the example naive_attention) still computes
# within the bounds above and DEFAULT_TOLERANCE, with random rows in between; higher scores, or a hard row
# in every other, took its bfloat16 dk past the norm-wise 0.02 (benchmarks/error_bounds.py). The output
# gradient is zero on the hard rows: the gradient of a saturated softmax is tiny while a kernel's rounding
# of it is not, and it lands on one key, so at long sequences it outweighs that key's whole gradient (with
# one-hot rows the only hard ones, naive_attention's bfloat16 dk was 0.0055 off at 256 tokens, 0.031 at
# 4,096, as the square root of the length). A kernel's backward still recomputes those rows' scores, so an
# overflow there still shows.
HARD_PATTERNS = (0, 1, 0, 2, 0, 3, 0, 0)
HARD_SCORE = 12.0
HARD_PEAK = 16.0
HARD_FEATURES = 8
HARD_KEY_OFFSET = 4.0
HARD_MAX_VALUE = 12.0
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
    layout: str = DEFAULT_LAYOUT
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
        cls, shape: Shape, dtype: str, device: str, *, layout: str = DEFAULT_LAYOUT, mode: str = "forward"
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
            num_pages=(
                sum(-(-(b - a) // shape.page_size) for a, b in zip(cu_k, cu_k[1:])) if shape.page_size else 0
            ),
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
            (
                "bottom-right causal alignment"
                if self.causal and self.causal_alignment == "bottom_right"
                else ""
            ),
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
        made = [padded(t, role in (2, 3), workload) for role, t in enumerate(tensors)]
    else:
        made = [to_layout(t, "thd" if layout == "paged" else layout) for t in tensors]
    for tensor in made:  # so that check_output names rows, heads and requests without being told
        setattr(tensor, PLACEMENT_ATTRIBUTE, Placement(layout, workload))
    return made


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


def dense_mask_work(pairs: dict[str, Any] | None, layout: str) -> float | None:
    """The pairs an SDPA backend computes over the attended ones: all of them for a dense attn_mask, the
    padded batch's for a decode batch (None for an unmasked shape and for nested tensors)."""
    if not pairs or not pairs["attended"]:
        return None
    if layout == PADDED:
        return pairs["padded"] / pairs["attended"] if pairs.get("padded") else None
    if layout != "bhsd" or not pairs["sdpa_dense_mask"]:
        return None
    return pairs["dense"] / pairs["attended"]


def tolerance_for(dtype: str, shape: Shape, given: float | None = None) -> float:
    """||out - ref|| / ||ref|| a candidate must meet: the run dtype's (`given` in the config's
    `tolerance:`, else DEFAULT_TOLERANCE), plus with fp8 queries that format's rounding of an fp8 output
    (FP8_ROUNDOFF), which a tolerance set for the dtype does not cover."""
    run = given or DEFAULT_TOLERANCE[dtype]
    return run + FP8_ROUNDOFF[shape.q_dtype] if shape.q_dtype else run


def relative_error(got: Any, want: Any) -> float:
    """||got - want|| / ||want|| in float64; NaN or Inf anywhere in got gives inf."""
    import torch

    got64 = got.detach().to(want.device, torch.float64)
    if not torch.isfinite(got64).all():
        return math.inf
    denom = torch.linalg.vector_norm(want).item()
    return torch.linalg.vector_norm(got64 - want).item() / (denom or 1.0)


def hard_inputs(shape: Shape, dtype: Any, device: str, seed: int, requires_grad: bool) -> tuple[Any, ...]:
    """make_inputs' q, k, v and output gradient (the same draws, shapes, dtypes and fp8 rounding) made
    hard for a kernel: query rows take turns, by row and head, at four patterns (HARD_PATTERNS), so
    that one reference covers them all: dense random scores; scores about HARD_SCORE on half the keys,
    where exp overflows float16 unless the row's maximum is subtracted; a nearly one-hot row, the key on
    the query's diagonal (which its mask lets it see) HARD_PEAK above the others; and all-equal scores (a
    zero query: the mean of the values it sees). The output gradient is zero on all but the random rows.
    A query that sees no key (where the shape's mask allows one: bottom-right with more queries than
    keys) outputs zeros whatever its values."""
    import torch

    gen = torch.Generator(device=device).manual_seed(seed)
    sizes = _input_sizes(shape)
    drawn = [torch.randn(*size, generator=gen, device=device, dtype=torch.float32) for size in sizes]
    _harden(shape, *drawn)
    made = []
    for role, values in enumerate(drawn):
        tensor = values.to(dtype)
        if fp8 := fp8_format(shape, role):
            tensor = fp8_representable(tensor, fp8)
        made.append(tensor.requires_grad_(requires_grad) if role < 3 else tensor)
    return tuple(made)


def refill_hard_inputs(inputs: tuple[Any, ...], seed: int, shape: Shape) -> None:
    """hard_inputs' values written into the same bhsd tensors (same addresses, same strides), as
    refill_inputs writes random ones; refill_layout then copies them into a candidate's own layout."""
    import torch

    gen = torch.Generator(device=inputs[0].device).manual_seed(seed)
    drawn = [
        torch.randn(tensor.shape, generator=gen, device=tensor.device, dtype=torch.float32)
        for tensor in inputs
    ]
    _harden(shape, *drawn)
    with torch.no_grad():
        for role, (tensor, values) in enumerate(zip(inputs, drawn)):
            tensor.copy_(values)
            if fp8 := fp8_format(shape, role):
                tensor.copy_(fp8_representable(tensor, fp8))


def _input_sizes(shape: Shape) -> list[tuple[int, ...]]:
    """q, k, v and the output gradient's sizes, bhsd."""
    return [
        (shape.batch, shape.heads, shape.seq, shape.dim),
        (shape.batch, shape.kv_heads, shape.seq_kv, shape.dim),
        (shape.batch, shape.kv_heads, shape.seq_kv, shape.dim_v),
        (shape.batch, shape.heads, shape.seq, shape.dim_v),
    ]


def hard_pattern(shape: Shape, device: Any) -> Any:
    """Which pattern each query row of each head holds in hard_inputs, (heads, seq): 0 random scores,
    1 scores near overflow, 2 nearly one-hot, 3 all equal (HARD_PATTERNS, in turn by row and head)."""
    import torch

    rows = torch.arange(shape.seq, device=device)
    heads = torch.arange(shape.heads, device=device)
    patterns = torch.tensor(HARD_PATTERNS, device=device)
    return patterns[(rows[None, :] + heads[:, None]) % len(HARD_PATTERNS)]


def _harden(shape: Shape, q: Any, k: Any, v: Any, dout: Any) -> None:
    """Standard-normal float32 q, k, v and output gradient (bhsd) made hard in place (hard_inputs says
    how)."""
    import torch

    dim = q.shape[-1]
    group = shape.heads // shape.kv_heads
    features = max(1, min(HARD_FEATURES, dim // 4))
    pattern = hard_pattern(shape, q.device)[None, :, :, None]  # broadcast over batch and features
    # nearly one-hot: q along the key on its diagonal (but for the features pattern 1 uses), scaled to
    # score HARD_PEAK with it
    diagonal = diagonal_keys(shape, q.device)
    chosen = k.index_select(2, diagonal).repeat_interleave(group, dim=1)  # (batch, heads, seq, dim)
    chosen[..., :features] = 0.0
    length = chosen.square().sum(dim=-1, keepdim=True).clamp_min(1e-6)
    gain = (HARD_PEAK / (shape.scale * length)).clamp_max(
        HARD_MAX_VALUE / chosen.abs().amax(-1, keepdim=True)
    )
    q.copy_(torch.where(pattern == 2, gain * chosen, q))
    del chosen
    # near overflow: every other key has an offset in its first features, the others its opposite (keys of
    # a mean far from zero would make dq a cancelling sum, which GPU bfloat16 matmuls lose as the
    # sequence grows), and these queries a constant there: half their keys score about HARD_SCORE
    sign = 1.0 - 2.0 * (torch.arange(k.shape[2], device=k.device) % 2)
    k[..., :features] += HARD_KEY_OFFSET * sign.view(1, 1, -1, 1)
    shift = min(HARD_SCORE / (features * HARD_KEY_OFFSET * shape.scale), HARD_MAX_VALUE)
    q[..., :features] = torch.where(pattern == 1, shift, q[..., :features])
    # all-equal scores
    q.masked_fill_(pattern == 3, 0.0)
    # no gradient flows back from the hard rows (HARD_PATTERNS says why); their scores are still recomputed
    dout.masked_fill_(pattern != 0, 0.0)


def diagonal_keys(shape: Shape, device: Any) -> Any:
    """For each query, the global index of the key on its diagonal (attnbench.masks: the key a causal,
    windowed or prefix mask always lets it see), clamped into its own document's keys."""
    import torch

    _, cu_k = masks.documents(shape)
    at = masks.Positions(shape, device)
    rows = torch.arange(shape.seq, device=device)
    starts = torch.tensor(cu_k[:-1], device=device)[at.q_doc]
    lengths = torch.tensor([b - a for a, b in zip(cu_k, cu_k[1:])], device=device)[at.q_doc]
    local = torch.minimum(at.diagonal(rows), lengths - 1).clamp_min(0)
    return (starts + local).clamp(0, max(shape.seq_kv - 1, 0))


# Where the tensors that in_layout hands out came from: check_output names rows, heads and requests by it.
PLACEMENT_ATTRIBUTE = "_attnbench_placement"
OUTPUT_NAMES = ("out", "dq", "dk", "dv")
# How many ranges of rows a reason names before "and more".
RANGES_NAMED = 3


@dataclass(frozen=True)
class Placement:
    """The layout a tensor of answers is in and the workload it answers (None: bhsd, dense, or thd of
    one row of tokens for a 3-d tensor)."""

    layout: str | None = None
    workload: Workload | None = None


@dataclass(frozen=True)
class Bounds:
    """What every output must meet against float64: the norm-wise relative error (`norm`, the caller's
    tolerance), each row's relative error (`row`; a row's norm counts as at least ROW_FLOOR x the
    tensor's RMS row norm), and each element's |got - want| <= atol x its row's RMS element (floored
    likewise) + rtol x |want|."""

    norm: float
    row: float
    atol: float
    rtol: float


def bounds_for(dtype: Any, shape: Shape | None = None, tolerance: float | None = None) -> Bounds:
    """The run dtype's bounds (ROW_TOLERANCE, ELEMENT_ATOL, ELEMENT_RTOL; float32's for a dtype without
    its own), fp8 queries' rounding on top of the relative ones (FP8_ROUNDOFF); a `tolerance` (a config's
    own, norm-wise) wider than the dtype's widens the others in proportion."""
    name = str(dtype).removeprefix("torch.")
    name = name if name in DEFAULT_TOLERANCE else "float32"
    fp8 = FP8_ROUNDOFF[shape.q_dtype] if shape is not None and shape.q_dtype else 0.0
    norm = DEFAULT_TOLERANCE[name] + fp8
    widen = max(1.0, tolerance / norm) if tolerance else 1.0
    return Bounds(
        norm=tolerance or norm,
        row=(ROW_TOLERANCE[name] + fp8) * widen,
        atol=ELEMENT_ATOL[name] * widen,
        rtol=(ELEMENT_RTOL[name] + fp8) * widen,
    )


@dataclass(frozen=True)
class TensorCheck:
    """One output (out, dq, dk or dv) against its float64 reference. Rows and elements are named in the
    reference's terms (batch, head, row, col; a packed batch's request or document and its local rows;
    dk and dv by key rows of kv heads), whatever the candidate's layout."""

    name: str
    norm_error: float  # ||got - want|| / ||want||; inf: NaN or Inf in got
    worst_row_error: float  # the largest row's relative error (ROW_FLOOR for rows of about zero)
    worst_row: str | None  # where it is: "row 17 of head 1 (batch 0)"
    rows_over: int  # rows beyond the row bound
    rows_where: str | None  # those rows, in contiguous ranges
    element_ratio: float  # the largest |got - want| / its bound (Bounds): 1 is the bound
    elements_over: int  # elements beyond the element bound
    elements_outside_rows: int  # of them, those outside the rows already named
    first_element: str | None  # the first of those, with its error
    max_abs_error: float  # the largest |got - want|
    cosine: float  # got against want as vectors: 1 is the same direction
    outside_fraction: float  # elements_over over all the output's elements

    def accuracy(self) -> dict[str, Any]:
        """What a result file keeps of this check (bench.schema.yaml's candidate.accuracy)."""
        return {
            "rel_error": self.norm_error,
            "max_abs_error": self.max_abs_error,
            "worst_row_error": self.worst_row_error,
            "worst_row": self.worst_row,
            "cosine": self.cosine,
            "outside_fraction": self.outside_fraction,
        }


@dataclass(frozen=True)
class OutputCheck:
    """A candidate's outputs against the float64 reference: the norm-wise error of the worst output (what
    the caller compares with its tolerance), the worst row and element of any, `where` they are off
    when any row or element is beyond its bound (said whatever the norm-wise error), and `reason`, what
    check_output returns: a shape or dtype mismatch, or `where` while the norm-wise error is within
    bounds.norm (beyond it the caller's own "relative error exceeds" speaks, and the audit's diagnosis
    of a kept answer; NaN or Inf anywhere: norm_error inf, no reason, as relative_error says)."""

    norm_error: float
    worst_row_error: float
    worst_row: str | None
    element_ratio: float
    element_violations: int
    where: str | None
    reason: str | None
    bounds: Bounds | None
    tensors: tuple[TensorCheck, ...] = ()


def inspect_output(
    result: Any,
    expected: list[Any],
    backward: bool,
    dtype: Any,
    *,
    layout: str | None = None,
    workload: Workload | None = None,
    tolerance: float | None = None,
) -> OutputCheck:
    """Every output of a candidate (the output, and with `backward` dq, dk and dv) against `expected`,
    the float64 reference in the candidate's layout: norm-wise, row by row and element by element
    (OutputCheck; the bounds: bounds_for). `layout` and `workload` name rows in the reference's terms;
    by default they are those in_layout recorded on `expected`. Runs on the reference's device, one
    output at a time, vectorised."""
    got = list(result) if backward else [result]
    for name, value, want in zip(OUTPUT_NAMES, got, expected):
        why = None
        if not hasattr(value, "shape") or tuple(value.shape) != tuple(want.shape):
            why = f"{name} has shape {tuple(getattr(value, 'shape', ()))}, expected {tuple(want.shape)}"
        elif value.dtype != dtype:
            why = f"{name} has dtype {value.dtype}, expected {dtype}"
        if why:
            return OutputCheck(math.nan, math.nan, None, math.nan, 0, None, why, None)
    told = getattr(expected[0], PLACEMENT_ATTRIBUTE, None) if expected else None
    placement = Placement(
        layout if layout is not None else getattr(told, "layout", None),
        workload if workload is not None else getattr(told, "workload", None),
    )
    bounds = bounds_for(dtype, placement.workload, tolerance)
    checks = []
    for role, (name, value, want) in enumerate(zip(OUTPUT_NAMES, got, expected)):
        checked = _inspect_tensor(name, value, want, role >= 2, placement, bounds)
        if checked is None:  # NaN or Inf: the caller says so, as before
            return OutputCheck(math.inf, math.inf, None, math.inf, 0, None, None, bounds)
        checks.append(checked)
    if not checks:
        return OutputCheck(0.0, 0.0, None, 0.0, 0, None, None, bounds)
    worst_row = max(checks, key=lambda c: c.worst_row_error)
    texts = [text for c in checks for text in _violations(c, bounds)]
    where = "; ".join(texts) if texts else None
    norm_error = max(c.norm_error for c in checks)
    return OutputCheck(
        norm_error=norm_error,
        worst_row_error=worst_row.worst_row_error,
        worst_row=f"{worst_row.name}: {worst_row.worst_row}" if worst_row.worst_row else None,
        element_ratio=max(c.element_ratio for c in checks),
        element_violations=sum(c.elements_over for c in checks),
        where=where,
        reason=where if norm_error <= bounds.norm else None,
        bounds=bounds,
        tensors=tuple(checks),
    )


def check_output(
    result: Any,
    expected: list[Any],
    backward: bool,
    dtype: Any,
    *,
    layout: str | None = None,
    workload: Workload | None = None,
    tolerance: float | None = None,
) -> tuple[float, str | None]:
    """Relative error of the worst output, and a reason why the output is wrong that the norm-wise
    error would miss (inspect_output: a shape or dtype mismatch, rows or elements beyond their bounds),
    or None."""
    checked = inspect_output(
        result, expected, backward, dtype, layout=layout, workload=workload, tolerance=tolerance
    )
    return checked.norm_error, checked.reason


def _violations(check: TensorCheck, bounds: Bounds) -> list[str]:
    said = []
    if check.rows_over:
        said.append(
            f"{check.name}: {check.rows_where} off the float64 reference (worst row rel. error"
            f" {check.worst_row_error:.2f}, bound {bounds.row:.2g})"
        )
    if check.elements_outside_rows:
        count = check.elements_outside_rows
        said.append(
            f"{check.name}: {count} element{'s' if count > 1 else ''}{' more' if check.rows_over else ''} beyond"
            f" atol {bounds.atol:g} x its row's RMS + rtol {bounds.rtol:g} x |want|, first at {check.first_element}"
        )
    return said


@dataclass(frozen=True)
class _Frame:
    """How the rows of one output are named: its canonical (groups, heads, rows, dim) view, what a group
    is (batch, request or document; None for one unnamed row of tokens), and for a packed one-row layout
    the documents' cumulative row offsets (their rows are named locally, under their document)."""

    group: str | None
    offsets: tuple[int, ...] | None
    kv: bool

    def row_words(self, first: int, last: int) -> str:
        noun = "key row" if self.kv else "row"
        return f"{noun} {first}" if first == last else f"{noun}s {first}-{last}"

    def head_words(self, heads: list[int]) -> str:
        noun = "kv head" if self.kv else "head"
        return f"{noun}{'s' if len(heads) > 1 else ''} {_spans(heads)}"


def _spans(values: list[int]) -> str:
    """1, 2, 3, 7 -> "1-3, 7"."""
    spans: list[list[int]] = []
    for value in values:
        if spans and value == spans[-1][1] + 1:
            spans[-1][1] = value
        else:
            spans.append([value, value])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in spans)


def _canonical(tensor: Any, kv: bool, placement: Placement) -> tuple[Any, _Frame]:
    """`tensor` (in `placement`'s layout) as a (groups, heads, rows, dim) view, and how to name it."""
    layout, workload = placement.layout, placement.workload
    packed = workload is not None and workload.seq_lens is not None
    if packed:
        lengths = set(workload.seq_lens or ())
        decode = workload.seq_lens_kv is not None and len(lengths) == 1
        kind = "request" if decode else "document"
        offsets = tuple(workload.cu_seqlens_k if kv else workload.cu_seqlens_q)
    if layout in (PADDED, POOL) and tensor.dim() == 4:
        return tensor, _Frame("request", None, kv)
    if tensor.dim() == 4:
        view = tensor.transpose(1, 2) if layout == "bshd" else tensor
        return view, _Frame(kind, offsets, kv) if packed else _Frame("batch", None, kv)
    if tensor.dim() == 3:  # thd (and a paged layout's queries): tokens, heads, dim
        if workload is not None and not packed:
            return tensor.unflatten(0, (workload.batch, -1)).transpose(1, 2), _Frame("batch", None, kv)
        view = tensor.transpose(0, 1).unsqueeze(0)
        return view, _Frame(kind, offsets, kv) if packed else _Frame(None, None, kv)
    flat = tensor.reshape(1, 1, -1, tensor.shape[-1] if tensor.dim() else 1)
    return flat, _Frame(None, None, kv)


def _inspect_tensor(
    name: str, got: Any, want: Any, kv: bool, placement: Placement, bounds: Bounds
) -> TensorCheck | None:
    """One output against its reference (TensorCheck); None when it holds NaN or Inf."""
    import torch

    diff = got.detach().to(want.device, torch.float64)  # a copy, made the difference in place
    if not torch.isfinite(diff).all():
        return None
    diff.sub_(want)
    want_norm = torch.linalg.vector_norm(want).item()
    norm_error = torch.linalg.vector_norm(diff).item() / (want_norm or 1.0)
    max_abs = diff.abs().max().item() if diff.numel() else 0.0
    cosine = _cosine(diff, want, want_norm)
    errors, frame = _canonical(diff, kv, placement)
    wanted, _ = _canonical(want, kv, placement)
    if not wanted.numel():
        return TensorCheck(name, norm_error, 0.0, None, 0, None, 0.0, 0, 0, None, max_abs, cosine, 0.0)
    rows, width = wanted.numel() // wanted.shape[-1], wanted.shape[-1]
    floor = ROW_FLOOR * want_norm / math.sqrt(rows) or 1.0
    scale = torch.linalg.vector_norm(wanted, dim=-1).clamp_min_(floor)  # each row's norm, floored
    row_error = torch.linalg.vector_norm(errors, dim=-1).div_(scale)
    worst_index = int(row_error.argmax().item())
    worst = row_error.flatten()[worst_index].item()
    bad_rows = row_error > bounds.row
    del row_error
    rows_over = int(bad_rows.sum().item())
    scale.mul_(bounds.atol / math.sqrt(width))  # atol in units of the row's RMS element
    limit = wanted.abs().mul_(bounds.rtol).add_(scale.unsqueeze(-1))
    ratio = errors.abs_().div_(limit)  # diff is |got - want| / its bound from here on
    over = ratio > 1.0
    element_ratio = ratio.max().item()
    elements_over = int(over.sum().item())
    outside = over & ~bad_rows.unsqueeze(-1) if rows_over else over
    elements_outside = int(outside.sum().item()) if rows_over else elements_over
    first = None
    if elements_outside:
        index = int(outside.flatten().to(torch.uint8).argmax().item())
        at = tuple(int(i) for i in torch.unravel_index(torch.tensor(index), outside.shape))
        first = (
            f"{_position(frame, *at[:3])} col {at[3]} (off by {ratio[at].item() * limit[at].item():.3g},"
            f" want {wanted[at].item():.3g})"
        )
    del ratio, limit, over, outside, diff, errors, scale
    worst_position = [int(i) for i in torch.unravel_index(torch.tensor(worst_index), bad_rows.shape)]
    return TensorCheck(
        name=name,
        norm_error=norm_error,
        worst_row_error=worst,
        worst_row=_position(frame, *worst_position, words=True),
        rows_over=rows_over,
        rows_where=_row_ranges(bad_rows, frame) if rows_over else None,
        element_ratio=element_ratio,
        elements_over=elements_over,
        elements_outside_rows=elements_outside,
        first_element=first,
        max_abs_error=max_abs,
        cosine=cosine,
        outside_fraction=elements_over / wanted.numel(),
    )


def _cosine(diff: Any, want: Any, want_norm: float) -> float:
    """The cosine similarity of got = want + diff with want, in float64 (got is not kept; its norm is
    taken from want + diff itself, not from the norms, which cancel when got is small); 1 where both
    are zero, 0 where one is."""
    import torch

    if not diff.numel():
        return 1.0
    got_norm = torch.linalg.vector_norm(diff + want).item()
    if not got_norm or not want_norm:
        return 1.0 if got_norm == want_norm else 0.0
    cross = torch.dot(diff.flatten(), want.flatten()).item()
    return max(-1.0, min(1.0, (cross + want_norm**2) / (want_norm * got_norm)))


def _local(frame: _Frame, group: int, row: int) -> tuple[int, int]:
    """(group, row within it): a packed one-row layout's row under its document or request."""
    if frame.offsets is None:
        return group, row
    document = max(0, bisect_right(frame.offsets, row) - 1)
    return document, row - frame.offsets[document]


def _position(frame: _Frame, group: int, head: int, row: int, words: bool = False) -> str:
    """One row: "row 17 of head 1 (batch 0)" (`words`), or "batch 0 head 1 row 17"."""
    group, row = _local(frame, group, row)
    if words:
        named = f" ({frame.group} {group})" if frame.group else ""
        return f"{frame.row_words(row, row)} of {frame.head_words([head])}{named}"
    named = f"{frame.group} {group} " if frame.group else ""
    return f"{named}{'kv head' if frame.kv else 'head'} {head} {'key row' if frame.kv else 'row'} {row}"


def _row_ranges(bad: Any, frame: _Frame) -> str:
    """The rows flagged in `bad` (groups, heads, rows), as contiguous ranges within one head and one
    document, those of the same rows in neighbouring heads and groups said together: "rows 1984-2047 of
    heads 0-15 (batch 0)". Found with tensor operations; only the ranges named reach Python."""
    import torch

    _, heads, rows = bad.shape
    flagged = bad.flatten().nonzero().flatten()
    count = flagged.numel()
    row = flagged % rows
    starts = torch.ones(count, dtype=torch.bool, device=flagged.device)
    breaks = (flagged[1:] != flagged[:-1] + 1) | (row[1:] == 0)
    if frame.offsets is not None:
        bounds_at = torch.tensor(frame.offsets[1:-1], device=flagged.device, dtype=flagged.dtype)
        document = torch.bucketize(row, bounds_at, right=True)
        breaks |= document[1:] != document[:-1]
    starts[1:] = breaks
    begin = starts.nonzero().flatten()
    ranges = begin.numel()
    shown = begin[: 16 * RANGES_NAMED]
    end = torch.cat([begin[1:] - 1, begin.new_tensor([count - 1])])[: shown.numel()]
    first, last = flagged[shown].tolist(), flagged[end].tolist()
    # merged: (rows, group) -> heads; then (rows, heads) -> groups, in the order first seen
    by_rows: dict[tuple[int, int, int], list[int]] = {}
    for a, b in zip(first, last):
        group, head = a // (heads * rows), (a // rows) % heads
        local_group, lo = _local(frame, group, a % rows)
        _, hi = _local(frame, group, b % rows)
        by_rows.setdefault((lo, hi, local_group), []).append(head)
    by_heads: dict[tuple[int, int, tuple[int, ...]], list[int]] = {}
    for (lo, hi, group), listed in by_rows.items():
        by_heads.setdefault((lo, hi, tuple(listed)), []).append(group)
    said = []
    for (lo, hi, listed), groups in list(by_heads.items())[:RANGES_NAMED]:
        plural = "es" if frame.group == "batch" else "s"
        named = f" ({frame.group}{plural if len(groups) > 1 else ''} {_spans(groups)})" if frame.group else ""
        said.append(f"{frame.row_words(lo, hi)} of {frame.head_words(list(listed))}{named}")
    more = len(by_heads) > RANGES_NAMED or ranges > shown.numel()
    noun = "key rows" if frame.kv else "rows"
    return "; ".join(said) + (f" and more ({count} {noun} in all)" if more else "")
