"""How far off float64 do the built-ins and the example kernels land? The numbers behind check_output's
per-dtype bounds (attnbench.workloads: ROW_TOLERANCE, ELEMENT_ATOL, ELEMENT_RTOL; issue 29).

    python benchmarks/error_bounds.py --device cpu  --out /tmp/error-bounds-cpu.json > docs/validation/error-bounds-cpu.txt
    python benchmarks/error_bounds.py --device cuda --out /tmp/error-bounds-cuda.json > docs/validation/error-bounds-cuda.txt
    python benchmarks/error_bounds.py --device cuda --config examples/decode.yaml examples/triton_flash.yaml

For every shape of each config (on the CPU its `cpu:` section's shapes when it has one, else its own),
every dtype (float32, bfloat16, float16: those the device's SDPA computes), forward and forward plus
backward, every candidate (the built-ins, the config's own and the example kernels; flex only on CUDA
unless named, it compiles for half a minute a shape on a CPU) is built once on the standard inputs
(attnbench.workloads.make_inputs) and called, then the hard set (hard_inputs) is written into its own
tensors in place (refill_hard_inputs, refill_layout), as the benchmark does, and it is called again. Each
output is checked as the benchmark checks it (inspect_output), with a few element statistics more.

Prints, per dtype, candidate and input set, the worst of each over every shape, mode and output (out, dq,
dk, dv), and where it was:

* norm: ||got - want|| / ||want||, against the norm-wise tolerance (DEFAULT_TOLERANCE);
* row: the worst row's relative error (ROW_FLOOR below), its bound (ROW_TOLERANCE) and the margin
  (bound / worst);
* elem: the worst |got - want| / (ELEMENT_ATOL x its row's RMS + ELEMENT_RTOL x |want|), 1 at the
  bound, and the margin (1 / it);
* |err|/rms: the atol an element bound with no rtol would need (in units of the element's row's RMS
  element, as ELEMENT_ATOL is); rtol@atol: the rtol needed with the chosen atol; atol@rtol: the atol
  needed with the chosen rtol; |e|/|w|: the largest relative error of the elements at least their row's
  RMS in size; row@floor: the worst row's error were ROW_FLOOR each of FLOORS;
* flagged: checks that the benchmark would call incorrect (a row, an element, or the norm-wise error);
  every one is listed below the table with its reason.

The JSON (--out) holds every check, the table and the bounds used.
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import json
import math
import re
import sys
import time
import traceback
import warnings
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))  # the example kernels: examples.kernels:naive_attention and the others

import torch

from attnbench import candidates, presets, workloads
from attnbench.workloads import (
    DEFAULT_TOLERANCE,
    ELEMENT_ATOL,
    ELEMENT_RTOL,
    ROW_FLOOR,
    ROW_TOLERANCE,
    Shape,
    Workload,
    bounds_for,
    in_layout,
    inputs_in_layout,
    inspect_output,
    make_inputs,
    reference,
    refill_hard_inputs,
    refill_layout,
)

DTYPES = ("float32", "bfloat16", "float16")
MODES = ("forward", "forward_backward")
EXAMPLE_KERNELS = (
    "examples.kernels:naive_attention",
    "examples.kernels:sdpa_with_extra_heads",
    "examples.decode_kernels:paged_decode",
    "examples.decode_kernels:fp8_decode",
)
CUDA_EXAMPLE_KERNELS = ("examples.triton_flash:attention", "examples.triton_flash:attention_bshd")
SETS = ("standard", "hard")
# How a swept key shows in a shape's name (attnbench.config's names)
SWEEP_NAMES = {
    "batch": "b",
    "seq": "s",
    "cache_lens": "cache",
    "seq_lens": "docs",
    "page_size": "page",
    "kv_dtype": "",
}
# ROW_FLOORs the worst row is also measured at, to choose it (row_at_floor_*)
FLOORS = (0.1, 0.25, 0.5, 1.0)


def shapes_of(path: Path, device: str) -> tuple[list[dict[str, Any]], list[str]]:
    """A config's shapes (sweeps expanded, presets applied) and candidates for `device`: on the CPU its
    `cpu:` section's where it has them. (attnbench.config would do it, but imports Snakemake, which a
    GPU machine may lack.)"""
    loaded = yaml.safe_load(path.read_text())
    section = (loaded.get("cpu") or {}) if device == "cpu" else {}
    view = {**loaded, **{key: section[key] for key in ("shapes", "candidates") if key in section}}
    shapes = []
    for entry in view["shapes"]:
        if "sweep" not in entry:
            shapes.append(presets.apply(entry))
            continue
        given = entry["sweep"]
        axes = presets.sweep(given) if isinstance(given, str) else dict(given)
        base = {key: value for key, value in entry.items() if key != "sweep"}
        for combination in itertools.product(*(list(enumerate(values)) for values in axes.values())):
            parts = [base["name"]]
            for key, (index, value) in zip(axes, combination):
                shown = (
                    value if isinstance(value, (int, float, str)) and not isinstance(value, bool) else index
                )
                parts.append(re.sub(r"[^A-Za-z0-9.-]", "", f"{SWEEP_NAMES.get(key, key)}{shown}"))
            made = {
                **base,
                **{key: value for key, (_, value) in zip(axes, combination)},
                "name": "_".join(parts),
            }
            shapes.append(presets.apply(made))
    return shapes, list(view.get("candidates", []))


def computes(dtype: str, device: str) -> bool:
    """Whether this device's SDPA runs `dtype` at all."""
    try:
        q = torch.randn(1, 1, 4, 8, device=device).to(getattr(torch, dtype))
        torch.nn.functional.scaled_dot_product_attention(q, q, q)
        return True
    except RuntimeError:
        return False


