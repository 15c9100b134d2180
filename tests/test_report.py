"""The report and the autotune step: their outputs, self-contained and escaped HTML, a truthful summary
table, autotune. Content is checked on the section data the templates render (report.document); the
rendered Markdown and HTML of the fixture run are pinned by one snapshot each (test_snapshots)."""

from __future__ import annotations

import json
import math
import os
import re
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from fixtures_report import (
    CANDIDATES,
    CONFIG_KERNEL,
    EDGE,
    EVIL,
    EVIL_REASON,
    MISSED,
    SCHEMAS,
    SHAPES,
    TIED_CANDIDATES,
    TWIN,
    agrees,
    autotune_out,
    build,
    configuration,
    configuration_candidates,
    read_back,
    write_run,
    write_verdict_run,
)

from attnbench import autotune, formatting, headline, quality, report
from attnbench.autotune import CSV_COLUMNS as AUTOTUNE_COLUMNS
from attnbench.documents import Analysis, ShapeComparisons, ShapeResult
from attnbench.files import ResultFileError, write_json
from attnbench.formatting import num
from attnbench.plots import PLOTS
from attnbench.report import COLUMNS, Heading, Para, Section, Table, build_report
from attnbench.report.sections.results import how_given
from attnbench.report.words import intervals
from attnbench.stats import TOO_FEW_ROUNDS, adjust, compare

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    kwargs = write_run(tmp_path_factory.mktemp("run"))
    build(kwargs)
    return kwargs


@pytest.fixture(scope="module")
def tied_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """s4096_d64 has a twin of flash (same throughput, independent noise); the other shapes do not."""
    kwargs = write_run(tmp_path_factory.mktemp("tied"), shape_candidates={"s4096_d64": TIED_CANDIDATES})
    build(kwargs)
    return kwargs


@pytest.fixture(scope="module")
def config_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """math, flash and six configurations of kern:attn (fixtures_report.CONFIG_SPECS) on every shape."""
    kwargs = write_run(tmp_path_factory.mktemp("configurations"), shape_candidates=configuration_candidates())
    build(kwargs)
    return kwargs


def _text(run: dict[str, Any], key: str) -> str:
    return Path(run["out"][key]).read_text(encoding="utf-8")


def sections(run: dict[str, Any]) -> dict[str, Section]:
    """The report's sections by title, as report.document builds them for the templates."""
    return {section.title: section for section in report.document(read_back(run))}


def tables(section: Section) -> list[Table]:
    return [block for block in section.blocks if isinstance(block, Table)]


def under(section: Section, heading: str) -> list[Any]:
    """The blocks between the `###` heading `heading` and the next one."""
    blocks = section.blocks
    start = [i for i, b in enumerate(blocks) if isinstance(b, Heading) and b.text.startswith(heading)]
    assert len(start) == 1, heading
    rest = blocks[start[0] + 1 :]
    return rest[: next((i for i, b in enumerate(rest) if isinstance(b, Heading)), len(rest))]


def text(section: Section) -> str:
    return " ".join(block.text for block in section.blocks if isinstance(block, Para))


def row_of(table: Table, first_cell: str, column: int = 1, value: str | None = None) -> int:
    """The index of the one row whose first cell is `first_cell` (and cell `column` holds `value`)."""
    found = [r for r, row in enumerate(table.rows) if row[0] == first_cell and value in (None, row[column])]
    assert len(found) == 1, (first_cell, value, found)
    return found[0]


def flagged(table: Table, r: int) -> set[int]:
    return {column for row, column in table.flagged if row == r}


def test_writes_all_outputs(run: dict[str, Any]) -> None:
    for key in ("latency", "roofline", "speedup", "memory"):
        assert Path(run["out"][key]).read_bytes().startswith(PNG_MAGIC), key
    for path in [*(run["out"][key] for key in ("html", "md", "csv")), *autotune_out(run).values()]:
        assert Path(path).stat().st_size > 0, path
    leftovers = list(Path(run["out"]["html"]).parent.rglob("*.tmp"))
    assert leftovers == []  # atomic writes leave no temporary files behind


def test_html_is_self_contained(run: dict[str, Any]) -> None:
    page = _text(run, "html")
    assert page.count('src="data:image/png;base64,') == len(PLOTS)
    references = re.findall(r"""(?:src|href)\s*=\s*["']?([^"'\s>]+)""", page, flags=re.IGNORECASE)
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
    # which GPU ran each shape, as the bench files record it
    assert (frame["gpu_index"] == 0).all() and frame["gpu_uuid"].isna().all()


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


def test_bonferroni_is_applied_across_the_whole_run(run: dict[str, Any]) -> None:
    """summary.csv's interval, confidence, adjusted p and verdict are the run-wide correction's:
    stats.adjust over the run's `family` comparisons, from the compare files' estimates."""
    frame = pd.read_csv(run["out"]["csv"])
    compared = frame[frame["p_value"].notna()].set_index(["shape", "candidate"])
    comparisons = [
        (c["shape"], comp)
        for c in (json.loads(Path(p).read_text()) for p in run["compare_paths"])
        for comp in c["comparisons"]
    ]
    assert len(compared) == len(comparisons) == 2 * len(SHAPES)  # flash and flex against math
    family = _analysis(run)["family"]
    assert family == 9  # 6 with the reference, and flex against each shape's fastest, flash
    for (shape, comp), corrected in zip(comparisons, adjust([c for _, c in comparisons], family=family)):
        row = compared.loc[(shape, comp["candidate"])]
        assert row["speedup"] == pytest.approx(comp["speedup"])
        assert [row["speedup_ci_lo"], row["speedup_ci_hi"]] == pytest.approx(corrected["speedup_ci"])
        assert row["confidence"] == pytest.approx(1 - 0.05 / family)
        assert row["p_value"] == pytest.approx(comp["p_value"])
        assert row["p_adjusted"] == pytest.approx(min(1.0, family * comp["p_value"]))
        assert row["verdict"] == corrected["verdict"]
        # wider than the compare file's own interval at 95%
        assert row["speedup_ci_lo"] < comp["speedup_ci"][0] and row["speedup_ci_hi"] > comp["speedup_ci"][1]
    assert (compared.xs("flash", level="candidate")["verdict"] == "faster").all()  # ~7x faster
    assert (compared.xs("flex", level="candidate")["verdict"] == "same").all()  # as fast as the reference
    assert frame.loc[frame["candidate"] == "math", "speedup"].isna().all()  # the reference itself


