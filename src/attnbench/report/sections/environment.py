"""Where and on what the run was measured: the run summary, the environment (fingerprint), where the
results came from (provenance) and the measured ceilings the fractions of ceiling divide by."""

from __future__ import annotations

from collections import Counter

import pandas as pd

from attnbench.documents import ShapeResult
from attnbench.formatting import DASH, num
from attnbench.report.data import git_commit
from attnbench.report.model import Block, Para, Section, Table
from attnbench.report.render import prose
from attnbench.report.words import counts, distinct, flatten, settings
from attnbench.results import Json


def _device(frame: pd.DataFrame, fingerprint: Json) -> str:
    """The device, and when `device: auto` found no usable GPU, that the run fell back and why."""
    device = distinct(frame["device"])
    if fingerprint.get("requested_device") == "auto" and fingerprint.get("device") == "cpu":
        return f"{device} (device: auto fell back to the CPU: {fingerprint.get('gpu_reason')})"
    return device


def run_summary(frame: pd.DataFrame, benches: list[ShapeResult], fingerprint: Json) -> Section:
    """What was run, on what, and how many results of each status."""
    statuses = Counter(frame["status"])
    device_names = [b.device_info.get("name") for b in benches]
    rows = [
        ["device", _device(frame, fingerprint)],
        ["device name", distinct(n for n in device_names if n)],
        *_gpus_used(benches),
        ["dtype", distinct(frame["dtype"])],
        ["mode", distinct(frame["mode"])],
        ["timing mode", counts(b.timing["mode"] for b in benches)],
        ["shapes", str(frame["shape"].nunique())],
        ["candidates", str(frame["candidate"].nunique())],
        ["results by status", ", ".join(f"{s}: {n}" for s, n in sorted(statuses.items())) or DASH],
    ]
    return Section("Run summary", [Table(["", "value"], rows)])


def _gpus_used(benches: list[ShapeResult]) -> list[list[str]]:
    """A row naming the GPUs when there were GPUs: which index and UUID ran how many shapes."""
    gpus = [b.device_info for b in benches]
    named = [f"{g['index']} ({g['uuid']})" for g in gpus if g.get("uuid")]
    return [["GPUs (index as nvidia-smi shows it)", counts(named)]] if named else []


def fingerprint_section(fp: Json) -> Section:
    """The environment the fingerprint recorded: GPU, host, software, checkout, lock."""
    gpu = fp["gpu"]
    labels = {
        "name": "GPU",
        "uuid": "GPU UUID",
        "driver_version": "driver",
        "compute_capability": "compute capability",
        "sm_count": "SMs",
        "memory_total_mb": "GPU memory (MB)",
    }
    rows: list[list[str]] = []
    if gpu is None:
        rows.append(["GPU", f"none: {fp['gpu_reason'] or 'no reason given'}"])
    else:
        rows += [[labels.get(k, f"GPU {k}"), v] for k, v in flatten(gpu)]
    torch = fp["torch"]
    rows += [
        ["CPU", f"{fp['cpu']['model']} ({fp['cpu']['logical_cores']} logical cores)"],
        ["host", f"{fp['host']['hostname']}, {fp['host']['os']}, kernel {fp['host']['kernel']}"],
        ["Python", fp["python"]],
        ["torch", str(torch["version"])],
        ["CUDA", str(torch["cuda"] or DASH)],
        ["cuDNN", str(torch["cudnn"] or DASH)],
        ["Triton", str(torch["triton"] or DASH)],
        ["git commit", git_commit(fp["git"])],
        ["lock", settings(fp["lock"])],
        ["environment variables", settings(fp["env_vars"])],
        ["fingerprint taken", fp["created"]],
    ]
    return Section("Environment", [Table(["", "value"], rows, text_cols={1})])


def provenance_section(provenance: Json) -> list[Section]:
    """Where the results came from, when that is not simply the fingerprint's checkout: which shapes
    each checkout measured, and the result files read without a digest. Nothing otherwise."""
    blocks: list[Block] = []
    if provenance.get("several") or provenance.get("elsewhere"):
        groups = provenance["groups"]
        blocks += [
            Para(prose("checkouts", checkouts=len(groups), current=provenance["current"])),
            Table(
                ["measured at", "shapes"],
                [[group["label"], ", ".join(group["shapes"])] for group in groups],
                text_cols={0, 1},
            ),
        ]
    if provenance.get("unverified"):
        blocks.append(Para(prose("unverified", names=provenance["unverified"]), css="warning"))
    return [Section("Provenance", blocks)] if blocks else []


def ceilings_section(ceilings: Json, benches: list[ShapeResult]) -> Section:
    """The measured ceilings, where and when, and a warning where another device measured them."""
    measured_on = ceilings.get("device_name") or ceilings["device"]
    rows = [
        [
            f"matmul {dtype}",
            f"{num(entry['tflops'])} TFLOP/s",
            num(entry["size"]),
            num(entry["median_ms"]),
            str(entry["method"]),
        ]
        for dtype, entry in ceilings["matmul"].items()
    ]
    for name in ("copy", "read", "write"):
        if entry := ceilings.get(name):  # read and write: absent from files written before them
            rows.append(
                [
                    name,
                    f"{num(entry['gbytes_per_s'])} GB/s",
                    f"{num(entry['bytes'])} bytes",
                    num(entry["median_ms"]),
                    str(entry["method"]),
                ]
            )
    said = prose(
        "ceilings", device=measured_on, measured_at=ceilings.get("measured_at"), reused=ceilings.get("reused")
    )
    blocks: list[Block] = [
        Para(said),
        Table(["ceiling", "value", "size", "median ms", "method"], rows, numeric={1, 2, 3}),
    ]
    bench_devices = {b.device_info.get("name") for b in benches} - {None}
    if ceilings.get("device_name") and bench_devices and ceilings["device_name"] not in bench_devices:
        elsewhere = prose(
            "ceilings_elsewhere", measured_on=ceilings["device_name"], ran_on=", ".join(sorted(bench_devices))
        )
        blocks.append(Para(elsewhere, css="warning"))
    return Section("Measured ceilings", blocks)
