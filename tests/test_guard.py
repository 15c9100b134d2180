"""attnbench.guard: each kind of change a candidate may make to the process is named on the candidate,
restore() puts it back exactly, honest built-ins change nothing, and a warm worker retires after a
document that says user code changed its process."""

from __future__ import annotations

import concurrent.futures
import ctypes
import gc
import os
import signal
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from helpers import TINY_SHAPE, bench_spec

from attnbench import audit, bench, guard, timing
from attnbench.worker import Result, _retires

SHAPE = TINY_SHAPE


@pytest.fixture
def before(monkeypatch):
    """A snapshot taken before the test's change; whatever the test leaves, restored after it.
    Without PYTEST_CURRENT_TEST, which pytest sets anew for the call (a line the tests do not look
    for; restore() removes it, and pytest sets it again for the teardown)."""
    monkeypatch.delenv("PYTEST_CURRENT_TEST", raising=False)
    state = guard.snapshot()
    yield state
    guard.restore(state)


def left_over(state: guard.ProcessState) -> list[str]:
    """What still differs from `state`, but the counts of processes started (a count cannot be undone)."""
    return [
        line
        for line in guard.changes(state, guard.snapshot())
        if not line.startswith(("started ", "ran child processes"))
    ]


def flagged_and_restored(before: guard.ProcessState, expected: str) -> list[str]:
    lines = guard.changes(before, guard.snapshot())
    assert expected in lines, lines
    assert guard.restore(before) == []
    assert left_over(before) == []
    return lines


# --- each kind of change --------------------------------------------------------------------------


def test_a_replaced_sdpa_is_named_and_put_back(before):
    original = F.scaled_dot_product_attention
    F.scaled_dot_product_attention = lambda *args, **kwargs: original(*args, **kwargs)
    flagged_and_restored(before, "replaced torch.nn.functional.scaled_dot_product_attention")
    assert F.scaled_dot_product_attention is original


def test_a_replaced_tensor_method_is_named_and_put_back(before):
    original = torch.Tensor.softmax
    torch.Tensor.softmax = lambda self, *args, **kwargs: original(self, *args, **kwargs)
    flagged_and_restored(before, "replaced torch.Tensor.softmax")
    assert torch.Tensor.softmax is original


def test_attnbenchs_own_modules_are_guarded_new_names_included(before):
    stamp, excess = timing.HostClock.stamp, audit.PROFILE_EXCESS
    timing.HostClock.stamp = lambda self, sampler: 1
    audit.PROFILE_EXCESS = 1e9
    bench.extra = "added by a kernel"
    lines = guard.changes(before, guard.snapshot())
    assert "replaced attnbench.timing.HostClock.stamp" in lines
    assert "set attnbench.audit.PROFILE_EXCESS to 1000000000.0 (was 1.5)" in lines
    assert "added attnbench.bench.extra" in lines
    assert guard.restore(before) == []
    assert timing.HostClock.stamp is stamp and audit.PROFILE_EXCESS == excess and not hasattr(bench, "extra")
    assert left_over(before) == []


@pytest.mark.parametrize(
    "timer", ["time.perf_counter", "time.perf_counter_ns", "time.monotonic", "time.time"]
)
def test_a_replaced_timer_is_named_and_put_back(before, timer):
    name = timer.split(".")[1]
    original = getattr(time, name)
    setattr(time, name, lambda: 0)
    assert guard.replaced_timers() == [timer]
    flagged_and_restored(before, f"replaced {timer}")
    assert getattr(time, name) is original is guard.TIMERS[timer]
    assert guard.replaced_timers() == []


def test_a_replaced_cuda_event_method_is_a_replaced_timer(before):
    original = torch.cuda.Event.elapsed_time
    torch.cuda.Event.elapsed_time = lambda self, end: 0.001
    assert guard.replaced_timers() == ["torch.cuda.Event.elapsed_time"]
    flagged_and_restored(before, "replaced torch.cuda.Event.elapsed_time")
    assert torch.cuda.Event.elapsed_time is original
    assert guard.cuda_timers().elapsed_time is original


