"""Command line: the workflow's CUDA jobs run through here so the rule can set their environment first."""

from __future__ import annotations

import argparse
import json
import sys

from attnbench import io


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="attnbench", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    for name, help_text in (
        ("fingerprint", "record the environment (results/env/fingerprint.json)"),
        ("calibrate", "measure matmul and copy ceilings (results/env/ceilings.json)"),
        ("benchmark", "measure every candidate of one shape (results/bench/NAME.json)"),
    ):
        sub = commands.add_parser(name, help=help_text)
        sub.add_argument("--spec", required=True, help="JSON job specification (the rule's params)")
        sub.add_argument("--out", required=True)
        sub.add_argument("--schema", help="JSON schema the output must match")
    args = parser.parse_args(argv)
    spec = json.loads(args.spec)
    try:
        if args.command == "fingerprint":
            from attnbench import env, lock

            document = env.fingerprint(spec["device"], lock.apply(spec["lock"]))
        elif args.command == "calibrate":
            from attnbench.calibrate import measure_ceilings

            document = measure_ceilings(spec["device"], spec["dtypes"], spec["settings"], spec["lock"])
        else:
            from attnbench.bench import run_shape

            document = run_shape(spec)
        io.write_json(args.out, document, args.schema)
    except (RuntimeError, io.ResultFileError) as exc:
        print(f"attnbench {args.command}: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
