"""Phrases more than one section says the same way: counts, lists of names (a kernel's many
configurations collapsed), intervals and their confidence, speedups, the run-wide correction."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import pandas as pd

from attnbench import formatting, headline, quality
from attnbench.documents import Analysis
from attnbench.formatting import DASH
from attnbench.stats import TOO_FEW_ROUNDS

FLAG = quality.FLAG
# More configurations of one kernel than this in a list of names print as one entry, their count.
COLLAPSE_ABOVE = 3
# Tied configurations named in a kernel's table of configurations; the rest are counted.
NAMED_TIES = 5


def plural(n: int, word: str) -> str:
    """`1 shape`, `3 shapes`."""
    return f"{n} {word}{'' if n == 1 else 's'}"


def flatten(value: Any, prefix: str = "") -> list[tuple[str, str]]:
    """Nested settings as dotted keys, so any lock or clock layout prints without special cases."""
    if isinstance(value, dict):
        items: list[tuple[str, str]] = []
        for key, sub in value.items():
            items += flatten(sub, f"{prefix}.{key}" if prefix else str(key))
        return items
    return [(prefix, json.dumps(value) if not isinstance(value, str) else value)]


def settings(value: Any) -> str:
    """Nested settings on one line, `key.sub=value, ...`."""
    pairs = flatten(value)
    return ", ".join(f"{k}={v}" for k, v in pairs) if pairs else DASH


def distinct(values: Any) -> str:
    """The distinct values in first-seen order, joined by commas."""
    return ", ".join(str(v) for v in dict.fromkeys(values)) or DASH


def counts(values: Any) -> str:
    """How many shapes had each value: `cold: 3 shapes, graph: 1 shape`."""
    return ", ".join(f"{v}: {plural(n, 'shape')}" for v, n in Counter(values).items()) or DASH


def intervals(confidences: Any, family: int | None) -> str:
    """How sure the printed intervals are, `99.8% intervals, corrected for the run's 24 comparisons`,
    the levels as the documents record them (quality.level: never rounded up to 100%)."""
    levels = sorted(set(confidences))
    if not levels:
        return "no intervals"
    text = quality.level(levels[0]) + (f" to {quality.level(levels[-1])}" if len(levels) > 1 else "")
    said = f", corrected for the run's {family} comparisons" if family and family > 1 else ""
    return f"{text} intervals{said}"


def to_decide(frame: pd.DataFrame) -> dict[tuple[str, str], str]:
    """(shape, candidate) -> what a comparison with too few rounds would need, in words
    (quality.to_decide_text), from summary.csv's columns."""
    few = frame[frame["verdict"] == TOO_FEW_ROUNDS]
    return {
        (row.shape, row.candidate): quality.to_decide_text(
            None
            if formatting.missing(row.rounds_to_decide)
            else {
                "rounds": int(row.rounds_to_decide),
                "seconds": (
                    None if formatting.missing(row.seconds_to_decide) else float(row.seconds_to_decide)
                ),
            }
        )
        for row in few.itertuples(index=False)
    }


def speedup(value: Any, ci: Any, significant: Any, verdict: Any, need: str | None = None) -> str:
    """headline.speedup_text, and for a comparison with too few rounds what would decide it (`need`)."""
    text = headline.speedup_text(value, ci, not pd.isna(significant) and bool(significant), verdict)
    return f"{text} ({need})" if verdict == TOO_FEW_ROUNDS and need else text


def by_kernel(names: list[str], family_of: dict[str, str]) -> list[tuple[str | None, list[str]]]:
    """`names` in order, the configurations of one kernel gathered at the first one's place:
    (kernel, its configurations) or (None, [a name that is no configuration])."""
    found: dict[Any, tuple[str | None, list[str]]] = {}
    for name in names:
        family = family_of.get(name)
        key: Any = ("family", family) if family is not None else ("name", name)
        found.setdefault(key, (family, []))[1].append(name)
    return list(found.values())


def join_names(names: list[str], family_of: dict[str, str]) -> str:
    """Names joined by commas; more than COLLAPSE_ABOVE configurations of one kernel print as
    "N configurations of kernel"."""
    parts: list[str] = []
    for family, members in by_kernel(names, family_of):
        if family is not None and len(members) > COLLAPSE_ABOVE:
            parts.append(f"{len(members)} configurations of {family}")
        else:
            parts += members
    return ", ".join(parts)


def configuration(name: str, family: str) -> str:
    """A configuration's name without its kernel's, `[BLOCK_M=128,num_warps=8]`, where the kernel is
    named already (a column's or a table's heading)."""
    return name[len(family) :] if name.startswith(family) and len(name) > len(family) else name


def correction(analysis: Analysis) -> str:
    """The run-wide correction in words: `Bonferroni for the run's 24 comparisons: intervals at
    99.8%, p-values times 24`, the level as the entries of autotune.json record it."""
    family = analysis.family
    levels = sorted({c.confidence for c in analysis.all_corrected()})
    if not levels:
        return f"Bonferroni for the run's {plural(family, 'comparison')}"
    level = "; ".join(quality.level(c) for c in levels)
    return f"Bonferroni for the run's {plural(family, 'comparison')}: intervals at {level}, p-values times {family}"