def test_markdown_lists_failures_and_escapes_tables(run: dict[str, Any]) -> None:
    (table,) = tables(sections(run)["Candidates that did not produce a valid result"])
    assert table.headers == ["candidate", "status", "reason", "shapes"]
    # one row per distinct failure, listing the shapes it happened on
    shapes = ", ".join(s[0] for s in SHAPES)
    assert table.rows[row_of(table, EVIL)] == [EVIL, "incorrect", EVIL_REASON, shapes]
    md = _text(run, "md")
    assert "| incorrect | output differs: &lt;b&gt;&amp; \\| max error 3.2 | s1024_d64, " in md
    assert EVIL_REASON not in md
    # every row of a table has as many unescaped pipes as its header: no cell was split
    for block in re.findall(r"(?:^\|.*\n)+", md, flags=re.MULTILINE):
        widths = {len(re.findall(r"(?<!\\)\|", line)) for line in block.splitlines()}
        assert len(widths) == 1, block
    for link in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md):
        assert (Path(run["out"]["md"]).parent / link).is_file(), link
    assert (
        "are corrected as one family (Bonferroni for the run's 9 comparisons: intervals at 99.4%, "
        "p-values times 9, capped at 1)" in text(sections(run)["Method"])
    )


def test_cpu_run_without_comparisons(tmp_path: Path) -> None:
    kwargs = write_run(tmp_path, device="cpu", with_compare=False, cpu_fingerprint=True)
    build(kwargs, title="CPU <run>")
    page = Path(kwargs["out"]["html"]).read_text(encoding="utf-8")
    assert "<title>CPU &lt;run&gt;</title>" in page
    assert "torch was built without CUDA" in page
    assert page.count('src="data:image/png;base64,') == len(PLOTS)
    frame = pd.read_csv(kwargs["out"]["csv"])
    assert frame["peak_mem_mb"].isna().all() and frame["speedup"].isna().all()
    found = sections(kwargs)
    assert "no comparison files" in text(found["Method"])
    (conditions,) = tables(found["Measurement conditions"])
    row = conditions.rows[row_of(conditions, SHAPES[0][0])]
    assert row[1:3] == ["warm", "the CPU has no L2 flush or CUDA graphs: wall time of one call"]
    # no GPU clock anywhere: no clock columns, so the CPU table fits the page
    assert conditions.headers[6:] == ["checks"] and row[6] == "ok"
    assert "GPU clocks not monitored (cpu)" in text(found["Headline"])
    assert "No GPU clock was read (no GPU clock on the cpu)" in text(found["Method"])


def test_single_shape_without_an_ok_candidate(tmp_path: Path) -> None:
    candidates = {
        "math": ("unsupported", None, "needs a GPU", False),
        EVIL: ("incorrect", 100.0, EVIL_REASON, False),
        r"user:$\bad{$": ("error", None, "mathtext would choke on this name", False),
    }
    kwargs = write_run(tmp_path, shapes=SHAPES[:1], candidates=candidates)
    build(kwargs)
    frame = pd.read_csv(kwargs["out"]["csv"])
    assert len(frame) == 3 and not frame["fastest"].any()
    autotune = pd.read_csv(autotune_out(kwargs)["csv"], keep_default_na=False)
    # the configuration columns after the first six stay empty on a shape's row
    assert autotune.to_dict("records") == [
        {"shape": SHAPES[0][0], "fastest": "", "fastest_median_ms": "", "fastest_ci95_lo_ms": "",
         "fastest_ci95_hi_ms": "", "tied": "", "family": "", "recommended": "", "slowdown": "",
         "slowdown_ci_lo": "", "slowdown_ci_hi": ""}
    ]  # fmt: skip
    for key in ("latency", "roofline", "speedup", "memory"):
        assert Path(kwargs["out"][key]).read_bytes().startswith(PNG_MAGIC)
    found = sections(kwargs)
    # unsupported on every shape for one reason: one line in the headline, not a row per shape
    assert "Unsupported on every shape, left out below: math: needs a GPU" in text(found["Headline"])
    assert "needs a GPU" not in str(tables(found["Candidates that did not produce a valid result"])[0].rows)
    assert "The run made no comparison, so there was nothing to correct across it." in text(found["Method"])


def test_dollar_names_are_plotted_literally(tmp_path: Path) -> None:
    candidates = {"math": CANDIDATES["math"], r"user:$\bad{$": ("ok", 120.0, None, False)}
    kwargs = write_run(tmp_path, shapes=SHAPES[:2], candidates=candidates)
    build(kwargs)  # matplotlib would raise on the name read as mathtext
    assert pd.read_csv(kwargs["out"]["csv"]).query("fastest")["candidate"].tolist() == [r"user:$\bad{$"] * 2


def test_rejects_inputs_that_break_the_schema(tmp_path: Path) -> None:
    kwargs = write_run(tmp_path, shapes=SHAPES[:1])
    bench = json.loads(Path(kwargs["bench_paths"][0]).read_text())
    del bench["flops"]
    Path(kwargs["bench_paths"][0]).write_text(json.dumps(bench))
    with pytest.raises(ResultFileError, match="flops"):
        build(kwargs)
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
    write_json(kwargs["ceilings_path"], ceilings)  # as the calibrate job writes it: its digest too
    build(kwargs)
    warnings = [b for b in sections(kwargs)["Measured ceilings"].blocks if isinstance(b, Para) and b.css]
    assert [b.css for b in warnings] == ["warning"]
    assert warnings[0].text.startswith("Warning: the ceilings were measured on NVIDIA A100")


def test_marks_results_that_missed_the_ci_target(run: dict[str, Any]) -> None:
    ((shape, candidate),) = MISSED
    assert _text(run, "md").count("(⚠ target ±1.0% missed)") == 1
    (table,) = [b for b in under(sections(run)["Results per shape"], f"{shape} ") if isinstance(b, Table)]
    missed = row_of(table, candidate)
    assert table.rows[missed][1:4][::2] == ["ok", "±1.4% (⚠ target ±1.0% missed)"]
    assert flagged(table, missed) == {3}
    met = row_of(table, "math")
    assert table.rows[met][3] == "±0.4%" and not flagged(table, met)  # met: no marker
    assert 3 in table.numeric


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
    found = sections(run)
    # two tables, each narrow enough for a 1400 px window: sampling, then clocks (and host)
    table, clocks = tables(found["Measurement conditions"])
    assert table.rows[row_of(table, "s1024_d64")] == [
        "s1024_d64",
        "graph (24 calls per sample)",
        "auto: fastest candidate 0.0412 ms < 0.15 ms",
        "20 rounds, 0.4 s, settled: yes",
        "30 / 30",
        "every median's 95% CI within ±1.00%",
        "ok",
    ]
    assert clocks.rows[row_of(clocks, "s1024_d64")] == ["s1024_d64", "1,980 MHz", "0", "0"]
    r = row_of(table, "s4096_d64", 1, "cold")
    row = table.rows[r]
    assert row[5] == "max_time_s (30 s) reached before the CI target"
    assert row[6] == "⚠ CI target ±1.0% missed by 1 of 4 results"
    assert row[3] == "20 rounds, 0.4 s, settled: yes"
    assert flagged(table, r) == {5, 6}  # settled: not flagged
    assert table.text_cols == {2, 5, 6} and table.numeric == {4} and clocks.numeric == {3}
    # a mode reason quoting an exception is escaped like every other string from the files
    page = _text(run, "html")
    assert "RuntimeError: &lt;capture&gt; &amp; co" in page and "<capture>" not in page
    assert "Measurement: 1 of 12 timed results missed their ±1.0% CI target" in text(found["Headline"])


