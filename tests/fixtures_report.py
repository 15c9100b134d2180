"""Synthetic result files for the report tests, written by files.write_json: they pass the schemas."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from attnbench import autotune
from attnbench.documents import ShapeResult
from attnbench.files import write_json
from attnbench.jobs import REPORT_TITLE
from attnbench.report import build_report, read_run
from attnbench.stats import compare_shape

SCHEMAS = Path(__file__).resolve().parents[1] / "workflow" / "schemas"
EVIL = "evil:<script>alert(1)</script>"
EVIL_REASON = "output differs: <b>& | max error 3.2"
REFERENCE = "math"

# name, batch, heads, kv_heads, seq, seq_kv, dim, causal
SHAPES = [
    ("s1024_d64", 4, 16, 16, 1024, 1024, 64, False),
    ("s4096_d64", 4, 16, 16, 4096, 4096, 64, False),
    ("s4096_d128_causal_gqa", 4, 16, 4, 4096, 4096, 128, True),
]
# candidate -> (status, achieved TFLOP/s or None, reason, memory growing with seq**2)
CANDIDATES: dict[str, tuple[str, float | None, str | None, bool]] = {
    "math": ("ok", 60.0, None, True),
    "flash": ("ok", 420.0, None, False),
    "flex": ("ok", 60.0, None, False),  # as fast as the reference: not significant
    EVIL: ("incorrect", 900.0, EVIL_REASON, False),  # fastest of all, but wrong: never "fastest"
    "efficient": (
        "unsupported",
        None,
        "No available kernel.\nhead_dim 128 > 64 | not supported",
        False,
    ),
    "cudnn": ("error", None, "RuntimeError: cuDNN <error> & friends", False),
}
# what bench.py keeps beside a concise reason: the library's whole text, an error's traceback
EXTRAS: dict[str, dict[str, str]] = {
    "efficient": {"reason_detail": "Memory efficient kernel not used because:\n<long> & detailed ```text```"},
    "cudnn": {
        "traceback": 'Traceback (most recent call last):\n  File "x.py", line 1\nRuntimeError: <tb> & co'
    },
}
# A factory kernel's prepare (bench's setup_ms, absent from earlier files), for the candidates named
SETUP_MS = {"flex": 12.5}
# An ok candidate as fast as flash (same throughput, independent noise): tied with it in autotune.
TWIN = "twin:<i>flash</i> & co|2"
TIED_CANDIDATES = {**CANDIDATES, TWIN: ("ok", 420.0, None, False)}
# A kernel with a grid of configurations (candidates.configured_name), per shape of SHAPES: its
# TFLOP/s, or (status, reason) where it did not run ok. BLOCK_M=128,num_warps=4 is the fastest where it
# runs but fails on the last shape; BLOCK_M=128,num_warps=8 is never far behind: the minimax choice.
CONFIG_KERNEL = "kern:attn"
CONFIG_SPECS: dict[tuple[int, int], tuple[Any, Any, Any]] = {
    (64, 4): (300.0, 300.0, 300.0),
    (64, 8): (330.0, 260.0, 300.0),
    (128, 4): (450.0, 400.0, ("error", "RuntimeError: out of shared memory")),
    (128, 8): (446.0, 360.0, 340.0),
    (256, 4): (200.0, 395.0, 345.0),
    (256, 8): (("unsupported", "BLOCK_M=256 needs seq >= 2048"), 390.0, 344.0),
}
TARGET = 0.01
# (shape, candidate) pairs whose CI half-width stays above TARGET: sampling ran out of time first
MISSED = {("s4096_d64", "flex")}
ROUNDS = 30
# per shape, what differs from a clean cold-cache run (see _timing)
CONDITIONS: dict[str, dict[str, Any]] = {
    "s1024_d64": {"mode": "graph", "mode_reason": "auto: fastest candidate 0.0412 ms < 0.15 ms",
                  "flush_l2": False, "flush_bytes": None, "calls_per_sample": 24},
    "s4096_d64": {"stop_reason": "max_time_s (30 s) reached before the CI target"},
    "s4096_d128_causal_gqa": {
        "mode_reason": "auto: CUDA graph capture failed, timed per call: RuntimeError: <capture> & co",
        "settled": False, "throttled_rounds": 12, "discarded_rounds": 3,
        "events": {"sw_power_cap": 9, "hw_thermal_slowdown": 3},
    },
}  # fmt: skip
OUT_NAMES = {
    "html": "report/report.html",
    "md": "report/report.md",
    "csv": "report/summary.csv",
    "latency": "report/plots/latency.png",
    "roofline": "report/plots/roofline.png",
    "speedup": "report/plots/speedup.png",
    "memory": "report/plots/memory.png",
    "accuracy": "report/plots/accuracy.png",
}
AUTOTUNE_NAMES = {"json": "report/autotune.json", "csv": "report/autotune.csv"}


def _candidate(status: str, tflops: float | None, reason: str | None, quadratic: bool,
               shape: dict[str, Any], flops: float, min_bytes: int, device: str,
               rng: np.random.Generator, *, missed: bool = False,
               calls_per_sample: int = 1, rounds: int = ROUNDS,
               samples: list[float] | None = None) -> dict[str, Any]:  # fmt: skip
    if tflops is None:
        return {"status": status, "reason": reason, "samples_ms": [], "median_ms": None,
                "ci95_ms": None, "rel_ci": None, "target_met": None, "calls_per_sample": None,
                "tflops": None, "peak_mem_mb": None, "rel_error": None}  # fmt: skip
    drawn = flops / (tflops * 1e12) * 1e3 * rng.lognormal(0.0, 0.03, size=rounds)
    samples = drawn if samples is None else np.asarray(samples, dtype=float)
    med = float(np.median(samples))
    rel_ci = 0.014 if missed else 0.004
    scores = shape["batch"] * shape["heads"] * shape["seq"] * shape["seq_kv"] * 2 if quadratic else 0
    return {
        "status": status,
        "reason": reason,
        "samples_ms": samples.tolist(),
        "median_ms": med,
        "ci95_ms": [med * (1 - rel_ci), med * (1 + rel_ci)],
        "rel_ci": rel_ci,
        "target_met": rel_ci <= TARGET,
        "calls_per_sample": calls_per_sample,
        "tflops": flops / (med * 1e-3) / 1e12,
        "peak_mem_mb": (min_bytes + scores) / 2**20 if device == "cuda" else None,
        # as memory.footprint records it: a quadratic candidate's workspace is its score matrix
        "footprint": {
            "source": "CUDA caching allocator counters (torch.cuda.memory_stats)",
            "inputs_mb": min_bytes * 3 / 4 / 2**20,
            "output_mb": min_bytes / 4 / 2**20,
            "workspace_mb": (scores or shape["batch"] * shape["heads"] * shape["seq"] * 4) / 2**20,
            "allocations": 3 if quadratic else 1,
            "reserved_growth_mb": 0.0 if device == "cuda" else None,
            "saved_mb": None,
            "backward": None,
            "projected_mb": (min_bytes + scores) / 2**20,
        },
        "oom_risk": False if device == "cuda" else None,
        "rel_error": 0.3 if status == "incorrect" else 1e-3,
        "compile_ms": round(150.0 + 20.0 * med, 1),  # the first call, compilation included
        "tolerance": 5e-3,
        # as attnbench.audit records it; flash's kernels differ bitwise from call to call
        "deterministic": {"identical": tflops != 420.0, "max_abs_diff": 0.0 if tflops != 420.0 else 2e-3},
        "ran": {
            "source": "torch.profiler (CUPTI)",
            "kernels": [{"name": f"kernel_{int(tflops)}", "count": 1}],
            "kernels_per_call": 1,
            "streams": 1,
            "device_ms": med * 0.97,
            "device_share": 0.97,
            "unjoined_kernels": [],
        },
    }


def _timing(device: str, conditions: dict[str, Any], rounds: int = ROUNDS) -> dict[str, Any]:
    """A timing block as timing.Measurement.record writes it: clean and cold unless told otherwise;
    `rounds` kept, 2.5 s of sampling."""
    cuda = device == "cuda"
    discarded = conditions.get("discarded_rounds", 0) if cuda else 0
    settled = conditions.get("settled", True)
    return {
        "method": "cuda_events" if cuda else "perf_counter_ns",
        "requested_mode": "auto",
        "mode": conditions.get("mode", "cold") if cuda else "warm",
        "mode_reason": conditions.get("mode_reason", "auto: fastest candidate 0.412 ms >= 0.15 ms")
        if cuda else "the CPU has no L2 flush or CUDA graphs: wall time of one call",
        "graph_below_ms": 0.15,
        "flush_l2": conditions.get("flush_l2", True) and cuda,
        "flush_bytes": conditions.get("flush_bytes", 100_000_000) if cuda else None,
        "warmup": {"rounds": 20 if settled else 410, "seconds": 0.4 if settled else 5.01,
                   "settled": settled,
                   "reason": "timings and SM clock settled" if settled
                   else "not settled after 5 s (last batch moved by more than 2%)",
                   "sm_mhz": 1980 if cuda else None},
        "min_rounds": 20, "max_rounds": 5000, "target_rel_ci": TARGET, "max_time_s": 30.0,
        "rounds_run": rounds + discarded, "rounds_kept": rounds,
        "stop_reason": conditions.get("stop_reason", f"every median's 95% CI within ±{TARGET:.2%}"),
        "elapsed_s": 2.5, "discard_throttled": True,
        "clocks": {
            "source": "nvml" if cuda else None,
            "reason": None if cuda else "no GPU clock on the cpu",
            "mean_sm_mhz": (1755.4 if discarded else 1980.0) if cuda else None,
            "min_sm_mhz": (1410 if discarded else 1980) if cuda else None,
            "max_sm_mhz": 1980 if cuda else None,
            "throttled_rounds": conditions.get("throttled_rounds", 0) if cuda else 0,
            "discarded_rounds": discarded if cuda else 0,
            "events": conditions.get("events", {}) if cuda else {},
            "sm_mhz_per_round": [1980 if cuda else None] * (rounds + discarded),
        },
        "order": "interleaved rounds, alternating direction",
    }  # fmt: skip


def write_run(
    root: Path,
    *,
    shapes: list[tuple[Any, ...]] | None = None,
    candidates: dict[str, tuple[str, float | None, str | None, bool]] | None = None,
    device: str = "cuda",
    with_compare: bool = True,
    cpu_fingerprint: bool = False,
    conditions: dict[str, dict[str, Any]] | None = None,
    missed: set[tuple[str, str]] | None = None,
    shape_candidates: dict[str, dict[str, tuple[str, float | None, str | None, bool]]] | None = None,
    hosts: dict[str, dict[str, Any]] | None = None,
    rounds: dict[str, int] | None = None,
    samples: dict[tuple[str, str], list[float]] | None = None,
) -> dict[str, Any]:
    """Write a run under `root`; return build_report's keyword arguments for it (build runs both steps).

    `shape_candidates` replaces `candidates` for the shapes it names.

    `conditions` (default CONDITIONS) and `missed` (default MISSED) say which shapes were measured
    under less than clean conditions, so the report has something to flag. `hosts`: the optional
    per-shape `host` block (threads, load, busy) of the shapes it names; EXTRAS add reason_detail and
    traceback to the candidates they name. `rounds`: the rounds kept on the shapes it names (ROUNDS
    elsewhere); `samples`: the samples of the (shape, candidate) pairs it names, instead of drawn ones.
    """
    rng = np.random.default_rng(0)
    shapes = SHAPES if shapes is None else shapes
    candidates = CANDIDATES if candidates is None else candidates
    conditions = CONDITIONS if conditions is None else conditions
    missed = MISSED if missed is None else missed
    bench_paths, compare_paths = [], []
    for name, batch, heads, kv_heads, seq, seq_kv, dim, causal in shapes:
        shape = {"name": name, "batch": batch, "heads": heads, "kv_heads": kv_heads, "seq": seq,
                 "seq_kv": seq_kv, "dim": dim, "causal": causal}  # fmt: skip
        flops = 4.0 * batch * heads * seq * seq_kv * dim * (0.5 if causal else 1.0)
        min_bytes = 2 * batch * dim * (2 * heads * seq + 2 * kv_heads * seq_kv)
        cond = conditions.get(name, {})
        n = (rounds or {}).get(name, ROUNDS)
        entries = {
            c: _candidate(*spec, shape, flops, min_bytes, device, rng, missed=(name, c) in missed,
                          calls_per_sample=cond.get("calls_per_sample", 1), rounds=n,
                          samples=(samples or {}).get((name, c)))
            for c, spec in (shape_candidates or {}).get(name, candidates).items()
        }  # fmt: skip
        for c, extra in EXTRAS.items():
            if c in entries and entries[c]["status"] != "ok":
                entries[c].update(extra)
        for c, ms in SETUP_MS.items():
            if c in entries and entries[c]["median_ms"] is not None:
                entries[c]["setup_ms"] = ms
        bench = {
            "shape": shape, "device": device, "dtype": "float16", "mode": "forward",
            "device_info": {"name": "NVIDIA H100 80GB HBM3" if device == "cuda" else "Xeon",
                            "index": 0 if device == "cuda" else None, "uuid": None},
            "timing": _timing(device, cond, n),
            "lock": {"tf32": False}, "flops": flops,
            "min_bytes": min_bytes,
            "candidates": entries,
            **({"host": hosts[name]} if name in (hosts or {}) else {}),
        }  # fmt: skip
        path = root / "bench" / f"{name}.json"
        write_json(path, bench, SCHEMAS / "bench.schema.yaml")
        bench_paths.append(str(path))
        if not with_compare:
            continue
        compare = compare_shape(ShapeResult.from_json(bench), REFERENCE)
        path = root / "compare" / f"{name}.json"
        write_json(path, compare, SCHEMAS / "compare.schema.yaml")
        compare_paths.append(str(path))

    fingerprint = {
        "created": "2025-01-01T00:00:00+00:00", "python": "3.11.9",
        "torch": {"version": "2.5.1", "cuda": None if cpu_fingerprint else "12.4",
                  "cudnn": None if cpu_fingerprint else 90100, "triton": "3.1.0"},
        "device": "cpu" if cpu_fingerprint else "cuda",
        "gpu": None if cpu_fingerprint else {
            "name": "NVIDIA H100 80GB HBM3", "uuid": "GPU-0123abcd-4567-89ef-0123-456789abcdef",
            "driver_version": "550.54.15", "compute_capability": "9.0", "sm_count": 132,
            "memory_total_mb": 81559, "clocks": {"sm_mhz": 1980, "mem_mhz": 2619},
        },
        "gpu_reason": "device is cpu: torch was built without CUDA" if cpu_fingerprint else None,
        "cpu": {"model": "Intel(R) Xeon(R) Platinum 8480+", "logical_cores": 224},
        "host": {"hostname": "node01", "os": "Linux-6.8", "kernel": "6.8.0"},
        "git": {"commit": "0123456789abcdef0123456789abcdef01234567", "dirty": True},
        "packages": {"numpy": "2.1.0"}, "env_vars": {"CUDA_VISIBLE_DEVICES": "0"},
        "lock": {"requested": {"tf32": False, "seed": 0}, "deterministic": False},
    }  # fmt: skip
    write_json(root / "env" / "fingerprint.json", fingerprint, SCHEMAS / "fingerprint.schema.yaml")
    ceilings = {
        "device": device, "device_name": "NVIDIA H100 80GB HBM3" if device == "cuda" else "Xeon",
        "matmul": {"float16": {"tflops": 650.0, "size": 8192, "median_ms": 1.7, "method": "matmul"},
                   "float32": {"tflops": 50.0, "size": 8192, "median_ms": 22.0,
                               "method": "matmul"}},
        "copy": {"gbytes_per_s": 2900.0, "bytes": 1 << 30, "median_ms": 0.74, "method": "copy"},
        "read": {"gbytes_per_s": 3300.0, "bytes": 1 << 30, "median_ms": 0.33, "method": "sum"},
    }  # fmt: skip
    write_json(root / "env" / "ceilings.json", ceilings, SCHEMAS / "ceilings.schema.yaml")
    return {
        "bench_paths": bench_paths,
        "compare_paths": compare_paths,
        "fingerprint_path": str(root / "env" / "fingerprint.json"),
        "ceilings_path": str(root / "env" / "ceilings.json"),
        "autotune_path": str(root / AUTOTUNE_NAMES["json"]),
        "out": {key: str(root / rel) for key, rel in OUT_NAMES.items()},
        "schema_dir": SCHEMAS,
        "title": REPORT_TITLE,
    }


def read_back(run: dict[str, Any]) -> Any:
    """report.read_run on a run from write_run: what the report is made from."""
    return read_run(**{key: value for key, value in run.items() if key not in ("out", "title")})


def autotune_out(run: dict[str, Any]) -> dict[str, str]:
    """The autotune step's outputs, next to the report's."""
    root = Path(run["out"]["html"]).parents[1]
    return {key: str(root / rel) for key, rel in AUTOTUNE_NAMES.items()}


def run_autotune(run: dict[str, Any]) -> dict[str, Any]:
    """The autotune job on a run from write_run: autotune.csv and autotune.json written; the document."""
    out = autotune_out(run)
    document = autotune.build(
        run["bench_paths"], run["compare_paths"], out["csv"], schema_dir=run["schema_dir"]
    )
    write_json(out["json"], document, SCHEMAS / "autotune.schema.yaml")
    return document


def build(run: dict[str, Any], **options: Any) -> dict[str, Any]:
    """The workflow's last two steps on a run from write_run: autotune, then the report; the headline."""
    run_autotune(run)
    return build_report(**{**run, **options})


