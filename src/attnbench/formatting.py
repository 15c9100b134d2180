"""Numbers, confidence intervals and Markdown text as the report and the ratchet comment print them.

One set of helpers, so that a median, a percentage or a candidate's name reads the same in every
document the run writes. Missing values (None, NaN, infinity) print as DASH, never as "nan".
"""

from __future__ import annotations

import html
import math
import re
from typing import Any

from attnbench.settings import RESOLUTION, THRESHOLD

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


MAX_DIGITS = 8  # enough for any bound a bootstrap CI can tell apart from its centre


def _value(text: str) -> float:
    return float(text.replace(",", ""))


def _side(value: float, of: float) -> int:
    return (value > of) - (value < of)


# Where a verdict read from a speedup's interval changes, at the default settings: its bounds
# against 1 and the resolution band's and practical band's edges, its centre against the practical
# band's (speedup_interval).
PRACTICAL_MARKS = (1.0 + THRESHOLD, 1.0 / (1.0 + THRESHOLD))
BOUND_MARKS = (1.0, 1.0 + RESOLUTION, 1.0 / (1.0 + RESOLUTION), *PRACTICAL_MARKS)


def bound_digits(
    centre: float,
    bounds: tuple[float, ...],
    marks: tuple[float, ...] = (),
    digits: int = 3,
    centre_marks: tuple[float, ...] = (),
) -> int:
    """The fewest significant digits (at least `digits`) at which every printed bound stays on its
    side of the printed centre and of each of `marks`, and the centre on its side of each of
    `centre_marks`: rounding must not turn the bound 0.9996 of a significant slowdown into 1.00, a
    bound 0.99503 beside "slower" into 0.995, a speedup of 1.0196 beside "same" into 1.02, nor a
    bound that differs into the centre."""

    def kept(value: float, mark: float, candidate: int) -> bool:
        return _side(_value(num(value, candidate)), mark) == _side(value, mark)

    for candidate in range(digits, MAX_DIGITS + 1):
        printed = _value(num(centre, candidate))
        if (
            all(_side(_value(num(bound, candidate)), printed) == _side(bound, centre) for bound in bounds)
            and all(kept(bound, mark, candidate) for bound in bounds for mark in marks)
            and all(kept(centre, mark, candidate) for mark in centre_marks)
        ):
            return candidate
    return MAX_DIGITS


def interval(
    centre: Any,
    lo: Any,
    hi: Any,
    suffix: str = "",
    marks: tuple[float, ...] = (),
    centre_marks: tuple[float, ...] = (),
) -> str:
    """`centre [lo, hi]`, or the centre alone when the interval is unknown; with as many digits as
    it takes for the bounds to print on their true side of the centre and of `marks`, and the
    centre on its side of `centre_marks` (bound_digits)."""
    if missing(centre):
        return DASH
    if missing(lo) or missing(hi):
        return f"{num(centre)}{suffix}"
    digits = bound_digits(float(centre), (float(lo), float(hi)), marks, centre_marks=centre_marks)
    centre_text, lo_text, hi_text = (_trimmed(v, digits) for v in (centre, lo, hi))
    return f"{centre_text}{suffix} [{lo_text}, {hi_text}]"


def speedup_interval(centre: Any, lo: Any, hi: Any) -> str:
    """`1.23× [1.10, 1.40]`: a speedup beside the verdict read from it, never rounded across a mark
    where that verdict changes (BOUND_MARKS, PRACTICAL_MARKS)."""
    return interval(centre, lo, hi, "×", BOUND_MARKS, PRACTICAL_MARKS)


def _significant(text: str) -> int:
    return len(text.lstrip("-").replace(".", "").lstrip("0"))


def _trimmed(value: Any, digits: int, base: int = 3) -> str:
    """num(value, digits) without the trailing zeros that the extra digits beyond `base` added:
    0.900 beside 0.99996, not 0.90000."""
    text = num(value, digits)
    if "." not in text or "e" in text:
        return text
    while text.endswith("0") and _significant(text[:-1]) >= base:
        text = text[:-1]
    return text.rstrip(".")


def md(value: Any) -> str:
    """Text from a result file as Markdown that prints as typed: HTML-escaped (no tag, no entity),
    markup punctuation backslash-escaped, on one line (a line break would end a table row)."""
    text = html.escape(str(value), quote=False)
    text = _MD_EDGE_UNDERSCORE.sub(r"\\_", _MD_SPECIAL.sub(r"\\\1", text))
    return " ".join(text.splitlines())


def clip(line: str, width: int = 100) -> str:
    """One terminal line: line breaks in a reason folded, cut at `width` columns."""
    line = " ".join(line.splitlines())
    return line if len(line) <= width else line[: width - 1] + "…"
