"""attnbench.compare, the Python API: the workflow's spec, measurement and compare job, in this process."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
import torch.nn.functional as F

import attnbench
from attnbench import api, host, shape_syntax, usercode


def mine(q, k, v, *, causal, scale):
    return F.scaled_dot_product_attention(q, k, v, is_causal=causal, scale=scale)


def wrong(q, k, v, *, causal, scale):
    return mine(q, k, v, causal=causal, scale=scale) * 1.1


def declines(q, k, v, *, causal, scale):
    raise attnbench.Unsupported("only causal shapes")


SHORT = {"warmup": 2, "warmup_max_s": 0.2, "min_rounds": 10, "max_time_s": 0.5}


@pytest.fixture(scope="module")
def compared():
    precision = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("high")  # the caller's setting, which the lock must not keep
    state = torch.random.get_rng_state()
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        frame = attnbench.compare(
            {"mine": mine, "wrong": wrong, "declines": declines, "sdpa": "flash"},
            shapes=["b1_h2_s64_d16"],
            device="cpu",
            timing=SHORT,
            stats={"threshold": 0.03},
            threads=1,
        )
        after = torch.get_float32_matmul_precision(), torch.random.get_rng_state(), torch.get_num_threads()
    finally:
        torch.set_float32_matmul_precision(precision)
        torch.set_num_threads(threads)
    return frame, after, state


def test_one_row_per_candidate_with_the_workflows_statuses(compared):
    frame, _, _ = compared
    assert list(frame.columns) == api.COLUMNS
    rows = frame.set_index("candidate")
    assert list(rows.index) == ["mine", "wrong", "declines", "sdpa", "math"]  # the reference is measured too
    assert dict(rows["status"]) == {
        "mine": "ok",
        "wrong": "incorrect",
        "declines": "unsupported",
        "sdpa": "ok",
        "math": "ok",
    }
    assert rows.loc["declines", "reason"] == "only causal shapes"
    assert rows.loc["wrong", "rel_error"] > 0.05
    assert set(frame["shape"]) == {"b1_h2_s64_d16"} and set(frame["reference"]) == {"math"}
    assert set(frame["device"]) == {"cpu"} and set(frame["dtype"]) == {"float32"}  # the CPU default
    assert rows.loc["math", "verdict"] == "reference"
    for failed in ("wrong", "declines"):
        assert rows.loc[failed, "speedup"] != rows.loc[failed, "speedup"]  # NaN: nothing to compare


def test_speedups_and_intervals_agree_with_the_medians(compared):
    frame, _, _ = compared
    rows = frame.set_index("candidate")
    for name in ("mine", "sdpa"):
        row = rows.loc[name]
        assert row["ci95_lo_ms"] <= row["median_ms"] <= row["ci95_hi_ms"]
        # the geometric mean of the per-round speedups: near the medians' ratio, not equal to it
        assert row["speedup"] == pytest.approx(rows.loc["math", "median_ms"] / row["median_ms"], rel=0.2)
        assert row["speedup_ci_lo"] <= row["speedup"] <= row["speedup_ci_hi"]
        assert row["confidence"] == pytest.approx(0.95) and row["rounds"] >= 10
        assert row["verdict"] in ("faster", "slower", "same")
        if row["verdict"] != "same":  # decided: the interval clears the resolution band on its side
            assert row["significant"] and (row["speedup"] > 1) == (row["verdict"] == "faster")
            assert row["speedup_ci_lo"] > 1.005 or row["speedup_ci_hi"] < 1 / 1.005
        else:
            assert row["speedup_ci_lo"] <= 1.03 and row["speedup_ci_hi"] >= 1 / 1.03
        assert row["tflops"] > 0


def test_the_documents_are_the_workflows(compared):
    """The raw documents are those the workflow's jobs write, under the caller's labels' run names."""
    frame, _, _ = compared
    bench, compare = frame.attrs["bench"]["b1_h2_s64_d16"], frame.attrs["compare"]["b1_h2_s64_d16"]
    assert bench["kernel_hashes"] == {"mine": "in-process", "wrong": "in-process", "declines": "in-process"}
    assert bench["bound"] is None  # no ceilings on the CPU by default
    assert compare["method"]["threshold"] == 0.03  # the caller's stats settings reach the compare job
    for comp in compare["comparisons"]:
        row = frame.set_index("candidate").loc["sdpa" if comp["candidate"] == "flash" else comp["candidate"]]
        assert (
            row["speedup"] == comp["speedup"]
            and [row["speedup_ci_lo"], row["speedup_ci_hi"]] == comp["speedup_ci"]
        )
        if comp["rounds_to_decide"] is None:
            assert pd.isna(row["rounds_to_decide"])
        else:
            assert row["rounds_to_decide"] == comp["rounds_to_decide"] > row["rounds"]
    assert {c["candidate"] for c in compare["comparisons"]} == {"mine", "flash"}
    json.dumps(compare)  # plain types, as written to results/compare


def test_the_callers_state_is_left_as_it_was(compared):
    frame, (precision, rng_after, threads), rng_before = compared
    assert precision == "high" and threads == 2
    assert frame.attrs["bench"]["b1_h2_s64_d16"]["host"]["threads"] == 1  # the shape's, while measured
    assert torch.equal(rng_after, rng_before)
    assert not set(usercode.REGISTERED) & {"mine", "wrong", "declines"}


