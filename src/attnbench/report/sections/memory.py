"""Memory: how each candidate's workspace grows with the sequence length, and the shapes at risk."""

from __future__ import annotations

import pandas as pd

from attnbench.formatting import DASH, num
from attnbench.report.model import Block, Para, Section, Table
from attnbench.report.render import prose
from attnbench.results import Json


def memory_section(frame: pd.DataFrame, growth: Json) -> Section:
    """How each candidate's workspace grows with the sequence length (memory.growth), and the shapes
    at risk of running out of memory: the plot draws the same workspaces against the device's memory."""
    rows = [
        [
            name,
            DASH if fit["exponent"] is None else f"seq^{fit['exponent']:.2f}",
            str(fit["points"]),
            fit["reading"],
        ]
        for name, fit in growth.items()
    ]
    blocks: list[Block] = [Para(prose("memory"))]
    if rows:
        blocks.append(Table(["candidate", "workspace grows as", "shapes", "reading"], rows, numeric={2}))
    else:
        blocks.append(Para("No candidate recorded a workspace (results written before it was measured)."))
    at_risk = frame[frame["oom_risk"].astype("boolean").fillna(False)]
    if not at_risk.empty:
        listed = ", ".join(
            f"{r.candidate} on {r.shape} ({num(r.projected_mb)} MB)" for r in at_risk.itertuples()
        )
        blocks.append(Para(prose("oom", listed=listed), css="warning"))
    return Section("Memory", blocks)
