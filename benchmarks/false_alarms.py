"""False alarms of a finished run: every honest result attnbench called `incorrect` or `untrusted`.

    python benchmarks/false_alarms.py RUN_DIR [RUN_DIR ...] [--json OUT.json]

In the default config and examples/ every candidate is honest, so each such status is a false alarm
(issue 29's target: 0). Prints the statuses per candidate, every alarm with its reason, and what the
anti-cheat checks recorded (input sets, the profiled round, persisting-L2 resets, re-measurements)."""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

ALARMS = ("incorrect", "untrusted")


def tally(run: Path) -> dict:
    statuses: Counter = Counter()
    alarms, resets, remeasured, sets = [], 0, 0, Counter()
    for path in sorted((run / "results" / "bench").glob("*.json")):
        document = json.loads(path.read_text())
        sets[",".join((document.get("input_sets") or {}).get("checked", []))] += 1
        resets += ((document["timing"].get("persisting_l2") or {}).get("resets")) or 0
        for name, entry in document["candidates"].items():
            statuses[entry["status"]] += 1
            remeasured += bool(entry.get("remeasured"))
            if entry["status"] in ALARMS:
                alarms.append(
                    {"shape": document["shape"]["name"], "candidate": name, "reason": entry["reason"]}
                )
    return {
        "run": str(run),
        "results": sum(statuses.values()),
        "statuses": dict(statuses),
        "false_alarms": alarms,
        "input_sets": dict(sets),
        "persisting_l2_resets": resets,
        "remeasured": remeasured,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    found = [tally(run) for run in args.runs]
    for run in found:
        print(
            f"{run['run']}: {run['results']} results {run['statuses']}, false alarms {len(run['false_alarms'])}"
        )
        print(
            f"  input sets checked: {run['input_sets']}; persisting-L2 resets {run['persisting_l2_resets']};"
            f" re-measured {run['remeasured']}"
        )
        for alarm in run["false_alarms"]:
            print(f"  FALSE ALARM {alarm['shape']} {alarm['candidate']}: {alarm['reason']}")
    if args.json:
        args.json.write_text(json.dumps(found, indent=1))
    return 1 if any(run["false_alarms"] for run in found) else 0


if __name__ == "__main__":
    sys.exit(main())
