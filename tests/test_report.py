"""The report: seven outputs, self-contained and escaped HTML, a truthful summary table."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from fixtures_report import CANDIDATES, EVIL, EVIL_REASON, SHAPES, write_run

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
    assert "no comparison files" in Path(kwargs["out"]["md"]).read_text(encoding="utf-8")


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
