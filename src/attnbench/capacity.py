"""What a shape needs in memory at least, from its sizes and dtype, against what the device has:
checked when the config is parsed (attnbench.config.resolve), so that a shape that cannot fit is
refused before any job, with the numbers. Found by trying it (issue 31): `batch: 10**12` was
accepted, ran calibrate and the fingerprint, failed with a 66-line error and said "run the same
command again", which failed the same way.

A lower bound, not a forecast: what a benchmark job (attnbench.bench) must hold at once to check even
one candidate on one input set. The first input set (q, k, v and the output gradient in the run's
dtype) stays while the float64 reference is computed from float64 copies of them (on the device that
runs the job), one chunk of its scores at a time (workloads.reference); the answers stay sealed
(bench.Sealed: a buffer of their size, made while they are still held); then a candidate gets its own
copy of the inputs, returns its output (and gradients), and is checked against an opened copy of the
answers, each of its outputs widened to float64. SDPA's math backend materialises the score matrix
too. Left out: the second and hard input sets (a job makes fewer when memory runs short), the other
candidates' copies, layout conversions, padding, masks, workspaces and the allocator's slack; so a
shape refused here cannot run, and one passed may still run out of memory, which the job reports per
candidate (status `oom`). Sizes come from the config's numbers (a drawn cache_lens counts each
request's cache at its minimum), never by drawing the lengths.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from attnbench import device
from attnbench.workloads import REFERENCE_CHUNK_BYTES

ITEMSIZE = {"float32": 4, "float16": 2, "bfloat16": 2}
FLOAT64 = 8
FP8 = 1
# A bound on any GPU's memory, for a GPU section checked where there is no GPU to ask: the largest
# boards made hold 288 GB (NVIDIA B300); a shape needing more cannot run on any.
LARGEST_GPU_BYTES = 288 * 2**30
# cgroup v2's limit on this process's memory (a container's), when lower than the host's.
CGROUP_LIMIT = Path("/sys/fs/cgroup/memory.max")


@dataclass(frozen=True)
class Need:
    """A shape's lower bound on memory, in bytes, and its parts."""

    inputs: int  # one input set: q, k, v and the output gradient in the run's dtype
    reference: int  # the float64 reference's peak above the inputs (copies, output, a chunk of scores)
    candidate: int  # the reference candidate's own inputs, output, check and (math) score matrix
    total: int

    def words(self, reference: str) -> str:
        return (
            f"inputs {gib(self.inputs)}, float64 reference {gib(self.reference)}, {reference}'s own"
            f" inputs, output and check {gib(self.candidate)}"
        )


def _sizes(shape: dict[str, Any]) -> tuple[int, int, int, int, int, int, int, int]:
    """(batch, heads, kv_heads, seq, seq_kv, dim, dim_v) as a job's Shape has them (a packed batch or
    a decode batch is one row of all its tokens), from the config's numbers, and the elements of the
    score matrix SDPA's math backend makes (a decode batch reaches SDPA padded to its longest cache)."""
    heads = int(shape["heads"])
    kv_heads = int(shape.get("kv_heads") or heads)
    dim = int(shape["dim"])
    dim_v = int(shape.get("dim_v") or dim)
    caches, lengths = shape.get("cache_lens"), shape.get("seq_lens")
    if caches is not None:
        requests, queries = int(shape["batch"]), int(shape.get("seq") or 1)
        if isinstance(caches, list):
            keys, longest = sum(int(n) for n in caches), max(int(n) for n in caches)
        else:
            keys, longest = requests * int(caches["min"]), int(caches["min"])
        scores = requests * heads * queries * longest
        return 1, heads, kv_heads, requests * queries, keys, dim, dim_v, scores
    if lengths is not None:
        tokens = sum(int(n) for n in lengths) if isinstance(lengths, list) else int(lengths["total"])
        kv = shape.get("seq_lens_kv")
        keys = sum(int(n) for n in kv) if kv else tokens
        return 1, heads, kv_heads, tokens, keys, dim, dim_v, heads * tokens * keys
    batch, seq = int(shape["batch"]), int(shape["seq"])
    seq_kv = int(shape.get("seq_kv") or seq)
    return batch, heads, kv_heads, seq, seq_kv, dim, dim_v, batch * heads * seq * seq_kv


