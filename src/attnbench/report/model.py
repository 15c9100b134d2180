"""The report as a document: sections of headings, paragraphs, tables, plots and collapsed details.
The section modules build it once; the Markdown and HTML templates only lay it out."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import ClassVar

from attnbench.plots import ALT


@dataclass
class Heading:
    kind: ClassVar[str] = "heading"
    level: int
    text: str


@dataclass
class Para:
    kind: ClassVar[str] = "para"
    text: str
    css: str = ""


@dataclass
class Table:
    kind: ClassVar[str] = "table"
    headers: list[str]
    rows: list[list[str]]
    numeric: set[int] = field(default_factory=set)
    status_col: int | None = None
    text_cols: set[int] = field(default_factory=set)  # free text (reasons, settings): may wrap anywhere
    highlight: list[bool] = field(default_factory=list)
    flagged: set[tuple[int, int]] = field(default_factory=set)  # (row, column) cells a reader must not miss
    cell_css: dict[tuple[int, int], str] = field(default_factory=dict)  # (row, column): extra CSS classes


@dataclass
class Plot:
    kind: ClassVar[str] = "plot"
    key: str

    @property
    def alt(self) -> str:
        return ALT[self.key]


@dataclass
class Details:
    """Long text a reader may want but should not have to scroll past (a library's whole message, a
    traceback): collapsed in HTML, a code block under its summary in Markdown."""

    kind: ClassVar[str] = "details"
    summary: str
    text: str

    @property
    def fence(self) -> str:
        """A Markdown code fence longer than any run of backticks in the text."""
        longest = max((len(run) for run in re.findall(r"`+", self.text)), default=0)
        return "`" * max(3, longest + 1)


Block = Heading | Para | Table | Plot | Details


@dataclass
class Section:
    """One `##` section of the report: its title and what it shows, in order. `collapsed`: detail
    behind the answer (HTML: closed under its title, so the answer, matrix and plots come first)."""

    title: str
    blocks: list[Block]
    collapsed: bool = False
