"""What a candidate may change in the process is snapshotted, checked after each candidate and restored
before the next; a change is flagged on the candidate that made it.

Why: every candidate of a shape runs in one process, and a warm worker (attnbench.worker) serves many
jobs in turn. Tried as a hostile kernel engineer would, a user module that replaced
torch.nn.functional.scaled_dot_product_attention made the `math` reference 7x slower with every
result `ok`, and the warm worker carried it into the next job; one that changed the working directory,
OMP_NUM_THREADS, torch's thread count, default dtype or backend flags changed what the others ran in;
one that forked on each call slowed the others 2-3.5x; others patched the timing functions, left work
to a host thread that ran after the timer stopped, or returned lazy tensor subclasses.

* `TIMERS`: the clocks attnbench reads, bound before any user module is imported; the timing code
  calls these (`perf_counter_ns`, `cuda_timers()`), never the module attribute a kernel can replace.
* `snapshot()` / `changes(before, after)` / `restore(state)`: functions of torch, time, os, numpy, the
  builtins and attnbench's own modules (by identity), the environment (os.environ and the C one),
  the working directory, signal handlers and timers, torch's flags, modes and compiler configs,
  interpreter settings (trace, gc, switch interval, import hooks), CPU affinity, threads and child
  processes left running, and child processes started.
* `plain_output_problem(result)`: an output must be plain tensors, computed when returned.

Not seen (they need a fresh process, which the worker gives after any change it does see): threads
and processes started from C (ctypes, an extension), which look like torch's own OpenMP, profiler
and driver threads; dispatcher registrations (torch.library) and C-level signal handlers; state
without a getter (torch.set_flush_denormal). A thread started and ended within the candidate leaves
nothing to see. Torch's own threads, processes and environment variables are told apart by who
started or set them (the innermost frame outside the standard library lies in torch, triton or
attnbench) or, for Inductor's compile workers, by their command line.
"""

from __future__ import annotations

import copy
import gc
import os
import resource
import signal
import sys
import sysconfig
import threading
import time
import types
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, NamedTuple

# Bound at import, before any user module: what attnbench's clocks call.
perf_counter = time.perf_counter
perf_counter_ns = time.perf_counter_ns
monotonic = time.monotonic
monotonic_ns = time.monotonic_ns
wall_time = time.time

TIMERS: dict[str, Any] = {
    "time.perf_counter": perf_counter,
    "time.perf_counter_ns": perf_counter_ns,
    "time.monotonic": monotonic,
    "time.monotonic_ns": monotonic_ns,
    "time.time": wall_time,
}
# torch's: bound by `bind()` (at import if torch is loaded, else at the first snapshot, which comes
# before any user module is imported; `import attnbench` must stay free of torch).
TORCH_TIMERS = (
    "torch.cuda.Event",
    "torch.cuda.Event.record",
    "torch.cuda.Event.elapsed_time",
    "torch.cuda.Event.synchronize",
    "torch.cuda.Event.query",
    "torch.cuda.Event.wait",
    "torch.cuda.synchronize",
    "torch.cuda.current_stream",
    "torch.cuda._sleep",
    "torch.cuda.Stream",
    "torch.cuda.Stream.wait_stream",
    "torch.cuda.stream",
    "torch.cuda.CUDAGraph",
    "torch.cuda.CUDAGraph.replay",
    "torch.cuda.graph",
    "torch.profiler.profile",
)

# Where a candidate's functions may be replaced: compared by identity, names present in both
# snapshots only (torch fills some lazily), new names flagged on attnbench's modules and classes only.
MODULES = (
    "torch",
    "torch.nn.functional",
    "torch.nn.attention",
    "torch.nn.attention.flex_attention",
    "torch.cuda",
    "torch.linalg",
    "torch.autograd",
    "torch.profiler",
    "time",
    "os",
    "math",
    "json",
    "builtins",
    "numpy",
    "numpy.random",
)
CLASSES = ("torch.Tensor", "torch.cuda.Event", "torch.cuda.Stream", "torch.cuda.CUDAGraph")
OWN = "attnbench"
# Inductor's compiler configs: a kernel that turns on max_autotune changes what flex compiles to.
CONFIGS = ("torch._inductor.config", "torch._dynamo.config", "torch._functorch.config")
# Inductor's compile worker (SubprocPool's sidecar, and the pool it runs): torch's own, kept for reuse.
TORCH_PROCESS_MARKERS = ("torch/_inductor/compile_worker",)
# Packages whose own threads, processes and environment writes are not a candidate's. tqdm: its
# monitor thread (started with the first progress bar, by inductor's autotuning among others, and
# kept for the process's life) runs no caller's code.
OWN_PACKAGES = ("torch", "triton", "attnbench", "tqdm")
# The warnings module's record of the warnings a module has shown, added to that module on the first.
WARNINGS_REGISTRY = "__warningregistry__"

_PROCESS_EVENTS = frozenset({"os.fork", "os.forkpty", "os.posix_spawn", "subprocess.Popen", "os.system"})
_SCALARS = (bool, int, float, complex, str, bytes, type(None))
_MISSING = object()


@dataclass
class _Tally:
    """What the audit hook has seen since it was installed (counters only ever grow)."""

    spawned: int = 0  # child processes started by other code than torch's, triton's or attnbench's
    spawned_by_torch: int = 0
    env_writes: int = 0


@dataclass
class _Bound:
    """guard's own state, mutated in place: guard's module namespace stays as a snapshot saw it."""

    hook: bool = False
    torch: bool = False
    c_environ: Any = None


_tally = _Tally()
_bound = _Bound()
# variable -> (write number, by torch's own code) of the last os.putenv / os.unsetenv
_env_writers: dict[str, tuple[int, bool]] = {}
_owners: dict[str, str] = {}  # a frame's file -> "stdlib", "own" or "user"
_flags: list[_Flag] = []
_own_cache: dict[str, Any] = {}


class _Unreadable(NamedTuple):
    """A flag whose getter raised (torch refuses to read allow_tf32 after the new API set fp32_precision)."""

    error: str


class _Flag(NamedTuple):
    name: str
    get: Callable[[], Any]
    set: Callable[[Any], Any] | None


