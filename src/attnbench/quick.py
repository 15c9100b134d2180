"""`attnbench run`: the quick path. Shapes and candidates from the command line or a small YAML file
become the config/config.yaml of a working directory of the run's own, where the same Snakemake workflow
runs (`snakemake -s <checkout>/workflow/Snakefile -d <workdir>`); the headline and the report's path are printed
at the end.

Why the workflow and not a shortcut: the jobs, the statistics and the report are then those of every
other run, and an interrupted quick run resumes like any other (the same command finds the same
working directory, named by a hash of its config).

Shapes have a compact syntax, shared with the Python API (attnbench.shape_syntax).

Defaults are the checkout's config/config.yaml (its shapes too, when none is given), `cpu:` section included;
what you give applies on the GPU and on the CPU alike. The reference (default math) is always measured.
The run's directory is attnbench-runs/<hash of its config> under the current directory (--workdir
names another); user kernels module:function are imported from the current directory or PYTHONPATH.
"""

from __future__ import annotations

import copy
import hashlib
import os
import shlex
import subprocess
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from attnbench import config as run_config
from attnbench import configfile, terminal
from attnbench.shape_syntax import parse_shape, shape_entry

# Keys of the checkout's config/config.yaml that a quick run starts from; a baseline, the ratchet and the
# report's title belong to that run, not to this one.
BASE_KEYS = (
    "device",
    "dtype",
    "mode",
    "candidates",
    "reference",
    "shapes",
    "timing",
    "lock",
    "stats",
    "calibrate",
    "cpu",
)
RUNS_DIR = "attnbench-runs"
# Snakemake's standard layout (the config file in a run's working directory: config.CONFIG_FILE).
SNAKEFILE = "workflow/Snakefile"
# A checkout of attnbench whose workflow `attnbench run` runs, instead of the editable install's.
CHECKOUT_VARIABLE = "ATTNBENCH_CHECKOUT"


class QuickRunError(RuntimeError):
    """`attnbench run` cannot start: the message says why."""


def checkout() -> Path:
    """The checkout holding the workflow: the quick path runs the workflow from there. An editable
    install (`pip install -e .`) keeps it next to the package; CHECKOUT_VARIABLE names another (a
    clone, for an installed package)."""
    import attnbench

    named = os.environ.get(CHECKOUT_VARIABLE)
    root = Path(named).resolve() if named else Path(attnbench.__file__).resolve().parents[2]
    if not (root / SNAKEFILE).is_file():
        raise QuickRunError(
            f"no {SNAKEFILE} in {root}: `attnbench run` runs the workflow of a checkout of attnbench; install "
            f"from one with `pip install -e .`, or set {CHECKOUT_VARIABLE} to one "
            "(or, in Python, use attnbench.compare, which needs none)"
        )
    return root


def _merge(into: dict[str, Any], key: str, value: Any) -> None:
    """Sections (timing, calibrate, lock, stats) are merged key by key; anything else replaces."""
    if isinstance(value, Mapping) and isinstance(into.get(key), Mapping):
        into[key] = {**into[key], **value}
    else:
        into[key] = copy.deepcopy(value)


def _shapes(entries: Iterable[Any]) -> list[dict[str, Any]]:
    return [shape_entry(entry) for entry in entries]


def build_config(base: Mapping[str, Any], given: Mapping[str, Any]) -> dict[str, Any]:
    """The quick run's config: the checkout's defaults (`base`, its `cpu:` section included), then what
    the user gave (file and flags). A key the user gave applies on the CPU too (unless the user's own
    `cpu:` section names it), and the reference runs even when it is not among the candidates."""
    merged = copy.deepcopy({key: value for key, value in base.items() if key in BASE_KEYS})
    given = copy.deepcopy(dict(given))
    user_cpu = given.pop("cpu", None) or {}
    for key, value in given.items():
        _merge(merged, key, value)
        cpu = merged.get("cpu")
        if cpu is not None and key in run_config.CPU_OVERRIDABLE:
            if isinstance(value, Mapping) and isinstance(cpu.get(key), Mapping):
                _merge(cpu, key, value)
            else:
                cpu.pop(key, None)
    for key, value in user_cpu.items():
        _merge(merged.setdefault("cpu", {}), key, value)
    for view in (merged, merged.get("cpu")):
        if view is None:
            continue
        if "shapes" in view:
            view["shapes"] = _shapes(view["shapes"])
        candidates = list(view.get("candidates", merged.get("candidates", [])))
        reference = view.get("reference", merged.get("reference"))
        if reference is not None and reference not in candidates:
            view["candidates"] = [*candidates, reference]
    return merged


def given_config(args: Any) -> dict[str, Any]:
    """What the user asked for: the YAML file (any config keys; shapes may be strings), then the flags."""
    given: dict[str, Any] = {}
    if args.file is not None:
        try:
            configfile.check_file(args.file)  # bounded before any YAML is built (issue 31)
            loaded = yaml.safe_load(Path(args.file).read_text(encoding="utf-8")) or {}
        except configfile.Invalid as exc:  # file:line:column, and the line
            raise QuickRunError(str(exc)) from None
        except (OSError, yaml.YAMLError, configfile.Unbounded) as exc:
            raise QuickRunError(f"cannot read {args.file}: {exc}") from exc
        if not isinstance(loaded, dict):
            raise QuickRunError(
                f"{args.file}: expected a mapping of config keys, got {type(loaded).__name__}"
            )
        given.update(loaded)
    if args.candidates:
        given["candidates"] = [name for group in args.candidates for name in group.split(",") if name]
    if args.shapes:
        given["shapes"] = [parse_shape(text) for text in args.shapes]
    for key in ("reference", "dtype", "device", "mode"):
        if getattr(args, key) is not None:
            given[key] = getattr(args, key)
    if args.max_time_s is not None:
        given["timing"] = {**(given.get("timing") or {}), "max_time_s": args.max_time_s}
    return given


