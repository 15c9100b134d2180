"""Autotune: the candidate to pick per shape and those as good, and per kernel with configurations
the configuration to use on every shape (autotune.json, which the autotune step writes)."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pandas as pd

from attnbench.documents import Analysis, Family, Rival
from attnbench.formatting import BOUND_MARKS, DASH, interval, num, speedup_interval
from attnbench.report.model import Block, Heading, Para, Section, Table
from attnbench.report.render import prose
from attnbench.report.words import (
    COLLAPSE_ABOVE,
    NAMED_TIES,
    by_kernel,
    configuration,
    correction,
    join_names,
    plural,
)
from attnbench.results import Json
from attnbench.stats import TOO_FEW_ROUNDS


def autotune_section(frame: pd.DataFrame, analysis: Analysis) -> Section:
    """One table: per shape the candidate to pick and those no measurably worse choice than it; then,
    per kernel with configurations, its table of configurations and the one to use on every shape."""
    headers = [
        "shape",
        "fastest",
        "median ms [95% CI]",
        "tied: slower by, speedup vs the fastest [interval], p (adjusted)",
        "significantly slower",
    ]
    kernel_of = analysis.family_of()
    rows = []
    for shape in dict.fromkeys(frame["shape"]):
        choice = analysis.shapes[shape]
        best, compared = choice.fastest, choice.rivals
        if best is None:
            rows.append([str(shape), DASH, "no candidate ok within the dtype's tolerance", DASH, DASH])
            continue
        ties = {t.candidate: t for t in choice.ties()}
        parts = []
        for family, members in by_kernel(list(ties), kernel_of):
            if family is not None and len(members) > COLLAPSE_ABOVE:
                parts.append(f"{len(members)} configurations of {family} (see below)")
                continue
            parts += [_tie(ties[name]) for name in members]
        # neither tied nor slower: too few rounds to tell, said in the ties' column without a number
        parts += [_tie(r) for r in compared if r.comparison.verdict == TOO_FEW_ROUNDS]
        slower = [r.candidate for r in compared if r.comparison.verdict == "slower"]
        fastest = _ci_interval(best.median_ms, best.ci95_ms)
        rows.append(
            [
                str(shape),
                best.candidate,
                fastest,
                "; ".join(parts) or "none",
                join_names(slower, kernel_of) or "none",
            ]
        )
    intro = prose("autotune", correction=correction(analysis))
    blocks: list[Block] = [Para(intro), Table(headers, rows, numeric={2}, text_cols={3, 4})]
    return Section("Autotune", blocks + _configuration_blocks(analysis))


def _tie(rival: Rival) -> str:
    """A candidate tied with the fastest: how much slower, its speedup over the fastest with the
    corrected interval, and the adjusted p; too few rounds say so instead of numbers."""
    comp = rival.comparison
    if comp.verdict == TOO_FEW_ROUNDS:
        return f"{rival.candidate}: {TOO_FEW_ROUNDS} ({plural(comp.rounds, 'round')})"
    speedup = speedup_interval(comp.speedup, *(comp.speedup_ci or (None, None)))
    return f"{rival.candidate}: {_slower(comp.speedup)}, {speedup}, p {num(comp.p_adjusted, 2)}"


def _configuration_blocks(analysis: Analysis) -> list[Block]:
    """Per kernel with configurations: per shape its fastest configuration and the configurations
    tied with it, the configuration recommended for every shape, and the runners-up."""
    if not analysis.families:
        return []
    intro = prose(
        "configurations",
        comparisons=analysis.n_configurations,
        correction=correction(analysis),
        named=NAMED_TIES,
        alpha=analysis.alpha,
    )
    blocks: list[Block] = [Heading(3, "Kernel configurations"), Para(intro)]
    for family in analysis.families:
        blocks += _family_blocks(family)
    return blocks


def _family_blocks(family: Family) -> list[Block]:
    """One kernel's table of configurations per shape, its recommendation and the runners-up."""
    name, configs = family.family, family.configurations
    rec = family.recommendation
    on_shape = {s["shape"]: s for s in (rec or {}).get("per_shape", [])}
    counted = [s for s in family.shapes if s.fastest is not None]
    rows = []
    for shape in family.shapes:
        best = shape.fastest
        statuses = Counter(x["status"] for x in shape.not_ok)
        not_ok = (
            f"{sum(statuses.values())}: " + ", ".join(f"{st} ×{n}" for st, n in statuses.most_common())
            if statuses
            else "none"
        )
        if best is None:
            rows.append(
                [
                    shape.shape,
                    DASH,
                    "no configuration ok within the dtype's tolerance",
                    DASH,
                    *([DASH] if rec else []),
                    not_ok,
                ]
            )
            continue
        tied = shape.ties()
        named = ", ".join(configuration(t.candidate, name) for t in tied[:NAMED_TIES])
        more = f" and {len(tied) - NAMED_TIES} more" if len(tied) > NAMED_TIES else ""
        cells = [
            shape.shape,
            configuration(best.candidate, name),
            _ci_interval(best.median_ms, best.ci95_ms),
            f"{len(tied)}: {named}{more}" if tied else "none",
        ]
        if rec:
            cells.append(_recommended_on(on_shape[shape.shape], rec["candidate"] == best.candidate))
        rows.append([*cells, not_ok])
    headers = ["shape", "fastest configuration", "median ms [95% CI]", "tied with it"]
    if rec:
        headers.append(f"recommended {configuration(rec['candidate'], name)}: slowdown [interval]")
    headers.append("not ok")
    shapes = plural(len(family.shapes), "shape")
    blocks: list[Block] = [
        Heading(
            4, f"{name} ({plural(len(configs), 'configuration')}, {len(counted)} of {shapes} with one ok)"
        ),
        Table(headers, rows, numeric={2}, text_cols={1, 3} | ({4} if rec else set())),
        Para(_recommendation_text(family)),
    ]
    ranked = [r for r in family.ranking if r["everywhere"]]
    if len(ranked) > 1:
        top = ranked[:NAMED_TIES]
        runners_up = [
            [
                configuration(r["candidate"], name),
                _ci_interval(r["worst_slowdown"], r["worst_slowdown_ci"], "×", (1.0,)),
                str(r["worst_shape"]),
                f"{len(r['tied_shapes'])} of {len(counted)}",
            ]
            for r in top
        ]
        blocks += [
            Para(prose("ranking", top=len(top), ranked=len(ranked))),
            Table(
                ["configuration", "worst slowdown [interval]", "on", "fastest or tied on"],
                runners_up,
                numeric={1, 3},
                text_cols={0},
            ),
        ]
    return blocks


