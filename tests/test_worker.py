"""The per-GPU worker, on the CPU: jobs reuse one warm process, a job's death stops the worker at once,
a failed candidate retires it, and anything that changes what it would run gets a fresh one."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import alive, complete_spec, wait_until

from attnbench import usercode, worker

ROOT = Path(__file__).resolve().parents[1]
FINGERPRINT = {"device": "cpu", "requested_device": "cpu", "lock": {"seed": 0}}


@pytest.fixture
def worker_env(tmp_path, monkeypatch):
    """Jobs' start-up variables, a socket folder of the test's own, and workers that idle out fast."""
    monkeypatch.setenv("PYTHONHASHSEED", "0")
    monkeypatch.setenv(worker.IDLE_VARIABLE, "20")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT / "src"), str(ROOT / "tests")]))
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.slow
def test_jobs_reuse_one_warm_worker(worker_env):
    first, by_first = worker.run("fingerprint", FINGERPRINT, worker_env, log=print)
    second, by_second = worker.run("fingerprint", FINGERPRINT, worker_env, log=print)
    assert first["device"] == second["device"] == "cpu"
    assert by_first["pid"] == by_second["pid"]
    assert (by_first["jobs_before"], by_second["jobs_before"]) == (0, 1)


def benchmark_spec(candidates, max_time_s):
    shape = {"name": "s64", "batch": 1, "heads": 2, "seq": 64, "dim": 16, "causal": False}
    timing = {"warmup": 1, "warmup_max_s": 0.2, "min_rounds": 10**6, "max_rounds": 10**6, "max_time_s": max_time_s}
    return complete_spec({"device": "cpu", "dtype": "float32", "mode": "forward", "candidates": candidates,
                          "shape": shape, "timing": timing, "lock": {"seed": 0}})  # fmt: skip


@pytest.mark.slow
def test_worker_stops_when_its_job_dies(worker_env, tmp_path):
    """kill -9 of the job mid-shape: the worker exits too, instead of measuring for nobody."""
    spec = benchmark_spec(["math"], max_time_s=120)
    job = subprocess.Popen(
        [sys.executable, "-m", "attnbench", "benchmark", "--spec", json.dumps(spec), "--out", str(tmp_path / "o.json")],
        env={**os.environ, "ATTNBENCH_LEASE_DIR": str(worker_env)},
        stderr=subprocess.PIPE,
        text=True,
    )
    pid = None
    for line in job.stderr:
        if match := re.search(r"worker pid (\d+)", line):
            pid = int(match[1])
        if "math: ok" in line:  # the worker is measuring now
            break
    assert pid is not None and alive(pid)
    job.send_signal(signal.SIGKILL)
    job.wait(timeout=10)
    assert wait_until(lambda: not alive(pid)), "the worker outlived its job"
    assert not (tmp_path / "o.json").exists()


@pytest.mark.slow
def test_a_failed_candidate_retires_the_worker(worker_env):
    document, by = worker.run("benchmark", benchmark_spec(["math", "user_kernels:raises"], 0.5), worker_env, log=print)
    assert document["candidates"]["user_kernels:raises"]["status"] == "error"
    assert wait_until(lambda: not alive(by["pid"]))
    _, by_next = worker.run("fingerprint", FINGERPRINT, worker_env, log=print)
    assert by_next["pid"] != by["pid"] and by_next["jobs_before"] == 0


def job(command, spec, out, workdir, sockets):
    """One job as the workflow runs it: `python -m attnbench` in its working directory."""
    argv = [sys.executable, "-m", "attnbench", command, "--spec", json.dumps(spec), "--out", out]
    env = {**os.environ, "ATTNBENCH_LEASE_DIR": str(sockets)}
    return subprocess.run(
        argv, check=False, cwd=workdir, env=env, capture_output=True, text=True, timeout=300
    )


def served_by(path):
    return json.loads(Path(path).read_text())["process"]["worker"]


def moved(directory):
    directory.rename(directory.with_name("moved"))


@pytest.mark.slow
@pytest.mark.parametrize("replace", [shutil.rmtree, moved], ids=["removed", "moved"])
def test_a_directory_replaced_at_the_same_path_gets_a_fresh_worker(worker_env, replace):
    """Found on an H200: a CI workspace wiped and recreated at the same path while the last run's worker
    idled; that worker resolved the new run's relative paths in its own, removed, directory."""
    work, sockets = worker_env / "work", worker_env / "sockets"
    bench = work / "results/bench/s64.json"
    compare = {"bench": "results/bench/s64.json", "reference": "math",
               "stats": {}}  # fmt: skip
    work.mkdir()
    assert job("benchmark", benchmark_spec(["math", "flash"], 0.3), str(bench), work, sockets).returncode == 0
    assert job("compare", compare, "c.json", work, sockets).returncode == 0
    before = served_by(work / "c.json")
    assert before["jobs_before"] == 1  # the compare ran in the benchmark's worker
    saved = bench.read_bytes()
    replace(work)
    bench.parent.mkdir(parents=True)
    bench.write_bytes(saved)
    rerun = job("compare", compare, "c.json", work, sockets)
    assert rerun.returncode == 0, rerun.stderr
    assert f"worker pid {before['pid']} did not start in this job's directory" in rerun.stderr
    after = served_by(work / "c.json")
    assert after["pid"] != before["pid"] and after["jobs_before"] == 0
    assert wait_until(lambda: not alive(before["pid"])), "the stale worker stays"


