"""examples/triton_flash.py: the Triton FlashAttention example kernel, against a float64 reference.

Without a GPU the kernel runs under Triton's interpreter (TRITON_INTERPRET=1, which must be set
before triton is imported, hence a subprocess) on small shapes. The interpreter multiplies bfloat16
blocks as their raw 16-bit patterns (its tl.dot hands numpy the uint16 storage; Triton 3.9), so
bfloat16 is checked on the GPU only; float16 and float32 are checked on both.
"""

import dataclasses
import json
import os
import subprocess
import sys

import pytest
import torch
from helpers import ROOT

from attnbench import Unsupported, candidates
from attnbench.usercode import CandidateName
from attnbench.workloads import Shape, Workload

BHSD = "examples.triton_flash:attention"
BSHD = "examples.triton_flash:attention_bshd"
TOLERANCE = {"float16": 5e-3, "bfloat16": 2e-2, "float32": 1e-4}


@pytest.fixture
def at_root(monkeypatch):
    """User kernels resolve from the working directory, as in the workflow."""
    monkeypatch.chdir(ROOT)
    monkeypatch.syspath_prepend(str(ROOT))


def make_workload(
    layout, batch, heads, kv_heads, seq, seq_kv, dim, causal, dtype, device, mode="forward", **more
):
    """A Workload as the workflow makes one: from a config's shape entry."""
    entry = dict(
        name="t", batch=batch, heads=heads, kv_heads=kv_heads, seq=seq, seq_kv=seq_kv, dim=dim, causal=causal
    )
    return Workload.of(Shape.from_config({**entry, **more}), dtype, device, layout=layout, mode=mode)


def configured(base, block_m, block_n, warps=4, stages=2):
    config = {"BLOCK_M": block_m, "BLOCK_N": block_n, "num_warps": warps, "num_stages": stages}
    return candidates.configured_name(base, config)


# --- Needs no Triton: what the workflow reads without importing the module ---------------------


def test_the_grid_is_read_without_importing_the_module(at_root):
    bhsd = candidates.static_declaration(BHSD)
    bshd = candidates.static_declaration(BSHD)
    assert bhsd.factory and bshd.factory
    assert (bhsd.layout, bshd.layout) == ("bhsd", "bshd")
    assert len(bhsd.grid) >= 32 and bshd.grid == bhsd.grid
    assert set(bhsd.grid[0]) == {"BLOCK_M", "BLOCK_N", "num_warps", "num_stages"}
    names = candidates.expand([BHSD, BSHD])
    assert len(names) == 2 * len(bhsd.grid) == len(set(names))
    assert len(candidates.expand([BHSD])) == len(bhsd.grid)
    assert configured(BHSD, 128, 64, 8, 3) in names
    assert candidates.user_kernel_problem(BHSD) is None and candidates.user_kernel_problem(BSHD) is None
    for name in names:
        assert CandidateName.parse(name).configuration in bhsd.grid