def test_flags_throttled_and_discarded_rounds(run: dict[str, Any]) -> None:
    found = sections(run)
    table, clocks = tables(found["Measurement conditions"])
    r = row_of(table, "s4096_d128_causal_gqa")
    row = table.rows[r]
    assert row[3:5] == ["410 rounds, 5.0 s, settled: no", "30 / 33"]
    assert row[6] == "⚠ warm-up not settled; 3 rounds discarded for slowdowns"
    assert flagged(table, r) == {3, 6}
    c = row_of(clocks, "s4096_d128_causal_gqa")
    assert clocks.rows[c][1:] == [
        "1,755 MHz (1,410–1,980)",
        "12 (hw_thermal_slowdown: 3, sw_power_cap: 9)",
        "3",
    ]
    assert flagged(clocks, c) == {3}
    assert not flagged(table, row_of(table, "s1024_d64", 1, "graph (24 calls per sample)"))
    (summary,) = [b for b in found["Headline"].blocks if isinstance(b, Para) and "Measurement" in b.text]
    assert summary.css == "warning" and summary.text.startswith("⚠ Measurement: ")
    assert "throttled rounds on 1 of 3 shapes (3 rounds discarded for thermal or hardware slowdowns)" in (
        summary.text
    )
    assert "warm-up did not settle on 1 of 3 shapes" in summary.text


def test_clean_run_says_every_target_was_met(tmp_path: Path) -> None:
    candidates = {"math": CANDIDATES["math"], "flash": CANDIDATES["flash"]}
    kwargs = write_run(tmp_path, shapes=SHAPES[1:], candidates=candidates, conditions={}, missed=set())
    build(kwargs)
    md = Path(kwargs["out"]["md"]).read_text(encoding="utf-8")
    assert "Measurement: All 4 timed results met their ±1.0% CI target; no throttled rounds" in md
    rows = [line for line in md.splitlines() if line.startswith("|")]
    assert not [line for line in rows if "⚠" in line or "missed" in line]
    assert "| ok |" in md.split("## Measurement conditions", 1)[1]
    assert 'class="warning"' not in Path(kwargs["out"]["html"]).read_text(encoding="utf-8")


def test_method_describes_sampling_and_the_test(run: dict[str, Any]) -> None:
    method = text(sections(run)["Method"])
    for phrase in (
        "interleaved rounds",
        "alternates direction",
        "graph: 1 shape, cold: 2 shapes",
        "until every candidate's timing and the SM clock had settled",
        "within ±1.0% of it, or at 30 s or 5000 rounds per shape",
        "thermal or hardware slowdown were discarded whole",
        "by one estimate (t_test_on_block_means_of_log_ratios)",
        "its interval is the t interval exp(mean ± t(1 − α/2, df) × se), at confidence 1 − α (α = 0.05)",
        "The p-value is that interval's inversion against the resolution band",
        "a difference of at most 0.005",
        "practical threshold of 0.02",
        'With fewer than 3 rounds there is no interval and no p-value: the verdict is "too few rounds"',
        "Bonferroni for the run's 9 comparisons: intervals at 99.4%, p-values times 9",
    ):
        assert phrase in method, phrase
    assert "Holm" not in method and "bootstrap" not in method.split("Each candidate was compared")[1]
    assert "Welch" not in method  # every comparison of this run was paired


# ---------------------------------------------------------------------------------------- autotune


def _autotune(run: dict[str, Any]) -> pd.DataFrame:
    return pd.read_csv(autotune_out(run)["csv"], keep_default_na=False).set_index("shape")


def _section(text: str, start: str, end: str) -> str:
    assert text.count(start) == 1, start
    return text.split(start, 1)[1].split(end, 1)[0]


def test_autotune_lists_candidates_within_noise(tied_run: dict[str, Any]) -> None:
    autotune = _autotune(tied_run)
    # flash and its twin are equally fast: whichever came out ahead, the other is tied with it
    assert {autotune.loc["s4096_d64", "fastest"], autotune.loc["s4096_d64", "tied"]} == {"flash", TWIN}
    assert autotune.loc[["s1024_d64", "s4096_d128_causal_gqa"], "fastest"].tolist() == ["flash", "flash"]
    assert autotune.loc[["s1024_d64", "s4096_d128_causal_gqa"], "tied"].tolist() == ["", ""]
    (table,) = tables(sections(tied_run)["Autotune"])  # one table for the run, one row per shape
    assert [row[0] for row in table.rows] == [s[0] for s in SHAPES]
    row = table.rows[row_of(table, "s4096_d64")]
    fastest, tied = (TWIN, "flash") if autotune.loc["s4096_d64", "fastest"] == TWIN else ("flash", TWIN)
    assert row[1] == fastest and re.match(r"0\.6\d+ \[", row[2])
    assert re.fullmatch(
        rf"{re.escape(tied)}: -?\d\.\d%, [01]\.\d+× \[[01]\.\d+, [01]\.\d+\], p [\d.e-]+", row[3]
    )
    assert row[4] == "math, flex"  # significantly and practically slower


def test_autotune_has_no_ties_when_one_is_clearly_faster(run: dict[str, Any]) -> None:
    autotune = _autotune(run)
    assert autotune["fastest"].tolist() == ["flash"] * len(SHAPES)  # ~7x faster than math and flex
    assert autotune["tied"].tolist() == [""] * len(SHAPES)
    section = sections(run)["Autotune"]
    (table,) = tables(section)
    assert [row[1] for row in table.rows] == ["flash"] * len(SHAPES)
    assert [row[3:] for row in table.rows] == [["none", "math, flex"]] * len(SHAPES)
    (note,) = [b.text for b in section.blocks if isinstance(b, Para)]  # said once, not once per shape
    assert (
        "corrected with the rest of the run (Bonferroni for the run's 9 comparisons: intervals at 99.4%"
        in note
    )


def test_autotune_csv_matches_the_summary(run: dict[str, Any], tied_run: dict[str, Any]) -> None:
    for kwargs in (run, tied_run):
        autotune = pd.read_csv(autotune_out(kwargs)["csv"], keep_default_na=False)
        assert list(autotune.columns) == AUTOTUNE_COLUMNS
        assert autotune["shape"].tolist() == [s[0] for s in SHAPES]  # one row per shape, in run order
        summary = pd.read_csv(kwargs["out"]["csv"]).query("fastest").set_index("shape")
        for row in autotune.itertuples(index=False):
            winner = summary.loc[row.shape]
            assert row.fastest == winner["candidate"]
            assert [row.fastest_median_ms, row.fastest_ci95_lo_ms, row.fastest_ci95_hi_ms] == pytest.approx(
                [winner["median_ms"], winner["ci95_lo_ms"], winner["ci95_hi_ms"]], rel=1e-12
            )
            assert row.fastest_ci95_lo_ms <= row.fastest_median_ms <= row.fastest_ci95_hi_ms
    tied = pd.read_csv(autotune_out(tied_run)["csv"], keep_default_na=False)
    assert tied["tied"].str.contains(";").sum() == 0  # at most one tie in this run
    assert (tied["tied"] != "").sum() == 1


