"""Does attnbench's measurement hold on this GPU? One command, a table, and docs/validation/<gpu>.json.

    python benchmarks/validate_gpu.py [--out docs/validation] [--trials 20]

Everything below runs the product's own code: attnbench.timing.measure (modes, warm-up, clock
watch, adaptive stopping), attnbench.stats.compare (the significance test) and, for `repro`,
`python -m attnbench benchmark`, the command the workflow's benchmark rule runs.

* fidelity: each kernel's median from measure() against torch.profiler's kernel time of the
  same unit of work (same mode: same flush, same graph), from 5 us to 5 ms.
* aa: a candidate compared with itself, `trials` times per shape; a false positive is
  compare(...)["significant"] (the test alone, p < 0.05, before any practical threshold).
* power: the same kernel against itself plus a spin kernel worth 2% of its time; detected when
  the test is significant and the slower side is the one with the extra work.
* repro: two independent processes per shape; the difference of their medians against their CIs.
* canaries: each dishonest kernel of tests/dishonest_kernels.py among cuDNN, in each timing mode it
  can run in, through attnbench.bench.run_shape: it must end `incorrect` or `untrusted` with the
  reason the check gives, and cuDNN must stay `ok`.
* false_alarms: the default config/config.yaml's GPU sweep through the benchmark job's own code
  (attnbench.jobs.run("benchmark", ...) on the spec attnbench.jobs builds), against ceilings measured
  by attnbench.calibrate: every result that is `untrusted`, or `incorrect` only after sampling, is
  a false alarm (target 0); with the largest fraction of the bound and of profiled over measured time.

    python benchmarks/validate_gpu.py --sections canaries false_alarms --out /tmp/probe   (a subset)
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from attnbench import audit, bench, candidates, clocks, files, jobs, lock, stats, timing
from attnbench import config as run_config
from attnbench.benchspec import BenchSpec
from attnbench.calibrate import measure_ceilings
from attnbench.cli import configure_logging
from attnbench.env import fingerprint
from attnbench.settings import TimingSettings
from attnbench.workloads import Shape, Workload, make_inputs

SCHEMA = ROOT / "workflow" / "schemas" / "validation.schema.yaml"
BENCH_SCHEMA = ROOT / "workflow" / "schemas" / "bench.schema.yaml"
DTYPE = "bfloat16"
LABEL = "attnbench::unit"
TARGETS = {
    "fidelity_rel_ge_50us": 0.02,
    "fidelity_rel_5_to_50us": 0.10,
    "aa_false_positive_rate_max": 0.05,
    "power_detection_rate_min": 0.90,
    "repro_rel_ge_0_1ms": 0.01,
    "false_alarms_max": 0,
}
SECTIONS = ("fidelity", "aa", "power", "position", "repro", "canaries", "false_alarms")
SETTINGS = TimingSettings(target_rel_ci=0.01, max_time_s=10.0)


def shape(batch: int, heads: int, seq: int, dim: int, causal: bool = False) -> Shape:
    name = f"b{batch}_h{heads}_s{seq}_d{dim}" + ("_causal" if causal else "")
    return Shape.from_config(
        {"name": name, "batch": batch, "heads": heads, "seq": seq, "dim": dim, "causal": causal}
    )


FIDELITY = [
    (shape(1, 8, 128, 64), "flash"),
    (shape(1, 8, 128, 64), "cudnn"),
    (shape(1, 16, 1024, 64), "flash"),
    (shape(2, 16, 1024, 128), "efficient"),
    (shape(4, 16, 2048, 128), "cudnn"),
    (shape(4, 16, 2048, 128), "flash"),
    (shape(4, 16, 2048, 128), "efficient"),
    (shape(8, 16, 4096, 128, causal=True), "flash"),
    (shape(4, 16, 2048, 128), "math"),
]
AA = [(shape(1, 8, 128, 64), "flash"), (shape(4, 16, 2048, 128), "cudnn"), (shape(4, 16, 2048, 128), "flash")]
POWER = (shape(4, 16, 2048, 128), "cudnn")
POSITION = (shape(4, 16, 2048, 128), "flash")
REPRO = [shape(4, 16, 2048, 128), shape(2, 16, 4096, 64, causal=True), shape(16, 16, 1024, 128)]
REPRO_CANDIDATES = ["flash", "efficient", "cudnn"]
CANARY_SHAPE = shape(4, 16, 2048, 128)
# fixture -> (timing modes it can be timed in, the status it must end with, words its reason must hold)
CANARIES = {
    "keeps_answer": (("cold", "warm", "graph"), "incorrect", "did not change with the inputs"),
    "writes_once": (("cold", "warm", "graph"), "incorrect", "not rewritten"),
    "unjoined_stream": (("cold", "warm"), "untrusted", "never waited for"),
    "skips_graph_capture": (("graph",), "incorrect", "not rewritten by a replay"),
}


def say(message: str) -> None:
    print(f"[validate {dt.datetime.now():%H:%M:%S}] {message}", flush=True)


def kernel_call(shape_: Shape, backend: str) -> Any:
    import torch

    inputs = make_inputs(shape_, getattr(torch, DTYPE), "cuda", 0, False)
    return bench.make_call(candidates.build(backend, Workload.of(shape_, "bfloat16", "cuda")), inputs, False)


def measure(calls: dict[str, Any]) -> timing.Measurement:
    failures: dict[str, str] = {}
    with clocks.watch("cuda") as watch:
        measured = timing.measure(
            calls,
            device="cuda",
            settings=SETTINGS,
            flush=timing.L2Flusher("cuda", True),
            watch=watch,
            on_failure=lambda name, exc: failures.__setitem__(name, f"{type(exc).__name__}: {exc}"),
        )
    if failures:
        raise RuntimeError(f"measurement failed: {failures}")
    return measured


def profiled(sampler: timing.Sampler, repeats: int) -> dict[str, Any]:
    """torch.profiler's view of the same unit: the sum of its kernels' durations per call (the
    reference), the span from its first kernel's start to its last kernel's end per call (gaps
    between the kernels of one call included), and kernels per call where they can be counted."""
    import torch
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile, record_function

    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(repeats):
            if sampler.before is not None:
                sampler.before()
            with record_function(LABEL):
                sampler.unit()
        torch.cuda.synchronize()
    events = prof.events()
    k = sampler.calls_per_sample
    ranges = [e for e in events if e.name == LABEL and e.device_type == DeviceType.CPU]
    spans = [
        e.time_range.elapsed_us() for e in events if e.name == LABEL and e.device_type == DeviceType.CUDA
    ]
    kernels = [e for e in events if e.device_type == DeviceType.CUDA and e.name != LABEL]
    if ranges and min(e.device_time_total for e in ranges) > 0:
        kernel_us = float(np.median([e.device_time_total for e in ranges]))
        per_call = None if sampler.before is not None else len(kernels) / (repeats * k)
    elif sampler.before is None:
        # Kernels replayed from a CUDA graph may not be attributed to the range; then take every
        # kernel, which is exact because nothing else ran (graph units have no flush).
        kernel_us = sum(e.time_range.elapsed_us() for e in kernels) / repeats
        per_call = len(kernels) / (repeats * k)
    else:
        raise RuntimeError("profiler attributed no kernel time to the timed unit")
    if spans and min(spans) > 0:
        span_us = float(np.median(spans))
    else:
        span_us = (
            max(e.time_range.end for e in kernels) - min(e.time_range.start for e in kernels)
        ) / repeats
    return {
        "profiler_ms": kernel_us / 1e3 / k,
        "profiler_span_ms": span_us / 1e3 / k,
        "kernels_per_call": per_call,
    }


def fidelity() -> list[dict[str, Any]]:
    rows = []
    for shape_, backend in FIDELITY:
        call = kernel_call(shape_, backend)
        measured = measure({backend: call})
        ours = float(np.median(measured.samples[backend]))
        sampler = measured.samplers[backend]
        seen = profiled(sampler, repeats=30 if sampler.calls_per_sample == 1 else 5)
        reference = seen["profiler_ms"]
        band = "ge_50us" if reference >= 0.05 else "5_to_50us"
        limit = TARGETS[f"fidelity_rel_{band}"]
        rel = ours / reference - 1.0
        rows.append(
            {
                "shape": shape_.name,
                "backend": backend,
                "mode": measured.mode,
                "calls_per_sample": sampler.calls_per_sample,
                "ours_ms": ours,
                "ours_ci95_ms": list(measured.ci95[backend]),
                **seen,
                "rel_diff": rel,
                "rel_diff_span": ours / seen["profiler_span_ms"] - 1.0,
                "limit": limit,
                "ok": abs(rel) <= limit,
            }
        )
        say(
            f"fidelity {shape_.name} {backend}: ours {ours:.4f} ms ({measured.mode}) profiler {reference:.4f} ms "
            f"{rel:+.2%}"
        )
        del measured, sampler, call
    return rows


def aa(trials: int) -> list[dict[str, Any]]:
    rows = []
    for shape_, backend in AA:
        call = kernel_call(shape_, backend)
        outcomes = []
        for _ in range(trials):
            measured = measure({"A": call, "A'": call})
            a, b = measured.samples["A"], measured.samples["A'"]
            plain = stats.compare(a, b, resolution=0.0)["significant"]
            outcomes.append(stats.compare(a, b) | {"rounds": len(a), "mode": measured.mode, "plain": plain})
        false_positives = sum(o["significant"] for o in outcomes)
        rows.append(
            {
                "shape": shape_.name,
                "backend": backend,
                "mode": outcomes[0]["mode"],
                "trials": trials,
                "false_positives": false_positives,
                "false_verdicts": sum(o["verdict"] != "same" for o in outcomes),
                "false_positives_without_resolution": sum(o["plain"] for o in outcomes),
                "median_rounds": sorted(o["rounds"] for o in outcomes)[trials // 2],
                "p_values": [o["p_value"] for o in outcomes],
                "speedups": [o["speedup"] for o in outcomes],
            }
        )
        say(
            f"aa {shape_.name} {backend}: {false_positives}/{trials} significant "
            f"({rows[-1]['false_positives_without_resolution']} with resolution 0)"
        )
    return rows


def power(trials: int) -> dict[str, Any]:
    """The kernel against itself followed by a spin kernel, the spin's length calibrated so that
    the pair is 2% slower in place (the spin's own launch costs about 1 us, so it is measured and
    taken off), then `trials` independent comparisons."""
    import torch

    shape_, backend = POWER
    call = kernel_call(shape_, backend)
    median = float(np.median(measure({backend: call}).samples[backend]))
    probe = 200_000
    ms_per_cycle = (
        float(np.median(measure({"spin": lambda: torch.cuda._sleep(probe)}).samples["spin"])) / probe
    )

    def with_spin(cycles: int) -> Any:
        def slower() -> None:
            call()
            torch.cuda._sleep(cycles)

        return slower

    def slowdown(cycles: int) -> float:
        measured = measure({"A": call, "B": with_spin(cycles)})
        return float(np.median(measured.samples["B"]) / np.median(measured.samples["A"])) - 1.0

    first = max(1, round(0.02 * median / ms_per_cycle))
    launch_ms = slowdown(first) * median - first * ms_per_cycle
    cycles = max(1, round((0.02 * median - launch_ms) / ms_per_cycle))
    check = slowdown(cycles)
    outcomes = []
    for _ in range(trials):
        measured = measure({"A": call, "B": with_spin(cycles)})
        outcomes.append(stats.compare(measured.samples["A"], measured.samples["B"]))
    detected = sum(o["significant"] and o["speedup"] < 1.0 for o in outcomes)
    slowdowns = [1.0 / o["speedup"] - 1.0 for o in outcomes]
    say(
        f"power {shape_.name} {backend}: {detected}/{trials} detected; slowdown {np.median(slowdowns):.2%} in place"
    )
    return {
        "shape": shape_.name,
        "backend": backend,
        "kernel_ms": median,
        "slowdown_pct": 2,
        "spin_cycles": cycles,
        "spin_launch_ms": launch_ms,
        "slowdown_pct_calibration_check": 100 * check,
        "slowdown_pct_measured_median": 100 * float(np.median(slowdowns)),
        "trials": trials,
        "detected": detected,
        "verdict_slower": sum(o["verdict"] == "slower" for o in outcomes),
        "p_values": [o["p_value"] for o in outcomes],
    }


def position(copies: int = 6) -> dict[str, Any]:
    """One kernel on `copies` input sets, timed together as if they were candidates: any spread of
    their medians is bias from position in the round or from buffer placement, not the kernel."""
    import torch

    shape_, backend = POSITION
    calls = {}
    for seed in range(copies):
        inputs = make_inputs(shape_, getattr(torch, DTYPE), "cuda", seed, False)
        calls[f"copy{seed}"] = bench.make_call(candidates.build(backend, Workload.of(shape_, "bfloat16", "cuda")), inputs, False)
    measured = measure(calls)
    medians = {name: float(np.median(v)) for name, v in measured.samples.items()}
    spread = max(medians.values()) / min(medians.values()) - 1.0
    say(f"position {shape_.name} {backend}: {copies} copies spread {spread:.2%}")
    return {
        "shape": shape_.name,
        "backend": backend,
        "mode": measured.mode,
        "medians_ms": medians,
        "spread": spread,
    }


def bench_process(shape_: Shape, out: Path) -> dict[str, Any]:
    """One `python -m attnbench benchmark` process, as the workflow's rule runs it."""
    spec = BenchSpec(
        shape=shape_,
        device="cuda",
        dtype=DTYPE,
        direction="forward",
        candidates=tuple(REPRO_CANDIDATES),
        timing=TimingSettings(target_rel_ci=SETTINGS.target_rel_ci, max_time_s=SETTINGS.max_time_s),
        lock=lock.resolve(None),
    ).to_json()  # complete, as attnbench.jobs writes a spec: the job checks it against its schema
    command = [
        sys.executable,
        "-m",
        "attnbench",
        "benchmark",
        "--spec",
        json.dumps(spec),
        "--out",
        str(out),
        "--schemas",
        str(BENCH_SCHEMA.parent),
    ]
    env = {
        **os.environ,
        **lock.job_env(None),
        "PYTHONPATH": f"{ROOT / 'src'}:{os.environ.get('PYTHONPATH', '')}",
    }
    subprocess.run(command, check=True, env=env)
    return files.read_json(out, BENCH_SCHEMA)