class CudaTimers(NamedTuple):
    """torch.cuda's clocks as bound before any user module ran: call these, not torch.cuda's attributes."""

    Event: Any
    record: Callable[..., Any]
    elapsed_time: Callable[[Any, Any], float]
    synchronize: Callable[[], None]
    current_stream: Callable[..., Any]
    sleep: Callable[[int], None]


class _Child(NamedTuple):
    start: int  # clock ticks after boot: a pid reused by another process differs
    state: str
    cmdline: str
    parent: int


@dataclass(frozen=True, eq=False)
class ProcessState:
    """What a candidate may change, as one snapshot saw it; compare two with `changes`."""

    namespaces: dict[str, dict[str, Any]]
    objects: dict[str, Any]
    own: frozenset[str]
    environ: dict[str, str]
    c_environ: dict[str, str] | None
    env_writers: dict[str, tuple[int, bool]]
    cwd: str | None
    flags: dict[str, Any]
    configs: dict[str, dict[str, Any]]
    interpreter: dict[str, Any]
    signals: dict[int, Any]
    itimers: dict[int, tuple[float, float]]
    sigmask: frozenset[int]
    function_modes: tuple[Any, ...]
    dispatch_modes: tuple[Any, ...]
    threads: frozenset[threading.Thread]
    children: dict[int, _Child]
    tally: _Tally
    children_cpu_s: float


# --- timers ---------------------------------------------------------------------------------------


def _lookup(qualname: str) -> Any:
    """The object at `qualname` as stored (a class's function, not a bound method), or _MISSING."""
    parts = qualname.split(".")
    for cut in range(len(parts), 0, -1):
        module = sys.modules.get(".".join(parts[:cut]))
        if module is not None:
            break
    else:
        return _MISSING
    found: Any = module
    for name in parts[cut:]:
        found = _static(found, name)
        if found is _MISSING:
            return _MISSING
    return found


def _static(owner: Any, name: str) -> Any:
    """An attribute without descriptors or module __getattr__ (which would import, or bind)."""
    if isinstance(owner, type):
        for klass in owner.__mro__:
            if name in vars(klass):
                return vars(klass)[name]
        return _MISSING
    try:
        return vars(owner).get(name, _MISSING)
    except TypeError:
        return getattr(owner, name, _MISSING)


def bind() -> None:
    """Bind torch's timers and flags, and install the audit hook: before any user module is imported.
    Called by `snapshot`; imports torch."""
    _install()
    if _bound.torch:
        return
    import torch
    import torch.cuda
    import torch.profiler

    for name in TORCH_TIMERS:
        found = _lookup(name)
        if found is not _MISSING:
            TIMERS[name] = found
    _flags.extend(_torch_flags(torch))
    _bound.torch = True


def cuda_timers() -> CudaTimers:
    """The CUDA clocks attnbench.timing uses, as bound by `bind`."""
    bind()
    return CudaTimers(
        Event=TIMERS["torch.cuda.Event"],
        record=TIMERS["torch.cuda.Event.record"],
        elapsed_time=TIMERS["torch.cuda.Event.elapsed_time"],
        synchronize=TIMERS["torch.cuda.synchronize"],
        current_stream=TIMERS["torch.cuda.current_stream"],
        sleep=TIMERS["torch.cuda._sleep"],
    )


def replaced_timers() -> list[str]:
    """The timing functions no longer identical to the ones bound before any user module ran."""
    return [name for name, bound in TIMERS.items() if _lookup(name) is not bound]


# --- who did it -----------------------------------------------------------------------------------


def _library_roots() -> tuple[tuple[str, ...], tuple[str, ...]]:
    paths = sysconfig.get_paths()
    stdlib = tuple(os.path.realpath(paths[key]) + os.sep for key in ("stdlib", "platstdlib") if key in paths)
    sites = tuple(os.path.realpath(paths[key]) + os.sep for key in ("purelib", "platlib") if key in paths)
    return stdlib, sites


_STDLIB, _SITES = _library_roots()


def _owner_of_file(filename: str) -> str:
    """Whose code a file holds: "stdlib", "own" (torch's, triton's, attnbench's) or "user"."""
    owner = _owners.get(filename)
    if owner is not None:
        return owner
    if filename.startswith("<frozen "):
        owner = "stdlib"
    else:
        path = os.path.realpath(filename)
        owner = "user"
        for package in OWN_PACKAGES:
            module = sys.modules.get(package)
            where = getattr(module, "__file__", None)
            if where and path.startswith(os.path.dirname(os.path.realpath(where)) + os.sep):
                owner = "own"
                break
        else:
            if path.startswith(_STDLIB) and not path.startswith(_SITES):
                owner = "stdlib"
    _owners[filename] = owner
    return owner


def _caller_is_own(frame: types.FrameType | None) -> bool:
    """Whether the innermost frame outside the standard library is torch's, triton's or attnbench's."""
    while frame is not None:
        owner = _owner_of_file(frame.f_code.co_filename)
        if owner != "stdlib":
            return owner == "own"
        frame = frame.f_back
    return False


def _audit(event: str, args: tuple[Any, ...]) -> None:
    """Counts processes started and attributes environment writes; never raises (an exception here
    would fail the audited os.fork or putenv of whoever called it)."""
    if event in _PROCESS_EVENTS:
        try:
            frame = sys._getframe(1)
            if event == "os.posix_spawn" and frame.f_code.co_filename.endswith("subprocess.py"):
                return  # subprocess.Popen's own posix_spawn: counted as subprocess.Popen
            if _caller_is_own(frame):
                _tally.spawned_by_torch += 1
            else:
                _tally.spawned += 1
        except Exception:
            _tally.spawned += 1
    elif event == "os.putenv" or event == "os.unsetenv":
        try:
            _tally.env_writes += 1
            _env_writers[os.fsdecode(args[0])] = (_tally.env_writes, _caller_is_own(sys._getframe(1)))
        except Exception:
            pass


def _install() -> None:
    if not _bound.hook:
        sys.addaudithook(_audit)  # for the life of the process: a kernel cannot remove it
        _bound.hook = True


