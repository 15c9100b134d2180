"""A long-lived process per GPU that runs the jobs (benchmark, fingerprint, calibrate, compare, autotune,
report) in turn.

Why: a fresh process per shape pays for the interpreter, `import torch`, a CUDA context, a cold
torch.compile and the interpreter's teardown: most of a short job, which made the pipeline several
times slower than one process looping over the shapes (docs/scale.md, Measurements behind the code). The benchmark job stays
one Snakemake job per shape, with one output and the same rerun granularity; it only hands its spec
to a worker that is already warm and writes the result itself.

What a shape still gets to itself:
- `torch._dynamo.reset()` before it: nothing compiled for one shape carries over to the next (in one
  process dynamo's recompile limit would silently turn FlexAttention eager after 8 shapes);
- the allocator's cache emptied after it;
- a fresh worker after any shape where a candidate ended in `error` or `timeout` (its CUDA context may
  be poisoned), or changed the process (the document's `process_changes`, attnbench.guard: what was
  put back may not be all it changed), after `IDLE_S` without a request, and for any change of interpreter, environment,
  attnbench source or working directory (all part of the worker's key, hence of its socket's name);
- the user's current code without a fresh worker: a user kernel is not part of the key. Before each
  request the worker re-imports the modules it imported from files under its working directory whose
  content changed (a content hash: a `touch` is not an edit), with every such module that imports one
  of them, directly or not; the job's log says which (usercode.UserModules). Where that is not safe (a
  changed file that is not Python source, a changed user module outside the working directory, a
  changed kernel from site-packages, or a re-import that raises) it retires and the job starts a
  fresh worker, as for a stale one;
- a fresh worker after a sticky CUDA error (the worker answers "lost" and exits) or a crash: the job
  finds the culprit and measures the shape again without it (attnbench.isolation);
- the GPU: the job holds the GPU lease while the worker measures for it, and if the job dies
  mid-shape the worker exits at once, so the GPU is idle again when the lease is free.

The job's directory: each request runs in the directory the worker started in, and only if that is
the job's working directory (same device and inode), so relative paths, user kernel imports and the
git commit are the job's. A directory removed or moved and another made at the same path (a CI
workspace wiped between runs) has the same key but another inode: the worker answers "stale" and
exits, and the job starts a fresh one.

Protocol: one request per connection on a Unix socket, JSON lines, each a message of the types below
(`_send`, `_receive`: {"kind": {fields}}). Job -> worker: Request. Worker -> job: Hello; then either
at once Stale (the worker's directory is not the job's) or Restart (it cannot reload what changed), or
Reloaded, Log and Running (whose checks start, None once they are done)..., then Result, Failed or
Lost (a sticky CUDA error). A job that runs without a worker (ATTNBENCH_WORKER=0, SLURM) measures its shape in
a child that serves this one request on a socket it inherits (`run_child`), so a crash costs the child.

A benchmark request runs under the job's `Watchdog` (limits: isolation.Limits): a kernel that catches
its call_timeout_s, or a module that hangs at import, would otherwise keep the worker, and the job
waiting on it, busy for ever. The job kills the worker's process group (or its child, with their
descendants) when a phase of the request runs past its limit, and raises isolation.Hung.
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from attnbench import files, isolation, jobs, usercode
from attnbench.results import Status
from attnbench.settings import TimingSettings

# ATTNBENCH_WORKER=0 runs each job without a worker (as under SLURM, where it always does): a benchmark job
# measures its shape in a fresh child of its own, the others in their own process.
ENABLE_VARIABLE = "ATTNBENCH_WORKER"
IDLE_VARIABLE = "ATTNBENCH_WORKER_IDLE_S"
IDLE_S = 60.0
START_TIMEOUT_S = 300.0  # import torch and a CUDA context, on a slow shared file system
HELLO_TIMEOUT_S = 10.0
CHILD_EXIT_S = 30.0  # a child's exit after its answer (torch's teardown), before it is killed
# Variables that change what a worker would measure; a job whose values differ gets its own worker.
KEY_PREFIXES = ("PYTHON", "CUDA", "CUBLAS", "CUDNN", "NVIDIA", "TORCH", "TRITON", "OMP", "MKL", "LD_")
RETIRING_STATUSES = (Status.ERROR, Status.TIMEOUT)


@dataclass(frozen=True)
class Request:
    command: str
    spec: dict[str, Any]
    directory: list[int]  # the job's working directory: [device, inode] (identity)
    schemas: str | None = None


@dataclass(frozen=True)
class Hello:
    pid: int
    log: str | None  # a warm worker's log file; None for a job's child, whose output is the job's
    served: int  # jobs served before this one


@dataclass(frozen=True)
class Stale:
    where: str  # where the worker's own directory is now


@dataclass(frozen=True)
class Restart:
    why: str  # why it cannot reload what changed: the job starts a fresh worker


@dataclass(frozen=True)
class Reloaded:
    modules: list[str]


@dataclass(frozen=True)
class Log:
    text: str


@dataclass(frozen=True)
class Running:
    candidate: str | None  # whose checks start; None once they are all done


@dataclass(frozen=True)
class Result:
    document: dict[str, Any]


@dataclass(frozen=True)
class Failed:
    error: str


@dataclass(frozen=True)
class Lost:
    """A sticky CUDA error: the context is gone, with the candidate whose checks ran, if any."""

    error: str
    candidate: str | None


Message = Request | Hello | Stale | Restart | Reloaded | Log | Running | Result | Failed | Lost
_KINDS: dict[str, type[Message]] = {
    kind.__name__.lower(): kind
    for kind in (Request, Hello, Stale, Restart, Reloaded, Log, Running, Result, Failed, Lost)
}


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


def key(environ: Mapping[str, str]) -> str:
    """Which warm worker may serve this job: interpreter, user, environment, attnbench's own source and
    the working directory. Not the user kernels: the worker reloads those that changed
    (usercode.UserModules)."""
    digest = hashlib.sha256(f"{sys.executable} {os.getuid()} {files.source_digest()}".encode())
    relevant = sorted((k, v) for k, v in environ.items() if k.startswith(KEY_PREFIXES))
    digest.update(json.dumps([relevant, os.getcwd()]).encode())
    return digest.hexdigest()[:16]


def run(
    command: str,
    spec: dict[str, Any],
    socket_dir: Path,
    *,
    log: Callable[[str], None],
    schemas: str | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run the job in the worker for its key, starting one if none listens: the document, validated
    there against the job's output schema when `schemas` is given, and the worker. A benchmark runs
    under the watchdog (isolation.Hung when it kills the worker).

    Jobs that share a worker take turns on a lock next to its socket; on a GPU the lease already
    makes them take turns, on the CPU it queues them (which also keeps their timings apart)."""
    request = Request(command, spec, identity(), schemas)
    path = socket_dir / f"worker-{key(os.environ)}.sock"
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


