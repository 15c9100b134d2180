#!/usr/bin/env bash
# What issue 29's checks cost a whole pipeline: README command 1 (`snakemake --cores 1 --resources
# gpu=1`) on this checkout and on the commit before them (9841d62), in turn, each from empty results
# and caches of its own (calibration, Inductor), RUNS times; then where each last run's time went.
#   bash benchmarks/checks_cost.sh [RUNS] [BEFORE_COMMIT]
set -euo pipefail
runs=${1:-2}; before=${2:-9841d62}
work=$(mktemp -d); root=$(pwd)
for arm in after before; do mkdir -p "$work/$arm"; done
# the workflow of each commit, in either layout (root Snakefile and config.yaml before f52e9ed's successor)
layout='^(Snakefile|workflow|scripts|envs|profiles|examples|config|config.yaml|src)$'
tar -c $(ls | grep -E "$layout") | tar -x -C "$work/after"
git archive "$before" -- $(git ls-tree --name-only "$before" | grep -E "$layout") | tar -x -C "$work/before"
for ((i = 1; i <= runs; i++)); do
  for arm in after before; do
    (cd "$work/$arm" && rm -rf results .snakemake &&
     export XDG_CACHE_HOME=$(mktemp -d) TORCHINDUCTOR_CACHE_DIR=$(mktemp -d) PYTHONPATH=$work/$arm/src &&
     start=$(date +%s.%N) && snakemake --cores 1 --resources gpu=1 > "$work/$arm.log" 2>&1 &&
     echo "$arm run $i: $(python3 -c "import time; print(round(time.time() - $start, 1))") s")
  done
done
for arm in after before; do python3 "$root/benchmarks/duty.py" "$work/$arm" > "$work/duty-$arm.txt"; done
echo "duty tables: $work/duty-after.txt $work/duty-before.txt"