def test_the_timers_are_bound_before_any_user_module_and_stay_bound():
    """What the timing code calls are the originals even while a module attribute is replaced."""
    assert guard.perf_counter_ns is time.perf_counter_ns and guard.perf_counter is time.perf_counter
    timers = guard.cuda_timers()
    assert timers.Event is torch.cuda.Event and timers.synchronize is torch.cuda.synchronize
    assert timers.record is vars(torch.cuda.Event)["record"]


def test_an_environment_variable_is_named_and_put_back(before, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    monkeypatch.delenv("ATTNBENCH_GUARD_TEST", raising=False)
    state = guard.snapshot()
    os.environ["OMP_NUM_THREADS"] = "8"
    os.environ["ATTNBENCH_GUARD_TEST"] = "1"
    del os.environ["PATH"]
    lines = guard.changes(state, guard.snapshot())
    assert "set OMP_NUM_THREADS='8' (was '2')" in lines
    assert "set ATTNBENCH_GUARD_TEST='1'" in lines
    assert any(line.startswith("unset PATH (was ") for line in lines)
    assert guard.restore(state) == []
    assert dict(os.environ) == state.environ
    assert guard._c_environ() == state.c_environ
    assert left_over(state) == []


def test_a_variable_set_behind_os_environ_is_named_and_put_back(before):
    os.putenv("CUDA_VISIBLE_DEVICES", "7")  # the C environment: what CUDA and subprocesses read
    lines = guard.changes(before, guard.snapshot())
    assert [line for line in lines if "CUDA_VISIBLE_DEVICES" in line] == [
        "set CUDA_VISIBLE_DEVICES='7' in the C environment only (os.putenv or C code: os.environ does not show it)"
    ]
    assert guard.restore(before) == []
    assert guard._c_environ() == before.c_environ
    assert subprocess.run(["env"], capture_output=True, text=True).stdout.count("CUDA_VISIBLE_DEVICES=7") == 0


def test_torchs_own_environment_writes_are_not_a_candidates(before, monkeypatch):
    """Inductor sets TORCHINDUCTOR_CACHE_DIR itself on first use: torch's, not the candidate's."""
    from torch._inductor.runtime import cache_dir_utils

    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    state = guard.snapshot()
    cache_dir_utils.cache_dir()
    assert "TORCHINDUCTOR_CACHE_DIR" in os.environ
    assert guard.changes(state, guard.snapshot()) == []
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = "/tmp/elsewhere"  # the same variable, set by a kernel
    assert "set TORCHINDUCTOR_CACHE_DIR='/tmp/elsewhere'" in guard.changes(state, guard.snapshot())
    assert guard.restore(state) == []
    assert "TORCHINDUCTOR_CACHE_DIR" not in os.environ


def test_the_working_directory_is_named_and_put_back(before, tmp_path):
    os.chdir(tmp_path)
    flagged_and_restored(before, f"changed the working directory to {tmp_path} (was {before.cwd})")
    assert os.getcwd() == before.cwd


def test_torchs_thread_count_is_named_and_put_back(before):
    was = torch.get_num_threads()
    torch.set_num_threads(1 if was != 1 else 2)
    flagged_and_restored(before, f"set torch's intra-op threads to {torch.get_num_threads()} (was {was})")
    assert torch.get_num_threads() == was


def test_the_default_dtype_is_named_and_put_back(before):
    torch.set_default_dtype(torch.float64)
    flagged_and_restored(before, "set torch's default dtype to torch.float64 (was torch.float32)")
    assert torch.get_default_dtype() is torch.float32 and torch.ones(1).dtype is torch.float32


def test_the_default_device_is_named_and_put_back(before):
    torch.set_default_device("meta")
    lines = guard.changes(before, guard.snapshot())
    assert "set torch's default device to device(type='meta') (was device(type='cpu'))" in lines
    assert guard.restore(before) == []
    assert torch.ones(1).device.type == "cpu"
    assert left_over(before) == []


@pytest.mark.parametrize(
    "change, line",
    [
        (
            lambda: setattr(torch.backends.cuda.matmul, "allow_tf32", True),
            "changed torch.backends.cuda.matmul.allow_tf32 to True (was False)",
        ),
        (
            lambda: setattr(torch.backends.cudnn, "benchmark", not torch.backends.cudnn.benchmark),
            "changed torch.backends.cudnn.benchmark to True (was False)",
        ),
        (
            lambda: torch.backends.cuda.enable_flash_sdp(False),
            "changed torch.backends.cuda.flash_sdp_enabled() to False (was True)",
        ),
        (
            lambda: torch.backends.cuda.enable_math_sdp(False),
            "changed torch.backends.cuda.math_sdp_enabled() to False (was True)",
        ),
        (
            lambda: torch.set_float32_matmul_precision("medium"),
            "changed torch.get_float32_matmul_precision() to 'medium' (was 'highest')",
        ),
        (
            lambda: torch.use_deterministic_algorithms(True, warn_only=True),
            "changed torch.use_deterministic_algorithms to (True, True) (was (False, False))",
        ),
        (lambda: torch.set_grad_enabled(False), "turned gradient recording off"),
        (lambda: torch.set_anomaly_enabled(True), "turned anomaly detection on"),
        (
            lambda: setattr(torch.backends.mkldnn, "enabled", False),
            "changed torch.backends.mkldnn.enabled to False (was True)",
        ),
    ],
)
def test_a_backend_flag_is_named_and_put_back(change, line, monkeypatch):
    # The lock's settings, as every job starts with them (attnbench.lock.apply)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")
    torch.use_deterministic_algorithms(False)
    torch.backends.cudnn.benchmark = False
    state = guard.snapshot()
    try:
        change()
        flagged_and_restored(state, line)
        assert guard._read_flags() == state.flags
    finally:
        guard.restore(state)


def test_a_new_precision_api_setting_is_put_back_with_the_legacy_flags_it_moves(before):
    torch.backends.cuda.matmul.allow_tf32 = False
    state = guard.snapshot()
    torch.backends.cuda.matmul.fp32_precision = "tf32"
    lines = guard.changes(state, guard.snapshot())
    assert "changed torch.backends.cuda.matmul.fp32_precision to 'tf32' (was 'ieee')" in lines
    assert guard.restore(state) == []
    assert guard._read_flags() == state.flags and torch.backends.cuda.matmul.allow_tf32 is False


def test_a_compiler_config_is_named_and_put_back(before):
    import torch._inductor.config as inductor

    state = guard.snapshot()
    was = inductor.max_autotune
    inductor.max_autotune = not was
    flagged_and_restored(state, f"changed torch._inductor.config.max_autotune to {not was} (was its default)")
    assert inductor.max_autotune is was


def test_a_torch_function_mode_left_active_is_named_and_popped(before):
    from torch.overrides import TorchFunctionMode

    class Slow(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            return func(*args, **(kwargs or {}))

    Slow().__enter__()
    flagged_and_restored(before, "left __torch_function__ modes active (Slow)")
    assert torch._C._len_torch_function_stack() == len(before.function_modes)


def test_a_signal_handler_is_named_and_put_back(before):
    signal.signal(signal.SIGUSR1, lambda number, frame: None)
    signal.signal(signal.SIGALRM, signal.SIG_IGN)
    lines = guard.changes(before, guard.snapshot())
    assert "installed a handler for SIGUSR1" in lines
    assert "set SIGALRM's handler to <Handlers.SIG_IGN: 1> (was <Handlers.SIG_DFL: 0>)" in lines
    assert guard.restore(before) == []
    assert signal.getsignal(signal.SIGUSR1) is before.signals[signal.SIGUSR1]
    assert signal.getsignal(signal.SIGALRM) == before.signals[signal.SIGALRM]
    assert left_over(before) == []


def test_a_blocked_signal_and_an_interval_timer_are_named_and_put_back(before):
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})  # timing.deadline would never fire
    signal.signal(signal.SIGALRM, lambda number, frame: None)
    signal.setitimer(signal.ITIMER_REAL, 100.0)
    lines = guard.changes(before, guard.snapshot())
    assert "changed the blocked signals (now blocked: SIGALRM)" in lines
    assert any(line.startswith("set an interval timer (setitimer 0)") for line in lines)
    assert guard.restore(before) == []
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
    assert signal.SIGALRM not in signal.pthread_sigmask(signal.SIG_BLOCK, [])
    assert left_over(before) == []


