"""The report: seven outputs, self-contained and escaped HTML, a truthful summary table."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from fixtures_report import CANDIDATES, EVIL, EVIL_REASON, MISSED, SHAPES, write_run

from attnbench.io import ResultFileError
from attnbench.report import COLUMNS, build_report
from attnbench.stats import holm

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    kwargs = write_run(tmp_path_factory.mktemp("run"))
    build_report(**kwargs)
    return kwargs


def _text(run: dict[str, Any], key: str) -> str:
    return Path(run["out"][key]).read_text(encoding="utf-8")


def _html_row(page: str, first_cell: str, column: int = 1, value: str | None = None) -> list[tuple[str, str]]:
    """(class, text) of each cell of the one table row whose first cell is `first_cell` (and, when
    `value` is given, whose cell `column` holds it)."""
    found = []
    for row in re.findall(r"<tr[^>]*>(.*?)</tr>", page):
        cells = re.findall(r'<td(?: class="([^"]*)")?>(.*?)</td>', row)
        if cells and cells[0][1] == first_cell and (value is None or cells[column][1] == value):
            found.append(cells)
    assert len(found) == 1, (first_cell, value, found)
    return found[0]


def test_writes_all_seven_outputs(run: dict[str, Any]) -> None:
    for key in ("latency", "roofline", "speedup", "memory"):
        assert Path(run["out"][key]).read_bytes().startswith(PNG_MAGIC), key
    for key in ("html", "md", "csv"):
        assert Path(run["out"][key]).stat().st_size > 0, key
    leftovers = list(Path(run["out"]["html"]).parent.rglob("*.tmp"))
    assert leftovers == []  # atomic writes leave no temporary files behind


def test_html_is_self_contained(run: dict[str, Any]) -> None:
    page = _text(run, "html")
    assert page.count('src="data:image/png;base64,') == 4
    references = re.findall(r"""(?:src|href)\s*=\s*["']?([^"'\s>]+)""", page, flags=re.I)
    assert all(ref.startswith("data:") for ref in references), references
    assert "http://" not in page and "https://" not in page
    assert "<link" not in page and "@import" not in page and "url(" not in page
    assert all('alt="' in img for img in re.findall(r"<img[^>]*>", page))


def test_html_escapes_names_and_reasons(run: dict[str, Any]) -> None:
    page = _text(run, "html")
    assert "<script" not in page.lower()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<b>&" not in page
    assert "&lt;b&gt;&amp;" in page
    assert "cuDNN &lt;error&gt; &amp; friends" in page


def test_csv_has_one_row_per_shape_and_candidate(run: dict[str, Any]) -> None:
    frame = pd.read_csv(run["out"]["csv"], keep_default_na=True)
    assert list(frame.columns) == COLUMNS
    assert len(frame) == len(SHAPES) * len(CANDIDATES)
    assert set(frame["candidate"]) == set(CANDIDATES)
    ok = frame[frame["status"] == "ok"]
    assert (ok["fraction_of_matmul_ceiling"] - ok["tflops"] / 650.0).abs().max() < 1e-12
    assert (ok["fraction_of_copy_ceiling"] - ok["bandwidth_gbs"] / 2900.0).abs().max() < 1e-12
    not_ok = frame[frame["status"] != "ok"]
    assert not_ok["reason"].notna().all()


def test_fastest_is_the_fastest_correct_candidate(run: dict[str, Any]) -> None:
    frame = pd.read_csv(run["out"]["csv"])
    for shape, rows in frame.groupby("shape"):
        # the incorrect candidate is quickest of all, yet must not win
        assert rows.loc[rows["median_ms"].idxmin(), "candidate"] == EVIL
        assert rows["fastest"].sum() == 1, shape
        winner = rows[rows["fastest"]].iloc[0]
        assert winner["status"] == "ok"
        assert winner["median_ms"] == rows[rows["status"] == "ok"]["median_ms"].min()
    assert not frame.loc[frame["status"] != "ok", "fastest"].any()


def test_holm_is_applied_across_the_whole_run(run: dict[str, Any]) -> None:
    frame = pd.read_csv(run["out"]["csv"])
    compared = frame[frame["p_value"].notna()]
    raw = [c["p_value"] for p in run["compare_paths"] for c in json.loads(Path(p).read_text())["comparisons"]]
    assert len(compared) == len(raw) == 2 * len(SHAPES)  # flash and flex against math
    assert (compared["p_holm"] >= compared["p_value"]).all()
    assert sorted(compared["p_holm"]) == pytest.approx(sorted(holm(raw)))
    significant = compared.set_index(["shape", "candidate"])["significant_holm"].astype(bool)
    assert significant.xs("flash", level="candidate").all()  # ~7x faster
    assert not significant.xs("flex", level="candidate").any()  # as fast as the reference
    assert frame.loc[frame["candidate"] == "math", "speedup"].isna().all()  # the reference itself


def test_markdown_lists_failures_and_escapes_tables(run: dict[str, Any]) -> None:
    md = _text(run, "md")
    assert "| candidate | status | reason | shapes |" in md
    shapes = ", ".join(s[0] for s in SHAPES).replace("_", "\\_")
    # one row per distinct failure, listing the shapes it happened on, its reason escaped
    assert f"| incorrect | output differs: \\<b\\>\\& \\| max error 3.2 | {shapes} |" in md
    assert EVIL_REASON not in md
    # every row of a table has as many unescaped pipes as its header: no cell was split
    for table in re.findall(r"(?:^\|.*\n)+", md, flags=re.M):
        widths = {len(re.findall(r"(?<!\\)\|", line)) for line in table.splitlines()}
        assert len(widths) == 1, table
    for link in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md):
        assert (Path(run["out"]["md"]).parent / link).is_file(), link
    assert "Holm-corrected across all 6 comparisons" in md


