"""A long-lived process per GPU that runs the jobs (benchmark, fingerprint, calibrate, compare) in turn.

Why: a fresh process per shape pays for the interpreter, `import torch`, a CUDA context, a cold
torch.compile and the interpreter's teardown: about 15 s of a 23 s job on an H100, which made the
pipeline 4x slower than one process looping over the shapes (docs/scale.md). The benchmark job stays
one Snakemake job per shape, with one output and the same rerun granularity; it only hands its spec
to a worker that is already warm and writes the result itself.

What a shape still gets to itself:
- `torch._dynamo.reset()` before it: nothing compiled for one shape carries over to the next (in one
  process dynamo's recompile limit would silently turn FlexAttention eager after 8 shapes);
- the allocator's cache emptied after it;
- a fresh worker after any shape where a candidate ended in `error` or `timeout` (its CUDA context may
  be poisoned), after `IDLE_S` without a request, and for any change of interpreter, environment,
  attnbench source or user kernel (all part of the worker's key, hence of its socket's name);
- a fresh worker after a sticky CUDA error (the worker answers "lost" and exits) or a crash: the job
  finds the culprit and measures the shape again without it (attnbench.isolation);
- the GPU: the job holds the GPU lease while the worker measures for it, and if the job dies
  mid-shape the worker exits at once, so the GPU is idle again when the lease is free.

The job's directory: each request runs in the directory the worker started in, and only if that is
the job's working directory (same device and inode), so relative paths, user kernel imports and the
git commit are the job's. A directory removed or moved and another made at the same path (a CI
workspace wiped between runs) has the same key but another inode: the worker answers "stale" and
exits, and the job starts a fresh one.

Protocol: one request per connection on a Unix socket, JSON lines. Job -> worker: {"command", "spec",
"schemas", "directory": [device, inode]}. Worker -> job: {"hello": pid, ...}, then {"log": line} and {"running":
candidate whose checks start, or null once they are done}..., then {"result": document}, {"error": text}
or {"lost": {"error", "candidate"}} (a sticky CUDA error), or at once {"stale": where the worker's
directory is now}. A job that runs without a worker (ATTNBENCH_WORKER=0, SLURM) measures its shape in
a child that serves this one request on a socket it inherits (`run_child`), so a crash costs the child.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

from attnbench import isolation, jobs

# ATTNBENCH_WORKER=0 runs each job without a worker (as under SLURM, where it always does): a benchmark job
# measures its shape in a fresh child of its own, the others in their own process.
ENABLE_VARIABLE = "ATTNBENCH_WORKER"
IDLE_VARIABLE = "ATTNBENCH_WORKER_IDLE_S"
IDLE_S = 60.0
START_TIMEOUT_S = 300.0  # import torch and a CUDA context, on a slow shared file system
HELLO_TIMEOUT_S = 10.0
# Variables that change what a worker would measure; a job whose values differ gets its own worker.
KEY_PREFIXES = ("PYTHON", "CUDA", "CUBLAS", "CUDNN", "NVIDIA", "TORCH", "TRITON", "OMP", "MKL", "LD_")
RETIRING_STATUSES = ("error", "timeout")


class WorkerError(RuntimeError):
    """The worker could not be started, or died while it measured this job's shape."""


class StaleWorker(WorkerError):
    """The worker for this key started in another directory than the job's, now at the same path."""


def enabled(environ: Mapping[str, str], placement_source: str) -> bool:
    """Under SLURM a job's allocation ends with the job, so a worker could not outlive it."""
    return placement_source != "slurm" and environ.get(ENABLE_VARIABLE, "1") != "0"


def identity(directory: int | str = ".") -> list[int]:
    """Device and inode: which directory this is, where a path only says where one is now."""
    status = os.stat(directory)
    return [status.st_dev, status.st_ino]


def key(spec: dict[str, Any], environ: Mapping[str, str]) -> str:
    import attnbench

    digest = hashlib.sha256(f"{sys.executable} {os.getuid()}".encode())
    for path in sorted(Path(attnbench.__file__).parent.glob("*.py")):
        digest.update(path.name.encode() + path.read_bytes())
    relevant = sorted((k, v) for k, v in environ.items() if k.startswith(KEY_PREFIXES))
    digest.update(json.dumps([relevant, spec.get("kernel_hashes", {}), os.getcwd()]).encode())
    return digest.hexdigest()[:16]