def test_interpreter_settings_are_named_and_put_back(before):
    gc.disable()
    sys.setswitchinterval(0.5)
    lines = guard.changes(before, guard.snapshot())
    assert "changed gc.isenabled() to False (was True)" in lines
    assert "changed sys.getswitchinterval() to 0.5 (was 0.005)" in lines
    assert guard.restore(before) == []
    assert gc.isenabled() and sys.getswitchinterval() == 0.005


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two CPUs to narrow the affinity")
def test_the_cpu_affinity_is_named_and_put_back(before):
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    lines = guard.changes(before, guard.snapshot())
    assert any(line.startswith("changed the CPU affinity to {") for line in lines), lines
    assert guard.restore(before) == []
    assert os.sched_getaffinity(0) == before.interpreter["the CPU affinity"]


def test_a_thread_left_running_is_named(before):
    """Work handed to a host thread runs after the timer stopped; restore cannot stop a thread."""
    release = threading.Event()
    thread = threading.Thread(target=release.wait, name="after-the-timer")
    pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="kernel-pool")
    pool.submit(lambda: None).result()
    thread.start()
    try:
        lines = guard.changes(before, guard.snapshot())
        assert "left 2 threads running (after-the-timer, kernel-pool_0)" in lines
        assert guard.restore(before) == [
            "could not stop thread after-the-timer (a thread cannot be stopped from outside)",
            "could not stop thread kernel-pool_0 (a thread cannot be stopped from outside)",
        ]
    finally:
        release.set()
        thread.join()
        pool.shutdown()
    assert left_over(before) == []


