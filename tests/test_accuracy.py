"""Accuracy beside speed: every checked candidate's error metrics per output, against float64, in the
bench file, summary.csv and the per-shape tables, with the reference's error as the yardstick."""

import math

import numpy as np
import pytest
import torch
import yaml
from fixtures_report import write_run
from helpers import CONFIG, ROOT, SCHEMAS, TINY_SHAPE, bench_spec, shape_result

import attnbench
from attnbench import autotune, candidates, config, files, headline, plots, ratchet, terminal
from attnbench.bench import run_shape
from attnbench.documents import ShapeComparisons, ShapeResult
from attnbench.report.data import summary_frame
from attnbench.report.sections.overview import headline_section
from attnbench.report.sections.results import results_section
from attnbench.stats import compare_shape
from attnbench.workloads import inspect_output

FINGERPRINT = {"device": "cpu", "cpu": {"model": "Xeon"}, "torch": {"version": "2.13.0"}, "lock": {"seed": 0}}
METRICS = {"rel_error", "max_abs_error", "worst_row_error", "worst_row", "cosine", "outside_fraction"}


def test_each_metric_is_what_its_name_says():
    want = torch.randn(2, 3, 16, 8, dtype=torch.float64)
    scaled = inspect_output((want * 1.01).float(), [want], False, torch.float32).tensors[0]
    assert scaled.norm_error == pytest.approx(0.01, rel=1e-5)
    assert scaled.max_abs_error == pytest.approx(0.01 * want.abs().max().item(), rel=1e-5)
    assert scaled.cosine == pytest.approx(1.0, abs=1e-12)  # the same direction, only longer
    one_off = want.clone()
    one_off[1, 2, 5, 3] += 7.0
    check = inspect_output(one_off.float(), [want], False, torch.float32).tensors[0]
    assert check.max_abs_error == pytest.approx(7.0, rel=1e-6)
    assert check.outside_fraction == pytest.approx(1 / want.numel())
    assert check.worst_row == "row 5 of head 2 (batch 1)"
    assert check.cosine < 1.0 and check.cosine == pytest.approx(
        torch.nn.functional.cosine_similarity(
            one_off.float().double().flatten(), want.flatten(), dim=0
        ).item(),
        rel=1e-12,
    )
    assert set(check.accuracy()) == METRICS
    for factor in (3e-5, 1e-7, -1.0):  # an output far smaller than the answer: a cosine still in [-1, 1]
        cosine = inspect_output((want * factor).float(), [want], False, torch.float32).tensors[0].cosine
        assert -1.0 <= cosine <= 1.0 and cosine == pytest.approx(1.0 if factor > 0 else -1.0, abs=1e-6)


@pytest.mark.parametrize("mode", ["forward", "forward_backward"])
def test_a_benchmark_records_each_outputs_metrics(locked_env, mode):
    document = files.stamped(run_shape(bench_spec(TINY_SHAPE, ["math", "efficient"], mode=mode)))
    files.validate(document, SCHEMAS / "bench.schema.yaml", source="bench")
    math_result = ShapeResult.from_json(document).candidates["math"]
    outputs = ["out", "dq", "dk", "dv"] if mode == "forward_backward" else ["out"]
    assert list(math_result.accuracy) == outputs
    for metrics in math_result.accuracy.values():
        assert set(metrics) == METRICS and metrics["cosine"] > 0.999999 and metrics["outside_fraction"] == 0.0
    assert math_result.accuracy[outputs[0]]["rel_error"] <= math_result.rel_error
    assert "accuracy" not in document["candidates"]["efficient"]  # unsupported: nothing was checked