def workdir_for(config: Mapping[str, Any], cwd: Path) -> Path:
    """attnbench-runs/<hash of the config>: the same command finds the same directory, so it resumes an
    interrupted run and measures nothing twice (pass `-- --forceall` to measure again)."""
    digest = hashlib.sha256(yaml.safe_dump(dict(config), sort_keys=True).encode()).hexdigest()[:10]
    return cwd / RUNS_DIR / digest


def snakemake_command(root: Path, workdir: Path, gpus: int, extra: list[str]) -> list[str]:
    """The workflow profile is named explicitly: Snakemake looks for profiles/default in the current
    directory before the Snakefile's, and the caller's directory may hold another."""
    return [
        sys.executable, "-m", "snakemake",
        "--snakefile", str(root / SNAKEFILE),
        "--directory", str(workdir),
        "--configfile", str(workdir / run_config.CONFIG_FILE),
        "--workflow-profile", str(root / "profiles" / "default"),
        "--cores", str(gpus),
        "--resources", f"gpu={gpus}",
        *extra,
    ]  # fmt: skip


def job_environment(cwd: Path, root: Path) -> dict[str, str]:
    """The jobs run in the working directory; user kernels (module:function) still resolve from where
    `attnbench run` was called (first on PYTHONPATH), then from PYTHONPATH, then from the checkout (the
    default CPU config's examples.kernels). The interpreter's directory leads PATH, as the jobs call
    `python -m attnbench`."""
    # Absolute: Snakemake runs the jobs in the run's directory, where a relative entry means another place.
    given = [str((cwd / entry).resolve()) for entry in os.environ.get("PYTHONPATH", "").split(os.pathsep) if entry]
    path = [str(cwd), *given, str(root)]
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(dict.fromkeys(path)),
        terminal.HEADLINE_VARIABLE: "1",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }


def _headline(results: Path, report: Path | None, finished: bool) -> tuple[str | None, list[dict[str, Any]]]:
    """The headline text and the failed candidates. After a failed run the results may be partial:
    a headline that cannot be made then is said, not raised."""
    from attnbench import headline

    try:
        summary = headline.load(results)
        return terminal.answer(summary, results, report), headline.failed(summary)
    except Exception as exc:
        if finished:
            raise
        return f"attnbench run: no headline from the partial results ({type(exc).__name__}: {exc})", []


def _wait_for(command: list[str], cwd: Path, env: dict[str, str]) -> int:
    """Snakemake's exit status. Ctrl-C reaches Snakemake too (same process group): it is left to stop
    its jobs and release its lock, where subprocess.run would kill it after 0.25 s."""
    process = subprocess.Popen(command, cwd=cwd, env=env)
    while True:
        try:
            code = process.wait()
        except KeyboardInterrupt:
            continue
        return 128 - code if code < 0 else code  # killed by a signal: the shell's convention


def run(args: Any, snakemake_args: list[str]) -> int:
    """`attnbench run`: write the config, run the workflow in its working directory with its output
    streamed, print the headline. Exit: Snakemake's when it failed; else 1 with --fail-on-failed
    and a failed candidate; else 0."""
    root = checkout()
    cwd = Path.cwd()
    base_file = root / run_config.CONFIG_FILE
    base = yaml.safe_load(base_file.read_text(encoding="utf-8")) if base_file.is_file() else {}
    config = build_config(base or {}, given_config(args))
    # Checked here, where the user's modules resolve as they will in the jobs: a mistake is one line,
    # not a Snakemake traceback.
    env = job_environment(cwd, root)
    saved_path = list(sys.path)
    sys.path[:0] = [p for p in env["PYTHONPATH"].split(os.pathsep) if p not in sys.path]
    try:
        run_config.validate(config, root / "workflow" / "schemas" / "config.schema.yaml")
        run_config.resolve(config)
    except run_config.ConfigError as exc:
        raise QuickRunError(f"config: {exc}") from exc
    finally:
        sys.path[:] = saved_path
    workdir = Path(args.workdir).resolve() if args.workdir else workdir_for(config, cwd)
    workdir.mkdir(parents=True, exist_ok=True)
    command = snakemake_command(root, workdir, args.gpus, snakemake_args)
    (workdir / run_config.CONFIG_FILE).parent.mkdir(exist_ok=True)
    (workdir / run_config.CONFIG_FILE).write_text(
        f"# written by `attnbench run` in {cwd}; run again with the same command, or (PYTHONPATH as there):\n"
        f"# {shlex.join(['python', *command[1:]])}\n" + yaml.safe_dump(config, sort_keys=False),
        encoding="utf-8",
    )
    print(f"attnbench run: working directory {workdir}", flush=True)
    code = _wait_for(command, cwd, env)
    results = workdir / "results"
    report = results / "report" / "report.html"
    text, failed = None, []
    if any((results / "bench").glob("*.json")):
        text, failed = _headline(results, report if report.is_file() else None, finished=code == 0)
        if text:
            print(text)
    if report.is_file() and str(report) not in (text or ""):
        print(f"report: {report}")
    if code != 0:
        return code
    return 1 if args.fail_on_failed and failed else 0