def _request(path: Path, request: Request, log: Callable[[str], None]) -> tuple[dict[str, Any], dict[str, Any]]:
    connection = _connect(path, log)
    worker_log = path.with_suffix(".log")
    written = worker_log.stat().st_size if worker_log.exists() else 0
    watchdog = Watchdog.of(request.command, request.spec, connection)
    return _exchange(connection, request, log, lambda: _last_words(worker_log, written), watchdog)


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
    schemas: str | None = None,
) -> dict[str, Any]:
    """Run the job in a fresh child of this process, with `variables` added to its environment: the
    document. A crash there costs the child (isolation.Crash says how it ended), never the job; so
    does a hang (isolation.Hung: the watchdog killed it). With `schemas` the child checks the job's
    spec and document against them, as a warm worker does."""
    request = Request(command, spec, identity(), schemas)
    ours, theirs = socket.socketpair()
    with theirs:
        process = subprocess.Popen(
            [sys.executable, "-m", "attnbench", "worker", "--fd", str(theirs.fileno())],
            stdin=subprocess.DEVNULL,
            pass_fds=[theirs.fileno()],
            env={**os.environ, **(variables or {})},
        )
    watchdog = Watchdog.of(command, spec, ours, process.pid)  # from its start: its interpreter is the setup's
    try:
        return _exchange(ours, request, log, lambda: isolation.exit_status(process.wait()), watchdog)[0]
    finally:
        ours.close()
        try:  # it exits once it sees the job's end of the socket close (or has answered)
            process.wait(timeout=CHILD_EXIT_S)
        except subprocess.TimeoutExpired:
            _kill(process.pid)
            process.wait()


