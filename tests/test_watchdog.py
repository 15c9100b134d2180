"""Issue 31: `call_timeout_s` was cooperative. A kernel that caught its timeout (`except BaseException` in a
loop) never returned and its job waited for ever; a user module's import ran outside any timeout (a 60 s
sleep at import was waited out). Now every benchmark job keeps a watchdog from outside the process that
runs user code (attnbench.worker.Watchdog, limits from the config: attnbench.isolation.Limits): past a
phase's limit it kills that process, the candidate it was in ends `timeout` with the limit in its reason,
and the others are measured again without it. The import runs under call_timeout_s too.

Each job runs in a subprocess with a timeout of its own: without the watchdog it would hang, and the
test fails instead."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import jsonschema
import pytest
import yaml
from helpers import ROOT, SCHEMAS, alive, complete_spec, job_environment, wait_until

from attnbench import files, isolation, worker

SHAPE = {
    "name": "s32",
    "batch": 1,
    "heads": 2,
    "kv_heads": 2,
    "seq": 32,
    "seq_kv": 32,
    "dim": 16,
    "causal": False,
}
CALL_TIMEOUT_S = 0.5
TIMING = {
    "warmup": 1,
    "warmup_max_s": 0.2,
    "min_rounds": 6,
    "max_rounds": 6,
    "max_time_s": 1,
    "call_timeout_s": CALL_TIMEOUT_S,
}
CHECKS_S = isolation.CHECK_CALLS * CALL_TIMEOUT_S + isolation.CHECK_SLACK_S  # 8.5 s
JOB_TIMEOUT_S = 120  # a job that hangs fails the test here

KERNELS = '''
import time

import torch.nn.functional as F


def honest(q, k, v, *, causal, scale):
    return F.scaled_dot_product_attention(q, k, v, is_causal=causal, scale=scale)


def swallows_its_timeout(q, k, v, *, causal, scale):
    """Catches call_timeout_s's exception, and any other, and goes on for ever."""
    while True:
        try:
            time.sleep(0.05)
        except BaseException:
            pass