def test_autotune_recomputes_the_run_comparisons(tied_run: dict[str, Any]) -> None:
    """Fastest vs every other ok candidate with the compare files' settings, corrected across the run."""
    benches = [json.loads(Path(p).read_text()) for p in tied_run["bench_paths"]]
    compares = [json.loads(Path(p).read_text()) for p in tied_run["compare_paths"]]
    methods = {c["shape"]: c["method"] for c in compares}
    pairs = []
    for bench in benches:
        ok = {n: c for n, c in bench["candidates"].items() if c["status"] == "ok"}
        best = min(ok, key=lambda n: ok[n]["median_ms"])
        method = methods[bench["shape"]["name"]]
        settings = {k: method[k] for k in ("alpha", "threshold", "resolution")}
        for name in ok.keys() - {best}:
            result = compare(ok[best]["samples_ms"], ok[name]["samples_ms"], **settings)
            pairs.append((bench["shape"]["name"], name, result))
    adjusted = adjust([result for *_, result in pairs], family=_analysis(tied_run)["family"])
    expected = {shape: set() for shape, *_ in pairs}
    for (shape, name, _), corrected in zip(pairs, adjusted):
        if corrected["verdict"] == "same":
            expected[shape].add(name)
    autotune = _autotune(tied_run)
    assert {
        shape: set(filter(None, autotune.loc[shape, "tied"].split(";"))) for shape in expected
    } == expected


def _estimate(speedup: float, p_value: float, df: float = 14.0) -> dict[str, float]:
    """A stats.compare estimate whose uncorrected p-value (against the 0.5% resolution band) is `p_value`."""
    from scipy import special

    excess = abs(math.log(speedup)) - math.log1p(0.005)
    return {"log_speedup": math.log(speedup), "se": excess / -special.stdtrit(df, p_value / 2), "df": df}


def test_autotune_corrects_across_the_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Autotune's comparisons, each 10% slower at p = 0.02: significant alone, not after the
    correction for the run's 6 comparisons (p = 0.12): tied; at p = 0.005 (0.03 corrected): slower."""
    calls = []

    def fake(baseline: Any, candidate: Any, **settings: Any) -> dict[str, Any]:
        calls.append(settings)
        est = _estimate(0.9, p_value)
        return {"speedup": 0.9, "p_value": p_value, "rounds": 30, "estimate": est}

    monkeypatch.setattr(autotune, "compare_samples", fake)
    kwargs = write_run(tmp_path, shapes=SHAPES[:2])
    p_value = 0.02
    build(kwargs)
    assert len(calls) == 4  # math and flex against flash, on two shapes
    assert calls[0] == {"alpha": 0.05, "threshold": 0.02, "resolution": 0.005}
    analysis = _analysis(kwargs)
    assert analysis["family"] == 6  # flash and flex against math, and flex against flash, per shape
    rivals = [r for s in analysis["shapes"] for r in s["rivals"]]
    assert all(r["p_adjusted"] == pytest.approx(0.12) and r["verdict"] == "same" for r in rivals)
    assert all(r["confidence"] == pytest.approx(1 - 0.05 / 6) for r in rivals)
    # the printed interval is the corrected one, which meets the resolution band: tied
    assert all(r["speedup_ci"][1] > 1 / 1.005 for r in rivals)
    tied = _autotune(kwargs)["tied"]
    assert sorted(tied["s1024_d64"].split(";")) == ["flex", "math"]
    assert sorted(tied["s4096_d64"].split(";")) == ["flex", "math"]
    (table,) = tables(sections(kwargs)["Autotune"])
    assert re.fullmatch(r"(math|flex): 11\.1%, 0\.900× \[0\.\d+, 1\.\d+\], p 0\.12; .*", table.rows[0][3])
    p_value = 0.005  # corrected: 0.03 < 0.05, significant and practical: slower, not tied
    build(kwargs)
    assert _autotune(kwargs)["tied"].tolist() == ["", ""]
    rivals = [r for s in _analysis(kwargs)["shapes"] for r in s["rivals"]]
    assert all(r["verdict"] == "slower" and r["speedup_ci"][1] < 1 / 1.005 for r in rivals)


def test_autotune_escapes_candidate_names(tied_run: dict[str, Any]) -> None:
    page = _text(tied_run, "html")
    section = _section(page, "<h2>Autotune</h2>", "<h2>Candidates that did not produce a valid result</h2>")
    assert "<i>" not in page and "twin:&lt;i&gt;flash&lt;/i&gt; &amp; co|2" in section
    assert page.index("<h2>Results per shape</h2>") < page.index("<h2>Autotune</h2>")
    md = _text(tied_run, "md")
    assert TWIN not in md
    for table in re.findall(r"(?:^\|.*\n)+", md, flags=re.MULTILINE):  # the twin's | did not split a cell
        widths = {len(re.findall(r"(?<!\\)\|", line)) for line in table.splitlines()}
        assert len(widths) == 1, table


def test_untrusted_results_are_shown_with_their_reason_and_never_ranked(tmp_path: Path) -> None:
    cheat = "cheat:unjoined"
    why = "work the timer never waited for: kernels still running on another stream"
    shape_candidates = {"s1024_d64": {**CANDIDATES, cheat: ("untrusted", 20000.0, why, False)}}
    kwargs = write_run(tmp_path, shape_candidates=shape_candidates)
    build(kwargs)
    summary = pd.read_csv(kwargs["out"]["csv"])
    row = summary[(summary["shape"] == "s1024_d64") & (summary["candidate"] == cheat)].iloc[0]
    assert row["status"] == "untrusted" and not row["fastest"]
    assert summary[(summary["shape"] == "s1024_d64") & summary["fastest"]]["candidate"].tolist() == ["flash"]
    autotune = pd.read_csv(autotune_out(kwargs)["csv"], dtype=str, keep_default_na=False)
    assert cheat not in " ".join(autotune["fastest"].tolist() + autotune["tied"].tolist())
    (not_ok,) = tables(sections(kwargs)["Candidates that did not produce a valid result"])
    assert not_ok.rows[row_of(not_ok, cheat)] == [cheat, "untrusted", why, "s1024_d64"]


def test_what_ran_shows_kernels_streams_and_bitwise_repeatability(run: dict[str, Any]) -> None:
    summary = pd.read_csv(run["out"]["csv"])
    flash = summary[summary["candidate"] == "flash"].iloc[0]
    assert flash["kernels"] == "kernel_420" and flash["kernels_per_call"] == 1 and flash["streams"] == 1
    assert not flash["bitwise_repeatable"] and flash["max_abs_diff"] == pytest.approx(2e-3)
    (table,) = tables(sections(run)["What ran"])
    assert table.rows[row_of(table, "flash")] == [
        "flash",
        "3",
        "1",
        "1",
        "97.0%",
        "no (max diff 0.00200)",
        "first call 151–163",
        "kernel_420",
    ]
    assert table.rows[row_of(table, "math")][:6] == ["math", "3", "1", "1", "97.0%", "yes"]
    assert table.rows[row_of(table, "math")][7] == "kernel_60"
    # a factory kernel's prepare (setup_ms) beside the first call, where the bench file has it
    assert re.fullmatch(r"setup 12\.5 \+ first call \d+–\d+", table.rows[row_of(table, "flex")][6])
    assert summary.loc[summary["candidate"] == "flex", "setup_ms"].tolist() == [12.5] * len(SHAPES)
    assert summary.loc[summary["candidate"] == "math", "setup_ms"].isna().all()
    assert summary.loc[summary["status"] == "ok", "compile_ms"].notna().all()
    # the roofline is stated per result: a share of the attainable bound, with the binding roof
    assert summary["intensity"].notna().all()