# --- torch's flags --------------------------------------------------------------------------------


def _attribute(owner: Any, name: str) -> tuple[Callable[[], Any], Callable[[Any], Any]]:
    return (lambda: getattr(owner, name)), (lambda value: setattr(owner, name, value))


def _torch_flags(torch: Any) -> list[_Flag]:
    """The global switches of torch that change what a kernel runs (getter, setter)."""
    backends = torch.backends
    flags = [
        _Flag("torch's intra-op threads", torch.get_num_threads, torch.set_num_threads),
        _Flag("torch's inter-op threads", torch.get_num_interop_threads, torch.set_num_interop_threads),
        _Flag("torch's default dtype", torch.get_default_dtype, torch.set_default_dtype),
        _Flag(
            "torch's default device",
            torch.get_default_device,
            lambda device: torch.set_default_device(None if device == torch.device("cpu") else device),
        ),
        _Flag("gradient recording", torch.is_grad_enabled, torch._C._set_grad_enabled),
        _Flag("inference mode", torch.is_inference_mode_enabled, None),
        _Flag("anomaly detection", torch.is_anomaly_enabled, torch.set_anomaly_enabled),
        _Flag(
            "torch.use_deterministic_algorithms",
            lambda: (
                torch.are_deterministic_algorithms_enabled(),
                torch.is_deterministic_algorithms_warn_only_enabled(),
            ),
            lambda value: torch.use_deterministic_algorithms(value[0], warn_only=value[1]),
        ),
        _Flag(
            "torch.get_float32_matmul_precision()",
            torch.get_float32_matmul_precision,
            torch.set_float32_matmul_precision,
        ),
    ]
    # The new fp32_precision API first: restoring it after the legacy flags would undo them.
    attributes = [
        ("torch.backends", backends, ("fp32_precision",)),
        ("torch.backends.cuda.matmul", backends.cuda.matmul, ("fp32_precision",)),
        ("torch.backends.cudnn", backends.cudnn, ("fp32_precision",)),
        ("torch.backends.cudnn.conv", getattr(backends.cudnn, "conv", None), ("fp32_precision",)),
        ("torch.backends.cudnn.rnn", getattr(backends.cudnn, "rnn", None), ("fp32_precision",)),
        ("torch.backends.mkldnn", backends.mkldnn, ("fp32_precision",)),
        ("torch.backends.mkldnn.matmul", getattr(backends.mkldnn, "matmul", None), ("fp32_precision",)),
        ("torch.backends.mkldnn.conv", getattr(backends.mkldnn, "conv", None), ("fp32_precision",)),
        ("torch.backends.mkldnn.rnn", getattr(backends.mkldnn, "rnn", None), ("fp32_precision",)),
        (
            "torch.backends.cuda.matmul",
            backends.cuda.matmul,
            (
                "allow_tf32",
                "allow_fp16_reduced_precision_reduction",
                "allow_bf16_reduced_precision_reduction",
                "allow_fp16_accumulation",
            ),
        ),
        (
            "torch.backends.cudnn",
            backends.cudnn,
            ("enabled", "benchmark", "benchmark_limit", "deterministic", "allow_tf32"),
        ),
        ("torch.backends.mkldnn", backends.mkldnn, ("enabled", "deterministic")),
        ("torch.backends.opt_einsum", backends.opt_einsum, ("enabled", "strategy")),
    ]
    for prefix, owner, names in attributes:
        for name in names:
            if owner is not None and _readable(lambda owner=owner, name=name: getattr(owner, name)):
                flags.append(_Flag(f"{prefix}.{name}", *_attribute(owner, name)))
    cuda = backends.cuda
    for kind in ("flash", "mem_efficient", "math", "cudnn"):
        getter, setter = getattr(cuda, f"{kind}_sdp_enabled", None), getattr(cuda, f"enable_{kind}_sdp", None)
        if getter is not None and setter is not None:
            flags.append(_Flag(f"torch.backends.cuda.{kind}_sdp_enabled()", getter, setter))
    if hasattr(cuda, "fp16_bf16_reduction_math_sdp_allowed"):
        flags.append(
            _Flag(
                "torch.backends.cuda.fp16_bf16_reduction_math_sdp_allowed()",
                cuda.fp16_bf16_reduction_math_sdp_allowed,
                cuda.allow_fp16_bf16_reduction_math_sdp,
            )
        )
    for name in ("preferred_linalg_library", "preferred_blas_library"):
        chooser = getattr(cuda, name, None)
        if chooser is not None and _readable(chooser):
            flags.append(_Flag(f"torch.backends.cuda.{name}()", chooser, chooser))
    mha = getattr(backends, "mha", None)
    if mha is not None and hasattr(mha, "get_fastpath_enabled"):
        flags.append(
            _Flag(
                "torch.backends.mha.get_fastpath_enabled()",
                mha.get_fastpath_enabled,
                mha.set_fastpath_enabled,
            )
        )
    for device in ("cpu", "cuda"):
        if not _readable(lambda device=device: torch.is_autocast_enabled(device)):
            continue
        flags += [
            _Flag(
                f"autocast on {device}",
                lambda device=device: torch.is_autocast_enabled(device),
                lambda value, device=device: torch.set_autocast_enabled(device, value),
            ),
            _Flag(
                f"autocast's dtype on {device}",
                lambda device=device: torch.get_autocast_dtype(device),
                lambda value, device=device: torch.set_autocast_dtype(device, value),
            ),
        ]
    flags.append(_Flag("autocast's cache", torch.is_autocast_cache_enabled, torch.set_autocast_cache_enabled))
    flags += [
        _Flag(
            "the current CUDA device",
            _if_cuda(torch, torch.cuda.current_device),
            _cuda_setter(torch, torch.cuda.set_device),
        ),
        _Flag(
            "the current CUDA stream",
            _if_cuda(torch, torch.cuda.current_stream),
            _cuda_setter(torch, torch.cuda.set_stream),
        ),
    ]
    tunable = getattr(torch.cuda, "tunable", None)
    if tunable is not None and hasattr(torch._C, "_cuda_tunableop_is_enabled"):
        flags += [
            _Flag("torch.cuda.tunable.is_enabled()", tunable.is_enabled, tunable.enable),
            _Flag("torch.cuda.tunable.tuning_is_enabled()", tunable.tuning_is_enabled, tunable.tuning_enable),
        ]
    return flags


