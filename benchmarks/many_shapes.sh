#!/usr/bin/env bash
# Scale check: Snakemake's own overhead for a 1,000-shape config (docs/scale.md has the results).
#
#   . .venv/bin/activate            # snakemake, python and attnbench on PATH
#   bash benchmarks/many_shapes.sh  # from the repository root; needs hyperfine (apt-get install hyperfine)
#
# Targets (issue): with 1,000 shapes, on a 2-core machine,
#   (a) `snakemake --cores 1 --resources gpu=1 --dry-run` on a fresh copy          <= 10 s
#   (b) the same dry run on a finished run (prints "Nothing to be done")          <= 10 s
#   (c) also measured: the no-op rerun itself, the same command without --dry-run (takes the
#       lock, writes a log, decides nothing is to be done).
# Each is timed by hyperfine (WARMUP warm-up runs, then RUNS runs); JSON and markdown go to OUT.
#
# Environment (all optional): N_SHAPES=1000  RUNS=5  WARMUP=1  REAL_SHAPES=2  SMOKE_SHAPES=4
#   OUT=${TMPDIR:-/tmp}/attnbench-many-shapes  (exports, logs, machine.txt; kept)
#   KEEP=1  keep the temporary workflow copies (printed), otherwise they are deleted.
#
# Method. Everything runs in temporary copies of the workflow (workflow config profiles examples
# profiles examples, the files tests/test_workflow.py copies), so the checkout's results/ and
# .snakemake/ are untouched; attnbench itself is imported from the active environment. The
# copy's profiles/default applies as in any run (rerun-triggers: params, input, software-env).
# The config (benchmarks/many_shapes.py config) is device: cpu, float32, the repository's CPU
# candidates (four SDPA backends plus examples.kernels:naive_attention), N distinct small shapes
# (batch 1-2, heads 2-4, dim 16-32, causal or not, seq 16, 24, 32, ...); 2*N+4 jobs, 2*N+10 outputs.
#   0. Smoke: the real workflow, end to end (benchmarks, comparisons, fingerprint, calibration,
#      report), on the first SMOKE_SHAPES shapes; then its dry run must say "Nothing to be done".
#   1. (a) is timed on a fresh copy with the N-shape config.
#   2. A finished N-shape run. Running it for real would take hours here (each job starts Python
#      and imports torch: ~5 s per job on this CPU, 2,000+ jobs), and Snakemake's no-op decision
#      never reads what an output contains, only that it exists, its mtime, the input checksums
#      recorded for it, and its metadata record (params, input set, code, software env). So:
#      i.   the real jobs run for the first REAL_SHAPES shapes (benchmark + compare) and for the
#           fingerprint and calibration; their metadata records are saved;
#      ii.  every output still missing (per `snakemake --summary`) gets a small placeholder file;
#      iii. `snakemake --touch --forceall` marks every job as run: Snakemake's own touch executor
#           sets the mtimes in DAG order and writes each job's complete metadata record exactly
#           as after a real run (a job whose output exists but has no record is not rerun, only
#           warned about, so a plain `--touch` would leave 2,000 jobs without metadata);
#      iv.  check: the records of step i, rewritten by --touch, are identical to the real run's
#           but for starttime/endtime/job_hash; every output has a record; --summary shows every
#           output "ok" / "no update"; `--list-changes input` and `code` are empty; the dry run
#           prints "Nothing to be done" and no "missing provenance/metadata" warning.
#   3. (b) and (c) are timed on that finished run.
#   4. Control: a config with one shape's dim changed (same name) must make exactly that shape's
#      benchmark and compare jobs and the report outdated (params changed), i.e. the no-op in 3 is
#      Snakemake comparing 1,000 shapes' params and finding them equal, not skipping the check.
# Note: `--list-changes params` in Snakemake 9.27 lists every output that has recorded params,
# changed or not (ParamsChange.__iter__ yields its files regardless of whether it is empty), so
# it is printed for the record only; --summary's status column and the control are the checks.
# Takes ~7 min on 2 cores, most of it the touch executor's 0.1 s sleep per job.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
N=${N_SHAPES:-1000}
RUNS=${RUNS:-5}
WARMUP=${WARMUP:-1}
REAL=${REAL_SHAPES:-2}
SMOKE=${SMOKE_SHAPES:-4}
OUT=${OUT:-${TMPDIR:-/tmp}/attnbench-many-shapes}
HELPER=$ROOT/benchmarks/many_shapes.py
SM=(snakemake --cores 1 --resources gpu=1)