# ------------------------------------------------------------------------ verdicts and intervals


@pytest.fixture(scope="module")
def verdict_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """EDGE decided alone but not across the run on the first shape; 2 rounds on the last shape."""
    kwargs = write_verdict_run(tmp_path_factory.mktemp("verdicts"))
    build(kwargs)
    return kwargs


def _speedup_cells(found: dict[str, Section]) -> list[tuple[str, str, str, str]]:
    """Every speedup over the reference the report prints: (where, shape, candidate, text)."""
    cells = []
    winners, _ = tables(found["Headline"])
    # the headline's speedup is over the best other built-in: over the reference where that is math
    cells += [
        ("headline", row[0], row[1], row[2].removesuffix(" (the reference)").removesuffix(" vs math"))
        for row in winners.rows
        if row[2].endswith((" vs math", " vs math (the reference)"))
    ]
    (matrix,) = tables(found["Speedup per shape and candidate"])
    cells += [
        ("matrix", row[0], name, cell)
        for row in matrix.rows
        for name, cell in zip(matrix.headers[1:], row[1:])
    ]
    for shape, *_ in SHAPES:
        (table,) = [b for b in under(found["Results per shape"], f"{shape} ") if isinstance(b, Table)]
        speedup = table.headers.index("speedup vs math [interval]")
        cells += [("results", shape, row[0].removesuffix(" (fastest)"), row[speedup]) for row in table.rows]
    return cells


def test_every_verdict_printed_agrees_with_the_interval_beside_it(verdict_run: dict[str, Any]) -> None:
    """The headline, the matrix and the results tables print the run-wide verdict (the mark *) beside
    the run-wide, corrected interval: EDGE, "faster" in its compare file (its 95% interval clears the
    resolution band), is unmarked beside a corrected interval that reaches below 1. A comparison with
    too few rounds says so, and how many rounds would decide it."""
    analysis = _analysis(verdict_run)
    corrected = {(c["shape"], c["candidate"]): c for c in analysis["reference"]["comparisons"]}
    own = {
        (c["shape"], comp["candidate"]): comp
        for c in (json.loads(Path(p).read_text()) for p in verdict_run["compare_paths"])
        for comp in c["comparisons"]
    }
    first, last = SHAPES[0][0], SHAPES[-1][0]
    assert own[(first, EDGE)]["verdict"] == "faster" and own[(first, EDGE)]["speedup_ci"][0] > 1.005
    assert corrected[(first, EDGE)]["verdict"] == "same" and corrected[(first, EDGE)]["speedup_ci"][0] < 1
    cells = _speedup_cells(sections(verdict_run))
    checked = Counter()
    for where, shape, candidate, text in cells:
        if (shape, candidate) not in corrected:
            continue
        run_wide, comp = corrected[(shape, candidate)], own[(shape, candidate)]
        checked[where] += 1
        if run_wide["verdict"] == TOO_FEW_ROUNDS:
            assert text.startswith(TOO_FEW_ROUNDS) and "×" not in text, (where, text)
            if where != "matrix":  # the matrix stays compact
                assert f"about {comp['rounds_to_decide']} rounds would decide, ~1.2 s more sampling" in text
            continue
        interval = formatting.speedup_interval(comp["speedup"], *run_wide["speedup_ci"])
        mark = " *" if run_wide["verdict"] in ("faster", "slower") else ""
        assert text.split(": ")[-1] == interval + mark, (where, shape, candidate, text)
        assert agrees(run_wide["verdict"], text), (where, text)
    assert checked["headline"] >= 1 and (checked["matrix"], checked["results"]) == (7, 7), checked
    # the headline's own comparison (the fastest against the best other built-in) agrees with its interval
    summary = headline.load(Path(verdict_run["out"]["html"]).parents[1])
    for shape in summary["shapes"]:
        if (versus := shape["versus"]) is not None and versus["verdict"] != TOO_FEW_ROUNDS:
            text = headline.speedup_text(versus["speedup"], versus["ci"], versus["significant"], versus["verdict"])
            assert agrees(versus["verdict"], text), (shape["shape"], text)
    (edge,) = [text for where, shape, name, text in cells if (where, shape, name) == ("matrix", first, EDGE)]
    assert edge == "1.03× [0.998, 1.06]"
    # summary.csv: the corrected interval beside the corrected verdict, in numbers
    frame = pd.read_csv(verdict_run["out"]["csv"]).dropna(subset=["verdict"])
    for row in frame.itertuples(index=False):
        lo, hi = row.speedup_ci_lo, row.speedup_ci_hi
        if row.verdict == TOO_FEW_ROUNDS:
            assert pd.isna(lo) and pd.isna(row.speedup) and row.rounds_to_decide == 3
            assert row.seconds_to_decide == pytest.approx(2.5 / 2)
        else:
            assert {"faster": lo > 1.005, "slower": hi < 1 / 1.005, "same": lo <= 1.02 and hi >= 1 / 1.02}[
                row.verdict
            ]
    # Autotune: the ties on the last shape have too few rounds, said without a number
    (table,) = tables(sections(verdict_run)["Autotune"])
    assert (
        table.rows[row_of(table, last)][3]
        == "math: too few rounds (2 rounds); flex: too few rounds (2 rounds)"
    )


def test_the_first_screen_counts_the_comparisons_with_too_few_rounds(verdict_run: dict[str, Any]) -> None:
    found = sections(verdict_run)
    (said,) = [b for b in found["Headline"].blocks if isinstance(b, Para) and "Measurement" in b.text]
    assert said.css == "warning"
    assert said.text.endswith(
        "; 2 comparisons with too few rounds for an interval (see Measurement conditions)."
    )


def test_a_corrected_confidence_never_prints_as_100_percent() -> None:
    """With 100 comparisons and more, 1 - 0.05 / m rounds to 100% at 3 digits: a reader would take the
    interval for a certainty."""
    assert quality.level(0.95) == "95%" and quality.level(1 - 0.05 / 9) == "99.4%"
    assert quality.level(1 - 0.05 / 100) == "99.95%" and quality.level(1 - 0.05 / 250) == "99.98%"
    assert (
        intervals([1 - 0.05 / 250] * 3, 250)
        == "99.98% intervals, corrected for the run's 250 comparisons"
    )
    assert intervals([0.95], None) == "95% intervals" and intervals([], 4) == "no intervals"


# ---------------------------------------------------------------------------------- rendering


SNAPSHOTS = Path(__file__).resolve().parent / "snapshots"