def extra_stats(got: Any, want: Any, dtype: str, shape: Shape) -> dict[str, float]:
    """For choosing ELEMENT_ATOL and ELEMENT_RTOL (atol in units of each row's RMS element, its norm
    floored at ROW_FLOOR x the tensor's RMS row norm, as inspect_output has it): the atol an element
    bound needs with no rtol, the rtol it needs with the chosen atol, the atol it needs with the chosen
    rtol, and the largest relative error of the elements at least their row's RMS in size; for choosing
    ROW_FLOOR, the worst row's error at each of FLOORS (rows are along the last dim in every layout)."""
    if not want.numel():
        return {key: 0.0 for key in STATS[3:]}
    bounds = bounds_for(dtype, shape)
    err = (got.detach().to(want.device, torch.float64) - want).abs_()
    size = want.abs()
    width = want.shape[-1]
    err_rows = torch.linalg.vector_norm(err, dim=-1)
    want_rows = torch.linalg.vector_norm(want, dim=-1)
    typical = torch.linalg.vector_norm(want).item() / math.sqrt(want_rows.numel())
    unit = (want_rows.clamp_min(ROW_FLOOR * typical or 1.0) / math.sqrt(width)).unsqueeze(-1)
    stats = {
        "abs_over_rms": (err / unit).max().item(),
        "rtol_needed": ((err - bounds.atol * unit).clamp_min_(0) / size)
        .nan_to_num_(0.0, 0.0, 0.0)
        .max()
        .item(),
        "atol_needed": ((err - bounds.rtol * size).clamp_min_(0) / unit).max().item(),
    }
    large = size >= unit
    stats["rel_of_large"] = (err[large] / size[large]).max().item() if large.any() else 0.0
    for floor in FLOORS:
        stats[f"row_at_floor_{floor:g}"] = (
            (err_rows / want_rows.clamp_min(floor * typical or 1.0)).max().item()
        )
    return stats


