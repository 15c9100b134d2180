"""The typed result documents: a document written now reads back as written, and one written before a
field existed reads with the meaning that field had then (attnbench.documents, one version branch)."""

import copy

import pytest
from fixtures_report import CONFIG_KERNEL, SHAPES, configuration_candidates, run_autotune, write_run
from helpers import SCHEMAS, TINY_SHAPE, bench_spec

from attnbench import files
from attnbench.bench import run_shape
from attnbench.documents import BENCH_MINOR, Analysis, ShapeComparisons, ShapeResult, version
from attnbench.results import Status
from attnbench.settings import BOUND_MARGIN
from attnbench.stats import compare_shape
from attnbench.workloads import DEFAULT_LAYOUT


@pytest.fixture
def written(locked_env) -> dict:
    """A CPU benchmark as the benchmark job writes it: one candidate ok, one unsupported, and a bound
    (from ceilings far above any CPU, so that no timing comes near it)."""
    ceilings = {"device": "cpu", "matmul": {"float32": {"tflops": 1e6}}, "read": {"gbytes_per_s": 1e9}}
    document = run_shape(bench_spec(TINY_SHAPE, ["math", "efficient"]), ceilings=ceilings)
    return files.stamped(document)


def test_a_document_written_now_reads_back_as_written(written):
    files.validate(written, SCHEMAS / "bench.schema.yaml", source="written")
    bench = ShapeResult.from_json(written)
    assert bench.schema == version(written) == (3, BENCH_MINOR)
    assert bench.to_json() == written
    math, efficient = bench.candidates["math"], bench.candidates["efficient"]
    assert (math.status, efficient.status) == (Status.OK, Status.UNSUPPORTED)
    assert math.median_ms == written["candidates"]["math"]["median_ms"] and math.layout == DEFAULT_LAYOUT
    assert bench.bound is not None and bench.bound.margin == BOUND_MARGIN["cpu"]
    compare = ShapeComparisons.from_json(files.stamped(compare_shape(bench, "math")))
    assert compare.reference == "math" and set(compare.skipped) == {"efficient"}


def test_a_document_from_before_the_minor_version_gets_the_meaning_its_fields_had(written):
    old = copy.deepcopy(written)
    del old["schema_minor"], old["bound"]["margin"]
    for entry in old["candidates"].values():
        entry.pop("layout", None)
        entry.pop("dense_mask_work", None)
    bench, now = ShapeResult.from_json(old), ShapeResult.from_json(written)
    assert bench.schema == (3, 0)
    assert bench.candidates["math"].layout == DEFAULT_LAYOUT  # every timed candidate then was bhsd
    assert bench.candidates["efficient"].layout is None  # it never declared one
    for name, result in bench.candidates.items():
        assert result.dense_mask_work == now.candidates[name].dense_mask_work
    assert bench.bound == now.bound  # the margin the audit used for the device
    assert "layout" not in old["candidates"]["math"]  # the document read is not changed


def test_a_file_with_a_schema_this_attnbench_cannot_read_is_refused_by_its_version(written, tmp_path):
    path = tmp_path / "bench.json"
    path.write_text(files.json.dumps({**written, "schema": 1}))
    with pytest.raises(files.ResultFileError, match="written with result schema 1"):
        files.read_json(path, SCHEMAS / "bench.schema.yaml")


def test_the_run_wide_analysis_reads_back_as_written_with_its_ties_fastest_first(tmp_path):
    run = write_run(tmp_path, shape_candidates=configuration_candidates())
    document = files.stamped(run_autotune(run))
    analysis = Analysis.from_json(document)
    assert analysis.to_json() == document and list(analysis.shapes) == [s[0] for s in SHAPES]
    assert analysis.n_reference == document["reference"]["n_comparisons"]
    for shape in document["shapes"]:
        expected = sorted((r for r in shape["rivals"] if r["tied"]), key=lambda r: r["median_ms"])
        assert [r.candidate for r in analysis.shapes[shape["shape"]].ties()] == [
            r["candidate"] for r in expected
        ]
    (family,) = analysis.families
    assert family.family == CONFIG_KERNEL and analysis.family_of() == dict.fromkeys(
        family.configurations, CONFIG_KERNEL
    )
    counted = len(document["reference"]["comparisons"]) + sum(len(s["rivals"]) for s in document["shapes"])
    counted += sum(len(s.rivals) for s in family.shapes)
    assert len(analysis.all_corrected()) == counted