def _readable(getter: Callable[[], Any]) -> bool:
    try:
        getter()
    except Exception:
        return False
    return True


def _if_cuda(torch: Any, getter: Callable[[], Any]) -> Callable[[], Any]:
    """Read only once CUDA is initialised: reading must not start a CUDA context."""
    return lambda: getter() if torch.cuda.is_initialized() else None


def _cuda_setter(torch: Any, setter: Callable[[Any], Any]) -> Callable[[Any], Any]:
    return lambda value: None if value is None else setter(value)


def _read_flags() -> dict[str, Any]:
    return _read_flags_of(_flags)


def _read_flags_of(flags: Iterable[_Flag]) -> dict[str, Any]:
    values = {}
    for flag in flags:
        try:
            values[flag.name] = flag.get()
        except Exception as exc:
            values[flag.name] = _Unreadable(f"{type(exc).__name__}: {str(exc)[:120]}")
    return values


def _read_configs() -> dict[str, dict[str, Any]]:
    """Each loaded compiler config's values that differ from its default: a config module imported
    during the candidate (the first torch.compile) is compared with its defaults."""
    found: dict[str, dict[str, Any]] = {}
    unset = getattr(sys.modules.get("torch.utils._config_module"), "_UNSET_SENTINEL", None)
    for name in CONFIGS:
        module = sys.modules.get(name)
        entries = getattr(module, "_config", None)
        if not isinstance(entries, dict):
            continue
        overridden = {}
        for key, entry in entries.items():
            try:
                value = entry.user_override.get()
            except Exception:
                continue
            if value is entry.default or value is unset:
                continue
            try:
                if value == entry.default:  # what reading a list or dict default leaves there
                    continue
            except Exception:
                pass
            overridden[key] = value
        found[name] = overridden
    return found


# --- the rest of the process ----------------------------------------------------------------------


def _c_environ() -> dict[str, str] | None:
    """The C library's environment, which os.putenv and C code change without os.environ."""
    try:
        if _bound.c_environ is None:
            import ctypes

            _bound.c_environ = ctypes.POINTER(ctypes.c_char_p).in_dll(ctypes.CDLL(None), "environ")
        found = {}
        index = 0
        while (entry := _bound.c_environ[index]) is not None:
            key, _, value = entry.partition(b"=")
            found[os.fsdecode(key)] = os.fsdecode(value)
            index += 1
        return found
    except Exception:
        return None


