"""Do two runs' medians agree? Issue 21 asks that the faster pipeline measure what the slower one did.

    python benchmarks/same_medians.py BEFORE/summary.csv AFTER/summary.csv [--json OUT.json]

For every (shape, candidate) measured `ok` in both summaries (the report's summary.csv): the ratio of
the medians (after / before), whether the two 95% CIs overlap, and whether the after median lies
inside the before CI. Two runs on fresh machines differ by the machine too (another H200, its clocks
and temperature): a CI is the uncertainty of one run's median on its machine, so disagreement beyond
it measures run-to-run and machine-to-machine spread as much as any change in the pipeline.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

from attnbench import files

# A shape's name does not say its dtype, mode or device: a pair is the same measurement in both runs.
KEYS = ["shape", "candidate", "dtype", "mode", "device"]
COLUMNS = ["median_ms", "ci95_lo_ms", "ci95_hi_ms"]
NOTED = 0.02  # pairs further apart than this are listed


def pair(before: pd.DataFrame, after: pd.DataFrame) -> pd.DataFrame:
    ok = [frame.loc[frame["status"] == "ok", KEYS + COLUMNS] for frame in (before, after)]
    rows = ok[0].merge(ok[1], on=KEYS, suffixes=("_before", "_after"))
    rows["ratio"] = rows["median_ms_after"] / rows["median_ms_before"]
    rows["cis_overlap"] = (rows["ci95_lo_ms_after"] <= rows["ci95_hi_ms_before"]) & (
        rows["ci95_lo_ms_before"] <= rows["ci95_hi_ms_after"]
    )
    rows["after_in_before_ci"] = rows["median_ms_after"].between(
        rows["ci95_lo_ms_before"], rows["ci95_hi_ms_before"]
    )
    return rows


def summary(rows: pd.DataFrame) -> dict[str, float | int]:
    deviation = (rows["ratio"] - 1).abs()
    return {
        "pairs": len(rows),
        "cis_overlap": int(rows["cis_overlap"].sum()),
        "after_in_before_ci": int(rows["after_in_before_ci"].sum()),
        "ratio_median": float(rows["ratio"].median()),
        "ratio_min": float(rows["ratio"].min()),
        "ratio_max": float(rows["ratio"].max()),
        "within_2pct": int((deviation <= NOTED).sum()),
        "within_5pct": int((deviation <= 0.05).sum()),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    parser.add_argument("--json", type=Path, help="also write the pairs and the summary here")
    args = parser.parse_args(argv)
    rows = pair(pd.read_csv(args.before), pd.read_csv(args.after))
    if rows.empty:
        print("same_medians: no (shape, candidate) is ok in both", file=sys.stderr)
        return 2
    numbers = summary(rows)
    apart = rows[(rows["ratio"] - 1).abs() > NOTED]
    shown = ["shape", "candidate", "median_ms_before", "median_ms_after", "ratio", "cis_overlap"]
    options = ("display.width", 200, "display.max_rows", None, "display.max_columns", None)
    with pd.option_context(*options, "display.float_format", "{:.4f}".format):
        print(f"pairs whose medians differ by more than {NOTED:.0%} (every pair is in --json):")
        print(apart[shown].to_string(index=False) if len(apart) else "none")
    print(
        f"\n{numbers['pairs']} pairs: CIs overlap {numbers['cis_overlap']}, after median inside the before CI"
        f" {numbers['after_in_before_ci']}; after/before median {numbers['ratio_median']:.4f}"
        f" (min {numbers['ratio_min']:.4f}, max {numbers['ratio_max']:.4f}); within 2%: {numbers['within_2pct']},"
        f" within 5%: {numbers['within_5pct']}"
    )
    if args.json:
        # JSON has no NaN or infinity (a blank CI, a zero median): null, as in every result file
        pairs = files.jsonable(rows.to_dict("records"))
        args.json.write_text(
            json.dumps({"summary": numbers, "pairs": pairs}, indent=1, allow_nan=False) + "\n"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