def run_shape(
    entry: dict[str, Any], dtype: str, mode: str, names: list[str], device: str, seed: int
) -> list[dict[str, Any]]:
    """Every candidate on one shape, dtype and mode, on the standard and the hard input set."""
    shape = Shape.from_config(entry)
    backward = mode == "forward_backward"
    torch_dtype = getattr(torch, dtype)
    workload = Workload.of(shape, dtype, device, mode=mode)
    inputs = make_inputs(shape, torch_dtype, device, seed, backward)
    built: dict[str, tuple[Any, tuple[Any, ...], str]] = {}
    records = []

    def record(name: str, status: str, **fields: Any) -> None:
        records.append(
            {"shape": shape.name, "dtype": dtype, "mode": mode, "candidate": name, "status": status, **fields}
        )

    for name in names:
        try:
            declared = candidates.declaration(name, workload)
            own = replace(workload, layout=declared.layout)
            candidates.check_layout(name, declared.layout, own)
            tensors = inputs_in_layout(inputs, declared.layout, workload)
            with warnings.catch_warnings(record=True) as seen:
                warnings.simplefilter("always")
                try:
                    kernel = candidates.build(name, own, tensors[:3])
                    built[name] = (kernel, tensors, declared.layout)
                except Exception as exc:
                    declined = candidates.unsupported_reason(
                        name, device, exc, [str(w.message) for w in seen]
                    )
                    if declined is None:
                        raise
                    record(name, "unsupported", reason=declined[0])
        except candidates.Unsupported as exc:
            record(name, "unsupported", reason=str(exc)[:160])
        except Exception as exc:
            record(name, "error", reason=f"{type(exc).__name__}: {str(exc).strip()[:160]}")

    for label in SETS:
        if label == "hard":
            refill_hard_inputs(inputs, seed, shape)
            for _, tensors, layout in built.values():
                refill_layout(tensors, inputs, layout, workload)
        expected = reference(shape, *inputs[:3], inputs[3] if backward else None)
        for name, (kernel, tensors, layout) in list(built.items()):
            began = time.perf_counter()
            with warnings.catch_warnings(record=True) as seen:
                warnings.simplefilter("always")
                try:
                    q, k, v, dout = tensors
                    out = kernel(q, k, v)
                    result = (out, *torch.autograd.grad(out, (q, k, v), dout)) if backward else out
                    if device == "cuda":
                        torch.cuda.synchronize()
                except Exception as exc:
                    declined = candidates.unsupported_reason(
                        name, device, exc, [str(w.message) for w in seen]
                    )
                    if declined is not None:
                        record(name, "unsupported", set=label, reason=declined[0])
                    else:
                        record(
                            name, "error", set=label, reason=f"{type(exc).__name__}: {str(exc).strip()[:160]}"
                        )
                        traceback.print_exc()
                    del built[name]
                    continue
            wanted = in_layout(expected, layout, workload)
            checked = inspect_output(result, wanted, backward, torch_dtype)
            got = list(result) if backward else [result]
            per_tensor = []
            for part, value, want in zip(checked.tensors, got, wanted):
                per_tensor.append(
                    {
                        "output": part.name,
                        "norm_error": part.norm_error,
                        "worst_row_error": part.worst_row_error,
                        "element_ratio": part.element_ratio,
                        "rows_over": part.rows_over,
                        "elements_over": part.elements_over,
                        "norm_margin": checked.bounds.norm / max(part.norm_error, 1e-300),
                        "row_margin": checked.bounds.row / max(part.worst_row_error, 1e-300),
                        "element_margin": 1.0 / max(part.element_ratio, 1e-300),
                        **extra_stats(value, want, dtype, shape),
                    }
                )
            flagged = checked.reason or (
                None
                if checked.norm_error <= checked.bounds.norm
                else f"norm-wise error {checked.norm_error:.3g} exceeds {checked.bounds.norm:g}"
            )
            record(
                name,
                "flagged" if flagged else "ok",
                set=label,
                layout=layout,
                reason=flagged,
                seconds=time.perf_counter() - began,
                norm_error=checked.norm_error,
                worst_row_error=checked.worst_row_error,
                worst_row=checked.worst_row,
                element_ratio=checked.element_ratio,
                element_violations=checked.element_violations,
                bounds=asdict(checked.bounds) if checked.bounds else None,
                tensors=per_tensor,
            )
            del result, got, wanted
        del expected
    return records


STATS = (
    "norm_error",
    "worst_row_error",
    "element_ratio",
    "abs_over_rms",
    "rtol_needed",
    "atol_needed",
    "rel_of_large",
    *(f"row_at_floor_{floor:g}" for floor in FLOORS),
)
MARGINS = ("norm_margin", "row_margin", "element_margin")


def summarise(records: list[dict[str, Any]], by_output: bool = False) -> list[dict[str, Any]]:
    """The worst of each statistic and the smallest margin to its bound (each check's own bounds: fp8
    queries widen them) per (dtype, candidate, input set), or per (dtype, output, input set) over every
    candidate (`by_output`), and where each was. `checks` counts outputs checked, `flagged` those that
    the benchmark would call incorrect."""
    rows: dict[tuple[str, str, str], dict[str, Any]] = {}
    for r in records:
        if r["status"] not in ("ok", "flagged"):
            continue
        for t in r["tensors"]:
            key = (r["dtype"], t["output"] if by_output else r["candidate"], r["set"])
            row = rows.setdefault(
                key,
                {
                    "checks": 0,
                    "flagged": 0,
                    **{s: (0.0, "") for s in STATS},
                    **{m: (math.inf, "") for m in MARGINS},
                },
            )
            row["checks"] += 1
            row["flagged"] += bool(t["rows_over"] or t["elements_over"] or t["norm_margin"] < 1)
            where = f"{r['shape']} {r['mode'].replace('forward_backward', 'fwd+bwd')} " + (
                short(r["candidate"]) if by_output else t["output"]
            )
            for stat in STATS:
                if t[stat] > row[stat][0] or math.isnan(t[stat]):
                    row[stat] = (t[stat], where)
            for margin in MARGINS:
                if t[margin] < row[margin][0] or math.isnan(t[margin]):
                    row[margin] = (t[margin], where)
    return [
        {
            "dtype": dtype,
            "candidate" if not by_output else "output": name,
            "set": label,
            "checks": row["checks"],
            "flagged": row["flagged"],
            **{stat: row[stat][0] for stat in (*STATS, *MARGINS)},
            **{f"{stat}_at": row[stat][1] for stat in (*STATS, *MARGINS)},
        }
        for (dtype, name, label), row in sorted(rows.items())
    ]