KERNEL = """from pathlib import Path

import torch.nn.functional as F

FACTOR = float((Path(__file__).parent / "factor.txt").read_text())


def attention(q, k, v, *, causal, scale):
    return F.scaled_dot_product_attention(q, k, v, is_causal=causal, scale=scale) * FACTOR
"""


@pytest.mark.slow
def test_directories_with_the_same_files_never_share_a_worker(worker_env, monkeypatch):
    """Same kernel source, same spec: only the directory tells the jobs apart, and its data file
    decides whether the kernel is correct."""
    spec = benchmark_spec(["math", "dir_kernel:attention"], 0.2)
    results = []
    for name, factor in [("a", "1"), ("b", "2"), ("a", "1")]:
        directory = worker_env / name
        directory.mkdir(exist_ok=True)
        (directory / "dir_kernel.py").write_text(KERNEL)
        (directory / "factor.txt").write_text(factor)
        monkeypatch.chdir(directory)
        document, by = worker.run("benchmark", spec, worker_env / "sockets", log=print)
        results.append((document["candidates"]["dir_kernel:attention"]["status"], by["pid"]))
    (a_status, a_pid), (b_status, b_pid), (again_status, again_pid) = results
    assert (a_status, b_status, again_status) == ("ok", "incorrect", "ok")
    assert a_pid == again_pid != b_pid


def test_key_changes_with_what_the_worker_would_run(tmp_path, monkeypatch):
    """Not with a user kernel's source: the worker reloads an edited kernel (below)."""
    environ = {"PYTHONHASHSEED": "0", "CUDA_VISIBLE_DEVICES": "GPU-a", "HOME": "/x"}
    base = worker.key(environ)
    assert worker.key(environ | {"CUDA_VISIBLE_DEVICES": "GPU-b"}) != base
    assert worker.key(environ | {"HOME": "/y"}) == base
    monkeypatch.chdir(tmp_path)
    assert worker.key(environ) != base  # another working directory


def attention_module(factor):
    """A user kernel module: SDPA times `factor` (1.0: correct; else incorrect)."""
    return KERNEL.replace('float((Path(__file__).parent / "factor.txt").read_text())', repr(factor))


def status(document, name):
    return document["candidates"][name]["status"]