def test_what_torch_tqdm_and_warnings_fill_in_on_first_use_is_not_a_change(before):
    """Found on an H100 (issue 29): the first flex compile of a worker filled
    torch.cuda._cached_device_count and started tqdm's monitor thread, and SDPA's first warning added
    attnbench.candidates.__warningregistry__: each flagged the candidate `untrusted` and retired the
    warm worker after every shape."""
    from tqdm import tqdm

    from attnbench import candidates

    monkey = torch.cuda.__dict__.get("_cached_device_count", guard._MISSING)
    if monkey is guard._MISSING or monkey is not None:
        pytest.skip("this torch has no empty torch.cuda._cached_device_count to fill")
    state = guard.snapshot()
    torch.cuda._cached_device_count = 1
    with open(os.devnull, "w") as sink, tqdm(total=1, file=sink, mininterval=0) as bar:
        bar.update(1)
    assert any(type(t).__name__ == "TMonitor" for t in threading.enumerate())
    candidates.__dict__.pop(guard.WARNINGS_REGISTRY, None)
    warnings.warn_explicit(  # as a warning raised from attnbench.candidates' code records it
        "first", UserWarning, candidates.__file__, 1, registry=candidates.__dict__.setdefault(guard.WARNINGS_REGISTRY, {})
    )
    after = guard.snapshot()
    torch.cuda._cached_device_count = None
    assert guard.changes(state, after) == []


def test_a_child_process_left_running_is_named_and_ended(before):
    child = subprocess.Popen(["sleep", "60"])
    lines = guard.changes(before, guard.snapshot())
    assert f"left child process {child.pid} running (sleep 60)" in lines
    assert "started 1 child process during its calls" in lines
    assert guard.restore(before) == []
    assert child.wait(timeout=5) is not None
    assert not Path(f"/proc/{child.pid}").exists() or child.pid not in guard._children()
    assert left_over(before) == []


