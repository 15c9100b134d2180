"""The run's headline (attnbench.headline): the fastest correct candidate per shape and its speedup
over the reference, wins and ties, failures, candidates that cannot run, for complete and partial runs."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from fixtures_report import (
    CANDIDATES,
    EVIL,
    EVIL_REASON,
    SCHEMAS,
    SHAPES,
    TIED_CANDIDATES,
    TWIN,
    build,
    write_run,
)

from attnbench import headline
from attnbench.documents import ShapeResult
from attnbench.files import write_json

UNSUPPORTED = CANDIDATES["efficient"][2]


def _read(paths: list[str]) -> list[dict[str, Any]]:
    return [json.loads(Path(p).read_text()) for p in paths]


def _benches(paths: list[str]) -> list[ShapeResult]:
    return [ShapeResult.from_json(document) for document in _read(paths)]


def _results(run: dict[str, Any]) -> Path:
    return Path(run["out"]["html"]).parents[1]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    kwargs = write_run(tmp_path_factory.mktemp("run"), shape_candidates={"s4096_d64": TIED_CANDIDATES})
    build(kwargs)
    return kwargs


@pytest.fixture(scope="module")
def summary(run: dict[str, Any]) -> dict[str, Any]:
    return headline.load(_results(run))


def test_names_the_fastest_correct_candidate_and_its_speedup(
    run: dict[str, Any], summary: dict[str, Any]
) -> None:
    assert summary["reference"] == "math"
    assert [s["shape"] for s in summary["shapes"]] == [s[0] for s in SHAPES]  # the run's order
    compares = {c["shape"]: c for c in _read(run["compare_paths"])}
    analysis = json.loads((_results(run) / "report" / "autotune.json").read_text())
    corrected = {(c["shape"], c["candidate"]): c for c in analysis["reference"]["comparisons"]}
    assert summary["family"] == analysis["family"] > 1
    for shape in summary["shapes"]:
        assert shape["fastest"] in ("flash", TWIN)  # never the faster but incorrect EVIL
        (comp,) = [c for c in compares[shape["shape"]]["comparisons"] if c["candidate"] == shape["fastest"]]
        assert shape["speedup"] == comp["speedup"]
        # the interval beside the run-wide verdict is the corrected one, wider than the compare file's
        run_wide = corrected[(shape["shape"], shape["fastest"])]
        assert shape["ci"] == run_wide["speedup_ci"] and shape["confidence"] == run_wide["confidence"]
        assert shape["ci"][0] < comp["speedup_ci"][0] and shape["confidence"] == pytest.approx(
            1 - 0.05 / analysis["family"]
        )
        assert shape["significant"] is True and shape["verdict"] == run_wide["verdict"] == "faster"
    json.dumps(summary)  # JSON-able as a whole


def test_counts_wins_ties_and_failures_per_candidate(summary: dict[str, Any]) -> None:
    tied = {s["shape"]: s["tied"] for s in summary["shapes"]}
    assert tied["s1024_d64"] == [] and len(tied["s4096_d64"]) == 1  # flash and its twin
    counts = summary["candidates"]
    assert counts["flash"]["wins"] + counts[TWIN]["wins"] == len(SHAPES)
    assert counts["flash"]["ties"] + counts[TWIN]["ties"] == 1
    assert counts["math"] == {"wins": 0, "ties": 0, "ok": 3, "unsupported": 0, "failed": 0}
    assert counts[EVIL]["failed"] == counts["cudnn"]["failed"] == len(SHAPES)
    assert counts["efficient"]["unsupported"] == len(SHAPES)


def test_failures_and_unavailable_candidates(summary: dict[str, Any]) -> None:
    failures = headline.failed(summary)
    assert failures == summary["failures"] and len(failures) == 2 * len(SHAPES)
    assert {"shape": "s1024_d64", "candidate": EVIL, "status": "incorrect", "reason": EVIL_REASON} in failures
    assert {f["status"] for f in failures} == {"incorrect", "error"}
    # unsupported everywhere with one reason: one entry, and no column in the matrix
    assert summary["unavailable"] == {"efficient": UNSUPPORTED}
    assert "efficient" not in summary["matrix"]["candidates"]
    cells = summary["matrix"]["rows"][0]["cells"]
    assert cells["math"]["verdict"] == "reference" and cells["cudnn"]["status"] == "error"
    assert cells["flash"]["rel_error"] == pytest.approx(1e-3)


def test_unsupported_on_some_shapes_or_for_several_reasons_is_not_unavailable(tmp_path: Path) -> None:
    other = {**CANDIDATES, "efficient": ("unsupported", None, "head_dim 128 > 64", False)}
    runs = {"s1024_d64": {**CANDIDATES, "efficient": CANDIDATES["flash"]}, "s4096_d64": other}
    benches = _benches(write_run(tmp_path, shape_candidates=runs, with_compare=False)["bench_paths"])
    assert "efficient" not in headline.summarize(benches, [], None)["unavailable"]
    runs = {"s1024_d64": other}  # two reasons over the shapes
    benches = _benches(write_run(tmp_path, shape_candidates=runs, with_compare=False)["bench_paths"])
    assert "efficient" not in headline.summarize(benches, [], None)["unavailable"]


def test_partial_run_without_compare_or_autotune_files(run: dict[str, Any], tmp_path: Path) -> None:
    results = tmp_path / "results"
    shutil.copytree(_results(run) / "bench", results / "bench")
    shutil.copytree(_results(run) / "compare", results / "compare")
    (results / "compare" / "s4096_d64.json").unlink()  # interrupted before this compare job
    (results / "bench" / "s4096_d128_causal_gqa.json").unlink()  # ...and before this shape
    summary = headline.load(results)
    shapes = {s["shape"]: s for s in summary["shapes"]}
    assert set(shapes) == {"s1024_d64", "s4096_d64"}
    assert shapes["s1024_d64"]["fastest"] == "flash" and shapes["s1024_d64"]["significant"] is True
    assert shapes["s4096_d64"]["fastest"] in ("flash", TWIN) and shapes["s4096_d64"]["speedup"] is None
    assert len(shapes["s4096_d64"]["tied"]) == 1  # autotune.analyse ran here, without autotune.json
    empty = headline.load(tmp_path / "nothing")
    assert (
        empty["shapes"] == []
        and empty["failures"] == []
        and headline.terminal(empty) == "no shape measured yet"
    )


def test_an_autotune_file_older_than_a_shape_is_not_used(run: dict[str, Any], tmp_path: Path) -> None:
    """Found in review: after a shape was measured again, the stale autotune.json could still name a
    candidate that now failed as the fastest."""
    results = tmp_path / "results"
    shutil.copytree(_results(run), results)
    before = {s["shape"]: s["fastest"] for s in headline.load(results)["shapes"]}
    bench_path = results / "bench" / "s1024_d64.json"
    bench = json.loads(bench_path.read_text())
    bench["candidates"][before["s1024_d64"]].update(
        status="error", reason="RuntimeError: boom", median_ms=None
    )
    bench_path.write_text(json.dumps(bench))  # written after autotune.json
    after = {s["shape"]: s["fastest"] for s in headline.load(results)["shapes"]}
    assert after["s1024_d64"] != before["s1024_d64"] and after["s1024_d64"] is not None


def test_the_report_jobs_headline_is_read_while_current(run: dict[str, Any], tmp_path: Path) -> None:
    """The end of a run prints the headline the report job stored (results/report/headline.json),
    without scipy and the analysis; a result written after it, or another set of shapes, and it is
    computed again from the results."""
    results = tmp_path / "results"
    shutil.copytree(_results(run), results)
    stored = results / "report" / "headline.json"
    document = headline.load(results)
    write_json(stored, document, SCHEMAS / "headline.schema.yaml")  # the report job's output, valid
    marked = json.loads(stored.read_text()) | {"reference": "as stored"}
    stored.write_text(json.dumps(marked))
    assert headline.load(results)["reference"] == "as stored"

    (results / "bench" / "s1024_d64.json").touch()  # measured again after the report
    os.utime(stored, (stored.stat().st_mtime - 10,) * 2)
    assert headline.load(results)["reference"] == document["reference"]

    os.utime(stored)  # current again, but a shape is gone from the results
    (results / "bench" / "s1024_d64.json").unlink()
    assert headline.load(results)["reference"] == document["reference"]
    assert "s1024_d64" not in {s["shape"] for s in headline.load(results)["shapes"]}


def test_terminal_block(summary: dict[str, Any]) -> None:
    text = headline.terminal(summary, Path("results/report/report.html"))
    lines = text.splitlines()
    assert all(len(line) <= 100 for line in lines), [line for line in lines if len(line) > 100]
    assert lines[-1] == "report: results/report/report.html"
    (row,) = [line for line in lines if line.split()[:2] == ["s1024_d64", "flash"]]
    shape = next(s for s in summary["shapes"] if s["shape"] == "s1024_d64")
    bound = "" if shape["fraction_of_bound"] is None else f", {shape['fraction_of_bound']:.0%} of bound"
    assert row.endswith(f" * vs {shape['versus']['baseline']}{bound}"), row
    assert f"unavailable here: efficient: {' '.join(UNSUPPORTED.splitlines())}" in lines
    # six failed results, one entry per candidate, status and reason, the reason on its own line
    assert "failures (6 results):" in lines
    (cudnn,) = [i for i, line in enumerate(lines) if line.startswith("  cudnn  error on 3 shapes (")]
    assert lines[cudnn + 1].startswith("    RuntimeError")
    tallies = lines[lines.index("candidates: shapes won, tied, failed") + 1 :][
        : len(summary["candidates"]) - 1
    ]
    assert [line.split()[0] for line in tallies] == ["math", "flash", "flex", "evil:<script>alert(1)</script>",
                                                     "cudnn", "twin:<i>flash</i>"]  # fmt: skip
    assert tallies[0].endswith("  0 won, 0 tied, 0 failed")


def test_the_fastest_is_measured_against_the_best_other_built_in(run, summary) -> None:
    """Found by a kernel engineer: the headline's "26x" was against the reference (math, naive);
    the question is "how much faster than the best built-in". The reference's speedup stays."""
    from attnbench.usercode import BUILTIN

    for shape in summary["shapes"]:
        bench = json.loads((_results(run) / "bench" / f"{shape['shape']}.json").read_text())
        ok = {
            name: c["median_ms"]
            for name, c in bench["candidates"].items()
            if c["status"] == "ok" and name != shape["fastest"] and name in BUILTIN
        }
        versus = shape["versus"]
        if not ok:
            assert versus is None
            continue
        baseline = min(ok, key=ok.get)
        assert versus["baseline"] == baseline
        fastest_ms = bench["candidates"][shape["fastest"]]["median_ms"]
        assert versus["speedup"] == pytest.approx(ok[baseline] / fastest_ms, rel=0.05)  # paired rounds
        lo, hi = versus["ci"]
        assert lo <= versus["speedup"] <= hi
        assert versus["significant"] == (versus["verdict"] in ("faster", "slower")) and versus["verdict"] != "slower"
        assert shape["speedup"] is not None  # the reference's, kept
        assert shape["fraction_of_bound"] == bench["candidates"][shape["fastest"]].get("fraction_of_bound")