@pytest.mark.slow
def test_an_edited_kernel_is_reloaded_by_the_same_worker(worker_env):
    """The edit loop: a user kernel edited between two jobs runs as edited, in the same warm worker; a
    `touch` is not an edit. Each edit keeps the file's size and lands within a second: a .pyc would
    pass its check (mtime in whole seconds, size) and run the old code."""
    kernel = worker_env / "edit_kernel.py"
    kernel.write_text(attention_module(1.0))
    spec = benchmark_spec(["math", "edit_kernel:attention"], 0.2)
    first, by_first = worker.run("benchmark", spec, worker_env / "sockets", log=print)
    kernel.write_text(attention_module(2.0))
    edited, by_edited = worker.run("benchmark", spec, worker_env / "sockets", log=print)
    os.utime(kernel)
    touched, by_touched = worker.run("benchmark", spec, worker_env / "sockets", log=print)
    kernel.write_text(attention_module(1.0))
    back, by_back = worker.run("benchmark", spec, worker_env / "sockets", log=print)
    name = "edit_kernel:attention"
    assert [status(d, name) for d in (first, edited, touched, back)] == ["ok", "incorrect", "incorrect", "ok"]
    assert by_first["pid"] == by_edited["pid"] == by_touched["pid"] == by_back["pid"]
    assert [by["reloaded"] for by in (by_first, by_edited, by_touched, by_back)] == [
        [], ["edit_kernel"], [], ["edit_kernel"]
    ]  # fmt: skip


WRAPPER = "from real_kernel import attention  # the kernel the config names is wrap_kernel:attention\n"


@pytest.mark.slow
def test_an_edited_module_that_the_kernel_imports_is_reloaded(worker_env):
    """`from real_kernel import attention` in the kernel's module: editing real_kernel.py reloads both
    (the wrapper's `attention` is the new one), in the job as the workflow runs it (its result names
    the worker that served it); a package's submodule likewise reloads the package that imports it."""
    work, sockets = worker_env / "work", worker_env / "sockets"
    (work / "package").mkdir(parents=True)
    (work / "wrap_kernel.py").write_text(WRAPPER)
    (work / "real_kernel.py").write_text(attention_module(1.0))
    (work / "package" / "__init__.py").write_text("from .impl import attention\n")
    (work / "package" / "impl.py").write_text(attention_module(1.0))
    spec = benchmark_spec(["math", "wrap_kernel:attention", "package:attention"], 0.2)
    runs = []
    for edit in (None, "real_kernel.py", "package/impl.py"):
        if edit:
            (work / edit).write_text(attention_module(2.0))
        ran = job("benchmark", spec, "out.json", work, sockets)
        assert ran.returncode == 0, ran.stderr
        document = json.loads((work / "out.json").read_text())
        runs.append((status(document, "wrap_kernel:attention"), status(document, "package:attention"),
                     document["process"]["worker"], ran.stderr))  # fmt: skip
    (wrap, pkg, first, _), (wrap_1, pkg_1, second, log_1), (wrap_2, pkg_2, third, _) = runs
    assert (wrap, pkg, wrap_1, pkg_1, wrap_2, pkg_2) == ("ok", "ok", "incorrect", "ok", "incorrect", "incorrect")
    assert first["pid"] == second["pid"] == third["pid"], "\n".join(r[3] for r in runs)
    assert (second["jobs_before"], third["jobs_before"]) == (1, 2)
    assert set(second["reloaded"]) == {"wrap_kernel", "real_kernel"}
    assert set(third["reloaded"]) == {"package", "package.impl"}
    assert "reloaded changed module(s) real_kernel and the module(s) that import them: wrap_kernel" in log_1


ONCE = """import sys

# Stands for what a module may do once per process: register a torch custom op, say.
if getattr(sys, "_edit_kernel_registered", False):
    raise RuntimeError("already registered in this process")
sys._edit_kernel_registered = True
"""