def test_a_child_never_waited_for_is_named_and_reaped(before):
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    deadline = time.monotonic() + 5
    while guard._child(pid, 0) is None or guard._child(pid, 0).state != "Z":
        assert time.monotonic() < deadline
        time.sleep(0.01)
    lines = guard.changes(before, guard.snapshot())
    assert any(line.startswith(f"left child process {pid} (exited, never waited for)") for line in lines), (
        lines
    )
    assert guard.restore(before) == []
    assert guard._child(pid, 0) is None  # reaped


def forks_per_call(q, k, v):
    """A kernel that forks on each call: the child competes with the others for the CPU."""
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    subprocess.run(["true"], check=True)
    return F.scaled_dot_product_attention(q, k, v)


def test_a_kernel_that_forks_on_each_call_is_named(before):
    q = torch.randn(1, 2, 16, 8)
    for _ in range(5):
        forks_per_call(q, q, q)
    lines = guard.changes(before, guard.snapshot())
    assert "started 10 child processes during its calls" in lines
    assert [line for line in lines if "left child" in line] == []  # all of them waited for


def test_processes_started_behind_python_are_named_by_their_cpu_time(before):
    """A fork through ctypes raises no audit event; the children's CPU time, once reaped, shows it."""
    libc = ctypes.CDLL(None, use_errno=True)
    for _ in range(5):
        pid = libc.fork()
        if pid == 0:
            libc._exit(0)
        os.waitpid(pid, 0)
    lines = guard.changes(before, guard.snapshot())
    assert any(line.startswith("ran child processes that Python did not see start (") for line in lines), (
        lines
    )


def test_torchs_own_processes_are_not_a_candidates():
    """Started from torch's code (Inductor's C++ compiler): counted apart; its compile worker is torch's."""
    from torch._inductor import cpp_builder

    assert cpp_builder.__file__.startswith(os.path.dirname(torch.__file__))
    state = guard.snapshot()
    code = compile("import subprocess; subprocess.run(['true'], check=True)", cpp_builder.__file__, "exec")
    exec(code, {})  # a frame of torch's file, as Inductor's own call has
    after = guard.snapshot()
    assert after.tally.spawned_by_torch == state.tally.spawned_by_torch + 1
    assert guard.changes(state, after) == []
    assert guard.is_torch_process(
        "python /x/site-packages/torch/_inductor/compile_worker/__main__.py --pickler"
    )
    assert not guard.is_torch_process("sleep 60")


# --- outputs --------------------------------------------------------------------------------------


class LazyTensor(torch.Tensor):
    """Computes when read: the work would land outside the timed call."""


class Shaped:
    """Not a tensor, but has a shape."""

    shape = (2, 3)


def test_a_tensor_subclass_output_is_named():
    plain = torch.randn(2, 3)
    lazy = torch.Tensor._make_subclass(LazyTensor, plain)
    assert guard.plain_output_problem(plain) is None
    assert guard.plain_output_problem((plain, plain.clone(), plain.clone())) is None
    assert guard.plain_output_problem(lazy) == (
        "output is a LazyTensor (a torch.Tensor subclass), not a plain tensor: a subclass can compute when"
        " read, outside the timed call"
    )
    assert guard.plain_output_problem((plain, lazy)).startswith("output 1 (a gradient) is a LazyTensor")
    assert "Parameter (a torch.Tensor subclass)" in guard.plain_output_problem(torch.nn.Parameter(plain))


def test_an_object_with_a_shape_or_a_tensor_with_shadowing_attributes_is_named():
    assert guard.plain_output_problem(Shaped()) == (
        "output is a test_guard.Shaped, not a torch.Tensor: an object with a .shape can compute when read,"
        " outside the timed call"
    )
    assert guard.plain_output_problem(None) == "output is a NoneType, not a torch.Tensor"
    tricked = torch.randn(2)
    tricked.float = lambda: torch.zeros(2)  # an instance attribute that shadows Tensor.float
    assert guard.plain_output_problem(tricked).startswith(
        "output is a tensor whose own attributes replace torch.Tensor's (float)"
    )