for tool in hyperfine snakemake python; do
    command -v "$tool" >/dev/null || { echo "many_shapes.sh: $tool not on PATH (activate the venv; apt-get install hyperfine)" >&2; exit 2; }
done
mkdir -p "$OUT"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/attnbench-many-shapes.XXXXXX")
if [[ ${KEEP:-0} == 1 ]]; then echo "keeping $WORK"; else trap 'rm -rf "$WORK"' EXIT; fi

step() { printf '\n== %s\n' "$*"; }
fail() { echo "FAIL: $*" >&2; exit 1; }

copy_workflow() {  # copy_workflow DIR
    mkdir -p "$1"
    for name in workflow profiles examples; do cp -r "$ROOT/$name" "$1/"; done; mkdir -p "$1/config"
}

time_it() {  # time_it NAME DIR COMMAND
    local name=$1 dir=$2 cmd=$3
    (cd "$dir" && hyperfine --warmup "$WARMUP" --runs "$RUNS" -n "$name" \
        --export-json "$OUT/$name.json" --export-markdown "$OUT/$name.md" "$cmd")
}

{
    echo "date: $(date -u +%FT%TZ)"
    echo "nproc: $(nproc)"
    echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')"
    echo "snakemake: $(snakemake --version)"
    echo "python: $(python --version 2>&1 | cut -d' ' -f2)"
    echo "hyperfine: $(hyperfine --version | cut -d' ' -f2)"
    echo "attnbench commit: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$ROOT" diff --quiet HEAD -- src workflow config profiles 2>/dev/null || echo ' (+ uncommitted changes)')"
    echo "shapes: $N"
} | tee "$OUT/machine.txt"

step "0. smoke: the real workflow on $SMOKE shapes"
copy_workflow "$WORK/smoke"
python "$HELPER" config "$N" "$WORK/smoke/config/config.yaml" --first "$SMOKE"
start=$(date +%s)
(cd "$WORK/smoke" && "${SM[@]}" >"$OUT/smoke_run.log" 2>&1) || { tail -30 "$OUT/smoke_run.log"; fail "real run"; }
echo "real run: $(grep -o '[0-9]* of [0-9]* steps (100%) done' "$OUT/smoke_run.log") in $(( $(date +%s) - start )) s"
(cd "$WORK/smoke" && "${SM[@]}" --dry-run 2>&1) | grep -q "Nothing to be done" || fail "smoke rerun is not a no-op"
(cd "$WORK/smoke" && "${SM[@]}" --summary 2>/dev/null | python "$HELPER" check-summary $((2 * SMOKE + 10))) || fail "smoke summary"

step "1. (a) dry run, fresh copy, $N shapes"
WF=$WORK/wf
copy_workflow "$WF"
python "$HELPER" config "$N" "$WF/config/config.yaml"
(cd "$WF" && "${SM[@]}" --dry-run 2>&1 | sed -n '/^Job stats/,/^total/p')
time_it dryrun_fresh "$WF" "${SM[*]} --dry-run"

step "2.i real jobs for the first $REAL shapes, fingerprint and calibration"
real_targets=(results/env/fingerprint.json results/env/ceilings.json)
for name in $(python -c "import yaml,sys; print(*[s['name'] for s in yaml.safe_load(open(sys.argv[1]))['shapes'][:int(sys.argv[2])]])" "$WF/config/config.yaml" "$REAL"); do
    real_targets+=("results/bench/$name.json" "results/compare/$name.json")
done
start=$(date +%s)
# Targets go before --resources, which takes several values.
(cd "$WF" && snakemake "${real_targets[@]}" --cores 1 --resources gpu=1 >"$OUT/real_jobs.log" 2>&1) \
    || { tail -30 "$OUT/real_jobs.log"; fail "real jobs"; }
