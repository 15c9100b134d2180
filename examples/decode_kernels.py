"""Decode kernels against a KV cache, in the factory form of the kernel contract (docs/kernels.md;
what a decode workload holds: docs/workloads.md, "Decode").

Two candidates, named in a config as `examples.decode_kernels:paged_decode` and
`examples.decode_kernels:fp8_decode` (examples/decode.yaml runs them on an H200):

- `paged_decode` declares `layout="paged"`: q in thd, k and v as pools of pages (num_pages,
  page_size, kv_heads, dim) that `workload.page_table` maps; a bf16 or an fp8 cache.
- `fp8_decode` declares `layout="thd"`: a contiguous fp8 cache (k and v in float8, one request's
  keys after another, `workload.cu_seqlens_k`), dequantised with `workload.kv_descale` in the call.

Both are the same plain PyTorch computation, meant to run unchanged on CUDA and on the CPU (every
tensor is made on the inputs' device, nothing loops over tokens or requests in the call): one gather
of every request's keys and values into a padded batch (through the page table, or the cache
offsets), then a masked batched matmul, a float32 softmax and a second batched matmul. The padding
is what such a kernel pays for being plain PyTorch: with skewed cache lengths it reads and writes up
to (longest / mean) times the cache, which the report's "% of bound" (of the measured read
bandwidth, for decode) shows against a kernel that reads each key once.
"""

import torch

from attnbench import Unsupported, kernel

# The padded key length is rounded up to this many keys, so that every padded row starts aligned
# (16 keys: one page of the usual page size, 32 bytes of a bf16 row of scores).
PAD_TO = 16
# What a decode workload may ask beyond dense attention (Workload.features()); anything else
# (windows, soft-capping, ALiBi, a prefix) these kernels do not implement and decline.
DECODE_FEATURES = ("bottom-right", "packed", "a paged", "an fp8", "fp8 queries", "a value head dim")


def _requests(workload):
    """(new queries per request, each request's cache length) of a decode workload; Unsupported,
    with the reason, for any workload these kernels do not compute."""
    beyond = [words for words in workload.features() if not words.startswith(DECODE_FEATURES)]
    if beyond:
        raise Unsupported(f"plain decode only, not {', '.join(beyond)}")
    if not (workload.causal and workload.causal_alignment == "bottom_right"):
        raise Unsupported("decode only: causal, bottom-right aligned (a shape with cache_lens)")
    if workload.mode != "forward":
        raise Unsupported("decode is forward only")
    cu_q, cu_k = workload.cu_seqlens_q, workload.cu_seqlens_k
    queries = {b - a for a, b in zip(cu_q, cu_q[1:])}
    lengths = [b - a for a, b in zip(cu_k, cu_k[1:])]
    if len(queries) != 1:
        raise Unsupported("every request must bring the same number of new queries")
    (new,) = queries
    if min(lengths) < new:
        raise Unsupported(f"a cache of {min(lengths)} keys is shorter than its {new} new queries")
    return new, lengths


