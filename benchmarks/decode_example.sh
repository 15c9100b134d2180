#!/usr/bin/env bash
# The H200 evidence for decode against a KV cache (issue 17): examples/decode.yaml through the
# workflow (every built-in candidate and the two user kernels of examples/decode_kernels.py on a
# llama-3.1-8b decode sweep, speculative decoding, paged and fp8 caches), which built-in takes fp8
# (benchmarks/fp8_support.py), then the kernels' GPU tests, copied to docs/examples/<name>/.
#   bash benchmarks/decode_example.sh h200-decode
# Run from a clean checkout on the GPU machine with snakemake importable. About 4 min of GPU time:
# the sweep (12 shapes, about 3 min; examples/decode.yaml says which candidate runs which shape)
# and the GPU tests of the two kernels against the float64 reference.
set -euo pipefail
name=${1:?usage: decode_example.sh NAME}
dest=docs/examples/$name
mkdir -p "$dest/plots"
rm -rf results
start=$(date +%s)
snakemake --cores 1 --resources gpu=1 --keep-going --configfile examples/decode.yaml 2>&1 | tee "$dest/terminal.txt"
echo "wall time: $(( $(date +%s) - start )) s" | tee -a "$dest/terminal.txt"
cp results/report/report.md results/report/summary.csv results/env/fingerprint.json \
   results/env/ceilings.json "$dest"/
cp results/report/plots/*.png "$dest/plots/"
python3 benchmarks/fp8_support.py > "$dest/fp8_support.txt" 2>&1 || true
python3 -m pytest -q -p no:cacheprovider -m gpu tests/test_decode_example.py \
  2>&1 | tail -5 | tee "$dest/pytest-gpu.txt"
echo "copied the report, summary, fingerprint, ceilings, plots and GPU tests to $dest"
