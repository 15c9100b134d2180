"""Checks for benchmarks/two_gpus.sh's output: both GPUs busy at once, every result on a named GPU, no
two overlapping jobs on one GPU, and medians of the 2-GPU run against the same shapes on one GPU."""

from __future__ import annotations

import csv
import json
import statistics
import sys
from collections import defaultdict
from datetime import datetime
from pathlib import Path

out = Path(sys.argv[1])
runs = {arm: {p.stem: json.loads(p.read_text()) for p in sorted((out / arm).glob("*.json"))} for arm in ("two", "one")}
two = runs["two"]
spans = [(d["placement"]["leased_at"], d["process"]["finished_at"], d["device_info"]["uuid"], n) for n, d in two.items()]
clashes = [(a[3], b[3]) for i, a in enumerate(spans) for b in spans[i + 1:] if a[2] == b[2] and a[0] < b[1] and b[0] < a[1]]
overlapping = sum(1 for i, a in enumerate(spans) for b in spans[i + 1:] if a[0] < b[1] and b[0] < a[1])
busy = defaultdict(dict)
for row in csv.reader((out / "nvidia-smi.csv").open()):
    stamp = datetime.strptime(row[0].strip(), "%Y/%m/%d %H:%M:%S.%f").replace(microsecond=0)
    busy[stamp][row[1].strip()] = int(row[3])
both = sum(1 for gpus in busy.values() if len(gpus) == 2 and all(u > 0 for u in gpus.values()))
outside, diffs = [], []
for name, doc in two.items():
    for cand, entry in doc["candidates"].items():
        ref = runs["one"][name]["candidates"][cand]
        if entry["median_ms"] and ref["median_ms"]:
            diffs.append(abs(entry["median_ms"] / ref["median_ms"] - 1))
            lo, hi = ref["ci95_ms"]
            lo2, hi2 = entry["ci95_ms"]
            if hi2 < lo or lo2 > hi:
                outside.append(f"{name}/{cand}: {entry['median_ms']:.4f} [{lo2:.4f}, {hi2:.4f}] vs {ref['median_ms']:.4f} [{lo:.4f}, {hi:.4f}]")
summary = {
    "gpus": sorted({d["device_info"]["uuid"] for d in two.values()}),
    "shapes_per_gpu": {u: sum(d["device_info"]["uuid"] == u for d in two.values()) for u in {d["device_info"]["uuid"] for d in two.values()}},
    "results_with_uuid": sum(bool(d["device_info"]["uuid"]) for d in two.values()),
    "results": len(two),
    "overlapping_job_pairs": overlapping,
    "overlapping_pairs_on_one_gpu": clashes,
    "seconds_sampled": len(busy),
    "seconds_both_gpus_busy": both,
    "median_pairs": len(diffs),
    "median_abs_diff": statistics.median(diffs),
    "max_abs_diff": max(diffs),
    "ci_disjoint": outside,
}
(out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
print(json.dumps(summary, indent=1))
