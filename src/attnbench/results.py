"""What a benchmark says of one candidate: its status, and the entry a candidate that was not measured
gets. Here, below bench and isolation, because both write entries (isolation for a crash it found)
and every reader (compare, autotune, headline, report, ratchet, plots) branches on the status.

The statuses are those of workflow/schemas/bench.schema.yaml's `candidate.status`; a `StrEnum`, so a
member is the string itself in a document and compares equal to the string read back from one."""

from __future__ import annotations

import math
import statistics
from enum import StrEnum
from typing import Any

# How far a stored median may sit from its samples' median, relative: float rounding of another JSON
# writer (a baseline passed through other tools), far below any edit that would change a verdict.
MEDIAN_REL_TOLERANCE = 1e-6
Json = dict[str, Any]  # a document, or a part of one, as JSON gives it (one alias for every reader)


class Status(StrEnum):
    OK = "ok"  # measured, checked, earned: the only status that is timed and ranked
    UNSUPPORTED = "unsupported"  # the library or kernel declined the shape: a choice, not a failure
    INCORRECT = "incorrect"  # its output missed the float64 reference, or it wrote into its inputs
    OOM = "oom"
    ERROR = "error"  # raised; the traceback is kept
    TIMEOUT = "timeout"  # a call did not return within call_timeout_s
    UNTRUSTED = "untrusted"  # timed, but the timing was not earned (attnbench.audit, attnbench.guard)
    CRASHED = "crashed"  # killed the process measuring the shape, or left a sticky CUDA error

    @property
    def failed(self) -> bool:
        """Something went wrong with the candidate (unsupported and ok are not failures)."""
        return self not in (Status.OK, Status.UNSUPPORTED)


FAILURES = tuple(status for status in Status if status.failed)


def empty_entry(status: Status, reason: str | None, **fields: Any) -> dict[str, Any]:
    """A candidate's entry without timings (bench.schema.yaml's `candidate`): every field a reader
    expects present, `fields` added or overriding."""
    return {
        "status": status,
        "reason": reason,
        "samples_ms": [],
        "median_ms": None,
        "ci95_ms": None,
        "tflops": None,
        "peak_mem_mb": None,
        "rel_error": None,
        "rel_ci": None,
        "target_met": None,
        "calls_per_sample": None,
        **fields,
    }


def median_problem(entry: dict[str, Any]) -> tuple[str, str] | None:
    """(field, why) when a candidate's stored median_ms is not what its samples_ms say, else None: a
    result file or baseline edited after it was written (attnbench.files, attnbench.ratchet)."""
    samples, median = entry.get("samples_ms") or [], entry.get("median_ms")
    if median is None:
        if entry.get("status") == Status.OK and samples:
            return "median_ms", f"missing beside {len(samples)} samples_ms, for a result with status ok"
        return None
    if not samples:
        return "median_ms", f"{median:.6g} with no samples_ms"
    expected = statistics.median(samples)
    if not math.isclose(median, expected, rel_tol=MEDIAN_REL_TOLERANCE):
        return (
            "median_ms",
            f"{median:.6g} is not the median of its {len(samples)} samples_ms ({expected:.6g})",
        )
    return None