@pytest.mark.parametrize("key", ["md", "html"])
def test_report_matches_its_snapshot(run: dict[str, Any], key: str) -> None:
    """The fixture run's report.md and report.html (plots replaced by a placeholder), as committed in
    tests/snapshots/. After an intended change to the report, regenerate them and review the diff:

        ATTNBENCH_UPDATE_SNAPSHOTS=1 python -m pytest tests/test_report.py -k snapshot
    """
    rendered = re.sub(r"base64,[A-Za-z0-9+/=]+", "base64,PLOT", _text(run, key))
    path = SNAPSHOTS / f"report.{key}"
    if os.environ.get("ATTNBENCH_UPDATE_SNAPSHOTS"):
        path.parent.mkdir(exist_ok=True)
        path.write_text(rendered, encoding="utf-8")
    assert rendered == path.read_text(encoding="utf-8")


def test_every_status_has_a_colour() -> None:
    css = (Path(report.__file__).parents[1] / "templates" / "report.css").read_text(encoding="utf-8")
    statuses = yaml.safe_load((SCHEMAS / "bench.schema.yaml").read_text())["$defs"]["candidate"]["properties"]
    for status in statuses["status"]["enum"]:
        assert re.search(rf"td\.status-{status}\b[^{{]*\{{ background: #", css), status


def test_markdown_escapes_what_would_be_markup() -> None:
    assert formatting.md("evil|<script>") == "evil\\|&lt;script&gt;"
    assert formatting.md(r"user:$\bad{$") == r"user:\$\\bad{\$"  # GitHub would read $...$ as math
    assert formatting.md("*bold* `code` [link] #1 ~~x~~") == r"\*bold\* \`code\` \[link\] \#1 \~\~x\~\~"
    assert formatting.md("_emphasis_ and snake_case") == r"\_emphasis\_ and snake_case"
    assert formatting.md("two\nlines") == "two lines"  # a line break would end a table row


# ------------------------------------------------------------------------- headline and layout


def test_ci_bounds_print_on_their_true_side_of_one_and_of_the_centre() -> None:
    # 0.9996 rounded to 3 digits is 1.00: a significant slowdown must not show 1.00 as its bound
    assert formatting.interval(0.964, 0.900, 0.9996, "×", marks=(1.0,)) == "0.964× [0.900, 0.9996]"
    assert formatting.interval(0.964, 0.900, 0.99996, "×", marks=(1.0,)) == "0.964× [0.900, 0.99996]"
    assert formatting.interval(1.2, 1.0004, 1.4, "×", marks=(1.0,)) == "1.20× [1.0004, 1.40]"
    # a bound that differs from the centre never prints as the centre
    assert formatting.interval(1.0004, 1.0001, 1.0008) == "1.0004 [1.0001, 1.0008]"
    assert formatting.interval(0.1234, 0.1234, 0.125) == "0.123 [0.123, 0.125]"  # equal: stays equal
    assert formatting.interval(7.02, 6.9, 7.1, "×", marks=(1.0,)) == "7.02× [6.90, 7.10]"  # 3 digits suffice
    assert formatting.bound_digits(0.964, (0.9, 0.99996), marks=(1.0,)) == 5
    assert formatting.bound_digits(1.0, (1.0, 1.0), marks=(1.0,)) == 3
    # issue 30: nor across the bands' edges, where the verdict beside it changes
    assert formatting.speedup_interval(0.97, 0.95, 0.99503) == "0.970× [0.950, 0.99503]"
    assert formatting.speedup_interval(1.0196, 1.01, 1.03) == "1.0196× [1.01, 1.03]"


def test_report_leads_with_the_headline_then_the_matrix_and_plots(run: dict[str, Any]) -> None:
    found = sections(run)
    assert list(found)[:4] == ["Headline", "Speedup per shape and candidate", "Plots", "Results per shape"]
    assert [b.key for b in found["Plots"].blocks] == ["speedup", "latency", "accuracy", "roofline", "memory"]
    winners, tallies = tables(found["Headline"])
    assert [row[:2] for row in winners.rows] == [[s[0], "flash"] for s in SHAPES]
    # against the best other built-in (flex, math: whichever ran faster), then % of the bound
    assert all(re.fullmatch(r"\d\.\d\d× \[\d\.\d+, \d\.\d+\] \* vs (flex|math)", row[2]) for row in winners.rows)
    assert winners.headers[2:4] == ["speedup vs the best other built-in [interval]", "% of the attainable bound"]
    assert tallies.rows[row_of(tallies, "flash")] == ["flash", "3", "0", "3", "0", "0"]
    assert "efficient" not in [row[0] for row in tallies.rows]  # collapsed into one line instead
    headline_text = text(found["Headline"])
    assert (
        f"Unsupported on every shape, left out below: efficient: {CANDIDATES['efficient'][2]}"
        in headline_text
    )
    assert f"6 results failed: {EVIL} incorrect on 3 shapes; cudnn error on 3 shapes" in headline_text
    (matrix,) = tables(found["Speedup per shape and candidate"])
    assert matrix.headers == ["shape", "math", "flash", "flex", EVIL, "cudnn"]
    first = matrix.rows[0]
    assert first[1] == "reference" and first[2].endswith(" *") and first[4:] == ["incorrect", "error"]
    assert matrix.cell_css[(0, 2)] == "fastest" and matrix.cell_css[(0, 5)] == "status status-error"
    page = _text(run, "html")
    assert page.index("<h2>Headline</h2>") < page.index("<h2>Plots</h2>") < page.index("<h2>Environment</h2>")
    # the detail behind the answer is collapsed; what failed stays open
    assert '<details class="section"><summary><h2>Results per shape</h2></summary>' in page
    assert '<details class="section"><summary><h2>Environment</h2></summary>' in page
    assert "<h2>Candidates that did not produce a valid result</h2>" in page
    assert '<summary><h2>Candidates that did not produce a valid result</h2>' not in page


def test_results_table_is_narrow_and_shows_the_relative_error(run: dict[str, Any]) -> None:
    (table,) = [b for b in under(sections(run)["Results per shape"], "s1024_d64 ") if isinstance(b, Table)]
    assert len(table.headers) <= 10 and "error (× the reference's)" in table.headers
    assert "efficient" not in [row[0] for row in table.rows]  # unsupported everywhere: in the headline
    error = table.headers.index("error (× the reference's)")
    assert table.rows[row_of(table, "math")][error] == "0.0010"
    assert table.rows[row_of(table, "cudnn")][error] == "—"
    # the workspace beyond inputs and output, and the allocations: math's is its score matrix
    workspace = table.headers.index("workspace MB (allocs)")
    frame = pd.read_csv(run["out"]["csv"]).set_index(["shape", "candidate"])
    scores_mb = frame.loc[("s1024_d64", "math"), "workspace_mb"]
    assert table.rows[row_of(table, "math")][workspace] == f"{num(scores_mb)} (3)"
    assert table.rows[row_of(table, "cudnn")][workspace] == "—"