@pytest.mark.slow
def test_a_module_that_cannot_be_reloaded_gets_a_fresh_worker(worker_env):
    """A re-import that raises: the worker retires rather than run half-reloaded code, and the job's
    fresh worker imports the module anew (a correct result) or fails to (a clear error)."""
    kernel = worker_env / "once_kernel.py"
    kernel.write_text(ONCE + attention_module(1.0))
    spec = benchmark_spec(["math", "once_kernel:attention"], 0.2)
    lines: list[str] = []
    first, by_first = worker.run("benchmark", spec, worker_env / "sockets", log=lines.append)
    kernel.write_text(ONCE + attention_module(2.0))
    edited, by_edited = worker.run("benchmark", spec, worker_env / "sockets", log=lines.append)
    assert (status(first, "once_kernel:attention"), status(edited, "once_kernel:attention")) == ("ok", "incorrect")
    assert by_edited["pid"] != by_first["pid"] and by_edited["jobs_before"] == 0
    assert any(
        f"worker pid {by_first['pid']} could not reload changed module(s) once_kernel: importing once_kernel"
        " raised RuntimeError: already registered in this process: it exits, and this job starts a fresh one" in line
        for line in lines
    ), lines
    assert wait_until(lambda: not alive(by_first["pid"]))
    kernel.write_text(attention_module(1.0) + "\nraise ImportError('broken on purpose')\n")
    broken, _ = worker.run("benchmark", spec, worker_env / "sockets", log=lines.append)
    entry = broken["candidates"]["once_kernel:attention"]
    assert entry["status"] == "error" and "broken on purpose" in entry["reason"]
    assert status(broken, "math") == "ok"


@pytest.mark.slow
def test_a_changed_module_outside_the_working_directory_gets_a_fresh_worker(worker_env, monkeypatch):
    """A kernel found on PYTHONPATH, not under the working directory, is not reloaded: a fresh worker
    imports it as edited."""
    elsewhere = worker_env / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([os.environ["PYTHONPATH"], str(elsewhere)]))
    work = worker_env / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    (elsewhere / "far_kernel.py").write_text(attention_module(1.0))
    spec = benchmark_spec(["math", "far_kernel:attention"], 0.2)
    first, by_first = worker.run("benchmark", spec, worker_env / "sockets", log=print)
    (elsewhere / "far_kernel.py").write_text(attention_module(2.0))
    edited, by_edited = worker.run("benchmark", spec, worker_env / "sockets", log=print)
    assert (status(first, "far_kernel:attention"), status(edited, "far_kernel:attention")) == ("ok", "incorrect")
    assert by_edited["pid"] != by_first["pid"]


def test_a_kernel_changed_where_the_worker_does_not_reload_retires_it(tmp_path):
    """A kernel from an installed package (here the standard library's json): a new source hash in
    the spec, for a module loaded in the worker, means a fresh worker, as when the hash was in the key."""
    import json as loaded  # noqa: F401  (loaded in this process, as in a worker that ran the kernel)

    modules = usercode.UserModules(tmp_path)
    assert modules.refresh({"kernel_hashes": {"json:dumps": "a"}}) == ([], None)
    assert modules.refresh({"kernel_hashes": {"json:dumps": "a"}}) == ([], None)
    reloaded, why = modules.refresh({"kernel_hashes": {"json:dumps": "b"}})
    assert reloaded == [] and "cannot reload user kernel json:dumps" in why


def test_worker_is_off_under_slurm_and_on_request():
    assert worker.enabled({}, "lease") and worker.enabled({}, "none")
    assert not worker.enabled({}, "slurm")
    assert not worker.enabled({worker.ENABLE_VARIABLE: "0"}, "lease")


def test_an_unknown_command_is_an_error_not_a_benchmark():
    """The worker used to run any command it did not know as a benchmark."""
    from attnbench import jobs

    with pytest.raises(jobs.UnknownJob, match="unknown job 'benchmarks'"):
        jobs.run("benchmarks", benchmark_spec(["math"], 0.2))


