#!/usr/bin/env bash
# The ratchet loop on this machine's GPU, with a user kernel whose slowdown is known:
#   1. run benchmarks/ratchet_h100.yaml and save the result as a baseline;
#   2. run it again (new processes, same code) against the baseline: the A/A verdict;
#   3. set examples.kernels.EXTRA_HEADS = 1 (one head in 20 recomputed: 5% more work) and run
#      against the baseline: the slowdown verdict.
# Each verdict, comment and gate exit code is copied to docs/examples/ratchet-<name>/.
#   bash benchmarks/ratchet_example.sh h100
set -uo pipefail
name=${1:?usage: ratchet_example.sh NAME}
dest=docs/examples/ratchet-$name
config=(--configfile benchmarks/ratchet_h100.yaml)
run() { snakemake --cores 1 --resources gpu=1 "${config[@]}" "$@" || exit 1; }
keep() {
  mkdir -p "$dest/$1"
  cp results/ratchet/verdict.json results/ratchet/comment.md "$dest/$1/"
  python -m attnbench gate results/ratchet/verdict.json | tee "$dest/$1/gate.txt"
  echo "exit code: ${PIPESTATUS[0]}" | tee -a "$dest/$1/gate.txt"
}
restore() { sed -i 's/^EXTRA_HEADS = .*/EXTRA_HEADS = 0/' examples/kernels.py; }
trap restore EXIT

restore
run
python -m attnbench baseline save results "$dest/baseline.json" || exit 1
run --config baseline="$dest/baseline.json" --forcerun benchmark
keep aa
sed -i 's/^EXTRA_HEADS = .*/EXTRA_HEADS = 1/' examples/kernels.py
run --config baseline="$dest/baseline.json"
keep slowdown