def short(name: str) -> str:
    return name.replace("examples.", "ex.").replace("decode_kernels", "dk").replace("triton_flash", "tf")[:34]


def print_table(table: list[dict[str, Any]], by_output: bool = False) -> None:
    """The worst cases, the margins (bound / worst: below 1 is flagged), and the statistics to choose
    the bounds by."""
    label = "output" if by_output else "candidate"
    header = (
        f"{'dtype':9} {label:34} {'set':8} {'n':>4} {'flag':>4} {'norm':>8} {'margin':>6} {'row':>8}"
        f" {'margin':>6} {'elem':>7} {'margin':>6} {'|err|/rms':>9} {'rtol@atol':>9} {'atol@rtol':>9}"
        f" {'|e|/|w|':>8} {'row@floor ' + '/'.join(f'{f:g}' for f in FLOORS):>36}"
    )
    print(header)
    print("-" * len(header))
    for t in table:
        floors = "/".join(f"{t[f'row_at_floor_{f:g}']:.2e}" for f in FLOORS)
        print(
            f"{t['dtype']:9} {short(t[label]):34} {t['set']:8} {t['checks']:>4} {t['flagged']:>4}"
            f" {t['norm_error']:>8.2e} {t['norm_margin']:>6.1f} {t['worst_row_error']:>8.2e}"
            f" {t['row_margin']:>6.1f} {t['element_ratio']:>7.3f} {t['element_margin']:>6.1f}"
            f" {t['abs_over_rms']:>9.2e} {t['rtol_needed']:>9.2e} {t['atol_needed']:>9.2e}"
            f" {t['rel_of_large']:>8.2e} {floors:>36}"
        )


def print_where(table: list[dict[str, Any]]) -> None:
    print()
    print("where each smallest margin was (shape, mode, output):")
    for t in table:
        print(
            f"  {t['dtype']:9} {short(t['candidate']):34} {t['set']:8} norm: {t['norm_margin_at']};"
            f" row: {t['row_margin_at']}; elem: {t['element_margin_at']}"
        )