def _recommended_on(slow: Json, fastest: bool) -> str:
    """The recommended configuration on one shape: fastest there, or its slowdown [CI] and whether tied."""
    if fastest:
        return "fastest"
    text = _ci_interval(slow["slowdown"], slow["slowdown_ci"], "×", BOUND_MARKS)
    return f"{text}, tied" if slow["tied"] else text


def _recommendation_text(family: Family) -> str:
    """The family's recommendation in one paragraph (partials/recommendation.j2), with the
    configurations that could not be considered, the first NAMED_TIES of them named."""
    name, rec = family.family, family.recommendation
    excluded = [r for r in family.ranking if not r["everywhere"]]
    listed = "; ".join(f"{configuration(r['candidate'], name)} ({_where(r)})" for r in excluded[:NAMED_TIES])
    if len(excluded) > NAMED_TIES:
        listed += f"; and {len(excluded) - NAMED_TIES} more"
    worst = slower = None
    if rec is not None and rec["worst_slowdown"] > 1.0:
        worst = _ci_interval(rec["worst_slowdown"], rec["worst_slowdown_ci"], "×", (1.0,))
        slower = _slower(1 / rec["worst_slowdown"])
    return prose(
        "recommendation",
        kernel=name,
        rec=rec,
        reason=family.reason,
        listed=listed,
        not_ok_somewhere=bool(excluded) and any(r["shapes_ok"] for r in family.ranking),
        shapes=len(rec["per_shape"]) if rec else 0,
        worst=worst,
        slower=slower,
    )


def _where(ranked: Json) -> str:
    """Where a configuration did not run ok: `oom on s2`, or its statuses counted over shapes."""
    if len(ranked["not_ok"]) == 1:
        return f"{ranked['not_ok'][0]['status']} on {ranked['not_ok'][0]['shape']}"
    statuses = Counter(x["status"] for x in ranked["not_ok"])
    return ", ".join(f"{st} on {plural(n, 'shape')}" for st, n in statuses.most_common())


def _ci_interval(centre: Any, ci: list[float] | None, suffix: str = "", marks: tuple[float, ...] = ()) -> str:
    """formatting.interval for a [lo, hi] pair as the result files hold it (None when unknown)."""
    lo, hi = ci or (None, None)
    return interval(centre, lo, hi, suffix, marks)


def _slower(speedup: Any) -> str:
    """How much longer a candidate takes than the fastest, from speedup = fastest / candidate."""
    if speedup is None or pd.isna(speedup) or speedup <= 0:
        return DASH
    return f"{100 * (1 / float(speedup) - 1):.1f}%"
