"""examples/decode.yaml and examples/decode_kernels.py: the H200 decode evidence's config is one the
workflow takes, and its two user kernels agree with the float64 reference on every kind of cache.

Without a GPU the config is checked as the workflow parses it (device: cuda is accepted as if a GPU
were there) and the kernels run on the CPU in float32 through attnbench.bench.run_shape, the same
checks as in a run (the float64 reference, the refilled inputs, the NaN slots of a paged pool).
"""

import pytest
import yaml
from helpers import CONFIG, ROOT, SCHEMAS, bench_spec
from snakemake.utils import update_config

from attnbench import candidates, device, presets
from attnbench import config as run_config
from attnbench.bench import run_shape
from attnbench.workloads import Shape, Workload

PAGED = "examples.decode_kernels:paged_decode"
FP8 = "examples.decode_kernels:fp8_decode"


@pytest.fixture
def at_root(monkeypatch, locked_env):
    """User kernels resolve from the working directory, as in the workflow."""
    monkeypatch.chdir(ROOT)
    monkeypatch.syspath_prepend(str(ROOT))


def example_config():
    """examples/decode.yaml merged into config.yaml, as `snakemake --configfile` merges it."""
    config = yaml.safe_load(CONFIG.read_text())
    update_config(config, yaml.safe_load((ROOT / "examples" / "decode.yaml").read_text()))
    return config


def test_the_example_config_is_valid_and_every_shape_is_a_decode_workload(at_root, monkeypatch):
    monkeypatch.setattr(device, "cuda_unusable_reason", lambda: None)  # parsed as on the H200
    config = example_config()
    run_config.validate(config, SCHEMAS / "config.schema.yaml")
    run = run_config.resolve(config)
    assert (run["device"], run["dtype"], run["mode"]) == ("cuda", "bfloat16", "forward")
    assert run["reference"] == "math"  # runs every contiguous bf16 shape; declines the paged and fp8 ones
    assert run["candidates"] == ["flash", "efficient", "cudnn", "math", "flex", PAGED, FP8]
    assert run["timing"]["max_time_s"] <= 10 and len(run["shapes"]) <= 12
    kinds = set()
    for entry in run["shapes"]:
        shape = Shape.from_config(entry)
        assert "cache_lens" in entry and shape.causal and shape.causal_alignment == "bottom_right", entry
        for name in run["candidates"]:
            layout = candidates.static_declaration(name).layout if candidates.is_user_kernel(name) else "bhsd"
            workload = Workload.of(shape, run["dtype"], run["device"], layout=layout, mode=run["mode"])
            requests = len(workload.cu_seqlens_k) - 1
            assert requests == entry["batch"] and workload.seq == requests * entry.get("seq", 1)
            assert len(workload.page_table) == (requests if shape.page_size else 0)
        kinds.add((shape.kv_heads, entry.get("seq", 1), shape.page_size, shape.kv_dtype))
        if entry["name"].startswith("decode_llama8b_b"):
            kinds.add(("batch", entry["batch"]))
    assert {("batch", 1), ("batch", 16), ("batch", 64)} <= kinds  # the batch sweep
    assert (1, 1, 0, None) in kinds and (8, 4, 0, None) in kinds  # MQA, speculative decoding
    for page_size in (0, 16):  # fp8 caches, contiguous and paged
        assert {(8, 1, page_size, "float8_e4m3fn"), (8, 1, page_size, "float8_e5m2")} <= kinds
    assert (8, 1, 16, None) in kinds
    header = (ROOT / "examples" / "decode.yaml").read_text().split("\ndevice:")[0]
    assert "snakemake --cores 1 --resources gpu=1 --configfile examples/decode.yaml" in header
    assert all(name in header for name in (*run["candidates"], *(s["name"] for s in run["shapes"][3:])))