def test_without_triton_the_module_imports_and_every_candidate_declines():
    """CI machines have no Triton: the module must still import, and prepare decline in words."""
    script = (
        "import sys; sys.modules['triton'] = None; sys.modules['triton.language'] = None\n"
        "import torch\n"
        "from attnbench import Unsupported\n"
        "from attnbench.workloads import Shape, Workload\n"
        "import examples.triton_flash as m\n"
        "shape = Shape.from_config(dict(name='t', batch=1, heads=2, seq=16, dim=16))\n"
        "q = torch.zeros(1, 2, 16, 16, dtype=torch.float16)\n"
        "try:\n    m.attention(Workload.of(shape, 'float16', 'cpu'), q, q, q)\n"
        "except Unsupported as exc:\n    print('declined:', exc)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "declined: triton is not installed"


# --- Triton's interpreter, on the CPU ---------------------------------------------------------

# (layout, batch, heads, kv_heads, seq, seq_kv, dim, causal, alignment, dtype, BLOCK_M, BLOCK_N).
# The grid's smallest blocks are 64 x 32, so seq 16-80 covers blocks larger than the whole sequence,
# several query and key blocks, partial edge blocks, causal rows past the last key (seq > seq_kv
# top-left) and rows that see no key at all (seq > seq_kv bottom-right: zeros).
INTERPRETED = [
    ("bhsd", 1, 2, 2, 80, 80, 16, True, "top_left", "float16", 64, 32),
    ("bhsd", 2, 4, 2, 80, 48, 32, True, "top_left", "float16", 64, 32),
    ("bhsd", 1, 4, 1, 33, 80, 16, True, "top_left", "float16", 128, 64),
    ("bhsd", 2, 2, 2, 48, 64, 32, False, "top_left", "float16", 64, 128),
    ("bshd", 2, 4, 2, 80, 80, 32, True, "top_left", "float16", 64, 32),
    ("bshd", 1, 4, 4, 16, 72, 16, False, "top_left", "float16", 128, 64),
    ("bshd", 1, 4, 2, 72, 40, 16, True, "top_left", "float16", 64, 128),
    ("bhsd", 1, 2, 2, 80, 48, 16, True, "bottom_right", "float16", 64, 32),
    ("bshd", 2, 4, 2, 40, 72, 32, True, "bottom_right", "float16", 64, 32),
    ("bhsd", 1, 2, 1, 64, 80, 32, True, "top_left", "float32", 64, 32),
    ("bshd", 1, 2, 2, 40, 40, 16, False, "top_left", "float32", 128, 64),
]

# Builds each case through attnbench.candidates.build, as the workflow does, and compares with float64
# SDPA (top-left is its is_causal) or, for bottom-right, attnbench's own float64 reference.
_INTERPRET_SCRIPT = """
import json, sys
import torch
import torch.nn.functional as F
from attnbench import Unsupported, candidates
from attnbench.workloads import Shape, Workload, reference

results = []
for layout, b, h, kvh, s, skv, d, causal, alignment, dtype, bm, bn in json.loads(sys.argv[1]):
    entry = dict(name="t", batch=b, heads=h, kv_heads=kvh, seq=s, seq_kv=skv, dim=d, causal=causal,
                 causal_alignment=alignment)
    shape = Shape.from_config(entry)
    w = Workload.of(shape, dtype, "cpu", layout=layout)
    gen = torch.Generator().manual_seed(s * 31 + skv)
    q, k, v = (torch.randn(b, n, m, d, generator=gen) for n, m in ((h, s), (kvh, skv), (kvh, skv)))
    if alignment == "top_left":
        ref = F.scaled_dot_product_attention(
            q.double(), k.double(), v.double(), is_causal=causal, scale=w.scale, enable_gqa=True
        )
    else:
        ref = reference(shape, q, k, v, None)[0]
    inputs = [t.to(getattr(torch, dtype)) for t in (q, k, v)]
    if layout == "bshd":
        inputs = [t.transpose(1, 2).contiguous() for t in inputs]
        ref = ref.transpose(1, 2)
    base = "examples.triton_flash:" + ("attention" if layout == "bhsd" else "attention_bshd")
    name = candidates.configured_name(base, dict(BLOCK_M=bm, BLOCK_N=bn, num_warps=4, num_stages=2))
    run = candidates.build(name, w, inputs)
    out = run(*inputs)
    again = run(*inputs)
    error = ((out.double() - ref).norm() / ref.norm()).item()
    results.append(dict(
        name=name, shape=list(out.shape), want=list(ref.shape), dtype=str(out.dtype).split(".")[-1],
        error=error, fresh=out.data_ptr() != again.data_ptr(), same=bool(torch.equal(out, again)),
    ))
print(json.dumps(results))
"""


def test_interpreted_kernel_matches_float64_reference():
    pytest.importorskip("triton", reason="triton is not installed: the interpreter tests need it")
    proc = subprocess.run(
        [sys.executable, "-c", _INTERPRET_SCRIPT, json.dumps(INTERPRETED)],
        cwd=ROOT,
        env={**os.environ, "TRITON_INTERPRET": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(results) == len(INTERPRETED)
    for case, result in zip(INTERPRETED, results):
        assert result["shape"] == result["want"], (case, result)
        assert result["dtype"] == case[9], (case, result)
        assert result["error"] < TOLERANCE[case[9]], (case, result)
        assert result["fresh"] and result["same"], (case, result)  # a new output per call, same values


# --- Declines that need Triton importable but no GPU ------------------------------------------


@pytest.mark.parametrize(
    "changes, reason",
    [
        (dict(mode="forward_backward"), "forward only"),
        (dict(dim=96), "head dim 96"),
        (dict(dim=512), "head dim 512"),
        (dict(dtype="float64"), "dtype float64"),
        (dict(heads=3, kv_heads=2), "not a multiple"),
        (dict(window=[16, 0]), "window=(16, 0)"),
        (dict(prefix=8), "prefix=8"),
        (dict(softcap=30.0), "softcap=30.0"),
        (dict(alibi=True), "alibi=True"),
        (dict(dim_v=32), "dim_v=32"),
        (dict(seq_lens=[32, 32]), "seq_lens=(32, 32)"),
        (dict(extras={"kv_cache": 1}), "extras="),
        (dict(device="cpu"), "CUDA device"),
    ],
)
def test_what_it_does_not_support_is_declined_with_a_reason(at_root, monkeypatch, changes, reason):
    pytest.importorskip("triton", reason="triton is not installed: prepare declines everything first")
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    fields = dict(layout="bhsd", batch=1, heads=2, kv_heads=2, seq=64, seq_kv=64, dim=64, causal=True)
    fields.update(dtype="float16", device="cuda")
    fields.update(changes)
    extras = fields.pop("extras", None)
    w = make_workload(**fields)
    if extras:
        w = dataclasses.replace(w, extras=extras)
    dtype = getattr(torch, w.dtype)
    q = torch.zeros(w.batch, w.heads, w.seq, w.dim, dtype=dtype)
    kv = torch.zeros(w.batch, w.kv_heads, w.seq_kv, w.dim, dtype=dtype)
    with pytest.raises(Unsupported, match=reason.replace("(", r"\(").replace(")", r"\)")):
        candidates.build(configured(BHSD, 64, 32), w, [q, kv, kv])


# --- On a GPU ---------------------------------------------------------------------------------


def run_on_gpu(name, layout, batch, heads, kv_heads, seq, seq_kv, dim, causal, dtype, alignment="top_left"):
    """Relative error of candidate `name` against float64 (SDPA on the CPU for top-left, attnbench's
    reference for bottom-right), after a refill in place as attnbench does between checks."""
    w = make_workload(
        layout, batch, heads, kv_heads, seq, seq_kv, dim, causal, dtype, "cuda", causal_alignment=alignment
    )
    gen = torch.Generator(device="cuda").manual_seed(seq + dim + causal)
    shapes = [(batch, n, m, dim) for n, m in ((heads, seq), (kv_heads, seq_kv), (kv_heads, seq_kv))]
    q, k, v = (torch.randn(s, generator=gen, device="cuda").to(getattr(torch, dtype)) for s in shapes)
    if layout == "bshd":
        q, k, v = (t.transpose(1, 2).contiguous() for t in (q, k, v))
    run = candidates.build(name, w, [q, k, v])
    run(q, k, v)
    q.copy_(torch.randn(q.shape, generator=gen, device="cuda"))
    out = run(q, k, v)
    torch.cuda.synchronize()
    assert out.shape == q.shape and out.dtype == q.dtype
    q64, k64, v64 = (t.transpose(1, 2) if layout == "bshd" else t for t in (q, k, v))
    q64, k64, v64 = (t.detach().cpu().double() for t in (q64, k64, v64))
    if alignment == "top_left":
        sdpa = torch.nn.functional.scaled_dot_product_attention
        want = sdpa(q64, k64, v64, is_causal=causal, scale=w.scale, enable_gqa=True)
    else:
        from attnbench.workloads import reference

        want = reference(w.shape, q64, k64, v64, None)[0]
    got = (out.transpose(1, 2) if layout == "bshd" else out).cpu().double()
    return ((got - want).norm() / want.norm()).item()


GPU_CONFIGS = [(128, 64, 8, 3), (64, 64, 4, 3), (128, 128, 8, 2)]


@pytest.mark.gpu
@pytest.mark.parametrize("layout", ["bhsd", "bshd"])
@pytest.mark.parametrize("dim", [64, 128])
@pytest.mark.parametrize("causal", [False, True])
def test_gpu_bfloat16_matches_float64_reference(at_root, layout, dim, causal):
    base = BHSD if layout == "bhsd" else BSHD
    for config in GPU_CONFIGS:
        name = configured(base, *config)
        error = run_on_gpu(name, layout, 2, 8, 8, 1024, 1024, dim, causal, "bfloat16")
        assert error < TOLERANCE["bfloat16"], (name, error)


@pytest.mark.gpu
@pytest.mark.parametrize(
    "layout, heads, kv_heads, seq, seq_kv, dim, causal, dtype, alignment",
    [
        ("bhsd", 8, 2, 1024, 1536, 128, True, "bfloat16", "top_left"),  # GQA, more keys than queries
        ("bshd", 8, 1, 1000, 777, 64, True, "bfloat16", "top_left"),  # MQA, ragged, rows past the keys
        ("bshd", 8, 2, 1000, 777, 128, True, "bfloat16", "bottom_right"),  # rows that see no key
        ("bhsd", 4, 4, 640, 1024, 64, True, "bfloat16", "bottom_right"),
        ("bhsd", 4, 4, 1024, 1024, 128, True, "float16", "top_left"),
        ("bshd", 4, 2, 512, 512, 64, False, "float32", "top_left"),
        ("bhsd", 4, 4, 512, 512, 256, True, "bfloat16", "top_left"),
    ],
)
def test_gpu_gqa_ragged_alignments_and_dtypes(
    at_root, layout, heads, kv_heads, seq, seq_kv, dim, causal, dtype, alignment
):
    base = BHSD if layout == "bhsd" else BSHD
    ran = 0
    for config in [(64, 32, 4, 2), *GPU_CONFIGS]:
        try:
            error = run_on_gpu(
                configured(base, *config),
                layout,
                2,
                heads,
                kv_heads,
                seq,
                seq_kv,
                dim,
                causal,
                dtype,
                alignment,
            )
        except Unsupported as exc:
            assert "shared memory" in str(exc), exc  # the only decline these shapes may meet
            continue
        assert error < TOLERANCE[dtype], (config, error)
        ran += 1
    assert ran >= 1


@pytest.mark.gpu
def test_gpu_every_grid_point_runs_or_declines_for_shared_memory(at_root):
    """The whole grid at dim 128, causal, the usual shape that needs the most shared memory: each
    configuration is right or declines in words, none crashes."""
    names = candidates.expand([BHSD])
    declined = []
    for name in names:
        try:
            error = run_on_gpu(name, "bhsd", 1, 4, 4, 512, 512, 128, True, "bfloat16")
        except Unsupported as exc:
            assert "shared memory" in str(exc), (name, exc)
            declined.append(name)
            continue
        assert error < TOLERANCE["bfloat16"], (name, error)
    assert len(declined) < len(names) // 2, declined