def need(shape: dict[str, Any], dtype: str, direction: str, reference: str) -> Need:
    """The bytes a benchmark job must hold at once for `shape` to check `reference` on one input set."""
    batch, heads, kv_heads, seq, seq_kv, dim, dim_v, math_scores = _sizes(shape)
    item = ITEMSIZE[dtype]
    q, k, v = batch * heads * seq * dim, batch * kv_heads * seq_kv * dim, batch * kv_heads * seq_kv * dim_v
    out = batch * heads * seq * dim_v
    backward = direction == "forward_backward"
    inputs = (q + k + v + out) * item
    answers = (out + (q + k + v if backward else 0)) * FLOAT64
    copies = 4 if backward else 1  # workloads.reference sizes its chunks for this many score copies
    rows = min(seq, max(1, REFERENCE_CHUNK_BYTES // (FLOAT64 * copies * batch * heads * seq_kv)))
    scores = batch * heads * rows * seq_kv * FLOAT64
    computing = (q + k + v + out) * FLOAT64 + scores + ((q + k + v) * FLOAT64 if backward else 0)
    reference_peak = max(computing, 2 * answers)  # the sealed buffer is filled while the answers are held
    q_item = FP8 if shape.get("q_dtype") else item
    kv_item = FP8 if shape.get("kv_dtype") else item
    own = q * q_item + (k + v) * kv_item + out * item
    outputs = out * item + ((q + k + v) * item if backward else 0)
    check = answers + max((out, q, k, v) if backward else (out,)) * FLOAT64
    workspace = math_scores * item if reference == "math" else 0
    candidate = answers + own + outputs + check + workspace
    return Need(inputs, reference_peak, candidate, inputs + max(reference_peak, candidate))


def gpu_bytes() -> int | None:
    """The largest GPU's memory on this host (NVML, without torch), or None when NVML cannot tell."""
    try:
        with device.nvml() as nv:
            totals = [
                int(nv.nvmlDeviceGetMemoryInfo(nv.nvmlDeviceGetHandleByIndex(i)).total)
                for i in range(nv.nvmlDeviceGetCount())
            ]
    except Exception:
        return None
    return max(totals) if totals else None


def host_bytes() -> int:
    """This host's memory, or the cgroup's limit on this process when it is lower."""
    import psutil

    total = int(psutil.virtual_memory().total)
    try:
        limit = CGROUP_LIMIT.read_text().strip()
    except OSError:
        return total
    return min(total, int(limit)) if limit.isdigit() else total


def available(on: str) -> tuple[int, str]:
    """(bytes, what has them) of the device `on` names: "cuda" this host's largest GPU, "cpu" its
    memory, "any GPU" the bound on every GPU made."""
    if on == "cpu":
        return host_bytes(), "this host has"
    found = gpu_bytes() if on == "cuda" else None
    if found is None:
        return LARGEST_GPU_BYTES, "any GPU made has (no GPU here to ask)"
    return found, "the largest GPU here has"


def problem(
    shape: dict[str, Any], dtype: str, direction: str, reference: str, on: str, has: int, what: str
) -> str | None:
    """Why `shape` cannot fit in `has` bytes of `on`'s memory, with the numbers, or None."""
    needed = need(shape, dtype, direction, reference)
    if needed.total <= has:
        return None
    memory = "memory" if on == "cpu" else "GPU memory"
    return (
        f"needs at least {gib(needed.total)} ({_count(needed.total)} bytes) of {memory} to check one candidate"
        f" on one input set ({needed.words(reference)}), more than the {gib(has)} ({_count(has)} bytes) {what}:"
        " make it smaller (batch, seq, heads)"
    )


def gib(count: int) -> str:
    try:
        return f"{count / 2**30:.3g} GiB"
    except OverflowError:
        return "more than 1e300 GiB"


def _count(count: int) -> str:
    """An exact count with separators; a huge one (a config's 10**5000) as its order of magnitude."""
    if count < 10**18:
        return f"{count:,}"
    try:
        return f"{float(count):.3g}"
    except OverflowError:
        return "more than 1e308"