def test_cpu_run_without_comparisons(tmp_path: Path) -> None:
    kwargs = write_run(tmp_path, device="cpu", with_compare=False, cpu_fingerprint=True)
    build_report(**kwargs, title="CPU <run>")
    page = Path(kwargs["out"]["html"]).read_text(encoding="utf-8")
    assert "<title>CPU &lt;run&gt;</title>" in page
    assert "torch was built without CUDA" in page
    assert page.count('src="data:image/png;base64,') == 4
    frame = pd.read_csv(kwargs["out"]["csv"])
    assert frame["peak_mem_mb"].isna().all() and frame["speedup"].isna().all()
    md = Path(kwargs["out"]["md"]).read_text(encoding="utf-8")
    assert "no comparison files" in md
    assert "| warm | the CPU has no L2 flush or CUDA graphs: wall time of one call |" in md
    assert "| n/a (cpu) | n/a | n/a |" in md
    assert "GPU clocks not monitored (cpu)" in md and "No GPU clock was read (no GPU clock on the cpu)" in md


def test_single_shape_without_an_ok_candidate(tmp_path: Path) -> None:
    candidates = {
        "math": ("unsupported", None, "needs a GPU", False),
        EVIL: ("incorrect", 100.0, EVIL_REASON, False),
        r"user:$\bad{$": ("error", None, "mathtext would choke on this name", False),
    }
    kwargs = write_run(tmp_path, shapes=SHAPES[:1], candidates=candidates)
    build_report(**kwargs)
    frame = pd.read_csv(kwargs["out"]["csv"])
    assert len(frame) == 3 and not frame["fastest"].any()
    for key in ("latency", "roofline", "speedup", "memory"):
        assert Path(kwargs["out"][key]).read_bytes().startswith(PNG_MAGIC)
    md = Path(kwargs["out"]["md"]).read_text(encoding="utf-8")
    assert "needs a GPU" in md and "across all 0 comparisons" in md


def test_dollar_names_are_plotted_literally(tmp_path: Path) -> None:
    candidates = {"math": CANDIDATES["math"], r"user:$\bad{$": ("ok", 120.0, None, False)}
    kwargs = write_run(tmp_path, shapes=SHAPES[:2], candidates=candidates)
    build_report(**kwargs)  # matplotlib would raise on the name read as mathtext
    assert pd.read_csv(kwargs["out"]["csv"]).query("fastest")["candidate"].tolist() == [r"user:$\bad{$"] * 2


def test_rejects_inputs_that_break_the_schema(tmp_path: Path) -> None:
    kwargs = write_run(tmp_path, shapes=SHAPES[:1])
    bench = json.loads(Path(kwargs["bench_paths"][0]).read_text())
    del bench["flops"]
    Path(kwargs["bench_paths"][0]).write_text(json.dumps(bench))
    with pytest.raises(ResultFileError, match="flops"):
        build_report(**kwargs)
    assert not Path(kwargs["out"]["html"]).exists()


def test_names_every_missing_output(tmp_path: Path) -> None:
    kwargs = write_run(tmp_path, shapes=SHAPES[:1])
    del kwargs["out"]["memory"]
    with pytest.raises(ValueError, match="memory"):
        build_report(**kwargs)


def test_warns_when_ceilings_come_from_another_device(tmp_path: Path) -> None:
    kwargs = write_run(tmp_path, shapes=SHAPES[:1])
    ceilings = json.loads(Path(kwargs["ceilings_path"]).read_text())
    ceilings["device_name"] = "NVIDIA A100-SXM4-80GB"
    Path(kwargs["ceilings_path"]).write_text(json.dumps(ceilings))
    build_report(**kwargs)
    page = Path(kwargs["out"]["html"]).read_text(encoding="utf-8")
    assert '<p class="warning">Warning: the ceilings were measured on NVIDIA A100' in page


def test_marks_results_that_missed_the_ci_target(run: dict[str, Any]) -> None:
    ((shape, candidate),) = MISSED
    md = _text(run, "md")
    assert md.count("(⚠ target ±1.0% missed)") == 1
    section = md.split(f"### {shape.replace('_', chr(92) + '_')} ", 1)[1].split("###", 1)[0]
    assert re.search(
        rf"^\| {candidate} \| ok \| [^|]+ \| ±1\.4% \(⚠ target ±1\.0% missed\) \|", section, re.M
    )
    assert re.search(r"^\| math \| ok \| [^|]+ \| ±0\.4% \|", section, re.M)  # met: no marker
    page = _text(run, "html")
    flagged = [c for c in re.findall(r'<td class="([^"]*)">±1\.4%[^<]*</td>', page)]
    assert flagged == ["num flag"]
    assert '<td class="num">±0.4%</td>' in page


