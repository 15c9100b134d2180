"""Synthetic result files for the report tests, written by io.write_json: they pass the schemas."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from attnbench.io import write_json
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
OUT_NAMES = {
    "html": "report/report.html", "md": "report/report.md", "csv": "report/summary.csv",
    "latency": "report/plots/latency.png", "roofline": "report/plots/roofline.png",
    "speedup": "report/plots/speedup.png", "memory": "report/plots/memory.png",
}  # fmt: skip


def _candidate(status: str, tflops: float | None, reason: str | None, quadratic: bool,
               shape: dict[str, Any], flops: float, min_bytes: int, device: str,
               rng: np.random.Generator) -> dict[str, Any]:  # fmt: skip
    if tflops is None:
        return {"status": status, "reason": reason, "samples_ms": [], "median_ms": None,
                "ci95_ms": None, "tflops": None, "peak_mem_mb": None,
                "rel_error": None}  # fmt: skip
    samples = flops / (tflops * 1e12) * 1e3 * rng.lognormal(0.0, 0.03, size=30)
    med = float(np.median(samples))
    scores = shape["batch"] * shape["heads"] * shape["seq"] * shape["seq_kv"] * 2 if quadratic else 0
    return {
        "status": status,
        "reason": reason,
        "samples_ms": samples.tolist(),
        "median_ms": med,
        "ci95_ms": [float(np.quantile(samples, 0.3)), float(np.quantile(samples, 0.7))],
        "tflops": flops / (med * 1e-3) / 1e12,
        "peak_mem_mb": (min_bytes + scores) / 2**20 if device == "cuda" else None,
        "rel_error": 0.3 if status == "incorrect" else 1e-3,
        "tolerance": 5e-3,
    }


def write_run(
    root: Path,
    *,
    shapes: list[tuple[Any, ...]] | None = None,
    candidates: dict[str, tuple[str, float | None, str | None, bool]] | None = None,
    device: str = "cuda",
    with_compare: bool = True,
    cpu_fingerprint: bool = False,
) -> dict[str, Any]:
    """Write a run under `root`; return build_report's keyword arguments for it."""
    rng = np.random.default_rng(0)
    shapes = SHAPES if shapes is None else shapes
    candidates = CANDIDATES if candidates is None else candidates
    bench_paths, compare_paths = [], []
    for name, batch, heads, kv_heads, seq, seq_kv, dim, causal in shapes:
        shape = {"name": name, "batch": batch, "heads": heads, "kv_heads": kv_heads, "seq": seq,
                 "seq_kv": seq_kv, "dim": dim, "causal": causal}  # fmt: skip
        flops = 4.0 * batch * heads * seq * seq_kv * dim * (0.5 if causal else 1.0)
        min_bytes = 2 * batch * dim * (2 * heads * seq + 2 * kv_heads * seq_kv)
        entries = {
            c: _candidate(*spec, shape, flops, min_bytes, device, rng) for c, spec in candidates.items()
        }
        bench = {
            "shape": shape, "device": device, "dtype": "float16", "mode": "forward",
            "device_info": {"name": "NVIDIA H100 80GB HBM3" if device == "cuda" else "Xeon",
                            "index": 0 if device == "cuda" else None, "uuid": None},
            "timing": {"method": "cuda_events" if device == "cuda" else "perf_counter_ns",
                       "warmup": 5, "rounds": 30, "flush_l2": True, "flush_bytes": 100_000_000,
                       "order": "interleaved rounds, alternating direction"},
            "lock": {"tf32": False}, "flops": flops,
            "min_bytes": min_bytes,
            "candidates": entries,
        }  # fmt: skip
        path = root / "bench" / f"{name}.json"
        write_json(path, bench, SCHEMAS / "bench.schema.yaml")
        bench_paths.append(str(path))
        if not with_compare:
            continue
        compare = compare_shape(bench, REFERENCE, n_resamples=200)
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
    }  # fmt: skip
    write_json(root / "env" / "ceilings.json", ceilings, SCHEMAS / "ceilings.schema.yaml")
    return {
        "bench_paths": bench_paths,
        "compare_paths": compare_paths,
        "fingerprint_path": str(root / "env" / "fingerprint.json"),
        "ceilings_path": str(root / "env" / "ceilings.json"),
        "out": {key: str(root / rel) for key, rel in OUT_NAMES.items()},
        "schema_dir": SCHEMAS,
    }
