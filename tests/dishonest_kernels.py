"""Kernels that return the right answer without doing the work while it is timed: attnbench.audit
must catch every one of them (tests/test_audit.py, benchmarks/validate_gpu.py's canaries)."""

import weakref

import torch
import torch.nn.functional as F


def honest(q, k, v, *, causal, scale):
    return F.scaled_dot_product_attention(q, k, v, is_causal=causal, scale=scale, enable_gqa=True)


def kept(store, q, k, v, causal, scale):
    """The answer kept for this query tensor, computed on first sight; it is dropped when the tensor
    dies, so a later shape whose tensors reuse the addresses never sees a stale one."""
    if id(q) not in store:
        store[id(q)] = honest(q, k, v, causal=causal, scale=scale)
        weakref.finalize(q, store.pop, id(q), None)
    return store[id(q)]


KEPT = {}


def keeps_answer(q, k, v, *, causal, scale):
    """Computes once per set of input tensors, then hands back a copy of the kept answer."""
    return kept(KEPT, q, k, v, causal, scale).clone()


BUFFERS = {}


def writes_once(q, k, v, *, causal, scale):
    """Fills an output buffer on its first call and returns the same buffer, unwritten, afterwards."""
    return kept(BUFFERS, q, k, v, causal, scale)


SIDE = {}


def unjoined_stream(q, k, v, *, causal, scale):
    """Runs on a stream of its own that waits for the inputs, but the caller's stream never waits
    for it: CUDA events on the caller's stream time nothing but the launch."""
    side = SIDE.setdefault(q.device, torch.cuda.Stream(q.device))
    out = torch.empty_like(q)
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        out.copy_(honest(q, k, v, causal=causal, scale=scale))
    return out


LAST = {}


def skips_graph_capture(q, k, v, *, causal, scale):
    """Launches nothing while a CUDA graph is captured, so every replay is empty and the graph's
    output keeps the answer of the last eager call."""
    if torch.cuda.is_current_stream_capturing() and "out" in LAST:
        return LAST["out"]
    LAST["out"] = honest(q, k, v, causal=causal, scale=scale)
    return LAST["out"]


COUNTS = {}
HONEST_CALLS = 8


def keeps_answer_once_timed(q, k, v, *, causal, scale):
    """Honest for its first calls (the checks make five), then hands back a copy of the answer of its
    last honest call: only the timed rounds and the audit after them meet the kept answer (llm.c PR
    #851: a kernel right for N calls, then wrong)."""
    calls = COUNTS.get(id(q), 0) + 1
    COUNTS[id(q)] = calls
    if calls <= HONEST_CALLS:
        KEPT[id(q)] = honest(q, k, v, causal=causal, scale=scale)
        weakref.finalize(q, KEPT.pop, id(q), None)
        weakref.finalize(q, COUNTS.pop, id(q), None)
    return KEPT[id(q)].clone()


def scales_its_keys(q, k, v, *, causal, scale):
    """Right answer, then k halved in place (KernelBench's zero_out_kernel, milder): every later call,
    another candidate's included if they shared tensors, would run on other data than was checked."""
    out = honest(q, k, v, causal=causal, scale=scale)
    with torch.no_grad():
        k.mul_(0.5)
    return out


def changes_its_query_once_timed(q, k, v, *, causal, scale):
    """Leaves its inputs alone through the checks, then negates q in place at every later call."""
    calls = COUNTS.get(("q", id(q)), 0) + 1
    COUNTS[("q", id(q))] = calls
    out = honest(q, k, v, causal=causal, scale=scale)
    if calls > HONEST_CALLS:
        with torch.no_grad():
            q.neg_()
    return out