def test_terminal_lists_at_most_twenty_failures(summary: dict[str, Any]) -> None:
    many = {**summary, "failures": [{"shape": f"s{i}", "candidate": "k", "status": "error", "reason": f"x\ny {i}"}
                                    for i in range(25)]}  # fmt: skip
    lines = headline.terminal(many).splitlines()
    assert sum(line.startswith("  k  error on s") for line in lines) == 20
    assert sum(line.startswith("    x y ") for line in lines) == 20  # each reason, line breaks folded
    assert "  and 5 more" in lines and not any(line.startswith("report:") for line in lines)


def test_the_terminal_gives_a_kernel_with_configurations_one_line_and_its_recommendation(tmp_path) -> None:
    from fixtures_report import CONFIG_KERNEL, configuration_candidates

    run = write_run(tmp_path, shape_candidates=configuration_candidates())
    build(run)
    lines = headline.terminal(headline.load(tmp_path)).splitlines()
    assert [line for line in lines if CONFIG_KERNEL in line and "won" in line] == [
        next(line for line in lines if line.startswith(f"  {CONFIG_KERNEL} (6 configurations)"))
    ]
    assert f"one configuration of {CONFIG_KERNEL} for every shape:" in lines
    pick = lines[lines.index(f"one configuration of {CONFIG_KERNEL} for every shape:") + 1]
    assert pick.startswith("  [BLOCK_M=128,num_warps=8]  at worst ") and pick.endswith(
        "the fastest's time (on s4096_d64)"
    )