def repro() -> list[dict[str, Any]]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for shape_ in REPRO:
            first, second = (bench_process(shape_, Path(tmp) / f"{shape_.name}_{i}.json") for i in (1, 2))
            for name in REPRO_CANDIDATES:
                a, b = first["candidates"][name], second["candidates"][name]
                if a["status"] != "ok" or b["status"] != "ok":
                    rows.append({"shape": shape_.name, "backend": name, "status": [a["status"], b["status"]]})
                    continue
                rel = b["median_ms"] / a["median_ms"] - 1.0
                half_widths = a["rel_ci"] + b["rel_ci"]
                row = {
                    "shape": shape_.name,
                    "backend": name,
                    "status": ["ok", "ok"],
                    "median_ms": [a["median_ms"], b["median_ms"]],
                    "ci95_ms": [a["ci95_ms"], b["ci95_ms"]],
                    "rounds": [len(a["samples_ms"]), len(b["samples_ms"])],
                    "mean_sm_mhz": [
                        first["timing"]["clocks"]["mean_sm_mhz"],
                        second["timing"]["clocks"]["mean_sm_mhz"],
                    ],
                    "rel_diff": rel,
                    "within_cis": abs(rel) <= half_widths,
                    "limit": TARGETS["repro_rel_ge_0_1ms"] if a["median_ms"] >= 0.1 else None,
                }
                row["ok"] = row["limit"] is None or abs(rel) <= row["limit"]
                rows.append(row)
                say(
                    f"repro {shape_.name} {name}: {a['median_ms']:.4f} vs {b['median_ms']:.4f} ms ({rel:+.2%}, "
                    f"CIs ±{a['rel_ci']:.2%} ±{b['rel_ci']:.2%})"
                )
    return rows