def test_summary_and_tables_show_the_worst_metrics_and_the_error_against_the_references(tmp_path):
    run = write_run(tmp_path, device="cpu")
    benches = []
    for path in run["bench_paths"]:
        document = files.read_json(path)
        document["candidates"]["flash"]["rel_error"] = 2.5 * document["candidates"]["math"]["rel_error"]
        for name, entry in document["candidates"].items():
            if entry["rel_error"] is not None:
                worse = 0.5 if name == "flash" else 0.01  # flash's dq is off on row 3
                entry["accuracy"] = {
                    "out": _metrics(entry["rel_error"], 0.01, "row 1 of head 0 (batch 0)"),
                    "dq": _metrics(entry["rel_error"], worse, "row 3 of head 2 (batch 0)"),
                }
        benches.append(ShapeResult.from_json(document))
    compares = [ShapeComparisons.from_json(files.stamped(compare_shape(b, "math"))) for b in benches]
    frame = summary_frame(benches, compares).set_index(["shape", "candidate"])
    shape = benches[0].name
    flash, reference = frame.loc[(shape, "flash")], frame.loc[(shape, "math")]
    assert flash["worst_row_error"] == 0.5 and flash["worst_row"] == "dq: row 3 of head 2 (batch 0)"
    assert flash["max_abs_error"] == pytest.approx(0.5 * 3) and flash["cosine"] == pytest.approx(1 - 0.5 / 10)
    assert reference["worst_row"] == "out: row 1 of head 0 (batch 0)"
    assert flash["error_vs_reference"] == pytest.approx(2.5) and reference["error_vs_reference"] == 1.0
    assert math.isnan(frame.loc[(shape, "cudnn"), "cosine"])  # an error: no output was checked
    (table,) = [b for b in results_section(frame.reset_index()).blocks if hasattr(b, "rows")][:1]
    cells = {row[0].split(" ")[0]: row[6] for row in table.rows}
    assert table.headers[6] == "error (× the reference's)"
    assert cells["flash"].endswith("(2.5×)") and "×" not in cells["math"]


def _metrics(rel_error: float, worst_row_error: float, worst_row: str) -> dict:
    return {
        "rel_error": rel_error,
        "max_abs_error": worst_row_error * 3,
        "worst_row_error": worst_row_error,
        "worst_row": worst_row,
        "cosine": 1 - worst_row_error / 10,
        "outside_fraction": 0.0,
    }


@pytest.fixture
def approximate(monkeypatch, locked_env):
    monkeypatch.syspath_prepend(str(ROOT / "tests"))


def test_a_one_percent_error_is_incorrect_unless_declared_and_then_ok_but_approximate(approximate):
    names = [f"approximate_kernels:{n}" for n in ("undeclared", "declared", "declared_too_tight")]
    document = files.stamped(run_shape(bench_spec(TINY_SHAPE, ["math", *names])))
    files.validate(document, SCHEMAS / "bench.schema.yaml", source="bench")
    bench = ShapeResult.from_json(document)
    undeclared, declared, too_tight = (bench.candidates[n] for n in names)
    assert undeclared.status == "incorrect" and "exceeds the float32 tolerance" in undeclared.reason
    assert too_tight.status == "incorrect" and "exceeds the declared tolerance 0.003" in too_tight.reason
    assert declared.status == "ok" and not declared.exact and declared.declared_tolerance == 3e-2
    assert declared.rel_error == pytest.approx(0.01, rel=1e-3)
    assert document["candidates"][names[1]]["approximate"]["dtype_tolerance"] < 0.01
    assert bench.candidates["math"].exact and "approximate" not in document["candidates"]["math"]


def test_a_kernel_approximate_only_on_the_hard_inputs_is_approximate_and_never_ranked(approximate):
    name = "approximate_kernels:approximate_on_hard_inputs"
    document = run_shape(bench_spec(TINY_SHAPE, ["math", name]))
    bench = ShapeResult.from_json(document)
    result = bench.candidates[name]
    assert result.status == "ok" and result.rel_error < 1e-5  # exact on the first (random) input set
    assert (
        result.declared_tolerance == 3e-2
        and document["candidates"][name]["approximate"]["input_set"] == "hard"
    )
    assert autotune.fastest(bench) == "math"


def test_the_configs_tolerances_declare_an_approximation_for_a_kernel_that_does_not(approximate):
    name = "approximate_kernels:undeclared"
    spec = bench_spec(TINY_SHAPE, ["math", name], tolerances={name: 2e-2})
    result = ShapeResult.from_json(run_shape(spec)).candidates[name]
    assert result.status == "ok" and result.declared_tolerance == 2e-2


