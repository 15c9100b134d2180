"""What FlexAttention's compilation costs per shape, and what reusing it across shapes would save
(issue 21: decide by the numbers which compile reuse to build).

Each policy runs in its own process with its own, empty Inductor and Triton cache directories (so no
policy inherits another's compiled kernels), over the same shapes in the same order:

  reset     what a benchmark job does today: torch._dynamo.reset(), then a fresh
            torch.compile(flex_attention, dynamic=False) per shape
  rerun     `reset` again on the cache directories `reset` left: a rerun of the sweep on the same
            machine (Inductor's FX graph cache and Triton's kernel cache on disk)
  keep      one torch.compile(flex_attention, dynamic=False) for every shape, no reset, the
            recompile limit raised: every shape still compiles, in a process whose dynamo state is
            warm
  dynamic   one torch.compile(flex_attention, dynamic=True), no reset: one graph for every length

Per shape and policy: the first call's wall time (BlockMask creation excluded, made before), and the
median of 30 timed calls (CUDA events), so that a policy that compiles less but runs another kernel
shows it. On a GPU machine:

    python3 benchmarks/flex_compile.py --json flex_compile.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# The default config's dense shapes with head dim 128 (config.yaml): batch x seq = 16,384 tokens.
SHAPES = [(batch, 16, 16384 // batch, 128, causal) for causal in (False, True) for batch in (32, 16, 8, 4, 2, 1)]
POLICIES = ("reset", "rerun", "keep", "dynamic")
CALLS = 30


def causal_mask(b, h, i, j):
    """One function for every shape: a new closure per shape would make dynamo recompile anyway."""
    return i >= j


def measure(policy: str) -> list[dict[str, float]]:
    """In this process: each shape's first-call time and median call time under `policy`."""
    import torch
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    limits = ("recompile_limit", "cache_size_limit", "accumulated_recompile_limit", "accumulated_cache_size_limit")
    for limit in limits:
        if hasattr(torch._dynamo.config, limit):
            setattr(torch._dynamo.config, limit, 1024)
    shared = torch.compile(flex_attention, dynamic=policy == "dynamic") if policy in ("keep", "dynamic") else None
    rows = []
    for batch, heads, seq, dim, causal in SHAPES:
        q, k, v = (torch.randn(batch, heads, seq, dim, device="cuda", dtype=torch.bfloat16) for _ in range(3))
        mask = None
        if causal:
            mask = create_block_mask(causal_mask, None, None, seq, seq, device="cuda")
        if shared is None:
            torch._dynamo.reset()
            fn = torch.compile(flex_attention, dynamic=False)
        else:
            fn = shared
        torch.cuda.synchronize()
        began = time.perf_counter()
        fn(q, k, v, block_mask=mask)
        torch.cuda.synchronize()
        first_s = time.perf_counter() - began
        times = []
        for _ in range(CALLS):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn(q, k, v, block_mask=mask)
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        times.sort()
        name = f"b{batch}_h{heads}_s{seq}_d{dim}{'_causal' if causal else ''}"
        rows.append({"shape": name, "first_call_s": first_s, "median_ms": times[len(times) // 2]})
        median = times[len(times) // 2]
        print(f"  {policy:8} {name:28} first call {first_s:6.2f} s  median {median:.4f} ms", file=sys.stderr)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="write every number here")
    parser.add_argument("--policy", choices=POLICIES, help=argparse.SUPPRESS)  # the child process
    args = parser.parse_args()
    if args.policy:
        json.dump(measure(args.policy), sys.stdout)
        return
    results = {}
    with tempfile.TemporaryDirectory() as caches:
        for policy in POLICIES:
            where = Path(caches) / ("reset" if policy == "rerun" else policy)
            env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(where / "inductor"), "TRITON_CACHE_DIR": str(where / "triton")}
            began = time.perf_counter()
            done = subprocess.run(
                [sys.executable, __file__, "--policy", policy], env=env, capture_output=True, text=True
            )
            for line in done.stderr.splitlines():
                if line.startswith("  ") or done.returncode:
                    print(line)
            if done.returncode:
                sys.exit(f"policy {policy} failed (exit {done.returncode})")
            rows = json.loads(done.stdout)
            results[policy] = {"process_s": time.perf_counter() - began, "shapes": rows}
    print(f"\n{'policy':8} {'process s':>9} {'first calls s':>13} {'median ms vs reset (worst)':>26}")
    base = {row["shape"]: row["median_ms"] for row in results["reset"]["shapes"]}
    for policy, found in results.items():
        first = sum(row["first_call_s"] for row in found["shapes"])
        worst = max((row["median_ms"] / base[row["shape"]] - 1 for row in found["shapes"]), key=abs)
        print(f"{policy:8} {found['process_s']:9.1f} {first:13.1f} {worst:+25.1%}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
