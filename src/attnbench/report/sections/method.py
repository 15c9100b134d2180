"""Method: how samples were taken and how a comparison becomes a verdict, with the settings the
result files record, so that a reader can judge a number without the source."""

from __future__ import annotations

from typing import Any

from attnbench import quality
from attnbench.documents import Analysis, ShapeComparisons, ShapeResult
from attnbench.formatting import pm
from attnbench.report.model import Para, Section
from attnbench.report.render import prose
from attnbench.report.words import correction, counts, distinct, settings
from attnbench.results import Json
from attnbench.stats import BLOCKS, MIN_ROUNDS, TOO_FEW_ROUNDS


def method_section(
    benches: list[ShapeResult], compares: list[ShapeComparisons], analysis: Analysis
) -> Section:
    """How samples were taken, and how a comparison becomes a speedup, an interval, a p-value and a
    verdict (stats.py's module docstring), with the settings the compare files record."""
    recorded: dict[str, list[Any]] = {}
    for compare in compares:
        for key, value in compare.method.items():
            # compare files name only the tests they used, "a + b"; the run used their union
            parts = value.split(" + ") if key == "test" and isinstance(value, str) else [value]
            recorded.setdefault(key, []).extend(v for v in parts if v is not None)

    def setting(key: str, missing: str) -> str:
        return distinct(recorded.pop(key, [])) if recorded.get(key) else missing

    said: dict[str, Any] = {}
    if compares:
        said = {
            "tests": setting("test", "no test"),
            "alpha": setting("alpha", "unrecorded"),
            "resolution": setting("resolution", "an unrecorded"),
            "threshold": setting("threshold", "an unrecorded"),
            "min_rounds": setting("min_rounds", str(MIN_ROUNDS)),
        }
        recorded.pop("pairing", None)
        other = {k: distinct(v) for k, v in recorded.items() if v}
        said["other"] = settings(other) if other else ""
    corrected = bool(analysis.all_corrected())
    if corrected:  # the run-wide correction, with what autotune.json says it counted
        said |= {
            "n_reference": analysis.n_reference,
            "n_autotune": analysis.n_autotune,
            "configurations": analysis.n_configurations,
            "correction": correction(analysis),
            "confidence": quality.level(1 - analysis.alpha),
        }
    text = prose(
        "method",
        compared=bool(compares),
        blocked_from=2 * BLOCKS,
        too_few=TOO_FEW_ROUNDS,
        corrected=corrected,
        **said,
    )
    return Section("Method", [Para(_timing_text(benches)), Para(text)])


def _timing_text(benches: list[ShapeResult]) -> str:
    """How samples were taken, with the run's settings: a reader cannot judge a median without it."""
    timing = [b.timing for b in benches]
    graph_below = _recorded(timing, "graph_below_ms", lambda v: f"{v:g}")
    limits = [f"{v} s" for v in [_recorded(timing, "max_time_s", lambda v: f"{v:g}")] if v]
    limits += [f"{v} rounds" for v in [_recorded(timing, "max_rounds")] if v]
    clocks_read = [b for b in benches if b.timing["clocks"]["source"] is not None]
    return prose(
        "timing",
        timing=timing,
        timers=distinct(t["method"] for t in timing),
        order=_recorded(timing, "order"),
        modes=counts(t["mode"] for t in timing),
        requested=_recorded(timing, "requested_mode"),
        graph_below=graph_below,
        auto=graph_below is not None and any(t.get("requested_mode") == "auto" for t in timing),
        min_rounds=_recorded(timing, "min_rounds"),
        targets=distinct(pm(t["target_rel_ci"]) for t in timing),
        limits=limits,
        clocks_read=bool(clocks_read),
        kept=[b.name for b in clocks_read if not b.timing.get("discard_throttled", True)],
        clock_reasons=distinct(b.timing["clocks"].get("reason") or "not recorded" for b in benches),
    )


def _recorded(timing: list[Json], key: str, fmt: Any = str) -> str | None:
    """The distinct values of an optional timing setting, None when no file recorded it."""
    values = [fmt(t[key]) for t in timing if t.get(key) is not None]
    return distinct(values) if values else None