def configuration(block_m: int, num_warps: int, kernel: str = CONFIG_KERNEL) -> str:
    return f"{kernel}[BLOCK_M={block_m},num_warps={num_warps}]"


def configuration_candidates(
    specs: dict[tuple[int, int], tuple[Any, ...]] | None = None,
    base: dict[str, tuple[str, float | None, str | None, bool]] | None = None,
) -> dict[str, dict[str, tuple[str, float | None, str | None, bool]]]:
    """write_run's shape_candidates: `base` (math and flash) and the kernel's configurations, per shape."""
    specs = CONFIG_SPECS if specs is None else specs
    base = {"math": CANDIDATES["math"], "flash": CANDIDATES["flash"]} if base is None else base
    out = {}
    for i, shape in enumerate(SHAPES):
        entries = dict(base)
        for (block_m, num_warps), per_shape in specs.items():
            spec = per_shape[i]
            entries[configuration(block_m, num_warps)] = (
                ("ok", float(spec), None, False)
                if not isinstance(spec, tuple)
                else (spec[0], None, spec[1], False)
            )
        out[shape[0]] = entries
    return out


# A candidate 3% faster than the reference on the first shape, by per-round ratios built so that its
# 95% interval clears the resolution band (the compare file says "faster") while the interval
# corrected for the run's comparisons does not (the report says "same"): the verdict printed must
# follow the interval printed beside it. The last shape keeps FEW_ROUNDS rounds: "too few rounds".
EDGE = "edge"
EDGE_SPEEDUP = 1.03
EDGE_SE = 0.0095  # the standard error of the mean log ratio: decided alone at 95%, not corrected
FEW_ROUNDS = 2
VERDICT_SHAPES = {SHAPES[0][0]: {**CANDIDATES, EDGE: ("ok", 60.0, None, False)}}