# (page_size, kv_dtype) -> the status of each user kernel: each kind of cache is read by one of them.
KINDS = {
    "contiguous": (0, None, {PAGED: "unsupported", FP8: "unsupported"}),
    "paged": (16, None, {PAGED: "ok", FP8: "unsupported"}),
    "fp8_e4m3": (0, "float8_e4m3fn", {PAGED: "unsupported", FP8: "ok"}),
    "fp8_e5m2": (0, "float8_e5m2", {PAGED: "unsupported", FP8: "ok"}),
    "paged_fp8_e4m3": (8, "float8_e4m3fn", {PAGED: "ok", FP8: "unsupported"}),
    "paged_fp8_e5m2": (8, "float8_e5m2", {PAGED: "ok", FP8: "unsupported"}),
}
# Small decode batches: GQA with one new query, MQA speculative decoding (3 new queries, causal among
# themselves), and caches of uneven lengths, one shorter than a page.
DECODES = {
    "gqa": {"batch": 3, "heads": 4, "kv_heads": 2, "dim": 16, "cache_lens": [40, 7, 65]},
    "mqa_speculative": {
        "batch": 4,
        "heads": 6,
        "kv_heads": 1,
        "dim": 32,
        "seq": 3,
        "cache_lens": [3, 90, 17, 30],
    },
}


def cache(entry, page_size, kv_dtype):
    """A decode shape's entry with its cache paged and in fp8, as asked."""
    return {
        **entry,
        **({"page_size": page_size} if page_size else {}),
        **({"kv_dtype": kv_dtype} if kv_dtype else {}),
    }


def bench(entry, names, **overrides):
    shape = Shape.from_config({"name": "d", **entry}).as_dict()
    result = run_shape(bench_spec(shape, names, rounds=3, **overrides))
    return {name: (found["status"], found["reason"]) for name, found in result["candidates"].items()}, result


@pytest.mark.parametrize("decode", DECODES)
@pytest.mark.parametrize("kind", KINDS)
def test_the_example_kernels_agree_with_the_float64_reference(at_root, kind, decode):
    page_size, kv_dtype, expected = KINDS[kind]
    got, result = bench(cache(DECODES[decode], page_size, kv_dtype), ["math", PAGED, FP8])
    assert {name: status for name, (status, _) in got.items() if name != "math"} == expected, got
    assert got["math"][0] == ("ok" if kind == "contiguous" else "unsupported"), got
    for name, status in expected.items():
        if status == "ok":
            assert result["candidates"][name]["rel_error"] <= result["candidates"][name]["tolerance"]
            assert result["candidates"][name]["layout"] == ("paged" if name == PAGED else "thd")
        else:
            assert got[name][1], got  # a reason, in words
    if kind == "contiguous":
        assert got[FP8][1] == "an fp8 cache only, got torch.float32"
        assert "needs a shape with page_size" in got[PAGED][1]
    if page_size:
        assert "declare @attnbench.kernel(layout='paged')" in got[FP8][1]


def test_what_is_not_decode_is_declined_in_words(at_root):
    windowed = {**DECODES["gqa"], "page_size": 16, "window": [8, 0]}
    got, _ = bench(windowed, [PAGED])
    assert got[PAGED] == ("unsupported", "plain decode only, not a sliding window")
    prefill = {"batch": 2, "heads": 4, "kv_heads": 2, "seq": 16, "dim": 16, "causal": True}
    got, _ = bench({**prefill, "kv_dtype": "float8_e4m3fn"}, [FP8])
    assert got[FP8] == ("unsupported", "decode only: causal, bottom-right aligned (a shape with cache_lens)")


@pytest.mark.gpu
@pytest.mark.parametrize("kind", KINDS)
def test_gpu_bfloat16_example_kernels_agree_with_the_float64_reference(at_root, kind):
    """The example's preset at a smaller batch, on CUDA in bfloat16, as the H200 run calls them."""
    page_size, kv_dtype, expected = KINDS[kind]
    lengths = {"min": 256, "max": 4096, "mean": 1024, "seed": 0}
    entry = presets.apply({"preset": "llama-3.1-8b", "batch": 8, "seq": 2, "cache_lens": lengths})
    got, _ = bench(cache(entry, page_size, kv_dtype), [PAGED, FP8], device="cuda", dtype="bfloat16")
    assert {name: status for name, (status, _) in got.items()} == expected, got