def test_approximate_results_are_ranked_apart_from_the_exact_ones():
    bench = shape_result(
        {
            "candidates": {
                "math": {
                    "status": "ok",
                    "samples_ms": [2.0, 2.0, 2.0],
                    "median_ms": 2.0,
                    "rel_ci": 0.0,
                    "rel_error": 1e-7,
                },
                "sage": {
                    "status": "ok",
                    "samples_ms": [1.0, 1.0, 1.0],
                    "median_ms": 1.0,
                    "rel_ci": 0.0,
                    "rel_error": 1e-2,
                    "approximate": {"declared": 3e-2, "dtype_tolerance": 1e-5},
                },
            }
        }
    )
    assert autotune.fastest(bench) == "math"  # the exact results alone are ranked
    summary = headline.summarize([bench], [], None)
    (shape,) = summary["shapes"]
    assert shape["fastest"] == "math" and shape["tied"] == []
    assert shape["approximate"] == {"candidate": "sage", "median_ms": 1.0, "declared": 3e-2}
    assert "faster with approximations: sage 1 ms (declared tolerance 0.03)" in headline.terminal(summary)
    frame = summary_frame([bench], [])
    status = _status_cells(frame)
    assert status["sage"] == "ok (approximate, declared 0.03)" and status["math"] == "ok"
    compare = ShapeComparisons.from_json(files.stamped(compare_shape(bench, "math")))
    (sage_line,) = [line for line in terminal.candidate_lines(bench, compare) if "sage" in line]
    assert "approximate (declared tolerance 0.03)" in sage_line
    assert summary["matrix"]["rows"][0]["cells"]["sage"]["declared_tolerance"] == 3e-2
    winners = [b for b in headline_section(frame, [bench], summary).blocks if hasattr(b, "rows")][0]
    assert winners.headers[-1] == "faster with approximations"
    assert winners.rows[0][1] == "math" and winners.rows[0][-1] == "sage 1 ms (declared 0.03)"


def test_a_declared_tolerance_names_a_candidate_of_the_run(tmp_path):
    given = {**yaml.safe_load(CONFIG.read_text()), "tolerances": {"sage:attn": 3e-2}}
    with pytest.raises(config.ConfigError, match="tolerances: 'sage:attn' is not one of candidates"):
        config.resolve(given)
    # one map for both views: a GPU candidate that the cpu: section does not run is accepted
    config.resolve({**given, "tolerances": {"flex": 5e-2}})
    with pytest.raises(ValueError, match="a declared tolerance is a positive number"):
        attnbench.kernel(tolerance=-1.0)


def _status_cells(frame) -> dict:
    (table,) = [b for b in results_section(frame).blocks if hasattr(b, "rows")][:1]
    return {row[0].split(" ")[0]: row[1] for row in table.rows}


def test_the_ratchet_calls_an_error_that_rose_beyond_its_factor_a_regression():
    samples = [1.0 + 0.001 * (i % 7) for i in range(40)]

    def bench(errors: dict) -> dict:
        entries = {
            name: {"status": "ok", "samples_ms": samples, "median_ms": float(np.median(samples)),
                   "rel_error": error, "tolerance": 1e-5}
            for name, error in errors.items()
        }  # fmt: skip
        return {"shape": {"name": "s1"}, "candidates": entries}

    then = shape_result(bench({"careful": 2e-6, "noisy_bits": 2e-7, "same": 3e-6}))
    baseline = {
        "kind": "attnbench-baseline",
        "fingerprint": FINGERPRINT,
        "shapes": {
            "s1": {
                "shape": dict(then.shape),
                "config": {"dtype": then.dtype, "mode": then.mode, "timing": {"mode": then.timing["mode"]}},
                "candidates": then.to_json()["candidates"],
            }
        },
    }
    baseline["digest"] = ratchet.content_digest(baseline)
    # careful: 5x its error and above 10% of its tolerance; noisy_bits: 5x, but far below the tolerance
    now = shape_result(bench({"careful": 1e-5, "noisy_bits": 1e-6, "same": 3.1e-6}))
    doc = ratchet.compare_shape(now, baseline, ratchet.settings(None))
    verdict = ratchet.verdict([doc], baseline, None, FINGERPRINT, {}, "baseline.json")
    found = {e["candidate"]: (e["verdict"], e["reason"]) for e in verdict["entries"]}
    assert found["careful"] == ("regression", "error rose from 2e-06 to 1e-05 (5.0x, limit 2x)")
    assert found["noisy_bits"][0] == found["same"][0] == "unchanged"
    assert ratchet.gate(verdict)[0] == 1
    assert verdict["settings"]["accuracy_factor"] == 2.0
    comment = ratchet.comment(verdict)  # a regression without a speedup sorts after the slowdowns
    assert "| s1 | careful | regression | — |" in comment and "error rose from 2e-06 to 1e-05" in comment
    moved = {**FINGERPRINT, "torch": {"version": "2.14.0"}}  # a strict field: nothing is compared across it
    blocked = ratchet.verdict([doc], baseline, None, moved, {}, "baseline.json")
    entry = next(e for e in blocked["entries"] if e["candidate"] == "careful")
    assert entry["verdict"] == "incomparable" and entry["compared_verdict"] == "regression"