def edge_samples(median_ms: float = 0.285, rounds: int = ROUNDS) -> dict[tuple[str, str], list[float]]:
    """The reference's and EDGE's samples on the first shape: a common drift per round, and per
    2-round block (stats.block_length(30)) a log ratio of log(EDGE_SPEEDUP) + the block's deviation,
    the deviations scaled to give the mean a standard error of exactly EDGE_SE."""
    blocks = rounds // 2
    z = np.sin(np.arange(1, blocks + 1) * 2.4)
    z = (z - z.mean()) / z.std(ddof=1)
    ratios = np.repeat(np.log(EDGE_SPEEDUP) + EDGE_SE * np.sqrt(blocks) * z, 2)
    drift = median_ms * np.exp(0.002 * np.sin(np.arange(rounds)))
    return {
        (SHAPES[0][0], REFERENCE): drift.tolist(),
        (SHAPES[0][0], EDGE): (drift / np.exp(ratios)).tolist(),
    }


def write_verdict_run(root: Path) -> dict[str, Any]:
    """write_run with EDGE on the first shape and FEW_ROUNDS rounds on the last."""
    return write_run(
        root,
        shape_candidates=VERDICT_SHAPES,
        samples=edge_samples(),
        rounds={SHAPES[-1][0]: FEW_ROUNDS},
    )


def printed_speedup(text: str) -> tuple[float, float, float]:
    """`1.03× [0.998, 1.06]` anywhere in `text`: the speedup and its interval as printed."""
    match = re.search(r"([\d.,]+)× \[([\d.,]+), ([\d.,]+)\]", text)
    assert match, text
    point, lo, hi = (float(g.replace(",", "")) for g in match.groups())
    return point, lo, hi


def agrees(verdict: str, text: str, threshold: float = 0.02) -> bool:
    """The verdict and the interval printed in `text` agree: faster (slower) lies wholly above (below)
    1 with the speedup past the practical threshold; same meets the practical band."""
    point, lo, hi = printed_speedup(text)
    if verdict == "faster":
        return lo > 1 and point >= 1 + threshold
    if verdict == "slower":
        return hi < 1 and point <= 1 / (1 + threshold)
    return verdict == "same" and lo <= 1 + threshold and hi >= 1 / (1 + threshold)