def _padded_plan(workload, device, slots_of):
    """What the call needs, built once before timing: for each request, the slot of each of its keys
    in the cache (`slots_of(t)`, t a (requests, padded length) tensor of key positions), padded to
    the longest request with the slot of its own first key (finite: a pool's unused slots hold NaN,
    and NaN times a zero weight is still NaN); and the additive mask, 0 where a query sees a key and
    -inf elsewhere (past the request's length, and bottom-right causal among the new queries), in
    float32, rows ordered as the grouped queries are (query head in its group, then new query)."""
    new, lengths = _requests(workload)
    group = workload.heads // workload.kv_heads
    padded = -(-max(lengths) // PAD_TO) * PAD_TO
    position = torch.arange(padded, device=device)
    length = torch.tensor(lengths, device=device)[:, None]
    slots = slots_of(position[None, :].expand(len(lengths), padded))
    slots = torch.where(position[None, :] < length, slots, slots[:, :1])
    query = torch.arange(new, device=device)[:, None]
    seen = position[None, None, :] <= length[:, :, None] - new + query[None]  # (requests, new, padded)
    bias = torch.zeros(seen.shape, device=device).masked_fill(~seen, float("-inf"))
    bias = bias[:, None].expand(-1, group, -1, -1).reshape(1, len(lengths), group * new, padded)
    return new, group, slots.reshape(-1), bias.contiguous()


def _attend(workload, new, group, slots, bias):
    """The timed call, from q (requests * new, heads, dim) and the cache as the layout gives it (a
    pool of pages, or thd: either is (slots, kv_heads, dim) once its leading dims are flattened) to
    the output (requests * new, heads, dim_v) in the run's dtype.

    Batched over (kv head, request): each kv head's keys are gathered once for all the query heads
    of its group (GQA and MQA read the cache once). The gather moves each row of the cache as wide
    integer words (fewer, larger loads than element by element; indexing need not support float8).
    With an fp8 cache it moves the fp8 bytes, which are then widened to q's dtype, and the descale
    is applied where it costs nothing, as fp8 attention kernels do: on the scores (keys) and on the
    output (values). It is part of the timed work either way."""
    requests, rows = bias.shape[1], bias.shape[2]
    descale = workload.kv_descale

    def gather(cache):
        flat = cache.flatten(0, -3)  # (slots, kv_heads, dim): a pool's pages one after another
        row = flat.shape[-1] * flat.element_size()
        word = next(w for w in (torch.int64, torch.int32, torch.int16, torch.uint8) if row % w.itemsize == 0)
        picked = torch.index_select(flat.view(word).transpose(0, 1), 1, slots)  # new, contiguous
        return picked.view(workload.kv_heads, requests, -1, picked.shape[-1]).view(cache.dtype)

    compute = workload.torch_dtype  # the run's dtype: fp8 queries and caches are widened to it

    def run(q, k, v):
        keys, values = gather(k), gather(v)
        if q.dtype != compute:  # fp8 queries: dequantised whole (there are few of them)
            q = q.to(compute) * workload.q_descale
        if keys.dtype != compute:  # an fp8 cache: the raw values, scaled below by `descale`
            keys, values = keys.to(compute), values.to(compute)
        grouped = q.view(requests, new, workload.kv_heads, group, q.shape[-1])
        grouped = grouped.permute(2, 0, 3, 1, 4).reshape(workload.kv_heads, requests, rows, q.shape[-1])
        scores = torch.matmul(grouped * workload.scale, keys.transpose(-1, -2))
        weights = torch.softmax(torch.add(bias, scores, alpha=descale), dim=-1).to(q.dtype)
        out = torch.matmul(weights, values)  # (kv_heads, requests, group * new, dim_v)
        if descale != 1.0:
            out.mul_(descale)
        out = out.view(workload.kv_heads, requests, group, new, out.shape[-1]).permute(1, 3, 0, 2, 4)
        return out.reshape(requests * new, workload.heads, out.shape[-1])

    return run


@kernel(factory=True, layout="paged")
def paged_decode(workload, q, k_pages, v_pages):
    """Decode from a paged cache, bf16 or fp8 (vLLM's and FlashInfer's layout): each request's keys
    found through the page table, the gather index built here, before timing."""
    if not workload.page_size:
        raise Unsupported("a paged cache only (a shape with page_size)")
    if workload.kv_dtype and k_pages.dtype != getattr(torch, workload.kv_dtype):
        raise Unsupported(f"expected a {workload.kv_dtype} cache, got {k_pages.dtype}")
    size, device = workload.page_size, q.device
    _, lengths = _requests(workload)
    width = -(-max(lengths) // PAD_TO) * PAD_TO // size + 1  # pages of the longest padded request
    # each request's pages, padded with its first page (the slots there are masked off)
    table = torch.tensor(
        [[*pages, *[pages[0]] * (width - len(pages))] for pages in workload.page_table], device=device
    )

    def slots_of(position):
        return table.gather(1, position // size) * size + position % size

    return _attend(workload, *_padded_plan(workload, device, slots_of))


@kernel(factory=True, layout="thd")
def fp8_decode(workload, q, k, v):
    """Decode from a contiguous fp8 cache (thd: one request's keys after another), dequantised in
    the call with the workload's descale; a bf16 cache is declined (it is the built-ins' shape)."""
    if not workload.kv_dtype or k.dtype != getattr(torch, workload.kv_dtype):
        raise Unsupported(f"an fp8 cache only, got {k.dtype}")
    start = torch.tensor(workload.cu_seqlens_k[:-1], device=q.device)[:, None]
    plan = _padded_plan(workload, q.device, lambda position: start + position)
    return _attend(workload, *plan)
