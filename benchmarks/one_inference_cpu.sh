#!/usr/bin/env bash
# Issue 30's "Done when" on the CPU: examples/one_inference.yaml (three small shapes; math, flash, an
# SDPA wrapper and a slow explicit-softmax kernel; 2 s of sampling per shape) through the workflow in a
# scratch copy of this checkout (its results/ and .snakemake/ are left alone), the terminal saved, then
# benchmarks/one_inference_check.py on what it wrote: no verdict may contradict the interval printed
# beside it in the terminal, the report or the JSON. The terminal, the check's output and the files it
# read are copied to OUT (default docs/validation/one-inference-cpu/).
#   bash benchmarks/one_inference_cpu.sh [OUT]
# Run from the repository root with the virtual environment active (snakemake, torch, pandas). About
# 2 minutes on a 2-core machine. Exits with the check's status (1: a contradiction was found).
set -euo pipefail
root=$(pwd)
out=${1:-docs/validation/one-inference-cpu}
case $out in /*) ;; *) out=$root/$out ;; esac
work=$(mktemp -d "${TMPDIR:-/tmp}/one-inference.XXXXXX")
trap 'rm -rf "$work"' EXIT
tar -c workflow config profiles examples src | tar -x -C "$work"
mkdir -p "$out"

cd "$work"
export PYTHONPATH=$work/src${PYTHONPATH:+:$PYTHONPATH}
start=$(date +%s.%N)
set +e
snakemake --cores 1 --resources gpu=1 --configfile examples/one_inference.yaml > terminal.txt 2>&1
status=$?
set -e
wall=$(python3 -c "import time; print(round(time.time() - $start, 1))")
echo "snakemake exit status: $status; wall time: $wall s" | tee -a terminal.txt
cp terminal.txt "$out/terminal.txt"
if [ "$status" -ne 0 ]; then
  tail -30 terminal.txt >&2
  echo "the workflow failed (exit $status): terminal in $out/terminal.txt" >&2
  exit "$status"
fi

set +e
python3 "$root/benchmarks/one_inference_check.py" "$work" terminal.txt > check.txt 2>&1
check=$?
set -e
cat check.txt
cp check.txt "$out/check.txt"
rm -rf "$out/compare"
mkdir -p "$out/compare"
cp results/compare/*.json "$out/compare/"
cp results/report/autotune.json results/report/headline.json results/report/summary.csv \
   results/report/report.md "$out/"
echo "copied the terminal, the check, compare/, autotune.json, headline.json, summary.csv and report.md to $out"
exit "$check"
