#!/usr/bin/env bash
# A kernel that faults on the GPU, among the built-ins: the workflow over three shapes with flash, cudnn,
# math and two Triton kernels with an out-of-bounds store (tests/triton_kernels.py), one faulting in its
# first call, one only in the timed rounds. Every other candidate must have its result on every shape,
# the culprits must be named (status crashed), and the run must end with its report.
#   bash benchmarks/crash_gpu.sh OUT_DIR      # from the repository root; snakemake and attnbench importable
# Writes OUT_DIR/run.log (snakemake's output, then its exit code), statuses.txt, bench/*.json, logs/*.log
# (the benchmark jobs': crash, replay, measured again), report.md, fingerprint.json; exits with
# snakemake's exit code.
set -euo pipefail
out=$(realpath -m "${1:?usage: crash_gpu.sh OUT_DIR}")
root=$(pwd)
work=$(mktemp -d)
cp tests/triton_kernels.py "$work/"
mkdir -p "$work/config"
cat >"$work/config/config.yaml" <<'YAML'
device: cuda
dtype: bfloat16
candidates: [flash, cudnn, math, "triton_kernels:stores_out_of_bounds", "triton_kernels:stores_out_of_bounds_while_timed"]
reference: math
timing: {max_time_s: 3}
shapes:
  - {name: b8_h16_s1024_d64, batch: 8, heads: 16, seq: 1024, dim: 64}
  - {name: b4_h16_s4096_d128_causal, batch: 4, heads: 16, seq: 4096, dim: 128, causal: true}
  - {name: b1_h16_s8192_d128, batch: 1, heads: 16, seq: 8192, dim: 128}
YAML
mkdir -p "$out/bench" "$out/logs"
code=0
snakemake -s "$root/workflow/Snakefile" --directory "$work" --cores 1 --resources gpu=1 >"$out/run.log" 2>&1 || code=$?
echo "snakemake exit code: $code" | tee -a "$out/run.log"
cp "$work"/results/bench/*.json "$out/bench/" || true
cp "$work"/results/logs/bench/*.log "$out/logs/" || true
cp "$work/results/report/report.md" "$work/results/env/fingerprint.json" "$out/" || true
python - "$work/results" >"$out/statuses.txt" <<'PY'
import json
import sys
from pathlib import Path

results = Path(sys.argv[1])
for path in sorted((results / "bench").glob("*.json")):
    document = json.loads(path.read_text())
    for name, entry in document["candidates"].items():
        median = f" median {entry['median_ms']:.4f} ms over {len(entry['samples_ms'])} rounds" if entry["median_ms"] else ""
        print(f"{document['shape']['name']}  {name}: {entry['status']}{median}")
        if entry.get("crash"):
            print(f"    {entry['reason']}\n    found: {entry['crash']['found_by']}")
report = results / "report" / "report.html"
print(f"report: {report} ({'built' if report.exists() else 'missing'})")
PY
cat "$out/statuses.txt"
echo "copied to $out"
exit "$code"
