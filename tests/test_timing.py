"""Tests for attnbench.timing and attnbench.clocks on the CPU: the round structure, the warm-up rule,
adaptive stopping and throttled-round handling, driven by scripted durations instead of a clock."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import numpy as np
import pytest

from attnbench import clocks, timing
from attnbench.settings import TimingSettings


class ScriptedClock(timing.HostClock):
    """Each unit returns its own duration in ns, so a test decides exactly what is 'measured'."""

    def stamp(self, sampler: timing.Sampler) -> int:
        return sampler.unit()


class ScriptedWatch(clocks.ClockWatch):
    """A GPU clock reading per call: (sm_mhz, reason bits) from a script, then the last one forever."""

    def __init__(self, readings: list[tuple[int, int]]) -> None:
        super().__init__()
        self.readings: Iterator[tuple[int, int]] = itertools.chain(readings, itertools.repeat(readings[-1]))

    @property
    def source(self) -> str | None:
        return "scripted"

    def read(self) -> clocks.Reading:
        return clocks.Reading(*next(self.readings))


def noisy(ms: float, rel_noise: float, seed: int):
    rng = np.random.default_rng(seed)
    return lambda: int(ms * 1e6 * rng.lognormal(0.0, rel_noise))


def run(calls, *, watch=None, failures=None, **settings):
    return timing.measure(
        calls,
        device="cpu",
        settings=TimingSettings(**{"warmup_max_s": 1.0, "max_time_s": 10.0, **settings}),
        flush=timing.L2Flusher("cpu", True),
        watch=watch or clocks.ClockWatch(reason="test"),
        on_failure=lambda name, exc: (failures if failures is not None else {}).__setitem__(name, exc),
        clock=ScriptedClock(),
    )


def test_stops_as_soon_as_every_median_meets_the_ci_target():
    measured = run({"a": noisy(1.0, 0.01, 1), "b": noisy(2.0, 0.01, 2)}, min_rounds=20, target_rel_ci=0.01)
    assert "within ±1.00%" in measured.stop_reason
    kept = len(measured.samples["a"])
    assert kept == len(measured.samples["b"]) and 20 <= kept < 100
    for name, values in measured.samples.items():
        lo, hi = measured.ci95[name]
        assert lo <= np.median(values) <= hi
        assert timing.relative_half_width((lo, hi), values) <= 0.01


def test_noisier_candidates_take_more_rounds_and_max_rounds_bounds_them():
    quiet = run({"a": noisy(1.0, 0.01, 3)}, min_rounds=20)
    loud = run({"a": noisy(1.0, 0.10, 3)}, min_rounds=20)
    assert len(loud.samples["a"]) > len(quiet.samples["a"])
    capped = run({"a": noisy(1.0, 0.30, 4)}, min_rounds=10, max_rounds=30)
    assert capped.rounds_run == 30 and "max_rounds (30) reached" in capped.stop_reason
    assert timing.relative_half_width(capped.ci95["a"], capped.samples["a"]) > 0.01


def test_warm_up_ends_when_timings_settle_not_after_a_fixed_count():
    cooling = itertools.chain((int(1e6 * (3.0 - 0.25 * i)) for i in range(8)), itertools.repeat(1_000_000))
    measured = run({"a": lambda: next(cooling)}, warmup=2, min_rounds=5)
    warmup = measured.warmup
    assert warmup["settled"] is True and warmup["reason"] == "timings settled"
    assert warmup["rounds"] >= 9  # the first eight calls were still getting faster
    assert max(measured.samples["a"]) == pytest.approx(1.0)


def test_warm_up_that_never_settles_says_so_and_measurement_goes_on():
    flapping = itertools.cycle([1_000_000, 1_000_000, 1_000_000, 2_000_000, 2_000_000, 2_000_000])
    measured = run({"a": lambda: next(flapping)}, warmup_max_s=0.05, min_rounds=4, max_rounds=8)
    assert measured.warmup["settled"] is False and "not settled" in measured.warmup["reason"]
    assert len(measured.samples["a"]) == 8


def test_warm_up_also_waits_for_the_sm_clock():
    ramp = [(900, 0), (1980, 0), (1980, 0)]  # one reading per warm-up batch
    measured = run({"a": noisy(1.0, 0.001, 5)}, watch=ScriptedWatch(ramp), warmup=1, min_rounds=4)
    assert measured.warmup["reason"] == "timings and SM clock settled"
    assert measured.warmup["sm_mhz"] == 1980
    assert (
        measured.warmup["rounds"] == 3 * timing.WARMUP_BATCH_ROUNDS
    )  # timings alone settled a batch earlier


def test_rounds_under_thermal_slowdown_are_dropped_whole_and_power_cap_is_only_counted():
    thermal, power_cap = 0x20, 0x4
    # warm-up reads the clock once per batch until it settles; then one reading before and one per round
    script = (
        [(1980, 0)] * 3 + [(1980, 0), (1980, 0), (1700, thermal), (1980, 0), (1900, power_cap)] + [(1980, 0)]
    )
    measured = run(
        {"a": noisy(1.0, 0.001, 6), "b": noisy(1.0, 0.001, 7)},
        watch=ScriptedWatch(script),
        warmup=1,
        min_rounds=10,
        max_rounds=10,
    )
    summary = measured.clock_log.summary()
    assert measured.rounds_run == 10
    # the thermal reading taints its own round and the next (the reading starts that round)
    assert summary["discarded_rounds"] == 2 and len(measured.samples["a"]) == len(measured.samples["b"]) == 8
    assert summary["events"] == {"sw_thermal_slowdown": 1, "sw_power_cap": 1}
    assert summary["throttled_rounds"] == 2 and summary["min_sm_mhz"] == 1700
    kept = run(
        {"a": noisy(1.0, 0.001, 6)},
        watch=ScriptedWatch(script),
        warmup=1,
        min_rounds=10,
        max_rounds=10,
        discard_throttled=False,
    )
    assert len(kept.samples["a"]) == 10 and kept.clock_log.summary()["discarded_rounds"] == 0


def test_a_candidate_that_fails_mid_run_is_dropped_and_the_others_stay_paired():
    calls_left = iter(range(40))

    def flaky() -> int:
        if next(calls_left) == 30:
            raise RuntimeError("boom")
        return 1_000_000

    failures: dict[str, BaseException] = {}
    measured = run(
        {"flaky": flaky, "steady": noisy(1.0, 0.001, 8)}, failures=failures, min_rounds=50, max_rounds=60
    )
    assert set(failures) == {"flaky"} and "boom" in str(failures["flaky"])
    assert set(measured.samples) == {"steady"} and len(measured.samples["steady"]) == measured.rounds_run


def test_rounds_alternate_direction():
    assert timing.round_order(["a", "b", "c"], 0) == ["a", "b", "c"]
    assert timing.round_order(["a", "b", "c"], 1) == ["c", "b", "a"]


def test_cpu_runs_are_warm_wall_clock_and_say_why():
    measured = run({"a": noisy(1.0, 0.001, 9)}, mode="graph", min_rounds=5)
    record = measured.record(TimingSettings(mode="graph"), "cpu")
    assert record["mode"] == "warm" and record["requested_mode"] == "graph"
    assert "CPU" in record["mode_reason"] and record["flush_bytes"] is None
    assert record["clocks"]["source"] is None


def test_graph_calls_amortise_overhead_within_bounds():
    assert timing.graph_calls(0.005) == 100  # 0.5 ms of work per replay
    assert timing.graph_calls(10.0) == 1
    assert timing.graph_calls(0.0) == timing.MAX_GRAPH_CALLS


def test_reason_names_and_masks():
    assert clocks.reason_names(0x4 | 0x40) == ["sw_power_cap", "hw_thermal_slowdown"]
    assert not clocks.DISCARDED & 0x4 and clocks.COUNTED & 0x4  # power cap: counted, kept
    assert not clocks.COUNTED & 0x1  # an idle GPU is not throttled


def test_clock_watch_without_nvml_reads_nothing():
    watch = clocks.ClockWatch(reason="no NVML")
    assert watch.read() == clocks.Reading(None, 0) and watch.source is None
    assert watch.log().summary()["reason"] == "no NVML"
    with clocks.watch("cpu") as cpu_watch:
        assert cpu_watch.read().sm_mhz is None and "cpu" in cpu_watch.reason