def _interpreter() -> dict[str, Any]:
    found: dict[str, Any] = {
        "sys.gettrace()": sys.gettrace(),
        "sys.getprofile()": sys.getprofile(),
        "threading.gettrace()": getattr(threading, "gettrace", lambda: None)(),
        "threading.getprofile()": getattr(threading, "getprofile", lambda: None)(),
        "gc.isenabled()": gc.isenabled(),
        "gc.get_threshold()": gc.get_threshold(),
        "sys.getswitchinterval()": sys.getswitchinterval(),
        "sys.meta_path": tuple(sys.meta_path),
        "sys.path_hooks": tuple(sys.path_hooks),
    }
    try:
        found["the CPU affinity"] = frozenset(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        pass
    try:
        found["the scheduling priority"] = os.getpriority(os.PRIO_PROCESS, 0)
    except (AttributeError, OSError):
        pass
    return found


def _set_interpreter(name: str, value: Any) -> None:
    if name == "sys.gettrace()":
        sys.settrace(value)
    elif name == "sys.getprofile()":
        sys.setprofile(value)
    elif name == "threading.gettrace()":
        threading.settrace(value)  # type: ignore[arg-type]
    elif name == "threading.getprofile()":
        threading.setprofile(value)  # type: ignore[arg-type]
    elif name == "gc.isenabled()":
        gc.enable() if value else gc.disable()
    elif name == "gc.get_threshold()":
        gc.set_threshold(*value)
    elif name == "sys.getswitchinterval()":
        sys.setswitchinterval(value)
    elif name == "sys.meta_path":
        sys.meta_path[:] = list(value)
    elif name == "sys.path_hooks":
        sys.path_hooks[:] = list(value)
        sys.path_importer_cache.clear()
    elif name == "the CPU affinity":
        os.sched_setaffinity(0, value)
    elif name == "the scheduling priority":
        os.setpriority(os.PRIO_PROCESS, 0, value)


_SIGNALS = [number for number in signal.valid_signals() if number not in (signal.SIGKILL, signal.SIGSTOP)]
_ITIMERS = (signal.ITIMER_REAL, signal.ITIMER_VIRTUAL, signal.ITIMER_PROF)


def _signals() -> dict[int, Any]:
    found = {}
    for number in _SIGNALS:
        try:
            found[int(number)] = signal.getsignal(number)
        except (ValueError, OSError):
            continue
    return found


def _modes() -> tuple[tuple[Any, ...], tuple[Any, ...]]:
    torch = sys.modules.get("torch")
    if torch is None:
        return (), ()
    try:
        functions = tuple(
            torch._C._get_function_stack_at(i) for i in range(torch._C._len_torch_function_stack())
        )
    except Exception:
        functions = ()
    try:
        from torch.utils._python_dispatch import _get_current_dispatch_mode_stack

        dispatch = tuple(_get_current_dispatch_mode_stack())
    except Exception:
        dispatch = ()
    return functions, dispatch


def _read(path: str) -> str | None:
    try:
        with open(path, "rb") as file:
            return file.read().decode(errors="replace")
    except OSError:
        return None


def _child_pids(pid: int) -> list[int] | None:
    """pid's children (of every thread of it), from /proc; None where /proc does not list them."""
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return None
    pids: list[int] = []
    for task in tasks:
        text = _read(f"/proc/{pid}/task/{task}/children")
        if text is None:
            if pid == os.getpid() and task == str(pid):
                return None  # no CONFIG_PROC_CHILDREN
            continue
        pids.extend(int(word) for word in text.split())
    return pids


def _child(pid: int, parent: int) -> _Child | None:
    stat = _read(f"/proc/{pid}/stat")
    if stat is None:
        return None
    fields = stat[stat.rfind(")") + 2 :].split()
    # a zombie has no command line left: its name then
    cmdline = (_read(f"/proc/{pid}/cmdline") or "").replace("\0", " ").strip()
    return _Child(int(fields[19]), fields[0], cmdline or stat[stat.find("(") + 1 : stat.rfind(")")], parent)


def is_torch_process(cmdline: str) -> bool:
    """Inductor's compile worker: started by torch.compile, kept for the next compile."""
    return any(marker in cmdline for marker in TORCH_PROCESS_MARKERS)


def _children() -> dict[int, _Child]:
    """This process's descendants, but not inside torch's compile worker (its pool is torch's)."""
    found: dict[int, _Child] = {}
    direct = _child_pids(os.getpid())
    if direct is None:
        return _children_psutil()
    queue = [(pid, os.getpid()) for pid in direct]
    while queue:
        pid, parent = queue.pop()
        child = _child(pid, parent)
        if child is None:
            continue
        found[pid] = child
        if not is_torch_process(child.cmdline):
            queue += [(grandchild, pid) for grandchild in _child_pids(pid) or []]
    return found


def _children_psutil() -> dict[int, _Child]:
    import psutil

    found = {}
    for process in psutil.Process().children(recursive=True):
        try:
            with process.oneshot():
                found[process.pid] = _Child(
                    int(process.create_time() * 100),
                    "Z" if process.status() == psutil.STATUS_ZOMBIE else "R",
                    " ".join(process.cmdline()),
                    process.ppid(),
                )
        except psutil.Error:
            continue
    return found


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _own_objects() -> dict[str, Any]:
    """attnbench's modules and the classes they define; the scan of sys.modules is redone only when
    it grew or shrank, a module's classes only when the module object changed (a reload)."""
    if _own_cache.get("count") != len(sys.modules):
        _own_cache["names"] = [name for name in sys.modules if name == OWN or name.startswith(OWN + ".")]
        _own_cache["count"] = len(sys.modules)
    classes: dict[str, tuple[Any, list[tuple[str, type]]]] = _own_cache.setdefault("classes", {})
    objects: dict[str, Any] = {}
    for name in _own_cache["names"]:
        module = sys.modules.get(name)
        if module is None:
            continue
        objects[name] = module
        if name not in classes or classes[name][0] is not module:
            classes[name] = (
                module,
                [
                    (f"{name}.{attribute}", value)
                    for attribute, value in list(vars(module).items())
                    if isinstance(value, type) and value.__module__ == name
                ],
            )
        objects.update(classes[name][1])
    return objects


def _namespaces() -> tuple[dict[str, dict[str, Any]], dict[str, Any], frozenset[str]]:
    """name -> a copy of its __dict__, for the modules and classes a kernel may patch."""
    objects: dict[str, Any] = {}
    for name in MODULES:
        module = sys.modules.get(name)
        if module is not None:
            objects[name] = module
    for name in CLASSES:
        found = _lookup(name)
        if isinstance(found, type):
            objects[name] = found
    own = _own_objects()
    own[f"{__name__}.TIMERS"] = TIMERS  # a dict: what cuda_timers() hands the timing code
    objects.update(own)
    spaces = {
        name: (found if isinstance(found, dict) else vars(found)).copy() for name, found in objects.items()
    }
    return spaces, objects, frozenset(own)


def snapshot() -> ProcessState:
    """What a candidate may change, now. Take one before each candidate (before its module is
    imported) and one after, in the main thread and outside timing.deadline."""
    bind()
    namespaces, objects, own = _namespaces()
    functions, dispatch = _modes()
    try:
        cwd: str | None = os.getcwd()
    except OSError:  # removed under us
        cwd = None
    try:
        sigmask = frozenset(int(s) for s in signal.pthread_sigmask(signal.SIG_BLOCK, []))
    except (AttributeError, OSError):
        sigmask = frozenset()
    return ProcessState(
        namespaces=namespaces,
        objects=objects,
        own=own,
        environ=dict(os.environ),
        c_environ=_c_environ(),
        env_writers=dict(_env_writers),
        cwd=cwd,
        flags=_read_flags(),
        configs=_read_configs(),
        interpreter=_interpreter(),
        signals=_signals(),
        itimers={which: signal.getitimer(which) for which in _ITIMERS},
        sigmask=sigmask,
        function_modes=functions,
        dispatch_modes=dispatch,
        threads=frozenset(threading.enumerate()),
        children=_children(),
        tally=_Tally(**vars(_tally)),
        children_cpu_s=_children_cpu_s(),
    )


# --- what changed ---------------------------------------------------------------------------------


def _same(before: Any, after: Any) -> bool:
    if before is after:
        return True
    if type(before) in _SCALARS and type(after) is type(before):
        return bool(before == after)
    return False


def _equal(before: Any, after: Any) -> bool:
    try:
        return before is after or bool(before == after)
    except Exception:
        return False


def _show(value: Any) -> str:
    if isinstance(value, _Unreadable):
        return f"unreadable ({value.error})"
    if isinstance(value, frozenset):
        return "{" + ", ".join(str(v) for v in sorted(value)) + "}"
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _name_of(value: Any) -> str:
    return getattr(value, "__qualname__", None) or type(value).__name__


def _namespace_changes(before: ProcessState, after: ProcessState) -> list[str]:
    lines = []
    for space, old in before.namespaces.items():
        new = after.namespaces.get(space)
        if new is None:
            continue
        for name in [name for name, value in old.items() if new.get(name, _MISSING) is not value]:
            value = new.get(name, _MISSING)
            if value is _MISSING:
                lines.append(f"deleted {space}.{name}")
            elif _filled_lazily(space, name, old[name]) or name == WARNINGS_REGISTRY:
                continue
            elif not _same(old[name], value) and not _torch_wrapped(old[name], value):
                lines.append(
                    f"replaced {space}.{name}"
                    if callable(old[name])
                    else f"set {space}.{name} to {_show(value)} (was {_show(old[name])})"
                )
        added = sorted(new.keys() - old.keys() - {WARNINGS_REGISTRY})
        if space in before.own:
            lines += [f"added {space}.{name}" for name in added if not _submodule(space, name, new)]
        else:
            lines += [f"replaced {space}.{name}" for name in added if _shadows(before.objects[space], name)]
    return lines


def _filled_lazily(space: str, name: str, old: Any) -> bool:
    """A private cache of torch's that was empty and is filled on first use (torch.cuda's
    _cached_device_count, by the first flex compile): torch's own doing, as new names on its modules."""
    return old is None and name.startswith("_") and space.split(".")[0] == "torch"


def _shadows(owner: Any, name: str) -> bool:
    """A name set on a class that one of its bases defines (torch.Tensor.softmax is TensorBase's)."""
    return isinstance(owner, type) and any(name in vars(base) for base in owner.__mro__[1:])


def _torch_wrapped(before: Any, after: Any) -> bool:
    """torch wrapping its own function, the original inside (importing torch._dynamo wraps
    torch.manual_seed so that dynamo skips it): the same function, called by torch's code."""
    if getattr(after, "__wrapped__", _MISSING) is not before:
        return False
    code = getattr(getattr(after, "__func__", after), "__code__", None)
    return code is not None and _owner_of_file(code.co_filename) == "own"


def _submodule(space: str, name: str, namespace: dict[str, Any]) -> bool:
    """An import of a package's submodule binds it on the package: not a kernel's doing."""
    value = namespace[name]
    return isinstance(value, types.ModuleType) and value.__name__ == f"{space}.{name}"


def _flag_line(name: str, before: Any, after: Any) -> str:
    if name in (
        "torch's intra-op threads",
        "torch's inter-op threads",
        "torch's default dtype",
        "torch's default device",
    ):
        return f"set {name} to {_show(after)} (was {_show(before)})"
    if name == "gradient recording" and isinstance(after, bool):
        return f"turned gradient recording {'on' if after else 'off'}"
    if name in ("inference mode", "anomaly detection") and isinstance(after, bool):
        return f"turned {name} {'on' if after else 'off'}"
    return f"changed {name} to {_show(after)} (was {_show(before)})"


def _environment_changes(before: ProcessState, after: ProcessState) -> list[str]:
    """Variables set or unset, but not those torch's own code wrote during the candidate."""

    def torchs(key: str) -> bool:
        write = after.env_writers.get(key)
        return write is not None and write[0] > before.tally.env_writes and write[1]

    lines = []
    for key in sorted(before.environ.keys() | after.environ.keys()):
        old, new = before.environ.get(key), after.environ.get(key)
        if old == new or torchs(key):
            continue
        was = "" if old is None else f" (was {old!r})"
        lines.append(f"unset {key}{was}" if new is None else f"set {key}={new!r}{was}")
    if before.c_environ is not None and after.c_environ is not None:
        for key in sorted(before.c_environ.keys() | after.c_environ.keys()):
            old, new = before.c_environ.get(key), after.c_environ.get(key)
            if old == new or torchs(key) or after.environ.get(key) == new:
                continue  # os.environ's line says it
            was = "" if old is None else f" (was {old!r})"
            what = f"unset {key}{was}" if new is None else f"set {key}={new!r}{was}"
            lines.append(
                f"{what} in the C environment only (os.putenv or C code: os.environ does not show it)"
            )
    return lines


def _thread_owner(thread: threading.Thread) -> str:
    """Whose thread: its target's (or its class's run's) file; a thread pool's by its executor."""
    target = getattr(thread, "_target", None)
    if target is None:
        target = type(thread).run
    target = getattr(target, "func", target)  # functools.partial
    code = getattr(getattr(target, "__func__", target), "__code__", None)
    if code is None:
        return "user"
    owner = _owner_of_file(code.co_filename)
    if owner == "stdlib" and code.co_filename.endswith(os.path.join("concurrent", "futures", "thread.py")):
        return _executor_owner(thread)  # a pool's worker: whose pool
    if owner == "stdlib" and isinstance(thread, threading.Timer):
        function = getattr(thread.function, "__func__", thread.function)
        inner = getattr(function, "__code__", None)
        return "user" if inner is None else _owner_of_file(inner.co_filename)
    return owner


def _executor_owner(thread: threading.Thread) -> str:
    """Inductor's compile pool (AsyncCompile.pool, cached) is torch's; any other executor is not known to be."""
    args = getattr(thread, "_args", ())
    executor = args[0]() if args and callable(args[0]) else None
    compile_module = sys.modules.get("torch._inductor.async_compile")
    pool = getattr(getattr(compile_module, "AsyncCompile", None), "pool", None)
    try:
        if executor is not None and pool is not None and pool.cache_info().currsize and pool() is executor:
            return "own"
    except Exception:
        pass
    return "user"


def _left_threads(before: ProcessState, after: ProcessState) -> list[threading.Thread]:
    return sorted(
        (
            thread
            for thread in after.threads - before.threads
            if thread.is_alive() and _thread_owner(thread) != "own"
        ),
        key=lambda thread: thread.name,
    )


def _left_children(before: ProcessState, after: ProcessState) -> dict[int, _Child]:
    """Descendants started during the candidate and still there, but not torch's compile workers."""
    return {
        pid: child
        for pid, child in after.children.items()
        if (pid not in before.children or before.children[pid].start != child.start)
        and not is_torch_process(child.cmdline)
    }


def changes(before: ProcessState, after: ProcessState) -> list[str]:
    """One line for each thing that differs from `before`, in words, or [] when nothing did."""
    lines = _namespace_changes(before, after)
    lines += [
        f"replaced {name}, which attnbench times with"
        for name in replaced_timers()
        if f"replaced {name}" not in lines
    ]
    lines += _environment_changes(before, after)
    if before.cwd != after.cwd:
        lines.append(f"changed the working directory to {after.cwd} (was {before.cwd})")
    for name, old in before.flags.items():
        new = after.flags.get(name, old)
        if old is not None and not _equal(old, new):  # None: not known then (CUDA not initialised)
            lines.append(_flag_line(name, old, new))
    for module in sorted(before.configs.keys() | after.configs.keys()):
        old, new = before.configs.get(module, {}), after.configs.get(module, {})
        for key in sorted(old.keys() | new.keys()):
            if not _equal(old.get(key, _MISSING), new.get(key, _MISSING)):
                was = _show(old[key]) if key in old else "its default"
                now = _show(new[key]) if key in new else "its default"
                lines.append(f"changed {module}.{key} to {now} (was {was})")
    for name, old in before.interpreter.items():
        new = after.interpreter.get(name, old)
        if not _equal(old, new):
            lines.append(f"changed {name} to {_show(new)} (was {_show(old)})")
    for number, old in before.signals.items():
        new = after.signals.get(number, old)
        if new is not old and new != old:
            what = signal.Signals(number).name
            lines.append(
                f"installed a handler for {what}"
                if callable(new)
                else f"set {what}'s handler to {_show(new)} (was {_show(old)})"
            )
    for which, old in before.itimers.items():
        if after.itimers.get(which, old) != old:
            lines.append(f"set an interval timer (setitimer {which}) to {after.itimers[which]}")
    if after.sigmask != before.sigmask:
        blocked = sorted(signal.Signals(n).name for n in after.sigmask - before.sigmask)
        lines.append(f"changed the blocked signals (now blocked: {', '.join(blocked) or 'fewer'})")
    if after.function_modes != before.function_modes:
        names = ", ".join(type(mode).__name__ for mode in after.function_modes[len(before.function_modes) :])
        lines.append(f"left __torch_function__ modes active ({names or 'the stack changed'})")
    if after.dispatch_modes != before.dispatch_modes:
        names = ", ".join(type(mode).__name__ for mode in after.dispatch_modes[len(before.dispatch_modes) :])
        lines.append(f"left __torch_dispatch__ modes active ({names or 'the stack changed'})")
    threads = _left_threads(before, after)
    if threads:
        s = "" if len(threads) == 1 else "s"
        lines.append(
            f"left {len(threads)} thread{s} running ({', '.join(thread.name for thread in threads)})"
        )
    for pid, child in sorted(_left_children(before, after).items()):
        state = " (exited, never waited for)" if child.state == "Z" else " running"
        lines.append(f"left child process {pid}{state} ({child.cmdline[:120] or '?'})")
    started = after.tally.spawned - before.tally.spawned
    if started:
        lines.append(f"started {started} child process{'es' if started > 1 else ''} during its calls")
    cpu = after.children_cpu_s - before.children_cpu_s
    if cpu > 0 and not started and after.tally.spawned_by_torch == before.tally.spawned_by_torch:
        lines.append(f"ran child processes that Python did not see start ({cpu:.3f} s of their CPU time)")
    return lines


# --- putting it back ------------------------------------------------------------------------------


def restore(state: ProcessState) -> list[str]:
    """Put back what `snapshot` saw: functions, environment, working directory, flags, configs,
    interpreter settings, signals and modes; child processes started since are ended. What cannot be
    put back (a thread still running, inference mode) is returned in words: the worker retires."""
    failed: list[str] = []

    def attempt(what: str, action: Callable[[], Any]) -> None:
        try:
            action()
        except Exception as exc:
            failed.append(f"could not restore {what}: {type(exc).__name__}: {exc}")

    now = snapshot()
    for space, old in state.namespaces.items():
        target = state.objects[space]
        new = now.namespaces.get(space, {})
        for name, value in old.items():
            if not _same(value, new.get(name, _MISSING)) and not _torch_wrapped(value, new.get(name)):
                attempt(
                    f"{space}.{name}", lambda target=target, name=name, value=value: _put(target, name, value)
                )
        for name in new.keys() - old.keys():
            if (space in state.own and not _submodule(space, name, new)) or _shadows(target, name):
                attempt(f"{space}.{name}", lambda target=target, name=name: _drop(target, name))
    for name, bound in TIMERS.items():
        if _lookup(name) is not bound:
            owner, _, attribute = name.rpartition(".")
            attempt(
                name,
                lambda owner=owner, attribute=attribute, bound=bound: setattr(
                    _lookup(owner), attribute, bound
                ),
            )
    _restore_environment(state, attempt)
    if state.cwd is not None and now.cwd != state.cwd:
        attempt("the working directory", lambda: os.chdir(state.cwd or "."))
    _restore_flags(state, now, attempt)
    for module in state.configs.keys() | now.configs.keys():
        old, new = state.configs.get(module, {}), now.configs.get(module, {})
        config = sys.modules[module]
        for key in old.keys() | new.keys():
            if not _equal(old.get(key, _MISSING), new.get(key, _MISSING)):
                value = old[key] if key in old else copy.deepcopy(config._config[key].default)  # type: ignore[attr-defined]
                attempt(
                    f"{module}.{key}", lambda config=config, key=key, value=value: setattr(config, key, value)
                )
    for name, old in state.interpreter.items():
        if not _equal(old, now.interpreter.get(name, old)):
            attempt(name, lambda name=name, old=old: _set_interpreter(name, old))
    for number, old in state.signals.items():
        if now.signals.get(number, old) is not old and old is not None:
            attempt(
                f"the handler of signal {number}", lambda number=number, old=old: signal.signal(number, old)
            )
    for which, old in state.itimers.items():
        if now.itimers[which] != old:
            attempt(f"interval timer {which}", lambda which=which, old=old: signal.setitimer(which, *old))
    if now.sigmask != state.sigmask:
        attempt("the blocked signals", lambda: signal.pthread_sigmask(signal.SIG_SETMASK, state.sigmask))
    _restore_modes(state, attempt)
    _end_children(state, now, attempt)
    for thread in _left_threads(state, now):
        failed.append(f"could not stop thread {thread.name} (a thread cannot be stopped from outside)")
    return failed


def _put(target: Any, name: str, value: Any) -> None:
    if isinstance(target, dict):
        target[name] = value
    else:
        setattr(target, name, value)


def _drop(target: Any, name: str) -> None:
    if isinstance(target, dict):
        target.pop(name, None)
    else:
        delattr(target, name)


def _restore_environment(state: ProcessState, attempt: Callable[[str, Callable[[], Any]], None]) -> None:
    """os.environ exactly as it was (its writes reach the C environment), then what only C changed."""
    for key in list(os.environ.keys() - state.environ.keys()):
        attempt(f"variable {key}", lambda key=key: os.environ.pop(key, None))
    for key, value in state.environ.items():
        if os.environ.get(key) != value:
            attempt(f"variable {key}", lambda key=key, value=value: os.environ.__setitem__(key, value))
    current = _c_environ()
    if state.c_environ is None or current is None:
        return
    for key in current.keys() - state.c_environ.keys():
        attempt(f"variable {key}", lambda key=key: os.unsetenv(key))
    for key, value in state.c_environ.items():
        if current.get(key) != value:
            attempt(f"variable {key}", lambda key=key, value=value: os.putenv(key, value))


def _restore_flags(
    state: ProcessState, now: ProcessState, attempt: Callable[[str, Callable[[], Any]], None]
) -> None:
    """In the table's order (fp32_precision before the legacy flags that read it), twice: one flag's
    setter can move another (a precision and allow_tf32 read each other). What still differs fails."""
    for _ in range(2):
        for flag in _flags:
            old = state.flags.get(flag.name, _MISSING)
            if old is _MISSING or old is None or isinstance(old, _Unreadable) or flag.set is None:
                continue
            if not _equal(old, _read_flags_of([flag]).get(flag.name)):
                try:
                    flag.set(old)
                except Exception:
                    pass  # said below, if it still differs
    current = _read_flags()
    for flag in _flags:
        old = state.flags.get(flag.name, _MISSING)
        if old is not _MISSING and old is not None and not _equal(old, current.get(flag.name)):
            why = "it has no setter" if flag.set is None else f"it reads {_show(current.get(flag.name))}"
            why = f"{why}, was {_show(old)}"
            attempt(flag.name, lambda why=why: _raise(why))


def _raise(text: str) -> None:
    raise RuntimeError(text)


def _restore_modes(state: ProcessState, attempt: Callable[[str, Callable[[], Any]], None]) -> None:
    torch = sys.modules.get("torch")
    if torch is None:
        return
    functions, dispatch = _modes()
    if functions != state.function_modes:

        def functions_back() -> None:
            while torch._C._len_torch_function_stack():
                torch._C._pop_torch_function_stack()
            for mode in state.function_modes:
                torch._C._push_on_torch_function_stack(mode)

        attempt("the __torch_function__ modes", functions_back)
    if dispatch != state.dispatch_modes:

        def dispatch_back() -> None:
            from torch.utils._python_dispatch import _pop_mode, _push_mode

            while _modes()[1]:
                _pop_mode()
            for mode in state.dispatch_modes:
                _push_mode(mode)

        attempt("the __torch_dispatch__ modes", dispatch_back)


def _end_children(
    state: ProcessState, now: ProcessState, attempt: Callable[[str, Callable[[], Any]], None]
) -> None:
    """SIGTERM to the processes the candidate left, SIGKILL to those still there after a second; our
    own children are reaped (a zombie is one that exited and was never waited for)."""
    left = {pid: child for pid, child in _left_children(state, now).items() if child.state != "Z"}
    for pid, child in left.items():
        attempt(
            f"child process {pid}", lambda pid=pid, child=child: _signal_if_same(pid, child, signal.SIGTERM)
        )
    deadline = monotonic() + 1.0
    while monotonic() < deadline and any(_running(pid, child) for pid, child in left.items()):
        _reap(left)
        time.sleep(0.01)
    for pid, child in left.items():
        if _running(pid, child):
            attempt(
                f"child process {pid}",
                lambda pid=pid, child=child: _signal_if_same(pid, child, signal.SIGKILL),
            )
    _reap(_left_children(state, now))


def _running(pid: int, expected: _Child) -> bool:
    child = _child(pid, 0)
    return child is not None and child.start == expected.start and child.state != "Z"


def _signal_if_same(pid: int, expected: _Child, number: int) -> None:
    """Only the process seen (its start time), never one that took its pid since."""
    child = _child(pid, 0)
    if child is not None and child.start == expected.start:
        os.kill(pid, number)


def _reap(children: Iterable[int]) -> None:
    for pid in children:
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:  # not our own child (a grandchild), or reaped already
            pass


# --- outputs --------------------------------------------------------------------------------------


def plain_output_problem(result: Any) -> str | None:
    """Why a call's output is not plain tensors, or None. A subclass (a lazy tensor, a
    __torch_function__ or __torch_dispatch__ wrapper) or an object with a .shape can compute when read,
    outside the timed call; so can a tensor whose own attributes shadow torch.Tensor's methods."""
    import torch

    items = list(result) if isinstance(result, (tuple, list)) else [result]
    for index, item in enumerate(items):
        where = "output" if len(items) == 1 or index == 0 else f"output {index} (a gradient)"
        kind = type(item)
        if kind is torch.Tensor:
            shadowing = sorted(name for name in getattr(item, "__dict__", {}) if hasattr(torch.Tensor, name))
            if shadowing:
                return (
                    f"{where} is a tensor whose own attributes replace torch.Tensor's"
                    f" ({', '.join(shadowing[:5])}): they can compute when read, outside the timed call"
                )
            continue
        name = (
            f"{kind.__module__}.{kind.__qualname__}"
            if kind.__module__ not in ("builtins",)
            else kind.__qualname__
        )
        if isinstance(item, torch.Tensor):
            return (
                f"{where} is a {kind.__qualname__} (a torch.Tensor subclass), not a plain tensor: a subclass can"
                " compute when read, outside the timed call"
            )
        if hasattr(item, "shape"):
            return (
                f"{where} is a {name}, not a torch.Tensor: an object with a .shape can compute when read,"
                " outside the timed call"
            )
        return f"{where} is a {name}, not a torch.Tensor"
    return None


if "torch" in sys.modules:  # bound now; else at the first snapshot, before any user module is imported
    try:
        bind()
    except Exception:  # a torch that fails to import fails where attnbench imports it, with its own error
        pass
