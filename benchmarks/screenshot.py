#!/usr/bin/env python3
"""Screenshot an attnbench HTML report in headless Chromium at a 1400 px wide window.

    python benchmarks/screenshot.py results/report/report.html OUT.png [--first OUT_FIRST.png] [--palette]

Writes OUT.png, the whole page (its height measured in the same browser first), and with --first
the first screen (1400 x 900) too. It also checks the layout: it prints the page's width and every
table wider than its box at 1400 px (a table that needs a horizontal scroll), and exits 1 if there is one.
--palette reduces the PNGs to 256 colours (needs Pillow), about a third of the size, for committing.

Needs: Python 3.8+ (standard library only) and Chromium: `apt-get update && apt-get install -y
chromium` on Debian/Ubuntu; elsewhere chromium-browser, google-chrome or chrome-headless-shell on
PATH, or CHROMIUM=/path/to/it. The report is self-contained (CSS inlined, plots as data URLs), so
it needs no server and no network. Runs as root too (--no-sandbox).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

WIDTH = 1400
FIRST_SCREEN = 900
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "chrome-headless-shell")
# Run after load: the page's size, the tables that overflow their scroll box and where the plots end,
# into the DOM.
PROBE = """<script>window.addEventListener("load", () => {
  const wide = [...document.querySelectorAll("div.scroll")]
    .filter(d => d.scrollWidth > d.clientWidth + 1)
    .map(d => (d.previousElementSibling || {}).textContent || "(table)");
  const out = document.createElement("pre"); out.id = "layout-probe";
  const plots = [...document.querySelectorAll("figure.plot")].map(f => f.getBoundingClientRect().bottom + window.scrollY);
  out.textContent = JSON.stringify({height: document.documentElement.scrollHeight,
                                    width: document.documentElement.scrollWidth, wide: wide,
                                    plots_end: plots.length ? Math.round(Math.max(...plots)) : null});
  document.body.appendChild(out);
});</script>"""


def browser() -> str:
    found = os.environ.get("CHROMIUM") or next(filter(None, map(shutil.which, BROWSERS)), None)
    if not found:
        sys.exit("no Chromium found: apt-get install -y chromium, or set CHROMIUM=/path/to/chromium")
    return found


def chrome(exe: str, profile: str, *args: str) -> str:
    command = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
               f"--user-data-dir={profile}", "--force-device-scale-factor=1", *args]  # fmt: skip
    return subprocess.run(command, check=True, capture_output=True, text=True, timeout=300).stdout


def layout(exe: str, profile: str, report: Path) -> dict:
    """The rendered page's height and width at WIDTH, and which tables overflow."""
    with tempfile.TemporaryDirectory() as tmp:
        probed = Path(tmp) / "probe.html"
        probed.write_text(report.read_text(encoding="utf-8").replace("</body>", PROBE + "</body>"), "utf-8")
        dom = chrome(exe, profile, f"--window-size={WIDTH},{FIRST_SCREEN}", "--virtual-time-budget=10000",
                     "--dump-dom", probed.as_uri())  # fmt: skip
    match = re.search(r'<pre id="layout-probe">(.*?)</pre>', dom, re.S)
    if not match:
        sys.exit("could not measure the page (no layout probe in the rendered DOM)")
    return json.loads(match.group(1).replace("&quot;", '"').replace("&amp;", "&"))


def shoot(exe: str, profile: str, report: Path, out: Path, height: int, palette: bool) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    chrome(exe, profile, f"--window-size={WIDTH},{height}", f"--screenshot={out.resolve()}",
           "--virtual-time-budget=10000", report.as_uri())  # fmt: skip
    if palette:
        from PIL import Image  # only here: the screenshots themselves need no Pillow

        with Image.open(out) as image:
            reduced = image.convert("RGB").quantize(256, method=Image.Quantize.MEDIANCUT)
        reduced.save(out, optimize=True)
    print(f"{out}: {WIDTH} x {height} px, {out.stat().st_size / 1e6:.2f} MB")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("report", type=Path, help="the report's HTML file")
    parser.add_argument("out", type=Path, help="PNG of the whole page")
    parser.add_argument("--first", type=Path, help="PNG of the first screen (1400 x 900)")
    parser.add_argument("--palette", action="store_true", help="256-colour PNGs (needs Pillow)")
    args = parser.parse_args()
    exe, report = browser(), args.report.resolve()
    with tempfile.TemporaryDirectory() as profile:
        size = layout(exe, profile, report)
        print(f"page at {WIDTH} px: {size['width']} px wide, {size['height']} px high")
        if size.get("plots_end"):  # the answer, the matrix and the plots: the report's first part
            screens = size["plots_end"] / FIRST_SCREEN
            print(f"the answer, matrix and plots end at {size['plots_end']} px: {screens:.1f} screens of {FIRST_SCREEN} px")
        for heading in size["wide"]:
            print(f"too wide at {WIDTH} px: the table after {heading.strip()!r}")
        shoot(exe, profile, report, args.out, size["height"], args.palette)
        if args.first:
            shoot(exe, profile, report, args.first, FIRST_SCREEN, args.palette)
    return 1 if size["wide"] or size["width"] > WIDTH else 0


if __name__ == "__main__":
    sys.exit(main())