def run(
    command: str,
    spec: dict[str, Any],
    socket_dir: Path,
    *,
    log: Callable[[str], None],
    schemas: str | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run the job in the worker for its key, starting one if none listens: the document, and the worker.

    Jobs that share a worker take turns on a lock next to its socket; on a GPU the lease already
    makes them take turns, on the CPU it queues them (which also keeps their timings apart)."""
    request = {"command": command, "spec": spec, "schemas": schemas, "directory": identity()}
    path = socket_dir / f"worker-{key(spec, os.environ)}.sock"
    path.parent.mkdir(parents=True, exist_ok=True)
    turn = os.open(path.with_suffix(".lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        try:
            fcntl.flock(turn, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log(f"waiting for worker {path.name}: another job of this run is using it")
            fcntl.flock(turn, fcntl.LOCK_EX)  # released when this returns, or when this process dies
        try:
            return _request(path, request, log)
        except StaleWorker as exc:
            log(f"{exc}: it exits, and this job starts a fresh one")
            return _request(path, request, log)
    finally:
        os.close(turn)


def _request(
    path: Path, request: dict[str, Any], log: Callable[[str], None]
) -> tuple[dict[str, Any], dict[str, Any]]:
    connection = _connect(path, log)
    worker_log = path.with_suffix(".log")
    written = worker_log.stat().st_size if worker_log.exists() else 0
    return _exchange(connection, request, log, lambda: _last_words(worker_log, written))


def _last_words(worker_log: Path, offset: int) -> str:
    """How a worker that died without an answer ended, from what it wrote to its log since `offset`:
    faulthandler's line for a fatal signal, nothing for an exit()."""
    try:
        with worker_log.open("rb") as text:
            text.seek(offset)
            lines = text.read().decode(errors="replace").splitlines()
    except OSError:
        lines = []
    fatal = [line for line in lines if line.startswith("Fatal Python error")]
    return f"ended without an answer ({fatal[-1]})" if fatal else "ended without an answer or a traceback"


def run_child(
    command: str,
    spec: dict[str, Any],
    *,
    log: Callable[[str], None],
    variables: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Run the job in a fresh child of this process, with `variables` added to its environment: the
    document. A crash there costs the child (isolation.Crash says how it ended), never the job."""
    request = {"command": command, "spec": spec, "directory": identity()}
    ours, theirs = socket.socketpair()
    with theirs:
        process = subprocess.Popen(
            [sys.executable, "-m", "attnbench", "worker", "--fd", str(theirs.fileno())],
            stdin=subprocess.DEVNULL,
            pass_fds=[theirs.fileno()],
            env={**os.environ, **(variables or {})},
        )
    try:
        return _exchange(ours, request, log, lambda: isolation.exit_status(process.wait()))[0]
    finally:
        ours.close()
        process.wait()


def _exchange(
    connection: socket.socket, request: dict[str, Any], log: Callable[[str], None], ended: Callable[[], str]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Send the request and follow the answer: the document and the worker, or isolation.Crash when the
    worker dies (`ended()` says how) or loses its CUDA context."""
    with connection, connection.makefile("rw", encoding="utf-8") as stream:
        hello = json.loads(stream.readline() or "{}")
        if "hello" not in hello:
            raise WorkerError("the worker did not answer")
        worker = {"pid": hello["hello"], "log": hello["log"], "jobs_before": hello["served"]}
        if worker["log"] is None:
            where = f"pid {worker['pid']}, a child of this job (its output is in this job's log)"
            log(f"running in {where}")
        else:
            where = f"worker pid {worker['pid']} (log {worker['log']})"
            log(f"running in {where} after {worker['jobs_before']} jobs")
        _send(stream, request)
        running, checked = None, False
        try:
            for line in stream:
                if not line.endswith("\n"):
                    break  # cut off by the worker's death
                message = json.loads(line)
                if "log" in message:
                    print(message["log"], file=sys.stderr, end="", flush=True)
                elif "running" in message:
                    running = message["running"]
                    checked = running is None
                elif "result" in message:
                    return message["result"], worker
                elif "lost" in message:
                    what = f"lost the CUDA context ({message['lost']['error']})"
                    raise isolation.Crash(what, message["lost"]["candidate"], where, checked)
                elif "stale" in message:
                    raise StaleWorker(
                        f"worker pid {worker['pid']} did not start in this job's directory {os.getcwd()}"
                        f" but in one that {message['stale']}"
                    )
                else:
                    raise WorkerError(f"worker pid {worker['pid']}: {message.get('error')}")
        except ConnectionResetError:
            pass
    raise isolation.Crash(ended(), running, where, checked)


def _connect(path: Path, log: Callable[[str], None]) -> socket.socket:
    """Connect to the worker at `path`, starting it first if nothing listens there."""
    try:
        return _attempt(path)
    except OSError:
        pass
    log(f"starting a worker ({path.name})")
    path.unlink(missing_ok=True)  # a worker that died without cleaning up
    worker_log = path.with_suffix(".log")
    with worker_log.open("a") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "attnbench", "worker", "--socket", str(path)],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            start_new_session=True,  # outlives this job; a Ctrl-C to the job's group spares it
        )
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise WorkerError(f"worker exited with {process.returncode} at start; see {worker_log}")
        try:
            return _attempt(path)
        except OSError:
            time.sleep(0.05)
    process.kill()
    raise WorkerError(f"worker did not listen within {START_TIMEOUT_S:g} s; see {worker_log}")


