#!/usr/bin/env bash
# One job per GPU on a 2-GPU host (issue 7): the default sweep with --cores 2 --resources gpu=2, then the
# same shapes on one GPU, with nvidia-smi sampling both GPUs every 0.5 s during the 2-GPU run.
#   bash benchmarks/two_gpus.sh OUT_DIR      # from the repository root; snakemake and attnbench importable
# Then: python benchmarks/two_gpus.py OUT_DIR (checks and summary, written to OUT_DIR/summary.json).
set -euo pipefail
out=$(realpath -m "${1:?usage: two_gpus.sh OUT_DIR}")
root=$(pwd)
mkdir -p "$out"
work=$(mktemp -d)
for arm in two one; do mkdir -p "$work/$arm/config" && cp config/config.yaml "$work/$arm/config/"; done
python -c "import torch, torch._dynamo, scipy.stats, pandas, matplotlib.pyplot, snakemake"  # warm page cache
nvidia-smi --query-gpu=timestamp,index,uuid,utilization.gpu,clocks.sm --format=csv,noheader,nounits -lms 500 \
  >"$out/nvidia-smi.csv" &
smi=$!
SECONDS=0
snakemake -s "$root/workflow/Snakefile" --directory "$work/two" --cores 2 --resources gpu=2 >"$out/two.log" 2>&1
echo "two GPUs: $SECONDS s" | tee "$out/walls.txt"
kill "$smi"
SECONDS=0
ATTNBENCH_GPUS=0 snakemake -s "$root/workflow/Snakefile" --directory "$work/one" --cores 1 --resources gpu=1 \
  >"$out/one.log" 2>&1
echo "one GPU: $SECONDS s" | tee -a "$out/walls.txt"
for arm in two one; do mkdir -p "$out/$arm" && cp "$work/$arm"/results/bench/*.json "$out/$arm/"; done
