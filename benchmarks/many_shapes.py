"""Helpers for benchmarks/many_shapes.sh (the 1,000-shape scale check); see that script's header.

    python benchmarks/many_shapes.py config N PATH [--first K]
        Write a CPU config with N distinct small shapes (or only the first K of them) to PATH.
    python benchmarks/many_shapes.py mutate SRC DST
        Copy config SRC to DST with one shape's head dim changed under the same name (a control:
        exactly that shape's jobs and the report must become outdated).
    python benchmarks/many_shapes.py placeholders < SUMMARY
        Read `snakemake --summary` from stdin and write a placeholder file for every output whose
        status is `missing` (relative to the working directory). Prints how many it wrote.
    python benchmarks/many_shapes.py check-summary N_OUTPUTS < SUMMARY
        Fail unless the summary lists N_OUTPUTS outputs, every one with status `ok` and plan
        `no update` (nothing missing, no params/input/code change, no updated input).
    python benchmarks/many_shapes.py snapshot-metadata OUT FILE...
        Copy the Snakemake metadata records of the given output files to OUT (JSON).
    python benchmarks/many_shapes.py check-metadata SNAPSHOT
        Compare the records saved by snapshot-metadata (written by a real run of the job) with
        the records now in .snakemake/metadata (rewritten by `snakemake --touch`): every field but
        the timestamps must be identical. Also fails if any output lacks a record.

Standard library plus PyYAML (which Snakemake itself depends on); no attnbench import.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from base64 import urlsafe_b64encode
from pathlib import Path

import yaml

METADATA = Path(".snakemake/metadata")
# Fields of a metadata record that describe when and in which process the job ran, not what it
# was: job_hash is hash(job) of the in-memory Job object (identity-based, differs every process).
TIME_FIELDS = {"starttime", "endtime", "job_hash"}


def shapes(n: int) -> list[dict]:
    """n distinct small shapes: 16 (batch, heads, dim, causal) combinations per sequence length."""
    out = []
    for seq in itertools.count(16, 8):
        for batch, heads, dim, causal in itertools.product((1, 2), (2, 4), (16, 32), (False, True)):
            name = f"b{batch}_h{heads}_s{seq}_d{dim}" + ("_causal" if causal else "")
            out.append(
                {"name": name, "batch": batch, "heads": heads, "seq": seq, "dim": dim, "causal": causal}
            )
            if len(out) == n:
                return out
    raise AssertionError("unreachable")


def config(n: int, first: int | None = None) -> dict:
    """The repository's CPU settings (config.yaml's `cpu:` section), timing cut down as in tests/."""
    return {
        "device": "cpu",
        "dtype": "float32",
        "candidates": ["flash", "efficient", "cudnn", "math", "examples.kernels:naive_attention"],
        "reference": "math",
        "timing": {"warmup": 1, "warmup_max_s": 0.2, "min_rounds": 6, "max_time_s": 1},
        "calibrate": {"matmul_size": 128, "copy_mb": 8, "rounds": 3},
        "shapes": shapes(n)[:first] if first else shapes(n),
    }


def summary_rows(text: str) -> list[dict]:
    lines = [line for line in text.splitlines() if "\t" in line]
    header, rows = lines[0].split("\t"), lines[1:]
    assert header[0] == "output_file", header
    return [dict(zip(header, row.split("\t"))) for row in rows]


def metadata_path(output: str) -> Path:
    name = urlsafe_b64encode(output.encode()).decode()
    assert len(name) < 255, f"{output}: metadata key is split into folders; not handled here"
    return METADATA / name


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("config")
    p.add_argument("n", type=int)
    p.add_argument("path", type=Path)
    p.add_argument("--first", type=int)
    p = sub.add_parser("mutate")
    p.add_argument("src", type=Path)
    p.add_argument("dst", type=Path)
    sub.add_parser("placeholders")
    p = sub.add_parser("check-summary")
    p.add_argument("n_outputs", type=int)
    p = sub.add_parser("snapshot-metadata")
    p.add_argument("out", type=Path)
    p.add_argument("files", nargs="+")
    p = sub.add_parser("check-metadata")
    p.add_argument("snapshot", type=Path)
    args = parser.parse_args()

    if args.cmd == "config":
        cfg = config(args.n, args.first)
        names = [s["name"] for s in cfg["shapes"]]
        assert len(set(names)) == len(names)
        args.path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        print(f"{args.path}: {len(names)} shapes")
    elif args.cmd == "mutate":
        cfg = yaml.safe_load(args.src.read_text())
        shape = cfg["shapes"][len(cfg["shapes"]) // 2]
        shape["dim"] *= 2
        args.dst.write_text(yaml.safe_dump(cfg, sort_keys=False))
        print(shape["name"])
    elif args.cmd == "placeholders":
        written = 0
        for row in summary_rows(sys.stdin.read()):
            if row["status"] == "missing":
                path = Path(row["output_file"])
                path.parent.mkdir(parents=True, exist_ok=True)
                # Not a result: only Snakemake's bookkeeping is measured. Never read by a job here.
                path.write_text(json.dumps({"placeholder": "benchmarks/many_shapes.sh"}) + "\n")
                written += 1
        print(f"wrote {written} placeholder outputs")
    elif args.cmd == "check-summary":
        rows = summary_rows(sys.stdin.read())
        bad = [r for r in rows if (r["status"], r["plan"]) != ("ok", "no update")]
        print(f"summary: {len(rows)} outputs, {len(rows) - len(bad)} ok / no update")
        for r in bad[:10]:
            print(f"  NOT UP TO DATE: {r['output_file']}: {r['status']}, {r['plan']}")
        missing = [r["output_file"] for r in rows if not metadata_path(r["output_file"]).exists()]
        print(f"metadata records: {len(rows) - len(missing)} of {len(rows)} outputs")
        for f in missing[:10]:
            print(f"  NO METADATA: {f}")
        if bad or missing or len(rows) != args.n_outputs:
            print(f"FAIL (expected {args.n_outputs} outputs)")
            return 1
    elif args.cmd == "snapshot-metadata":
        records = {f: json.loads(metadata_path(f).read_text()) for f in args.files}
        args.out.write_text(json.dumps(records, indent=1, sort_keys=True))
        print(f"saved the metadata records of {len(records)} outputs of the real run to {args.out}")
    elif args.cmd == "check-metadata":
        failed = False
        for f, real in json.loads(args.snapshot.read_text()).items():
            now = json.loads(metadata_path(f).read_text())
            diff = sorted(
                k for k in real.keys() | now.keys() if k not in TIME_FIELDS and real.get(k) != now.get(k)
            )
            same = "identical but for " + "/".join(sorted(TIME_FIELDS))
            verdict = "DIFFERS in " + ", ".join(diff) if diff else same
            print(f"  {f} ({real['rule']}): {verdict}")
            failed |= bool(diff)
        if failed:
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