def test_summary_csv_has_precision_columns(run: dict[str, Any]) -> None:
    frame = pd.read_csv(run["out"]["csv"])
    assert {"rel_ci", "target_met", "target_rel_ci", "timing_mode"} <= set(frame.columns)
    timed = frame[frame["median_ms"].notna()]
    assert timed["rel_ci"].notna().all() and (timed["target_rel_ci"] == 0.01).all()
    missed = timed[timed["target_met"].astype(str) == "False"]
    assert list(zip(missed["shape"], missed["candidate"])) == sorted(MISSED)
    assert missed["rel_ci"].tolist() == [0.014]
    assert (timed.drop(missed.index)["target_met"].astype(str) == "True").all()
    untimed = frame[frame["median_ms"].isna()]
    assert untimed["rel_ci"].isna().all() and untimed["target_met"].isna().all()
    modes = frame.groupby("shape")["timing_mode"].first().to_dict()
    assert modes == {"s1024_d64": "graph", "s4096_d64": "cold", "s4096_d128_causal_gqa": "cold"}


def test_measurement_conditions_show_mode_and_stop_reason(run: dict[str, Any]) -> None:
    md = _text(run, "md")
    assert "## Measurement conditions" in md
    assert (
        "| s1024\\_d64 | graph (24 calls per sample) | auto: fastest candidate 0.0412 ms \\< 0.15 ms "
        "| 20 rounds, 0.4 s, settled: yes | 30 / 30 | every median's 95% CI within ±1.00% | 1,980 MHz "
        "| 0 | 0 | ok |"
    ) in md
    page = _text(run, "html")
    row = _html_row(page, "s4096_d64", 1, "cold")
    assert row[5] == ("text flag", "max_time_s (30 s) reached before the CI target")
    assert row[9] == ("flag", "⚠ CI target ±1.0% missed by 1 of 4 results")
    assert row[3] == ("", "20 rounds, 0.4 s, settled: yes")  # settled: not flagged
    # a mode reason quoting an exception is escaped like every other string from the files
    assert "RuntimeError: &lt;capture&gt; &amp; co" in page and "<capture>" not in page
    assert "Measurement: 1 of 12 timed results missed their ±1.0% CI target" in md


def test_flags_throttled_and_discarded_rounds(run: dict[str, Any]) -> None:
    page = _text(run, "html")
    row = _html_row(page, "s4096_d128_causal_gqa")
    assert row[3] == ("flag", "410 rounds, 5.0 s, settled: no")
    assert row[4] == ("num", "30 / 33")
    assert row[6][1] == "1,755 MHz (1,410–1,980)"
    assert row[7][1] == "12 (hw_thermal_slowdown: 3, sw_power_cap: 9)"
    assert row[8] == ("num flag", "3")
    assert row[9] == ("flag", "⚠ warm-up not settled; 3 rounds discarded for slowdowns")
    clean = _html_row(page, "s1024_d64", 1, "graph (24 calls per sample)")
    assert not any("flag" in css for css, _ in clean)
    summary = re.search(r'<p class="warning">⚠ Measurement: [^<]*</p>', page)
    assert summary is not None
    assert "throttled rounds on 1 of 3 shapes (3 rounds discarded for thermal or hardware slowdowns)" in (
        summary.group(0)
    )
    assert "warm-up did not settle on 1 of 3 shapes" in summary.group(0)


def test_clean_run_says_every_target_was_met(tmp_path: Path) -> None:
    candidates = {"math": CANDIDATES["math"], "flash": CANDIDATES["flash"]}
    kwargs = write_run(tmp_path, shapes=SHAPES[1:], candidates=candidates, conditions={}, missed=set())
    build_report(**kwargs)
    md = Path(kwargs["out"]["md"]).read_text(encoding="utf-8")
    assert "Measurement: All 4 timed results met their ±1.0% CI target; no throttled rounds" in md
    rows = [line for line in md.splitlines() if line.startswith("|")]
    assert not [line for line in rows if "⚠" in line or "missed" in line]
    assert "| ok |" in md.split("## Measurement conditions", 1)[1]
    assert 'class="warning"' not in Path(kwargs["out"]["html"]).read_text(encoding="utf-8")


def test_method_describes_sampling_and_the_test(run: dict[str, Any]) -> None:
    md = _text(run, "md")
    method = md.split("## Method", 1)[1]
    for phrase in (
        "interleaved rounds",
        "alternates direction",
        "graph: 1 shape, cold: 2 shapes",
        "until every candidate's timing and the SM clock had settled",
        "within ±1.0% of it, or at 30 s or 5000 rounds per shape",
        "thermal or hardware slowdown were discarded whole",
        "t\\_test\\_on\\_block\\_means\\_of\\_log\\_ratios at alpha 0.05",
        "a difference of at most 0.005",
        "practical threshold was 0.02",
    ):
        assert phrase in method, phrase
