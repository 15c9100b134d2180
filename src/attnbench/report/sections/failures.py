"""Candidates that did not produce a valid result: each distinct failure once, its texts collapsed."""

from __future__ import annotations

import pandas as pd

from attnbench.documents import ShapeResult
from attnbench.report.data import first_text
from attnbench.report.model import Details, Para, Section, Table
from attnbench.results import Status


def not_ok_section(frame: pd.DataFrame, benches: list[ShapeResult]) -> Section:
    """One row per distinct (candidate, status, reason), the library's whole text and the traceback
    collapsed below. Candidates that cannot run here at all are in the headline, not repeated."""
    bad = frame[frame["status"] != Status.OK]
    title = "Candidates that did not produce a valid result"
    if bad.empty:
        return Section(title, [Para("Every other candidate ran and matched the reference on every shape.")])
    # A kernel that rejects twenty shapes with the same message is one finding, not twenty rows to read.
    groups = bad.groupby(["candidate", "status", bad["reason"].fillna("")], sort=False)["shape"]
    rows, details = [], []
    for (candidate, status, reason), shapes in groups:
        rows.append([str(candidate), str(status), str(reason or "no reason recorded"), ", ".join(shapes)])
        for key, what in (("reason_detail", "the library's message"), ("traceback", "traceback")):
            text = first_text(benches, str(candidate), key, str(status), reason or None)
            if text:
                details.append(Details(f"{candidate}, {status}: {what}", text))
    headers = ["candidate", "status", "reason", "shapes"]
    return Section(title, [Table(headers, rows, status_col=1, text_cols={2}), *details])