def test_memory_section_reads_the_growth_of_each_candidates_workspace(run: dict[str, Any]) -> None:
    found = sections(run)
    (table,) = tables(found["Memory"])
    rows = {row[0]: row for row in table.rows}
    assert rows["math"][1] == "seq^2.00" and rows["math"][3] == "materialises a seq x seq matrix"
    assert rows["flash"][1] == "seq^1.00" and rows["flash"][3] == "streams (no seq x seq matrix)"
    frame = pd.read_csv(run["out"]["csv"])
    assert {"workspace_mb", "output_mb", "allocations", "projected_mb", "oom_risk"} <= set(frame.columns)


def test_details_and_tracebacks_are_collapsed_and_escaped(run: dict[str, Any]) -> None:
    found = sections(run)
    details = [
        b for b in found["Candidates that did not produce a valid result"].blocks if b.kind == "details"
    ]
    assert [d.summary for d in details] == ["cudnn, error: traceback"]
    assert details[0].text.startswith("Traceback (most recent call last):")
    (library,) = [b for b in found["Headline"].blocks if b.kind == "details"]
    assert library.summary == "efficient: the library's message" and library.fence == "````"
    page = _text(run, "html")
    assert "<details><summary>cudnn, error: traceback</summary><pre>Traceback" in page
    assert "RuntimeError: &lt;tb&gt; &amp; co</pre></details>" in page and "<tb>" not in page
    md = _text(run, "md")
    assert "cudnn, error: traceback:\n\n```\nTraceback (most recent call last):" in md
    assert "````\nMemory efficient kernel not used because:\n<long> & detailed ```text```\n````" in md


def test_host_conditions_are_shown_and_a_busy_host_flagged(tmp_path: Path) -> None:
    quiet = {"threads": 2, "cpus": 2, "load_before": 0.1, "load_after": 0.9, "other_cores": 0.0,
             "busy": False, "why": None}  # fmt: skip
    busy = {**quiet, "threads": 1, "load_after": 3.5, "other_cores": 1.6, "busy": True,
            "why": "other processes kept 1.6 of 2 cores busy"}  # fmt: skip
    kwargs = write_run(tmp_path, device="cpu", hosts={"s1024_d64": quiet, "s4096_d64": busy})
    build(kwargs)
    found = sections(kwargs)
    checks, table = tables(found["Measurement conditions"])
    assert table.headers == ["shape", "host"]
    assert table.rows[0][-1] == "2 threads of 2 CPUs, load 0.10 → 0.90"
    assert (
        table.rows[1][-1]
        == "⚠ busy: other processes kept 1.6 of 2 cores busy; 1 thread of 2 CPUs, load 0.10 → 3.50"
    )
    assert table.rows[2][-1] == "—"  # a file without `host`
    assert checks.headers[-1] == "checks" and "host busy (see host)" in checks.rows[1][-1]
    assert (1, 1) in table.flagged and (0, 1) not in table.flagged
    assert "the host was busy with other work during 1 of 3 shapes" in text(found["Headline"])
    # without `host` in any file (older runs) there is no host column at all
    old = write_run(tmp_path / "old", shapes=SHAPES[:1], device="cpu")
    build(old)
    (plain,) = tables(sections(old)["Measurement conditions"])
    assert "host" not in plain.headers


# ----------------------------------------------------------------------------------- configurations


def _analysis(run: dict[str, Any]) -> dict[str, Any]:
    return json.loads(Path(autotune_out(run)["json"]).read_text())


def test_configurations_table_and_recommendation(config_run: dict[str, Any]) -> None:
    (found,) = _analysis(config_run)["configurations"]["families"]
    section = sections(config_run)["Autotune"]
    blocks = under(section, f"{CONFIG_KERNEL} (6 configurations")
    table, ranking = [b for b in blocks if isinstance(b, Table)]
    assert table.headers == ["shape", "fastest configuration", "median ms [95% CI]", "tied with it",
                             "recommended [BLOCK_M=128,num_warps=8]: slowdown [interval]", "not ok"]  # fmt: skip
    assert [row[0] for row in table.rows] == [s[0] for s in SHAPES]
    for row, shape in zip(table.rows, found["shapes"]):
        fastest = shape["fastest"]["candidate"]
        assert row[1] == fastest.removeprefix(CONFIG_KERNEL)  # the heading names the kernel
        tied = sorted((r for r in shape["rivals"] if r["tied"]), key=lambda r: r["median_ms"])  # fastest first
        assert row[3] == (f"{len(tied)}: " + ", ".join(t["candidate"].removeprefix(CONFIG_KERNEL) for t in tied)
                          if tied else "none")  # fmt: skip
        if fastest == configuration(128, 8):
            assert row[4] == "fastest"
        else:
            assert re.fullmatch(r"1\.\d+× \[[01]\.\d+, 1\.\d+\](, tied)?", row[4]), row[4]
    # not ok: 256/8 unsupported on the first shape, 128/4 an error on the last
    assert [row[5] for row in table.rows] == ["1: unsupported ×1", "none", "1: error ×1"]
    rec = found["recommendation"]
    (sentence,) = [b.text for b in blocks if isinstance(b, Para) and b.text.startswith("Recommended")]
    worst = formatting.interval(rec["worst_slowdown"], *rec["worst_slowdown_ci"], "×", marks=(1.0,))
    assert sentence.startswith(
        f"Recommended for every shape: {configuration(128, 8)}. Its worst slowdown against a shape's "
        f"fastest configuration is {worst} ("
    )
    assert f"slower), on {rec['worst_shape']}; it is the fastest or tied with it on " in sentence
    assert f"({len(rec['tied_shapes'])} of 3 shapes)" in sentence
    assert (
        "Chosen among the 4 of 6 configurations that ran ok on every shape where the kernel ran; the others "
        "cannot be recommended for all shapes: [BLOCK_M=128,num_warps=4] (error on s4096_d128_causal_gqa); "
        "[BLOCK_M=256,num_warps=8] (unsupported on s1024_d64)." in sentence
    )
    assert ranking.headers == ["configuration", "worst slowdown [interval]", "on", "fastest or tied on"]
    assert ranking.rows[0][0] == "[BLOCK_M=128,num_warps=8]" and len(ranking.rows) == 4
    intro = text(section)
    analysis = _analysis(config_run)
    n, family = analysis["configurations"]["n_comparisons"], analysis["family"]
    level = f"{100 * (1 - 0.05 / family):.3g}%"
    assert (
        f"its {n} configuration comparisons corrected with the rest of the run: Bonferroni for the run's "
        f"{family} comparisons: intervals at {level}, p-values times {family}" in intro
    )
    assert "[the largest lower bound, the largest upper bound] of the per-shape corrected intervals" in intro
    assert "which the correction makes hold together with probability at least 95% (Bonferroni)" in intro