@pytest.mark.parametrize("command", ["benchmark", "calibrate"])
def test_the_jobs_threads_travel_in_its_spec_to_the_worker(command, monkeypatch, tmp_path):
    """A warm worker was started by some earlier job with that job's OMP_NUM_THREADS: the threads a
    job measures with are its own, so the job puts them in the spec it hands over."""
    from attnbench import cli

    handed: list[dict] = []

    def measure(job, spec, in_worker, schemas, log):  # stands in for the worker
        handed.append(spec)
        return {"candidates": {}}, None

    def run(name, spec, lease_dir, log, schemas):
        handed.append(spec)
        return {"device": "cpu"}, None

    monkeypatch.setattr(cli, "_isolated", measure)
    monkeypatch.setattr(cli.worker, "run", run)
    monkeypatch.setattr(cli.worker, "enabled", lambda env, source: True)
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    spec = {"device": "cpu"}
    assert cli.main([command, "--spec", json.dumps(spec), "--out", str(tmp_path / "out.json")]) == 0
    assert handed[0]["threads"] == 3
    given = {"device": "cpu", "threads": 2}  # the config's `threads` wins over the job's environment
    assert cli.main([command, "--spec", json.dumps(given), "--out", str(tmp_path / "out.json")]) == 0
    assert handed[1]["threads"] == 2


@pytest.fixture
def user_modules(tmp_path, monkeypatch):
    """A worker's module tracking in this process, undone after the test."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    modules = usercode.UserModules(tmp_path)
    modules.install()
    before = set(sys.modules)
    yield modules
    sys.meta_path.remove(modules)
    for name in set(sys.modules) - before:
        del sys.modules[name]


def test_only_python_source_under_the_working_directory_is_reloaded(user_modules, tmp_path):
    """In this process (no worker): a changed .py is imported again, a changed compiled module (here
    bytecode without its source; an extension alike) retires the worker instead."""
    import importlib
    import py_compile

    (tmp_path / "plain_mod.py").write_text("VALUE = 1\n")
    (tmp_path / "compiled_src.py").write_text("VALUE = 1\n")
    py_compile.compile(str(tmp_path / "compiled_src.py"), cfile=str(tmp_path / "compiled_mod.pyc"))
    importlib.invalidate_caches()
    plain, compiled = importlib.import_module("plain_mod"), importlib.import_module("compiled_mod")
    assert (plain.VALUE, compiled.VALUE) == (1, 1)
    assert user_modules.refresh({}) == ([], None)
    (tmp_path / "plain_mod.py").write_text("VALUE = 2\n")
    assert user_modules.refresh({}) == (["plain_mod"], None)
    assert sys.modules["plain_mod"].VALUE == 2
    (tmp_path / "compiled_src.py").write_text("VALUE = 22\n")
    py_compile.compile(str(tmp_path / "compiled_src.py"), cfile=str(tmp_path / "compiled_mod.pyc"))
    reloaded, why = user_modules.refresh({})
    assert reloaded == [] and "cannot reload changed module(s) compiled_mod" in why


def test_a_removed_module_is_dropped_and_one_that_imports_it_retires_the_worker(user_modules, tmp_path):
    """A module whose file is gone is not imported again; a module that still imports it cannot be,
    which a fresh worker then reports as the kernel's own import error."""
    import importlib

    (tmp_path / "gone_mod.py").write_text("VALUE = 1\n")
    (tmp_path / "alone_mod.py").write_text("VALUE = 1\n")
    importlib.import_module("gone_mod"), importlib.import_module("alone_mod")
    (tmp_path / "alone_mod.py").unlink()
    assert user_modules.refresh({}) == ([], None)  # nothing imports it: it is only dropped
    assert "alone_mod" not in sys.modules
    (tmp_path / "user_mod.py").write_text("from gone_mod import VALUE\n")
    importlib.import_module("user_mod")
    (tmp_path / "gone_mod.py").unlink()
    reloaded, why = user_modules.refresh({})
    assert reloaded == [] and "importing user_mod raised ModuleNotFoundError" in why