def print_by_dtype(table: list[dict[str, Any]]) -> None:
    """Per dtype, the worst over every candidate and set: what the bounds must hold."""
    print()
    print("per dtype, worst of all (ROW_TOLERANCE, ELEMENT_ATOL, ELEMENT_RTOL in attnbench.workloads):")
    for dtype in DTYPES:
        rows = [t for t in table if t["dtype"] == dtype]
        if not rows:
            continue
        worst = {stat: max(t[stat] for t in rows) for stat in STATS}
        least = {margin: min(t[margin] for t in rows) for margin in MARGINS}
        print(
            f"  {dtype:9} norm {worst['norm_error']:.2e} (DEFAULT_TOLERANCE {DEFAULT_TOLERANCE[dtype]:g}, margin"
            f" {least['norm_margin']:.2f}); row {worst['worst_row_error']:.2e} (ROW_TOLERANCE"
            f" {ROW_TOLERANCE[dtype]:g}, margin {least['row_margin']:.2f}); element: worst ratio"
            f" {worst['element_ratio']:.3f} (margin {least['element_margin']:.2f}), |err|/rms"
            f" {worst['abs_over_rms']:.2e}, rtol needed at ELEMENT_ATOL {ELEMENT_ATOL[dtype]:g}:"
            f" {worst['rtol_needed']:.2e}, atol needed at ELEMENT_RTOL {ELEMENT_RTOL[dtype]:g}:"
            f" {worst['atol_needed']:.2e}; worst row at floors {', '.join(f'{f:g}' for f in FLOORS)}: "
            + ", ".join(f"{worst[f'row_at_floor_{f:g}']:.2e}" for f in FLOORS)
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", nargs="+", default=["config/config.yaml"], help="configs whose shapes to run")
    parser.add_argument(
        "--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu"
    )
    parser.add_argument("--dtypes", nargs="+", default=list(DTYPES), choices=DTYPES)
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    parser.add_argument(
        "--candidates", nargs="+", help="instead of the built-ins, the configs' and the examples"
    )
    parser.add_argument("--only", help="run the shapes whose name matches this regular expression")
    parser.add_argument("--grid-points", type=int, default=2, help="configurations of a grid kernel to run")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="the JSON to write (rewritten after every shape)")
    parser.add_argument("--budget-s", type=float, help="start no shape after this many seconds")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")
    device = args.device
    dtypes = [d for d in args.dtypes if computes(d, device)]
    print(
        f"torch {torch.__version__} on {torch.cuda.get_device_name() if device == 'cuda' else 'cpu'};"
        f" dtypes {', '.join(dtypes)}; bounds ROW_TOLERANCE {ROW_TOLERANCE}, ELEMENT_ATOL {ELEMENT_ATOL},"
        f" ELEMENT_RTOL {ELEMENT_RTOL}, ROW_FLOOR {ROW_FLOOR}, HARD_SCORE {workloads.HARD_SCORE},"
        f" HARD_PEAK {workloads.HARD_PEAK}"
    )
    records: list[dict[str, Any]] = []
    began = time.perf_counter()
    for path in args.config:
        shapes, listed = shapes_of(ROOT / path, device)
        builtins = [b for b in candidates.BUILTIN if device == "cuda" or b != "flex"]
        examples = list(EXAMPLE_KERNELS) + (list(CUDA_EXAMPLE_KERNELS) if device == "cuda" else [])
        names = args.candidates or list(dict.fromkeys([*builtins, *listed, *examples]))
        expanded = []
        for name in dict.fromkeys(names):
            configured = candidates.expand([name])
            expanded += configured[: args.grid_points] if len(configured) > 1 else configured
        for entry in shapes:
            if args.only and not re.search(args.only, entry["name"]):
                continue
            for dtype in dtypes:
                for mode in args.modes:
                    if args.budget_s and time.perf_counter() - began > args.budget_s:
                        print(f"{path}: {entry['name']} {dtype} {mode}: not run, past --budget-s", flush=True)
                        continue
                    started = time.perf_counter()
                    try:
                        done = run_shape(entry, dtype, mode, expanded, device, args.seed)
                    except Exception as exc:  # the reference itself (out of memory on a long shape)
                        done = [
                            {
                                "shape": entry["name"],
                                "dtype": dtype,
                                "mode": mode,
                                "candidate": "*",
                                "status": "error",
                                "reason": f"{type(exc).__name__}: {str(exc).strip()[:160]}",
                            }
                        ]
                    if device == "cuda":
                        torch.cuda.empty_cache()
                    records += done
                    statuses = {}
                    for r in done:
                        statuses.setdefault(r["status"], set()).add(short(r["candidate"]))
                    print(
                        f"{path}: {entry['name']} {dtype} {mode}: {time.perf_counter() - started:.1f} s; "
                        + "; ".join(f"{s}: {', '.join(sorted(n))}" for s, n in sorted(statuses.items())),
                        flush=True,
                    )
                    if args.out:
                        write(args.out, args.config, device, records)
    table = summarise(records)
    outputs = summarise(records, by_output=True)
    print()
    print_table(table)
    print()
    print_table(outputs, by_output=True)
    print_by_dtype(table)
    print_where(table)
    flagged = [r for r in records if r["status"] == "flagged"]
    print()
    print(f"flagged: {len(flagged)}")
    for r in flagged:
        print(f"  {r['shape']} {r['dtype']} {r['mode']} {r['candidate']} ({r['set']}): {r['reason']}")
    errors = [r for r in records if r["status"] == "error"]
    print(f"errors: {len(errors)}")
    for r in errors:
        print(f"  {r['shape']} {r['dtype']} {r['mode']} {r['candidate']}: {r['reason']}")
    print(f"{time.perf_counter() - began:.0f} s in all")
    if args.out:
        write(args.out, args.config, device, records, table=table, by_output=outputs)
        print(f"wrote {args.out}")


def write(out: str, configs: list[str], device: str, records: list[dict[str, Any]], **tables: Any) -> None:
    """The JSON: what ran where, the bounds, every check, and the tables."""
    document = {
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
        "configs": configs,
        "bounds": {
            "DEFAULT_TOLERANCE": DEFAULT_TOLERANCE,
            "ROW_TOLERANCE": ROW_TOLERANCE,
            "ELEMENT_ATOL": ELEMENT_ATOL,
            "ELEMENT_RTOL": ELEMENT_RTOL,
            "ROW_FLOOR": ROW_FLOOR,
            "HARD_SCORE": workloads.HARD_SCORE,
            "HARD_PEAK": workloads.HARD_PEAK,
        },
        **tables,
        "records": records,
    }
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(document, indent=1, default=str) + "\n")


if __name__ == "__main__":
    main()