def ceilings_file(folder: Path) -> Path:
    """Ceilings measured by the calibrate job's own code, written where a bench spec can name them."""
    path = folder / "ceilings.json"
    if not path.exists():
        files.write_json(path, measure_ceilings("cuda", [DTYPE], None, None), ROOT / "workflow/schemas/ceilings.schema.yaml")
    return path


def canaries(folder: Path) -> list[dict[str, Any]]:
    sys.path.insert(0, str(ROOT / "tests"))
    rows = []
    for mode in ("cold", "warm", "graph"):
        fixtures = [name for name, (modes, _, _) in CANARIES.items() if mode in modes]
        spec = {
            "shape": CANARY_SHAPE.as_dict(),
            "device": "cuda",
            "dtype": DTYPE,
            "mode": "forward",
            "candidates": ["cudnn", *(f"dishonest_kernels:{name}" for name in fixtures)],
            "timing": {"mode": mode, "max_time_s": 5.0},
            "lock": lock.resolve(None),
            "ceilings": str(ceilings_file(folder)),
        }
        document = jobs.run("benchmark", spec)
        honest = document["candidates"]["cudnn"]
        for name in fixtures:
            entry = document["candidates"][f"dishonest_kernels:{name}"]
            _, status, words = CANARIES[name]
            caught = entry["status"] == status and words in (entry["reason"] or "")
            rows.append({
                "fixture": name, "mode": mode, "timing_mode": document["timing"]["mode"],
                "status": entry["status"], "reason": entry["reason"], "median_ms": entry["median_ms"],
                "honest_median_ms": honest["median_ms"], "honest_status": honest["status"], "caught": caught,
            })  # fmt: skip
            say(f"canary {name} ({mode}): {entry['status']}: {entry['reason']}")
    return rows