def test_a_jobs_process_record_says_when_it_started_to_the_clock_tick():
    """The edit loop's breakdown (benchmarks/edit_loop.py) subtracts it from other clocks: psutil's
    creation time adds the boot time in whole seconds and was 0.33 s early on the CI machine."""
    before = time.time()
    child = subprocess.run(
        [sys.executable, "-c", "from attnbench.cli import process_started_at; print(process_started_at())"],
        capture_output=True, text=True, check=True, env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
    )  # fmt: skip
    after = time.time()
    assert before - 0.02 <= float(child.stdout) <= after


def test_only_a_benchmark_with_a_failed_candidate_retires_the_worker() -> None:
    """The report's document has `candidates` too (tallies, no status): serving it crashed the worker
    (KeyError 'status') before the command was checked."""
    from attnbench.worker import Failed, Result, _retires

    tallies = Result({"candidates": {"flash": {"wins": 1, "ties": 0, "ok": 1, "unsupported": 0, "failed": 0}}})
    assert not _retires("report", tallies)
    assert not _retires("compare", Result({"comparisons": []}))
    assert _retires("benchmark", Result({"candidates": {"k": {"status": "error"}}}))
    assert not _retires("benchmark", Result({"candidates": {"k": {"status": "ok"}}}))
    assert _retires("report", Failed("boom"))


SCHEMAS = ROOT / "workflow" / "schemas"


@pytest.mark.slow
def test_a_job_the_worker_serves_writes_a_valid_document_without_importing_jsonschema(worker_env):
    """A job's own process is only a client of the warm worker: jsonschema, psutil and the candidates'
    module were 0.2 s of each job's start (docs/scale.md, issue 21); the worker validates instead."""
    from attnbench import files

    out = worker_env / "fingerprint.json"
    argv = ["fingerprint", "--spec", json.dumps(FINGERPRINT), "--out", str(out), "--schemas", str(SCHEMAS)]
    heavy = ("jsonschema", "psutil", "attnbench.candidates", "attnbench.workloads", "yaml")
    code = (
        f"import sys; from attnbench.cli import main; rc = main({argv!r}); "
        f"print(rc, [m for m in {heavy!r} if m in sys.modules])"
    )
    env = {**os.environ, "ATTNBENCH_LEASE_DIR": str(worker_env)}
    child = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert child.stdout.split() == ["0", "[]"], child.stderr
    document = files.read_json(out, SCHEMAS / "fingerprint.schema.yaml")
    assert document["process"]["worker"]["pid"] > 0  # served by the worker, not in the job's process


@pytest.mark.slow
def test_the_worker_validates_the_document_it_answers_with(worker_env):
    """The job writes what the worker validated: a document the schema refuses fails the job, naming the field."""
    strict = worker_env / "schemas"
    shutil.copytree(SCHEMAS, strict)
    schema = strict / "fingerprint.schema.yaml"
    schema.write_text(schema.read_text().replace("required: [schema,", "required: [schema, not_a_field,", 1))
    with pytest.raises(worker.WorkerError, match="not_a_field"):
        worker.run("fingerprint", FINGERPRINT, worker_env, log=print, schemas=str(strict))


CHDIR_KERNEL = """
import os

import torch.nn.functional as F


def attention(q, k, v, *, causal, scale):
    os.chdir("/")  # a kernel that leaves the process elsewhere
    return F.scaled_dot_product_attention(q, k, v, is_causal=causal, scale=scale)
"""