def _attempt(path: Path) -> socket.socket:
    connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    connection.settimeout(HELLO_TIMEOUT_S)
    try:
        connection.connect(str(path))
        # A worker that is retiring may have left this connection in its backlog unanswered.
        if not connection.recv(1, socket.MSG_PEEK):
            raise ConnectionResetError("worker closed the connection")
    except OSError:
        connection.close()
        raise
    connection.settimeout(None)
    return connection


def _send(stream: TextIO, message: dict[str, Any]) -> None:
    from attnbench.files import jsonable

    stream.write(json.dumps(jsonable(message)) + "\n")
    stream.flush()


def serve(path: Path, idle_s: float) -> None:
    """The worker: answer requests one at a time until idle for `idle_s`, or a job retires it or finds
    it stale."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(4)
    listener.settimeout(idle_s)
    # Held open, the directory keeps its inode even if it is removed: no other directory can take it.
    home = os.open(".", os.O_RDONLY | os.O_DIRECTORY)
    hello = {"hello": os.getpid(), "log": str(path.with_suffix(".log")), "served": 0}

    def stop_listening() -> None:
        """Before a retiring worker's last answer: the job that reads it may start the next worker at
        `path` at once, whose socket this must not remove."""
        if listener.fileno() != -1:
            listener.close()
            path.unlink(missing_ok=True)

    try:
        while True:
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                return
            if _serve_one(connection, home, hello, stop_listening):
                return
    finally:
        stop_listening()


def serve_child(fd: int) -> None:
    """A child of one job (`run_child`): its one request, on the socket it inherited as `fd`."""
    home = os.open(".", os.O_RDONLY | os.O_DIRECTORY)
    _serve_one(socket.socket(fileno=fd), home, {"hello": os.getpid(), "log": None, "served": 0}, lambda: None)


def _serve_one(
    connection: socket.socket, home: int, hello: dict[str, Any], stop_listening: Callable[[], None]
) -> bool:
    """Answer the request on `connection`; whether the worker retires after it."""
    with connection, connection.makefile("rw", encoding="utf-8") as stream:
        _send(stream, hello)
        request = json.loads(stream.readline() or "{}")
        if "spec" not in request:
            return False
        os.fchdir(home)  # a user kernel may have left the worker elsewhere
        if request["directory"] != identity(home):
            answer, retire = {"stale": _whereabouts()}, True
        else:
            answer = _answer(connection, stream, request)
            retire = _retires(request["command"], answer)
            hello["served"] += 1
        if retire:
            stop_listening()
        _send(stream, answer)
    return retire


def _whereabouts() -> str:
    """The worker's own directory, for a job that finds another at its path."""
    try:
        return f"is now at {os.getcwd()}"
    except FileNotFoundError:
        return "has been removed"


def _retires(command: str, answer: dict[str, Any]) -> bool:
    """After an error or a lost CUDA context, or a benchmark where a candidate ended in error or timeout
    (its CUDA context may be poisoned)."""
    if "result" not in answer:
        return True
    statuses = {entry["status"] for entry in answer["result"].get("candidates", {}).values()}
    return command == "benchmark" and bool(statuses & set(RETIRING_STATUSES))


def _answer(connection: socket.socket, stream: TextIO, request: dict[str, Any]) -> dict[str, Any]:
    """Run one job for the job process at the other end: the message that answers it."""
    connection.settimeout(None)
    done = threading.Event()

    def exit_if_the_job_dies() -> None:
        # The job sends nothing after its request: end of file means it died, and its GPU lease with
        # it; stop using the GPU at once rather than finish a shape nobody waits for.
        connection.recv(1)
        if not done.is_set():
            os._exit(3)

    def running(name: str | None) -> None:
        _send(stream, {"running": name})

    threading.Thread(target=exit_if_the_job_dies, daemon=True).start()
    try:
        with _logs_to(stream):
            return {"result": jobs.run(request["command"], request["spec"], request.get("schemas"), running)}
    except isolation.ContextLost as lost:  # this worker retires: nothing more can run in its context
        return {"lost": {"error": lost.error, "candidate": lost.candidate}}
    except Exception as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}
    finally:
        done.set()


class _StreamLog:
    """sys.stderr for the duration of a request: each write goes to the job as a {"log": ...} message."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def write(self, text: str) -> int:
        if text:
            _send(self.stream, {"log": text})
        return len(text)

    def flush(self) -> None:
        self.stream.flush()


@contextmanager
def _logs_to(stream: TextIO) -> Iterator[None]:
    saved, sys.stderr = sys.stderr, _StreamLog(stream)  # type: ignore[assignment]
    try:
        yield
    finally:
        sys.stderr = saved