def false_alarms(folder: Path) -> dict[str, Any]:
    import yaml

    run = run_config.resolve(yaml.safe_load((ROOT / "config" / "config.yaml").read_text()))
    ceilings = str(ceilings_file(folder))
    results, alarms, shares, fractions, audit_s = 0, [], [], [], []
    for name in run_config.shape_names(run):
        document = jobs.run("benchmark", json.loads(jobs.spec("benchmark", run, name)) | {"ceilings": ceilings})
        audit_s.append(document["audit_s"])
        for candidate, entry in document["candidates"].items():
            results += 1
            unverified = entry["status"] == "incorrect" and "timed work not verified" in (entry["reason"] or "")
            if entry["status"] == "untrusted" or unverified:
                alarms.append({"shape": name, "candidate": candidate, "reason": entry["reason"]})
            if entry.get("fraction_of_bound") is not None:
                fractions.append((entry["fraction_of_bound"], name, candidate))
            ran = entry.get("ran") or {}
            if ran.get("device_ms") is not None and entry["median_ms"]:
                shares.append((ran["device_ms"] / entry["median_ms"], name, candidate, document["timing"]["mode"]))
        say(f"false_alarms {name}: {len(alarms)} so far, audit {document['audit_s']:.2f} s")
    top_fraction, top_share = max(fractions), max(shares)
    return {
        "config": "config/config.yaml (default GPU sweep)",
        "results": results,
        "false_alarms": len(alarms),
        "alarms": alarms,
        "max_fraction_of_bound": {"value": top_fraction[0], "shape": top_fraction[1], "candidate": top_fraction[2]},
        "max_profiled_over_measured": {
            "value": top_share[0], "shape": top_share[1], "candidate": top_share[2], "mode": top_share[3],
        },
        "min_profiled_over_measured": min(shares)[0],
        "audit_s_per_shape": {"median": float(np.median(audit_s)), "max": max(audit_s)},
        "limits": {"profile_excess": audit.PROFILE_EXCESS, "bound_margin": audit.BOUND_MARGIN["cuda"]},
    }  # fmt: skip


