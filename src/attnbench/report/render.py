"""The report written: summary.csv, the plots, and the document as Markdown and as one HTML page,
all through the package's Jinja2 templates (templates/), prose partials included."""

from __future__ import annotations

import base64
import os
import urllib.parse
from functools import cache
from pathlib import Path

import jinja2
import jinja2.ext

from attnbench import formatting, quality
from attnbench.files import atomic_write_bytes, atomic_write_text
from attnbench.plots import PLOTS, figures
from attnbench.report.data import Run, plot_frame
from attnbench.report.model import Section
from attnbench.report.words import plural

OUTPUT_KEYS = ("html", "md", "csv", *PLOTS)


class _OneParagraph(jinja2.ext.Extension):
    """A partial (templates/partials/) is one paragraph written over lines: its source's line breaks
    are spaces, so that the prose reads as prose there and renders as one line."""

    def preprocess(self, source: str, name: str | None, filename: str | None = None) -> str:
        if name is None or not name.startswith("partials/"):
            return source
        return " ".join(line.strip() for line in source.splitlines() if line.strip())


@cache
def _templates() -> jinja2.Environment:
    """The package's templates: HTML autoescaped, Markdown escaped by the `md` filter, partials not
    escaped at all (their text is a paragraph's, escaped where the document is laid out)."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("attnbench", "templates"),
        autoescape=jinja2.select_autoescape(enabled_extensions=("html.j2",), default_for_string=False),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        extensions=[_OneParagraph],
    )
    env.filters["md"] = formatting.md
    env.filters["plural"] = plural
    env.filters["level"] = quality.level
    env.globals["FLAG"] = quality.FLAG
    return env


def prose(partial: str, **values: object) -> str:
    """The paragraph templates/partials/`partial`.j2 says with these values."""
    return _templates().get_template(f"partials/{partial}.j2").render(values).strip()


def write(run: Run, sections: list[Section], out: dict[str, str], title: str) -> None:
    """Every output named in `out` (OUTPUT_KEYS): the table, the plots, the Markdown and the HTML."""
    atomic_write_text(out["csv"], run.frame.to_csv(index=False))
    images = figures(plot_frame(run.frame, run.analysis), run.ceilings, run.growth)
    for key, data in images.items():
        atomic_write_bytes(out[key], data)
    md_dir = Path(out["md"]).resolve().parent
    links = {
        key: urllib.parse.quote(Path(os.path.relpath(Path(out[key]).resolve(), md_dir)).as_posix())
        for key in PLOTS
    }
    atomic_write_text(out["md"], render_markdown(title, sections, links))
    atomic_write_text(out["html"], render_html(title, sections, images))


def render_markdown(title: str, sections: list[Section], links: dict[str, str]) -> str:
    """The report as Markdown; plots are links (`links`: plot key -> URL relative to the file)."""
    template = _templates().get_template("report.md.j2")
    return template.render(title=title, sections=sections, links=links)


def render_html(title: str, sections: list[Section], images: dict[str, bytes]) -> str:
    """The report as one self-contained page: CSS inlined, plots as base64 PNG data URLs."""
    encoded = {key: base64.b64encode(data).decode("ascii") for key, data in images.items()}
    template = _templates().get_template("report.html.j2")
    return template.render(title=title, sections=sections, images=encoded)
