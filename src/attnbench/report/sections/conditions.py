"""How the numbers were taken: the conditions of each shape's measurement, and what one call ran."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pandas as pd

from attnbench import quality
from attnbench.documents import ShapeResult
from attnbench.formatting import DASH, num, pct
from attnbench.report.model import Block, Para, Section, Table
from attnbench.report.render import prose
from attnbench.report.words import FLAG, plural
from attnbench.results import Json


def conditions_section(benches: list[ShapeResult]) -> Section:
    """How each shape was timed: a median is only as good as the conditions it was taken under.

    The GPU clock columns appear only when some shape's clock was read, the host column only when
    the bench files record the host (older files do not), so a CPU run's table fits the page.
    """
    monitored = any(b.timing["clocks"]["source"] is not None for b in benches)
    with_host = any(b.host for b in benches)
    # Two tables, so that each fits a 1400 px window: how each shape was sampled, then what the
    # GPU's clock and the host did meanwhile.
    sampled: list[dict[str, tuple[str, bool]]] = []
    around: list[dict[str, tuple[str, bool]]] = []
    for bench in benches:
        timing, clocks, warmup = bench.timing, bench.timing["clocks"], bench.timing["warmup"]
        issues = quality.shape_issues(bench)
        discarded = "n/a" if clocks["source"] is None else str(clocks["discarded_rounds"])
        if clocks["source"] is not None and not timing.get("discard_throttled", True):
            discarded += " (discarding off)"
        settled = "yes" if warmup["settled"] else "no"
        missed = any(c.target_met is False for c in bench.candidates.values())
        shape = (bench.name, False)
        warmed = f"{warmup['rounds']} rounds, {warmup['seconds']:.1f} s, settled: {settled}"
        # header -> (cell, flagged)
        sampled.append(
            {
                "shape": shape,
                "timing mode": (_mode_text(bench), False),
                "why this mode": (str(timing["mode_reason"]), False),
                "warm-up": (warmed, not warmup["settled"]),
                "rounds kept / run": (f"{timing['rounds_kept']} / {timing['rounds_run']}", False),
                "stop reason": (str(timing["stop_reason"]), missed),
                "checks": (f"{FLAG} " + "; ".join(issues) if issues else "ok", bool(issues)),
            }
        )
        cells = {"shape": shape}
        if monitored:
            cells |= {
                "mean SM clock (min–max)": (_clock_text(bench), False),
                "throttled rounds (events)": (_throttle_text(clocks), bool(quality.kept_slowdowns(timing))),
                "discarded rounds": (discarded, clocks["discarded_rounds"] > 0),
            }
        if with_host:
            cells["host"] = (_host_text(bench.host), bool(bench.host.get("busy")))
        around.append(cells)
    tables = [_flagged_table(sampled)]
    if monitored or with_host:
        tables.append(_flagged_table(around))
    intro = prose("conditions", monitored=monitored, with_host=with_host)
    return Section("Measurement conditions", [Para(intro), *tables])


def _flagged_table(rows: list[dict[str, tuple[str, bool]]]) -> Table:
    """A table from rows of header -> (cell, flagged)."""
    headers = list(rows[0]) if rows else ["shape"]
    return Table(
        headers,
        [[text for text, _ in row.values()] for row in rows],
        numeric={headers.index(h) for h in ("rounds kept / run", "discarded rounds") if h in headers},
        text_cols={
            headers.index(h) for h in ("why this mode", "stop reason", "checks", "host") if h in headers
        },
        flagged={(r, c) for r, row in enumerate(rows) for c, (_, bad) in enumerate(row.values()) if bad},
    )


def _host_text(host: Json | None) -> str:
    """Threads used, CPUs, and the load average before and after: other work on the host slows a
    CPU run without any clock to show it."""
    if not host:
        return DASH
    threads = f"{DASH} threads" if host.get("threads") is None else plural(host["threads"], "thread")
    loads = [DASH if host.get(k) is None else f"{host[k]:.2f}" for k in ("load_before", "load_after")]
    text = f"{threads} of {plural(host['cpus'], 'CPU')}, load {loads[0]} → {loads[1]}"
    return f"{FLAG} busy: {host.get('why') or 'no reason recorded'}; {text}" if host.get("busy") else text


def _mode_text(bench: ShapeResult) -> str:
    mode = str(bench.timing["mode"])
    ks = sorted({c.calls_per_sample for c in bench.candidates.values() if c.calls_per_sample})
    if mode != "graph" or not ks:
        return mode
    span = str(ks[0]) if len(ks) == 1 else f"{ks[0]}–{ks[-1]}"
    return f"graph ({span} calls per sample)"


def _clock_text(bench: ShapeResult) -> str:
    clocks = bench.timing["clocks"]
    if clocks["source"] is None:
        return "n/a (cpu)" if bench.device == "cpu" else f"n/a ({clocks.get('reason') or 'not read'})"
    if clocks["mean_sm_mhz"] is None:
        return "n/a (no reading)"
    text = f"{clocks['mean_sm_mhz']:,.0f} MHz"
    lo, hi = clocks.get("min_sm_mhz"), clocks.get("max_sm_mhz")
    return text + (f" ({lo:,}–{hi:,})" if lo is not None and hi is not None and lo != hi else "")


def _throttle_text(clocks: Json) -> str:
    if clocks["source"] is None:
        return "n/a"
    events = ", ".join(f"{name}: {n}" for name, n in sorted(clocks["events"].items()) if n)
    return f"{clocks['throttled_rounds']}" + (f" ({events})" if events else "")


def ran_section(frame: pd.DataFrame) -> Section:
    """Per candidate over the shapes it was timed on: what one call ran, as the profiler saw it."""
    timed = frame[frame["kernels_per_call"].notna()]
    blocks: list[Block] = [Para(prose("ran"))]
    if timed.empty:
        return Section("What ran", [*blocks, Para("No candidate was timed.")])
    rows = []
    for name, group in timed.groupby("candidate", sort=False):
        repeatable = group["bitwise_repeatable"].dropna()
        bitwise = (
            DASH
            if repeatable.empty
            else "yes" if repeatable.all() else f"no (max diff {num(group['max_abs_diff'].max())})"
        )
        kernels = Counter(k for names in group["kernels"].dropna() for k in str(names).split(";"))
        rows.append(
            [
                str(name),
                str(len(group)),
                _span(group["kernels_per_call"], lambda v: f"{int(v)}"),
                _span(group["streams"], lambda v: f"{int(v)}"),
                _span(group["device_share"], pct),
                bitwise,
                _before_timing(group),
                ", ".join(k for k, _ in kernels.most_common(4)),
            ]
        )
    headers = [
        "candidate",
        "shapes",
        "kernels per call",
        "streams",
        "device time share",
        "bitwise",
        "before timing (ms)",
        "kernels",
    ]
    return Section("What ran", [*blocks, Table(headers, rows, numeric={1, 2, 3, 4}, text_cols={6, 7})])


def _before_timing(group: pd.DataFrame) -> str:
    """`setup 12 + first call 340`: a factory kernel's prepare and the first call (ms, ranges over the
    shapes); the first call alone for a plain kernel; a dash where neither was recorded."""
    setup = _span(group["setup_ms"], num)
    first = _span(group["compile_ms"], num)
    if setup == DASH:
        return DASH if first == DASH else f"first call {first}"
    return f"setup {setup} + first call {first}"


def _span(values: pd.Series, fmt: Any) -> str:
    values = values.dropna()
    if values.empty:
        return DASH
    lo, hi = fmt(values.min()), fmt(values.max())
    return lo if lo == hi else f"{lo}–{hi}"