@pytest.mark.slow
def test_a_kernel_that_changes_directory_does_not_lose_the_documents_schema(worker_env):
    """The worker validates after the job ran, against the job's relative --schemas: resolved before
    the kernel runs, not after (a review found the validation failing with FileNotFoundError)."""
    shutil.copytree(SCHEMAS, worker_env / "workflow" / "schemas")
    (worker_env / "chdir_kernel.py").write_text(CHDIR_KERNEL)
    spec = benchmark_spec(["math", "chdir_kernel:attention"], 0.3)
    document, _ = worker.run("benchmark", spec, worker_env, log=print, schemas="workflow/schemas")
    # validated and returned; the kernel itself is untrusted for it (issue 29: the process is put back)
    changed = document["candidates"]["chdir_kernel:attention"]
    assert changed["status"] == "untrusted" and "working directory" in changed["reason"]
    assert document["candidates"]["math"]["status"] == "ok"
    assert any("working directory" in line for line in document["process_changes"])


@pytest.mark.parametrize("served_by", [None, {"pid": 1, "log": None, "jobs_before": 0, "connected_at": 0.0}])
def test_a_document_the_worker_did_not_check_as_written_is_checked_by_the_job(tmp_path, monkeypatch, served_by):
    """Measured in the job's own child, or merged with a crashed candidate's entry after the worker
    answered: the job validates it, so a document the schema refuses is never written."""
    from attnbench import cli

    crashed = {"status": "crashed", "reason": "its process ended"}  # no samples, no fields: invalid
    monkeypatch.setattr(cli, "_isolated", lambda *args: ({"candidates": {"k": crashed}}, served_by))
    monkeypatch.setenv("ATTNBENCH_LEASE_DIR", str(tmp_path))
    out = tmp_path / "bench.json"
    spec = json.dumps(benchmark_spec(["k"], 0.1))
    assert cli.main(["benchmark", "--spec", spec, "--out", str(out), "--schemas", str(SCHEMAS)]) == 1
    assert not out.exists()


def test_a_process_that_measures_many_shapes_compiles_each_one(tmp_path, monkeypatch, locked_env):
    """The warm worker's loop: dynamo keeps compiled graphs per function across shapes and, past its
    recompile limit (8), silently runs a compiled candidate eagerly, so FlexAttention measured 30-100x
    slower after the eighth shape of a worker. jobs.run resets dynamo before each shape."""
    import importlib

    import torch
    from helpers import bench_spec, compiled_kernel

    from attnbench import jobs

    (tmp_path / "recompiled_kernel.py").write_text(compiled_kernel(dynamic=False))
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    shapes = 10
    limit = getattr(torch._dynamo.config, "recompile_limit", None) or torch._dynamo.config.cache_size_limit
    assert shapes > limit
    try:
        for seq in range(16, 16 * (shapes + 1), 16):
            shape = {"name": f"s{seq}", "batch": 1, "heads": 2, "kv_heads": 2, "seq": seq, "seq_kv": seq, "dim": 16}
            spec = bench_spec(shape, ["math", "recompiled_kernel:attention"], rounds=2)
            assert jobs.run("benchmark", spec)["candidates"]["recompiled_kernel:attention"]["status"] == "ok"
        assert importlib.import_module("recompiled_kernel").compiles.frame_count == shapes
    finally:
        sys.modules.pop("recompiled_kernel", None)


def test_every_message_reads_back_as_it_was_sent():
    """The socket protocol's messages are types (worker.Request ... worker.Lost): each side writes and
    reads them one way, so a field spelt differently on one side cannot pass unnoticed."""
    import io

    from attnbench import worker

    sent = [
        worker.Request("benchmark", {"device": "cpu"}, [1, 2], "workflow/schemas"),
        worker.Hello(7, None, 3),
        worker.Stale("has been removed"),
        worker.Restart("cannot reload changed module(s) m"),
        worker.Reloaded(["m"]),
        worker.Log("a line\n"),
        worker.Running(None),
        worker.Result({"candidates": {}}),
        worker.Failed("RuntimeError: boom"),
        worker.Lost("illegal memory access", "k"),
    ]
    stream = io.StringIO()
    for message in sent:
        worker._send(stream, message)
    assert [worker._receive(line) for line in stream.getvalue().splitlines(keepends=True)] == sent
    assert worker._receive("") is None and worker._receive('{"unknown": {}}\n') is None
