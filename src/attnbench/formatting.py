"""Numbers, confidence intervals and Markdown text as the report and the ratchet comment print them.

One set of helpers, so that a median, a percentage or a candidate's name reads the same in every
document the run writes. Missing values (None, NaN, infinity) print as DASH, never as "nan".
"""

from __future__ import annotations

import html
import math
import re
from typing import Any

DASH = "—"

# CommonMark reads these as markup anywhere in a line (GitHub adds $ for math and ~ for strikethrough);
# a backslash makes any ASCII punctuation literal.
_MD_SPECIAL = re.compile(r"([\\`*\[\]|#$~])")
# `_` opens or closes emphasis only at a word's edge: snake_case names print as typed.
_MD_EDGE_UNDERSCORE = re.compile(r"(?<![^\W_])_|_(?![^\W_])")


def missing(value: Any) -> bool:
    """None, or a float that is not finite (pandas' NaN for an empty cell)."""
    if value is None:
        return True
    try:
        return not math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def num(value: Any, digits: int = 3) -> str:
    """`digits` significant digits, trailing zeros kept (1.00 beside 0.996, not 1); from 100 on, whole
    numbers with thousands separators."""
    if missing(value):
        return DASH
    value = float(value)
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:#.{digits}g}"


def pct(value: Any) -> str:
    """A fraction as a percentage with one decimal."""
    return DASH if missing(value) else f"{100 * float(value):.1f}%"


def signed_pct(value: Any) -> str:
    """A relative change with its sign: +2.0%, -13.4%."""
    return DASH if missing(value) else f"{float(value):+.1%}"


def pm(value: Any, digits: int = 1) -> str:
    """A relative half-width as ±percent; sub-0.1% values keep a second decimal instead of ±0.0%."""
    value = float(value)
    return f"±{100 * value:.{digits if value >= 1e-3 else max(digits, 2)}f}%"


def interval(centre: Any, lo: Any, hi: Any, suffix: str = "") -> str:
    """`centre [lo, hi]`, or the centre alone when the interval is unknown."""
    if missing(centre):
        return DASH
    if missing(lo) or missing(hi):
        return f"{num(centre)}{suffix}"
    return f"{num(centre)}{suffix} [{num(lo)}, {num(hi)}]"


def md(value: Any) -> str:
    """Text from a result file as Markdown that prints as typed: HTML-escaped (no tag, no entity),
    markup punctuation backslash-escaped, on one line (a line break would end a table row)."""
    text = html.escape(str(value), quote=False)
    text = _MD_EDGE_UNDERSCORE.sub(r"\\_", _MD_SPECIAL.sub(r"\\\1", text))
    return " ".join(text.splitlines())