def test_the_front_of_time_against_error_holds_the_results_no_other_beats_on_both(tmp_path):
    run = write_run(tmp_path, device="cpu")
    benches = []
    for path in run["bench_paths"]:
        document = files.read_json(path)
        document["candidates"]["flex"]["rel_error"] = 1e-4  # as slow as math and ten times as accurate
        benches.append(ShapeResult.from_json(document))
    frame = summary_frame(benches, [])
    front = frame[frame["shape"] == benches[0].name].set_index("candidate")["pareto_front"]
    # flash: fastest; flex: most accurate; math: slower than flash and no more accurate; others not ok
    assert front.to_dict() == {"math": False, "flash": True, "flex": True, "evil:<script>alert(1)</script>": None,
                               "efficient": None, "cudnn": None}  # fmt: skip
    png = plots.figures(frame, {"matmul": {}, "copy": {}}, {})["accuracy"]
    assert png.startswith(b"\x89PNG") and len(png) > 10_000


def test_the_sageattention_example_declares_its_tolerance_and_declines_without_cuda(locked_env):
    """examples/sage_attention.py on the CPU: each candidate reads as declared, without importing the
    module, and declines in words (no CUDA here, or no sageattention); the device runs it."""
    names = [f"examples.sage_attention:{n}" for n in ("hnd", "nhd", "hnd_smooth_k")]
    for name in names:
        assert candidates.static_declaration(name).tolerance == 3e-2
    assert candidates.static_declaration(names[1]).layout == "bshd"
    result = run_shape(bench_spec(TINY_SHAPE, ["math", *names]))
    for name in names:
        entry = result["candidates"][name]
        assert entry["status"] == "unsupported"
        assert entry["reason"].startswith(
            ("sageattention is not installed", "SageAttention needs a CUDA device")
        )


def test_no_error_ratio_against_a_reference_that_is_not_ok(tmp_path):
    run = write_run(tmp_path, device="cpu")
    benches = [ShapeResult.from_json(files.read_json(path)) for path in run["bench_paths"]]
    evil = next(name for name in benches[0].candidates if name.startswith("evil"))  # incorrect
    compares = [ShapeComparisons.from_json(files.stamped(compare_shape(b, evil))) for b in benches]
    frame = summary_frame(benches, compares).set_index(["shape", "candidate"])
    assert frame["error_vs_reference"].isna().all()  # a ratio to a wrong answer means nothing


def test_a_kernels_approximate_configurations_are_said_approximate_not_failed():
    approximate = {"approximate": {"declared": 3e-2, "dtype_tolerance": 1e-5, "input_set": "first"}}
    entries = {
        name: {
            "status": "ok",
            "samples_ms": [1.0, 1.1, 1.2],
            "median_ms": 1.1,
            "rel_error": 1e-2,
            **approximate,
        }
        for name in ("k:f[B=64]", "k:f[B=128]")
    }
    bench = shape_result(
        {"candidates": {"math": {"status": "ok", "samples_ms": [2.0] * 3, "median_ms": 2.0}, **entries}}
    )
    (family,) = autotune.analyse([bench], [])["configurations"]["families"]
    assert [x["status"] for x in family["shapes"][0]["not_ok"]] == [autotune.APPROXIMATE] * 2
    assert family["reason"] == "no configuration ran ok within the dtype's tolerance on any shape"