echo "$(grep -o '[0-9]* of [0-9]* steps (100%) done' "$OUT/real_jobs.log" || echo 'nothing to do') in $(( $(date +%s) - start )) s"
(cd "$WF" && python "$HELPER" snapshot-metadata "$OUT/real_metadata.json" "${real_targets[@]}")

step "2.ii placeholders for the other outputs"
(cd "$WF" && "${SM[@]}" --summary 2>/dev/null | python "$HELPER" placeholders)

step "2.iii snakemake --touch --forceall"
start=$(date +%s)
(cd "$WF" && "${SM[@]}" --touch --forceall >"$OUT/touch.log" 2>&1) || { tail -30 "$OUT/touch.log"; fail "touch"; }
echo "$(grep -o '[0-9]* of [0-9]* steps (100%) done' "$OUT/touch.log") in $(( $(date +%s) - start )) s"

step "2.iv checks"
(cd "$WF" && python "$HELPER" check-metadata "$OUT/real_metadata.json") || fail "touch wrote other metadata than the real run"
(cd "$WF" && "${SM[@]}" --summary 2>/dev/null | python "$HELPER" check-summary $((2 * N + 10))) || fail "summary"
for change in input code; do
    n=$(cd "$WF" && { "${SM[@]}" --list-changes "$change" 2>/dev/null | grep -c '^results/' || true; })
    echo "--list-changes $change: $n outputs"
    [[ $n == 0 ]] || fail "--list-changes $change"
done
n=$(cd "$WF" && { "${SM[@]}" --list-changes params 2>/dev/null | grep -c '^results/' || true; })
echo "--list-changes params: $n outputs (Snakemake 9.27 lists every output with recorded params; see header)"
(cd "$WF" && "${SM[@]}" --dry-run >"$OUT/dryrun_finished.log" 2>&1)
tail -2 "$OUT/dryrun_finished.log"
grep -q "Nothing to be done" "$OUT/dryrun_finished.log" || fail "the finished run is not a no-op"
! grep -q "missing provenance/metadata" "$OUT/dryrun_finished.log" || fail "jobs without metadata"

step "3. (b) dry run and (c) no-op rerun, finished run, $N shapes"
time_it dryrun_finished "$WF" "${SM[*]} --dry-run"
time_it rerun_noop "$WF" "${SM[*]}"
(cd "$WF" && "${SM[@]}" 2>&1 | tail -1)

step "4. control: one shape's dim changed under the same name"
changed=$(python "$HELPER" mutate "$WF/config/config.yaml" "$WORK/changed.yaml")
echo "changed: $changed"
(cd "$WF" && "${SM[@]}" --dry-run --configfile "$WORK/changed.yaml" >"$OUT/control.log" 2>&1)
stats=$(sed -n '/^Job stats/,/^total/p' "$OUT/control.log")
echo "$stats"
for rule in benchmark compare report all; do
    grep -Eq "^$rule +1$" <<<"$stats" || fail "control: expected exactly one $rule job"
done
grep -Eq "^total +4$" <<<"$stats" || fail "control: expected 4 jobs"
grep -q "results/bench/$changed.json" "$OUT/control.log" || fail "control: wrong shape"
grep -q "Params have changed since last execution" "$OUT/control.log" || fail "control: reason"
(cd "$WF" && "${SM[@]}" --dry-run 2>&1) | grep -q "Nothing to be done" || fail "finished run changed by the control"

step "results ($OUT)"
cat "$OUT/dryrun_fresh.md"
tail -n +3 "$OUT/dryrun_finished.md"
tail -n +3 "$OUT/rerun_noop.md"
python - "$OUT" <<'EOF'
import json, sys
for name in ("dryrun_fresh", "dryrun_finished", "rerun_noop"):
    r = json.load(open(f"{sys.argv[1]}/{name}.json"))["results"][0]
    verdict = "met" if r["max"] <= 10 else ("met on the mean" if r["mean"] <= 10 else "MISSED")
    print(f"{name:16s} mean {r['mean']:.2f} s +- {r['stddev']:.2f}, max {r['max']:.2f} s: <= 10 s {verdict}")
EOF