'''
SLEEPS_AT_IMPORT = """
import time

time.sleep(600)


def attn(q, k, v, *, causal, scale):
    return q
"""
SWALLOWS_AT_IMPORT = """
import time

while True:
    try:
        time.sleep(0.05)
    except BaseException:
        pass


def attn(q, k, v, *, causal, scale):
    return q
"""


def spec(candidates, **timing):
    return complete_spec({"shape": SHAPE, "device": "cpu", "dtype": "float32", "mode": "forward",
                          "candidates": candidates, "timing": TIMING | timing, "lock": {"seed": 0}})  # fmt: skip


@pytest.fixture
def job_env(tmp_path, monkeypatch):
    """A benchmark job's environment, in a directory that holds the kernels (user kernels resolve from it)."""
    job_environment(tmp_path, monkeypatch)
    (tmp_path / "hangs.py").write_text(KERNELS)
    (tmp_path / "sleeps_at_import.py").write_text(SLEEPS_AT_IMPORT)
    (tmp_path / "swallows_at_import.py").write_text(SWALLOWS_AT_IMPORT)
    return tmp_path


def benchmark(job_spec, out, **variables):
    """`attnbench benchmark` as the workflow runs it: the result (validated), the job's log, its seconds."""
    argv = [sys.executable, "-m", "attnbench", "benchmark", "--spec", json.dumps(job_spec), "--out", str(out),
            "--schemas", str(SCHEMAS)]  # fmt: skip
    began = time.monotonic()
    try:
        job = subprocess.run(
            argv, env={**os.environ, **variables}, capture_output=True, text=True, timeout=JOB_TIMEOUT_S
        )
    except subprocess.TimeoutExpired as hung:
        log = hung.stderr.decode(errors="replace") if isinstance(hung.stderr, bytes) else hung.stderr or ""
        for pid in re.findall(r"(?:worker pid|running in pid) (\d+)", log):  # what it left spinning
            try:
                os.kill(int(pid), signal.SIGKILL)
            except ProcessLookupError:
                pass
        pytest.fail(f"the job hung for {JOB_TIMEOUT_S} s:\n{log[-3000:]}")
    assert job.returncode == 0, job.stderr
    return files.read_json(out, SCHEMAS / "bench.schema.yaml"), job.stderr, time.monotonic() - began


def statuses(document):
    return {name: entry["status"] for name, entry in document["candidates"].items()}


@pytest.mark.slow
def test_a_kernel_that_catches_its_timeout_is_killed_with_its_worker_and_the_others_are_measured(job_env):
    names = ["math", "hangs:swallows_its_timeout", "hangs:honest"]
    document, log, seconds = benchmark(spec(names), job_env / "out.json")
    assert statuses(document) == {"math": "ok", "hangs:swallows_its_timeout": "timeout", "hangs:honest": "ok"}
    reason = document["candidates"]["hangs:swallows_its_timeout"]["reason"]
    assert reason.startswith(
        f"in its checks, its process ran past the job's watchdog limit of {CHECKS_S:g} s for a candidate's"
        f" checks (7 x call_timeout_s {CALL_TIMEOUT_S:g} s + 5 s) and was killed"
    ), reason
    # the rest of the shape was measured in a fresh worker, without it
    assert len(document["candidates"]["hangs:honest"]["samples_ms"]) == TIMING["max_rounds"]
    first = int(re.search(r"running in worker pid (\d+)", log)[1])
    assert document["process"]["worker"]["pid"] != first
    assert wait_until(lambda: not alive(first)), "the killed worker is still alive"
    # the limit is stated in the result, and the job ended well within it
    watchdog = document["watchdog"]
    assert (watchdog["checks_s"], watchdog["call_timeout_s"]) == (CHECKS_S, CALL_TIMEOUT_S)
    assert watchdog["limit_s"] == pytest.approx(isolation.limits(spec(names)).limit_s, abs=1e-3)
    assert seconds < watchdog["limit_s"]


@pytest.mark.slow
def test_without_a_worker_a_module_that_catches_its_timeout_at_import_costs_its_child(job_env):
    """ATTNBENCH_WORKER=0 (and SLURM): the job kills its child, and measures the rest in another."""
    names = ["math", "swallows_at_import:attn"]
    document, log, _ = benchmark(spec(names), job_env / "out.json", ATTNBENCH_WORKER="0")
    assert statuses(document) == {"math": "ok", "swallows_at_import:attn": "timeout"}
    reason = document["candidates"]["swallows_at_import:attn"]["reason"]
    assert f"watchdog limit of {CHECKS_S:g} s for a candidate's checks" in reason, reason
    assert document["process"]["worker"] is None
    child = int(re.search(r"running in pid (\d+), a child of this job", log)[1])
    assert not alive(child)


@pytest.mark.slow
def test_a_module_that_sleeps_at_import_times_out_at_call_timeout_s(job_env):
    """The import is the candidate's, bounded as a call is: found by trying it, a 60 s sleep at import
    was waited out."""
    document, _, seconds = benchmark(spec(["math", "sleeps_at_import:attn"]), job_env / "out.json")
    assert statuses(document) == {"math": "ok", "sleeps_at_import:attn": "timeout"}
    assert document["candidates"]["sleeps_at_import:attn"]["reason"] == (
        f"importing its module: no return within call_timeout_s = {CALL_TIMEOUT_S:g} s"
    )
    assert seconds < JOB_TIMEOUT_S


def test_the_limits_come_from_the_config():
    """call timeout x calls + margin, per phase; stated in the result as the schema describes it."""
    config = spec(["math", "flash"], max_time_s=30, warmup_max_s=5, call_timeout_s=300)
    found = isolation.limits(config)
    assert found.setup_s == isolation.SETUP_S
    assert found.checks_s == 7 * 300 + 5
    # per pass: a warm-up (5 s and 3 rounds over), sampling (30 s and 2 rounds over); twice; the audit's 2 rounds
    rounds_s = 2 * 300
    assert found.timed_s == pytest.approx(
        2 * (5 + 3 * rounds_s + 30 + 2 * rounds_s) + 2 * rounds_s + 10 + 2 * 6 * 1e-3
    )
    assert found.limit_s == pytest.approx(2 * found.setup_s + 2 * found.checks_s + found.timed_s)
    # on CUDA the warm-up runs again for the graphs
    on_cuda = isolation.limits(config | {"device": "cuda"})
    assert on_cuda.timed_s - found.timed_s == pytest.approx(2 * (5 + 3 * rounds_s))
    # the defaults: the timeout's 300 s
    assert isolation.limits({**spec(["math"]), "timing": {}}).call_timeout_s == 300
    record = found.record()
    schema = yaml.safe_load((SCHEMAS / "bench.schema.yaml").read_text())["properties"]["watchdog"]
    jsonschema.validate(record, schema)
    assert set(record) == set(schema["required"]) == set(schema["properties"])
    assert "call_timeout_s 300 s" in record["formula"]


SPINS = """
import sys, time
print("ready", flush=True)
while True:
    try:
        time.sleep(0.05)
    except BaseException:
        pass
"""


def watched_spinner(limits, new_session):
    process = subprocess.Popen(
        [sys.executable, "-c", SPINS], stdout=subprocess.PIPE, start_new_session=new_session
    )
    assert process.stdout.readline() == b"ready\n"
    ours, theirs = socket.socketpair()
    return process, ours, theirs, worker.Watchdog(limits, ours, process.pid)


LIMITS = isolation.Limits(
    call_timeout_s=0.1, candidates=1, setup_s=0.5, checks_s=0.4, timed_s=0.6, timed_formula="a test's"
)


def test_the_watchdog_kills_a_process_group_that_ignores_signals_and_names_the_phase():
    process, ours, theirs, watchdog = watched_spinner(LIMITS, new_session=True)
    try:
        began = time.monotonic()
        watchdog.running("mine")
        assert ours.recv(1) == b""  # shut by the watchdog: a job's read ends
        assert process.wait(timeout=5) == -signal.SIGKILL
        assert time.monotonic() - began < 5
        why = watchdog.stop()
        assert why == (
            "ran past the job's watchdog limit of 0.4 s for a candidate's checks (7 x call_timeout_s 0.1 s + 5 s)"
            " and was killed"
        )
    finally:
        process.kill()
        ours.close()
        theirs.close()


def test_the_timed_phase_is_allowed_the_setups_time_again():
    process, ours, theirs, watchdog = watched_spinner(LIMITS, new_session=False)
    try:
        time.sleep(0.2)
        watchdog.running(None)
        assert process.wait(timeout=5) == -signal.SIGKILL
        assert watchdog.stop().startswith("ran past the job's watchdog limit of 0.8 s for the timed rounds")
    finally:
        process.kill()
        ours.close()
        theirs.close()


def test_a_watchdog_stopped_in_time_kills_nothing():
    process, ours, theirs, watchdog = watched_spinner(LIMITS, new_session=True)
    try:
        assert watchdog.stop() is None
        time.sleep(0.8)
        assert process.poll() is None
    finally:
        process.kill()
        process.wait()
        ours.close()
        theirs.close()


def test_a_hang_in_the_timed_rounds_is_found_by_replaying_each_candidate_alone():
    """Outside any candidate's checks the culprit is unknown: as for a crash, each candidate is replayed
    alone (user kernels first), and the one that hangs there ends `timeout`."""
    replayed = []

    def measure(job_spec):
        if "mine:hangs" in job_spec["candidates"]:
            raise isolation.Hung(
                "ran past the job's watchdog limit of 9 s for the timed rounds", None, "pid 1", True
            )
        return {"candidates": {name: {"status": "ok"} for name in job_spec["candidates"]}}, None

    def replay(job_spec, variables):
        replayed.append(job_spec["candidates"])
        if job_spec["candidates"] == ["mine:hangs"]:
            raise isolation.Hung(
                "ran past the job's watchdog limit of 4 s for the timed rounds", None, "pid 2", True
            )
        return {}

    document, _ = isolation.supervise(spec(["math", "mine:hangs"]), measure, replay, log=print)
    assert replayed == [["mine:hangs"]] and isolation.rewritten(document) == ["mine:hangs"]
    assert document["candidates"]["math"] == {"status": "ok"}
    entry = document["candidates"]["mine:hangs"]
    assert entry["status"] == "timeout"
    assert entry["reason"] == (
        "in the timed rounds or the audit, its process ran past the job's watchdog limit of 4 s for the timed"
        " rounds (replayed alone in a fresh process): it did not stop at its call_timeout_s"
    )


def test_a_hang_before_any_candidate_ran_fails_the_job_with_the_limit():
    def measure(job_spec):
        raise isolation.Hung(
            "ran past the job's watchdog limit of 300 s for setting up the shape", None, "pid 1", False
        )

    with pytest.raises(
        RuntimeError, match="s32: pid 1 ran past the job's watchdog limit of 300 s for setting up"
    ):
        isolation.supervise(spec(["math"]), measure, lambda *a, **k: {}, log=print)


def test_checking_a_dotted_kernel_name_never_runs_its_package(tmp_path):
    """The config's check runs in Snakemake's process, where nothing bounds an import: finding
    `pkg.kern` imported `pkg` (its __init__ ran; one that loops hung the run before any job). Now the
    package is searched, not imported."""
    package = tmp_path / "slowpkg"
    package.mkdir()
    (package / "__init__.py").write_text(SWALLOWS_AT_IMPORT)
    (package / "kern.py").write_text("def attn(q, k, v, *, causal, scale):\n    return q\n")
    code = (
        "from attnbench import candidates as c\n"
        "print(c.user_kernel_problem('slowpkg.kern:attn'))\n"
        "print(c.user_kernel_problem('slowpkg.kern:atn'))\n"
        "print(c.user_kernel_problem('slowpkg.gone:attn'))\n"
        "print(c.user_kernel_source_hash('slowpkg.kern:attn') != 'unresolved')\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    try:
        ran = subprocess.run(
            [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
        )
    except subprocess.TimeoutExpired:
        pytest.fail("checking the kernel's name ran its package's __init__")
    assert ran.returncode == 0, ran.stderr
    found, misspelt, gone, hashed = ran.stdout.splitlines()
    assert found == "None" and hashed == "True"
    assert "defines no 'atn'; did you mean slowpkg.kern:attn?" in misspelt
    assert gone.startswith("module 'slowpkg.gone' not found")