def verdicts(doc: dict[str, Any]) -> dict[str, bool]:
    """Each section that ran, against its target."""
    checks = {
        "fidelity": lambda: all(r["ok"] for r in doc["fidelity"]),
        "aa": lambda: sum(r["false_positives"] for r in doc["aa"])
        <= TARGETS["aa_false_positive_rate_max"] * sum(r["trials"] for r in doc["aa"])
        and all(r["false_positives"] <= TARGETS["aa_false_positive_rate_max"] * r["trials"] for r in doc["aa"]),
        "power": lambda: doc["power"]["detected"] >= TARGETS["power_detection_rate_min"] * doc["power"]["trials"],
        "repro": lambda: all(r.get("ok", False) for r in doc["repro"]),
        "canaries": lambda: all(r["caught"] and r["honest_status"] == "ok" for r in doc["canaries"]),
        "false_alarms": lambda: doc["false_alarms"]["false_alarms"] <= TARGETS["false_alarms_max"],
    }
    return {name: check() for name, check in checks.items() if name in doc}


def table(doc: dict[str, Any]) -> str:
    lines = ["", f"{doc['gpu']['name']}, driver {doc['gpu']['driver']}, torch {doc['torch']['version']}", ""]
    if "fidelity" in doc:
        lines.append(
            f"{'fidelity':<34}{'mode':<7}{'ours ms':>10}{'profiler':>10}{'diff':>9}{'limit':>7}{'vs span':>9}"
        )
    for r in doc.get("fidelity", []):
        lines.append(
            f"{r['shape'] + ' ' + r['backend']:<34}{r['mode']:<7}{r['ours_ms']:>10.4f}"
            f"{r['profiler_ms']:>10.4f}{r['rel_diff']:>+9.2%}{r['limit']:>7.0%}{r['rel_diff_span']:>+9.2%}"
        )
    lines.append("")
    for r in doc.get("aa", []):
        lines.append(
            f"aa {r['shape']} {r['backend']} ({r['mode']}): {r['false_positives']}/{r['trials']} false positives"
            f" ({r['false_positives_without_resolution']} with resolution 0)"
        )
    if p := doc.get("power"):
        lines.append(
            f"power {p['shape']} {p['backend']}: {p['slowdown_pct_measured_median']:+.2f}% measured slowdown, "
            f"detected {p['detected']}/{p['trials']}"
        )
    if q := doc.get("position"):
        lines.append(
            f"position {q['shape']} {q['backend']}: {len(q['medians_ms'])} copies, spread {q['spread']:.2%}"
        )
    lines.append("")
    for r in doc.get("repro", []):
        if "rel_diff" in r:
            lines.append(
                f"repro {r['shape']} {r['backend']}: {r['median_ms'][0]:.4f} vs {r['median_ms'][1]:.4f} ms "
                f"({r['rel_diff']:+.2%}; within CIs: {r['within_cis']})"
            )
    for r in doc.get("canaries", []):
        lines.append(
            f"canary {r['fixture']:<20} {r['mode']:<6} {r['status']:<10} caught: {r['caught']}"
            f" (median {r['median_ms']} ms; cuDNN {r['honest_status']}, {r['honest_median_ms']:.4f} ms)"
        )
    if f := doc.get("false_alarms"):
        lines.append(
            f"false alarms: {f['false_alarms']}/{f['results']} results of the default sweep; largest fraction of"
            f" the bound {f['max_fraction_of_bound']['value']:.0%} ({f['max_fraction_of_bound']['shape']}"
            f" {f['max_fraction_of_bound']['candidate']}); profiled/measured"
            f" {f['min_profiled_over_measured']:.2f}-{f['max_profiled_over_measured']['value']:.2f};"
            f" audit {f['audit_s_per_shape']['median']:.2f} s per shape (max {f['audit_s_per_shape']['max']:.2f})"
        )
    lines.append("")
    lines.append(
        "targets met: " + ", ".join(f"{k} {'yes' if v else 'NO'}" for k, v in doc["targets_met"].items())
    )
    return "\n".join(lines)