# --- honest candidates change nothing -------------------------------------------------------------


@pytest.mark.parametrize("backend", ["math", "flash", "efficient"])
def test_sdpa_backends_change_nothing(backend):
    from torch.nn.attention import SDPBackend, sdpa_kernel

    which = {
        "math": SDPBackend.MATH,
        "flash": SDPBackend.FLASH_ATTENTION,
        "efficient": SDPBackend.EFFICIENT_ATTENTION,
    }
    q, k, v = (torch.randn(1, 2, 64, 16, requires_grad=True) for _ in range(3))
    state = guard.snapshot()
    try:
        with sdpa_kernel(which[backend]):
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        torch.autograd.grad(out, (q, k, v), torch.ones_like(out))
        assert guard.plain_output_problem(out) is None
    except RuntimeError:
        assert backend == "efficient"  # no CPU kernel: a decline changes nothing either
    assert guard.changes(state, guard.snapshot()) == []


def checked_run(monkeypatch, device: str, dtype: str, names: list[str]) -> dict[str, tuple[str, list[str]]]:
    """Each candidate checked as bench would (snapshot, prepare, snapshot), then a second shape in the
    same process, as a warm worker runs it, checked whole: timing and audit included. Each candidate's
    status and changes."""
    prepare, seen = bench.prepare, {}

    def guarded(name, *args, **kwargs):
        state = guard.snapshot()
        result = prepare(name, *args, **kwargs)
        seen[name] = (result[0]["status"], guard.changes(state, guard.snapshot()))
        return result

    monkeypatch.setattr(bench, "prepare", guarded)
    bench.run_shape(bench_spec(SHAPE, names, device=device, dtype=dtype))
    state = guard.snapshot()
    result = bench.run_shape(bench_spec(SHAPE, ["math", "flex"], device=device, dtype=dtype))
    assert {name: entry["status"] for name, entry in result["candidates"].items()} == {
        "math": "ok",
        "flex": "ok",
    }
    assert guard.changes(state, guard.snapshot()) == []
    return seen


def test_a_real_benchmark_of_builtins_flex_compiled_included_changes_nothing(locked_env, monkeypatch):
    seen = checked_run(monkeypatch, "cpu", "float32", ["math", "flash", "efficient", "flex"])
    assert seen == {
        "math": ("ok", []),
        "flash": ("ok", []),
        "efficient": ("unsupported", []),
        "flex": ("ok", []),
    }


@pytest.mark.gpu
def test_a_real_gpu_benchmark_of_builtins_flex_compiled_included_changes_nothing(locked_env, monkeypatch):
    """On CUDA: Triton, Inductor's compile worker processes and their threads, CUPTI are torch's own."""
    seen = checked_run(monkeypatch, "cuda", "bfloat16", ["flash", "efficient", "cudnn", "math", "flex"])
    assert {name: changed for name, (_, changed) in seen.items()} == {name: [] for name in seen}
    assert seen["flex"][0] == seen["math"][0] == "ok"


# --- cost -----------------------------------------------------------------------------------------


def test_an_unchanged_process_shows_no_change_snapshot_after_snapshot():
    """The guard runs around every candidate: snapshots of a process nothing changed must agree every
    time (what they cost is in docs/exploits.md, measured, not asserted here)."""
    state = guard.snapshot()
    for _ in range(30):
        assert guard.changes(state, guard.snapshot()) == []


# --- the worker -----------------------------------------------------------------------------------


def test_a_document_that_says_the_process_changed_retires_the_worker():
    ok = {"candidates": {"k": {"status": "ok"}}}
    assert not _retires("benchmark", Result({**ok, "process_changes": []}))
    assert not _retires("benchmark", Result(ok))  # a document written before the key existed
    changed = ["replaced torch.nn.functional.scaled_dot_product_attention"]
    assert _retires("benchmark", Result({**ok, "process_changes": changed}))
    assert _retires("autotune", Result({"process_changes": ["set OMP_NUM_THREADS='8' (was '2')"]}))