def test_the_matrix_and_plots_collapse_a_kernel_to_its_fastest_configuration(
    config_run: dict[str, Any],
) -> None:
    (found,) = _analysis(config_run)["configurations"]["families"]
    chosen = [s["fastest"]["candidate"] for s in found["shapes"]]
    (matrix,) = tables(sections(config_run)["Speedup per shape and candidate"])
    assert matrix.headers == ["shape", "math", "flash", f"{CONFIG_KERNEL} (fastest configuration)"]
    for row, name in zip(matrix.rows, chosen):
        assert re.fullmatch(rf"{re.escape(name.removeprefix(CONFIG_KERNEL))}: \d\.\d+× \[.*\] \*", row[3]), (
            row[3]
        )
    assert 3 in matrix.text_cols and 3 not in matrix.numeric  # a long configuration may wrap
    frame = report.plot_frame(pd.read_csv(config_run["out"]["csv"]), Analysis.from_json(_analysis(config_run)))
    plotted = frame[frame["candidate"] == f"{CONFIG_KERNEL} (fastest configuration)"]
    assert len(plotted) == len(SHAPES) and set(frame["candidate"]) == {
        "math",
        "flash",
        plotted["candidate"].iloc[0],
    }
    assert plotted["median_ms"].tolist() == [s["fastest"]["median_ms"] for s in found["shapes"]]
    plots = sections(config_run)["Plots"]
    assert "Each kernel with configurations (kern:attn) is drawn as one candidate" in text(plots)
    # summary.csv and the per-shape tables keep every configuration
    assert pd.read_csv(config_run["out"]["csv"])["candidate"].nunique() == 8
    results = sections(config_run)["Results per shape"]
    (first,) = [b for b in under(results, "s4096_d64 ") if isinstance(b, Table)]
    assert len(first.rows) == 8


def test_forty_configurations_stay_readable(tmp_path: Path) -> None:
    """40 configurations x 3 shapes: the headline, the matrix and the autotune table collapse them;
    the per-shape tables keep every row."""
    grid = [(m, w * 10 + s) for m in (32, 64, 128, 256, 512) for w in (2, 4, 8, 16) for s in (2, 3)]
    rng = np.random.default_rng(3)
    specs: dict[tuple[int, int], tuple[Any, ...]] = {
        key: tuple(float(400 * (1 - abs(rng.normal(0, 0.05)))) for _ in SHAPES) for key in grid
    }
    specs[grid[0]] = (("error", "RuntimeError: out of shared memory"), 380.0, 380.0)
    # configurations that fit no shape of this device: one headline line, not one each
    never = ("unsupported", "needs 300 KB of shared memory")
    specs |= {(1024, w): (never, never, never) for w in (22, 23, 42, 43)}
    kwargs = write_run(tmp_path, shape_candidates=configuration_candidates(specs))
    build(kwargs)
    found = sections(kwargs)
    unavailable = [
        b.text for b in found["Headline"].blocks if isinstance(b, Para) and "Unsupported" in b.text
    ]
    assert unavailable == [
        f"Unsupported on every shape, left out below: 4 configurations of {CONFIG_KERNEL}: needs 300 KB of "
        "shared memory (4)"
    ]
    (matrix,) = tables(found["Speedup per shape and candidate"])
    assert len(matrix.headers) == 4
    winners, tallies = tables(found["Headline"])
    # math, flash, the rest of the kernel in one row, and its configurations fastest or tied somewhere
    tally = headline.summarize(
        [ShapeResult.from_json(json.loads(Path(p).read_text())) for p in kwargs["bench_paths"]],
        [ShapeComparisons.from_json(json.loads(Path(p).read_text())) for p in kwargs["compare_paths"]],
        Analysis.from_json(_analysis(kwargs)),
    )["candidates"]
    placed = [n for n, t in tally.items() if n.startswith(CONFIG_KERNEL) and (t["wins"] or t["ties"])]
    assert len(tallies.rows) == 2 + 1 + len(placed) < 2 + 40
    collapsed = [row for row in tallies.rows if "other configurations" in row[0]]
    assert len(collapsed) == 1 and collapsed[0][0].startswith(f"{CONFIG_KERNEL}: ")
    autotune_table = tables(found["Autotune"])[0]
    assert all(len(row[4]) < 80 for row in autotune_table.rows)  # "math, 40 configurations of kern:attn"
    assert re.fullmatch(
        rf"math, (39|40) configurations of {re.escape(CONFIG_KERNEL)}", autotune_table.rows[1][4]
    )
    family_table = tables(found["Autotune"])[1]
    for row in family_table.rows:  # ties counted, five named
        count = int(row[3].split(":")[0]) if row[3] != "none" else 0
        assert row[3].count("[BLOCK_M=") == min(count, 5)
    assert "Chosen among the 39 of 44 configurations" in text(found["Autotune"])
    assert all(len(b.rows) == 42 for b in tables(found["Results per shape"]))


def test_a_report_without_the_configurations_section(tmp_path: Path) -> None:
    """autotune.json written before configurations: the report renders without them."""
    kwargs = write_run(tmp_path, shapes=SHAPES[:1])
    build(kwargs)
    path = Path(kwargs["autotune_path"])
    document = json.loads(path.read_text())
    del document["configurations"], document["content_digest"]  # written before either
    path.write_text(json.dumps(document))
    build_report(**kwargs)
    found = sections(kwargs)
    assert [b.kind for b in found["Autotune"].blocks] == ["para", "table"]
    assert [b.kind for b in found["Plots"].blocks] == ["plot"] * len(PLOTS)


def test_configurations_report_matches_its_snapshot(config_run: dict[str, Any]) -> None:
    """The Autotune section of the configurations run's report.md, as committed in tests/snapshots/
    (regenerate as test_report_matches_its_snapshot says)."""
    rendered = _section(_text(config_run, "md"), "## Autotune\n", "## Candidates that did not produce")
    path = SNAPSHOTS / "report-configurations.md"
    if os.environ.get("ATTNBENCH_UPDATE_SNAPSHOTS"):
        path.write_text(rendered, encoding="utf-8")
    assert rendered == path.read_text(encoding="utf-8")


def test_the_shape_heading_says_how_each_sdpa_backend_got_the_mask_and_what_it_wasted():
    """Per way SDPA was given the mask: dense (also in files written before layouts were recorded),
    padded (a decode batch), nested tensors (no waste, so no factor); a backend that declined is not
    said to have computed anything (on the H200, flash declined the padded decode batch)."""
    import pandas as pd

    rows = pd.DataFrame(
        {
            "candidate": ["math", "cudnn", "flash", "flex", "efficient", "flex"],
            "status": ["ok", "ok", "ok", "unsupported", "unsupported", "ok"],
            "dense_mask_work": [4.0, 1.5, None, None, 1.5, None],
            "layout": [None, "padded", "thd", "padded", "padded", "pool"],
        }
    )
    (para,) = how_given(rows)
    text = para.text
    assert "SDPA (math) is given this mask as a dense attn_mask" in text and "4.00× the pairs" in text
    assert "SDPA (cudnn) is given the requests as a padded batch" in text and "1.50× the pairs" in text
    assert "efficient" not in text
    assert "flash: given nested (jagged) tensors" in text
    assert "flex: given the pool of pages, read through PyTorch's PagedAttention" in text
    assert "flex: given the requests as a padded batch" not in text  # that flex declined it
    assert how_given(rows.iloc[3:5]) == []