def _exchange(
    connection: socket.socket,
    request: Request,
    log: Callable[[str], None],
    ended: Callable[[], str],
    watchdog: Watchdog | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Send the request and follow the answer: the document and the worker, or isolation.Crash when the
    worker dies (`ended()` says how) or loses its CUDA context, isolation.Hung when `watchdog` killed it."""
    try:
        return _follow(connection, request, log, ended, watchdog)
    finally:
        if watchdog is not None:
            watchdog.stop()


def _follow(
    connection: socket.socket,
    request: Request,
    log: Callable[[str], None],
    ended: Callable[[], str],
    watchdog: Watchdog | None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    with connection, connection.makefile("rw", encoding="utf-8") as stream:
        try:
            hello = _receive(stream.readline())
        except OSError:  # the watchdog shut the connection
            hello = None
        if not isinstance(hello, Hello):
            if watchdog is not None and (why := watchdog.stop()):
                raise isolation.Hung(why, None, "the process that was to measure it", False)
            raise WorkerError("the worker did not answer")
        if watchdog is not None:
            watchdog.watch(hello.pid)
        worker = {
            "pid": hello.pid,
            "log": hello.log,
            "jobs_before": hello.served,
            "connected_at": time.time(),
        }
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
                match _receive(line):
                    case Log(text):
                        print(text, file=sys.stderr, end="", flush=True)
                    case Running(candidate):
                        running, checked = candidate, candidate is None
                        if watchdog is not None:
                            watchdog.running(running)
                    case Result(document):
                        return document, worker  # whole: a watchdog that fired meanwhile took nothing
                    case Lost(error, candidate):
                        raise isolation.Crash(f"lost the CUDA context ({error})", candidate, where, checked)
                    case Reloaded(modules):
                        worker["reloaded"] = modules
                    case Stale(elsewhere):
                        raise StaleWorker(
                            f"worker pid {worker['pid']} did not start in this job's directory {os.getcwd()}"
                            f" but in one that {elsewhere}"
                        )
                    case Restart(why):
                        raise StaleWorker(f"worker pid {worker['pid']} {why}")
                    case Failed(error):
                        raise WorkerError(f"worker pid {worker['pid']}: {error}")
                    case other:
                        raise WorkerError(f"worker pid {worker['pid']}: unexpected {other}")
        except OSError:  # reset by the worker's death, or shut by the watchdog
            pass
    if watchdog is not None and (why := watchdog.stop()):
        raise isolation.Hung(why, running, where, checked)
    raise isolation.Crash(ended(), running, where, checked)


class Watchdog:
    """The job's wall-clock limits on one benchmark request (isolation.Limits), kept from outside the
    process that runs user code: a thread of the job that kills that process (`_kill`: the warm
    worker's process group, or the job's child, with their descendants) and shuts the connection when
    the phase it is in runs past its limit. Phases: from the start until the first candidate's checks
    (setup_s), each candidate's checks (checks_s, from its {"running": name}), the timed rounds and the
    audit (timed_s plus the setup's own time, from {"running": null}); never past limit_s in all.

    `stop()` ends the watch: why it fired (a line naming the limit, for isolation.Hung), or None."""

    def __init__(self, limits: isolation.Limits, connection: socket.socket, pid: int | None = None) -> None:
        self.limits = limits
        self.connection = connection
        self.pid = pid
        self.began = time.monotonic()
        self.overall = self.began + limits.limit_s
        self.setup_taken: float | None = None
        self.phase = "setup"
        self.budget = limits.setup_s
        self.deadline = min(self.began + self.budget, self.overall)
        self.fired: str | None = None
        self._done = False
        self._lock = threading.Lock()
        self._changed = threading.Event()
        threading.Thread(target=self._watch, name="attnbench-watchdog", daemon=True).start()

    @classmethod
    def of(
        cls, command: str, spec: dict[str, Any], connection: socket.socket, pid: int | None = None
    ) -> Watchdog | None:
        """The watchdog of a job that runs user code (attnbench.jobs.Job.runs_user_code); None for another."""
        if not jobs.get(command).runs_user_code:
            return None
        found = isolation.limits(spec)
        return None if found is None else cls(found, connection, pid)

    def watch(self, pid: int) -> None:
        """The process to kill: the worker that said hello."""
        with self._lock:
            self.pid = pid

    def running(self, name: str | None) -> None:
        """A phase starts: `name`'s checks, or (None) the timed rounds once the checks are done."""
        now = time.monotonic()
        with self._lock:
            if self.setup_taken is None:
                self.setup_taken = min(now - self.began, self.limits.setup_s)
            if name is not None:
                self.phase, self.budget = "checks", self.limits.checks_s
            else:
                self.phase, self.budget = "timed", self.limits.timed_s + self.setup_taken
            self.deadline = min(now + self.budget, self.overall)
        self._changed.set()

    def stop(self) -> str | None:
        with self._lock:
            self._done = True
        self._changed.set()
        return self.fired

    def _why(self) -> str:
        words = {
            "setup": "setting up the shape",
            "checks": "a candidate's checks",
            "timed": "the timed rounds and the audit",
        }[self.phase]
        if self.deadline >= self.overall and self.phase != "setup":
            limit = isolation.seconds(self.limits.limit_s)
            return (
                f"ran past the job's watchdog limit of {limit} s for the whole request"
                f" ({self.limits.explain('request')}) and was killed"
            )
        return (
            f"ran past the job's watchdog limit of {isolation.seconds(self.budget)} s for {words}"
            f" ({self.limits.explain(self.phase)}) and was killed"
        )

    def _watch(self) -> None:
        while True:
            with self._lock:
                if self._done:
                    return
                left = self.deadline - time.monotonic()
                if left <= 0:
                    self.fired = self._why()
                    pid = self.pid
                    break
                self._changed.clear()
            self._changed.wait(left)
        logging.getLogger("attnbench.worker").info(
            f"watchdog: the process measuring the shape (pid {pid}) {self.fired}"
        )
        if pid is not None:
            _kill(pid)
        try:  # the job's read ends even if a descendant we could not see still holds the other end
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def _kill(pid: int) -> None:
    """SIGKILL `pid` and its descendants, and its whole process group when it leads one (a warm worker,
    started in a session of its own) other than the job's."""
    import psutil

    try:
        descendants = psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        descendants = []
    try:
        group = os.getpgid(pid)
        if group == pid and group != os.getpgrp():
            os.killpg(group, signal.SIGKILL)
        else:
            os.kill(pid, signal.SIGKILL)
    except OSError:  # gone already
        pass
    for process in descendants:
        try:
            process.kill()
        except psutil.Error:
            pass


def _connect(path: Path, log: Callable[[str], None]) -> socket.socket:
    """Connect to the worker at `path`, starting it first if nothing listens there."""
    try:
        return _attempt(path)
    except (FileNotFoundError, ConnectionRefusedError, ConnectionResetError):
        pass  # none listens, or it retires
    except OSError as exc:  # a worker that does not say hello within HELLO_TIMEOUT_S: left to idle out
        log(f"the worker at {path.name} did not answer ({type(exc).__name__}: {exc})")
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


def _send(stream: TextIO, message: Message) -> None:
    fields = {field.name: getattr(message, field.name) for field in dataclasses.fields(message)}
    stream.write(json.dumps(files.jsonable({type(message).__name__.lower(): fields})) + "\n")
    stream.flush()


def _receive(line: str) -> Message | None:
    """The message on one line; None for an empty line (the other end closed) or one of no known kind."""
    message = json.loads(line) if line.strip() else None
    if not isinstance(message, dict) or len(message) != 1:
        return None
    ((kind, fields),) = message.items()
    return _KINDS[kind](**fields) if kind in _KINDS else None


def serve(path: Path, idle_s: float) -> None:
    """The worker: answer requests one at a time until idle for `idle_s`, or a job retires it or finds
    it stale."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    ours = identity(str(path))
    listener.listen(4)
    listener.settimeout(idle_s)
    # Held open, the directory keeps its inode even if it is removed: no other directory can take it.
    home = os.open(".", os.O_RDONLY | os.O_DIRECTORY)
    served = 0
    modules = usercode.UserModules(Path.cwd())
    modules.install()

    def stop_listening() -> None:
        """Before a retiring worker's last answer: the job that reads it may start the next worker at
        `path` at once, whose socket this must not remove. Nor one made there since (found in a test
        run: a worker whose socket a job had given up on, or whose folder was wiped, idled out and
        removed the socket of the worker that took its place)."""
        if listener.fileno() != -1:
            listener.close()
            try:
                if identity(str(path)) == ours:
                    path.unlink()
            except FileNotFoundError:
                pass

    try:
        while True:
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                return
            hello = Hello(os.getpid(), str(path.with_suffix(".log")), served)
            retire, answered = _serve_one(connection, home, hello, stop_listening, modules)
            served += answered
            if retire:
                return
    finally:
        stop_listening()


def serve_child(fd: int) -> None:
    """A child of one job (`run_child`): its one request, on the socket it inherited as `fd`."""
    home = os.open(".", os.O_RDONLY | os.O_DIRECTORY)
    _serve_one(socket.socket(fileno=fd), home, Hello(os.getpid(), None, 0), lambda: None)


def _serve_one(
    connection: socket.socket,
    home: int,
    hello: Hello,
    stop_listening: Callable[[], None],
    modules: usercode.UserModules | None = None,
) -> tuple[bool, bool]:
    """Answer the request on `connection`: whether the worker retires after it, and whether it ran the
    job. A warm worker first brings the user's modules up to date (`modules`; a child imports them
    fresh)."""
    with connection, connection.makefile("rw", encoding="utf-8") as stream:
        _send(stream, hello)
        request = _receive(stream.readline())
        if not isinstance(request, Request):
            return False, False
        os.fchdir(home)  # a user kernel may have left the worker elsewhere
        answer: Message
        if request.directory != identity(home):
            answer, retire = Stale(_whereabouts()), True
        elif modules is not None and (why := _refresh(modules, stream, request.spec)) is not None:
            answer, retire = Restart(why), True
        else:
            answer = _answer(connection, stream, request)
            retire = _retires(request.command, answer)
        if retire:
            stop_listening()
        _send(stream, answer)
    return retire, isinstance(answer, (Result, Failed, Lost))


def _refresh(modules: usercode.UserModules, stream: TextIO, spec: dict[str, Any]) -> str | None:
    """Reload the user's changed modules before a request: why this worker must retire instead, or None.
    Says what was reloaded in the job's log, and to the job (its `process.worker` record)."""
    from attnbench import timing

    try:
        # Re-imports run user code: bounded like a call (a module that catches that too is the job's
        # watchdog's, which kills this worker).
        with (
            _logs_to(stream),
            timing.deadline(TimingSettings.from_config(spec.get("timing")).call_timeout_s),
        ):
            reloaded, why = modules.refresh(spec)
    except Exception as exc:  # whatever went wrong, a fresh worker imports everything anew
        reloaded, why = [], f"could not check the user's modules for changes ({type(exc).__name__}: {exc})"
    if why is None:
        _send(stream, Reloaded(reloaded))
    return why


def _whereabouts() -> str:
    """The worker's own directory, for a job that finds another at its path."""
    try:
        return f"is now at {os.getcwd()}"
    except FileNotFoundError:
        return "has been removed"


def _retires(command: str, answer: Message) -> bool:
    """After an error or a lost CUDA context, a benchmark where a candidate ended in error or timeout
    (its CUDA context may be poisoned), or a document whose `process_changes` says that user code changed
    the process (attnbench.guard): what guard restored may not be all it changed, and a warm worker
    must never carry one job's patched functions, variables or threads into the next."""
    if not isinstance(answer, Result):
        return True
    if answer.document.get("process_changes"):
        return True
    if not jobs.get(command).runs_user_code:  # no statuses (the report's `candidates` are tallies)
        return False
    statuses = {entry["status"] for entry in answer.document.get("candidates", {}).values()}
    return bool(statuses & set(RETIRING_STATUSES))


def _answer(connection: socket.socket, stream: TextIO, request: Request) -> Result | Failed | Lost:
    """Run one job for the job process at the other end: the message that answers it."""
    connection.settimeout(None)
    done = threading.Event()

    def exit_if_the_job_dies() -> None:
        # The job sends nothing after its request: end of file means it died, and its GPU lease with
        # it; stop using the GPU at once rather than finish a shape nobody waits for.
        try:
            connection.recv(1)
        except OSError:
            # A job killed with messages of ours unread resets the connection instead of closing it:
            # as dead (found by test_worker_stops_when_its_job_dies, which failed now and then).
            pass
        if not done.is_set():
            os._exit(3)

    def running(name: str | None) -> None:
        _send(stream, Running(name))

    threading.Thread(target=exit_if_the_job_dies, daemon=True).start()
    try:
        # Validated here, where jsonschema is imported once for every job: the job writes the
        # document without importing it again (cli.main). The schema's path is resolved before the
        # job runs: a user kernel may change the working directory.
        schema = jobs.output_schema(request.command, request.schemas)
        schema = None if schema is None else schema.resolve()
        with _logs_to(stream):
            result = jobs.run(request.command, request.spec, request.schemas, running)
        files.validate(files.stamped(result), schema, source=f"the {request.command} job's document")
        return Result(result)
    except isolation.ContextLost as lost:  # this worker retires: nothing more can run in its context
        return Lost(lost.error, lost.candidate)
    except Exception as exc:
        return Failed(f"{type(exc).__name__}: {exc}")
    finally:
        done.set()


class _StreamLog:
    """sys.stderr for the duration of a request: each write goes to the job as a Log message."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def write(self, text: str) -> int:
        if text:
            _send(self.stream, Log(text))
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