def main() -> int:
    configure_logging()  # the measurement's own lines, as a job shows them
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", default=str(ROOT / "docs" / "validation"))
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    args = parser.parse_args()
    if any(os.environ.get(k) != v for k, v in lock.job_env(None).items()):
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, **lock.job_env(None)})
    began = time.perf_counter()
    state = lock.apply(None)
    env = fingerprint("cuda", state, workflow_dir=ROOT)
    doc: dict[str, Any] = {
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": "python benchmarks/validate_gpu.py " + " ".join(sys.argv[1:]),
        "gpu": {
            "name": env["gpu"]["name"],
            "uuid": env["gpu"]["uuid"],
            "driver": env["gpu"]["driver_version"],
            "power_limit_w": env["gpu"]["power_limit_w"],
            "sm_max_mhz": env["gpu"]["clocks"]["sm_max_mhz"],
        },
        "torch": env["torch"],
        "git": env["git"],
        "settings": {
            "dtype": DTYPE,
            "target_rel_ci": SETTINGS.target_rel_ci,
            "max_time_s": SETTINGS.max_time_s,
            "alpha": 0.05,
            "resolution": stats.RESOLUTION,
            "graph_below_ms": timing.GRAPH_BELOW_MS,
        },
        "targets": TARGETS,
    }
    with tempfile.TemporaryDirectory() as folder:
        sections = {
            "fidelity": fidelity,
            "aa": lambda: aa(args.trials),
            "power": lambda: power(args.trials),
            "position": position,
            "repro": repro,
            "canaries": lambda: canaries(Path(folder)),
            "false_alarms": lambda: false_alarms(Path(folder)),
        }
        for name in args.sections:
            doc[name] = sections[name]()
    doc["targets_met"] = verdicts(doc)
    doc["wall_s"] = time.perf_counter() - began
    slug = re.sub(r"[^a-z0-9]+", "-", doc["gpu"]["name"].lower()).strip("-")
    out = Path(args.out) / f"{slug}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    files.write_json(out, doc, SCHEMA)
    print(table(doc))
    print(f"\nwrote {out} in {doc['wall_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