def test_without_a_reference_nothing_is_compared(monkeypatch, capfd):
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    frame = attnbench.compare([mine], shapes=[{"batch": 1, "heads": 2, "seq": 32, "dim": 16}], reference=None,
                              device="cpu", timing=SHORT)  # fmt: skip
    # Found by a new user: with OMP_NUM_THREADS (or every core) it measured with other threads than
    # the workflow's jobs, and libkineto wrote "USDT ... profiler_start/stop" lines to the notebook
    assert frame.attrs["bench"]["b1_h2_s32_d16"]["host"]["threads"] == host.WORKFLOW_THREADS
    assert "USDT" not in capfd.readouterr().err
    assert list(frame["candidate"]) == ["mine"] and list(frame["shape"]) == ["b1_h2_s32_d16"]
    assert frame.loc[0, "status"] == "ok" and frame.loc[0, "reference"] is None
    assert frame["speedup"].isna().all() and frame.attrs["compare"] == {}


def test_mistakes_are_named_and_leave_no_registration():
    with pytest.raises(ValueError, match="built-in candidate"):
        attnbench.compare({"mine": mine, "flash": mine}, shapes=["b1_h2_s32_d16"], device="cpu")
    with pytest.raises(TypeError, match="candidate 'x'"):
        attnbench.compare({"x": 3}, shapes=["b1_h2_s32_d16"], device="cpu")
    with pytest.raises(ValueError, match="at least one shape"):
        attnbench.compare({"mine": mine}, shapes=[], device="cpu")
    with pytest.raises(shape_syntax.ShapeError, match="missing dim"):
        attnbench.compare({"mine": mine}, shapes=["b1_h2_s32"], device="cpu")
    with pytest.raises(FileNotFoundError, match="ceilings"):
        attnbench.compare({"mine": mine}, shapes=["b1_h2_s32_d16"], device="cpu", ceilings="nowhere.json")
    assert "mine" not in usercode.REGISTERED
    # found in review: two lambdas are both <lambda>, and one silently replaced the other
    with pytest.raises(ValueError, match="two candidates named '<lambda>'"):
        attnbench.compare(
            [lambda q, k, v, **_: q, lambda q, k, v, **_: k], shapes=["b1_h2_s32_d16"], device="cpu"
        )
    with pytest.raises(ValueError, match="given twice"):
        attnbench.compare({"a": "flash", "b": "flash"}, shapes=["b1_h2_s32_d16"], device="cpu")


def test_an_interrupted_compare_returns_the_shapes_measured_before(monkeypatch):
    """In the caller's process nothing isolates a crash or a Ctrl-C: the finished shapes are kept."""
    real, seen = api._measure, []

    def measure(run, name, ceilings):
        seen.append(name)
        if len(seen) == 2:
            raise KeyboardInterrupt
        return real(run, name, ceilings)

    monkeypatch.setattr(api, "_measure", measure)
    with pytest.warns(UserWarning, match="compare stopped at shape b1_h2_s48_d16"):
        frame = attnbench.compare(
            [mine], shapes=["b1_h2_s32_d16", "b1_h2_s48_d16"], device="cpu", timing=SHORT
        )
    assert set(frame["shape"]) == {"b1_h2_s32_d16"} and set(frame["status"]) == {"ok"}
    assert "mine" not in usercode.REGISTERED


def test_ceilings_are_calibrated_once_per_process(monkeypatch):
    """By the calibrate job (here a stand-in: the real one takes ~9 s on a 2-core CPU)."""
    calls = []

    def calibrate(command, spec, *args):
        calls.append(command)
        return {"device": "cpu", "matmul": {}}

    monkeypatch.setattr(api.jobs, "run", calibrate)
    monkeypatch.setattr(api, "_CEILINGS", {})
    shapes = [shape_syntax.parse_shape("b1_h2_s32_d16")]
    run = api.run_config.resolve(
        {"device": "cpu", "candidates": ["math"], "reference": "math", "shapes": shapes}
    )
    first, second = api._ceilings(run, True), api._ceilings(run, True)
    assert first is second and first["device"] == "cpu"
    assert calls == ["calibrate"]
    assert api._ceilings(run, "auto") is None  # the CPU: no calibration unless asked


def test_the_profilers_chatter_is_held_back_and_the_rest_of_stderr_shown(capfd):
    with host.held_stderr():
        os.write(2, b"USDT:2026-12-07 23:46:57 13093:13093 SyncActivityProfilerHandler.cpp:52] profiler_start\n")
        os.write(2, b"a kernel's own warning\n")
    assert capfd.readouterr().err == "a kernel's own warning\n"


def test_import_attnbench_stays_cheap():
    """The Snakefile imports the package at parse time: the API's torch and pandas load on first use."""
    code = (
        "import sys, attnbench; assert 'torch' not in sys.modules and 'pandas' not in sys.modules;"
        "from attnbench.api import compare; assert attnbench.compare is compare"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_compare_writes_no_file(monkeypatch, tmp_path):
    """It wrote each benchmark document to a scratch directory for the compare job to read back, and
    the ceilings it calibrated to another: the job functions now take documents (jobs.compared,
    bench.run_shape's ceilings), so a notebook's compare writes nothing but the calibrate job's
    memory of this machine's ceilings (calibrate.REMEMBERED, reused across runs on purpose)."""
    from attnbench import calibrate, files

    kept = calibrate.REMEMBERED.path("x").parent
    writers = {name: getattr(files, name) for name in ("write_json", "atomic_write_text", "atomic_write_bytes")}

    def refusing(name):
        def write(path, *args, **kwargs):
            assert Path(path).parent == kept, f"attnbench.compare wrote {path}"
            return writers[name](path, *args, **kwargs)

        return write

    for name in writers:
        monkeypatch.setattr(files, name, refusing(name))
    frame = attnbench.compare([mine], shapes=["b1_h2_s32_d16"], device="cpu", timing=SHORT, ceilings=True)
    assert set(frame["status"]) == {"ok"} and frame.attrs["bench"]["b1_h2_s32_d16"]["bound"] is not None
