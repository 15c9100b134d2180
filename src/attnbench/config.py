"""The run's configuration as the workflow sees it: device resolved, CPU fallback applied, checked
(each job's spec is built from it in attnbench.jobs).

Runs in the Snakemake process at parse time, so it must stay cheap: torch is imported only when an
NVIDIA driver is present and the device is 'auto' or 'cuda' (attnbench.device).
"""

from __future__ import annotations

import copy
import difflib
import functools
import itertools
import math
import os
import re
import reprlib
import shlex
from collections.abc import Callable, Iterable, Mapping
from typing import Any, NotRequired, TypedDict, cast

import jsonschema
import yaml
from snakemake.utils import update_config

from attnbench import candidates, capacity, configfile, device, files, lock, presets, settings
from attnbench.usercode import CandidateName

# The run's config, relative to its working directory (Snakemake's standard layout): the workflow's
# `configfile:`, and the file `attnbench run` writes.
CONFIG_FILE = "config/config.yaml"
# Keys that the `cpu:` section may override when the run falls back to the CPU.
CPU_OVERRIDABLE = ("dtype", "mode", "candidates", "reference", "shapes", "timing", "calibrate")
# The top-level defaults of workflow/schemas/config.schema.yaml (tests/test_defaults.py keeps them
# equal): Snakemake's validate fills only some of them (not those behind a $ref).
DEFAULTS: dict[str, Any] = {
    "device": "auto",
    "dtype": "bfloat16",
    "mode": "forward",
    "sanitize_crashes": False,
    "fail_on_failed_candidates": False,
}


class RunConfig(TypedDict):
    """The config a run uses (`resolve`): the given config with its defaults, the `cpu:` section applied
    on the CPU and `--config` keys over it, the device resolved, presets and sweeps expanded into
    named shapes, kernels' grids into their configurations. Every job's spec is built from it
    (attnbench.jobs), for the Snakefile, `attnbench run` and `attnbench.compare` alike."""

    device: str  # cuda or cpu: resolved
    requested_device: str  # auto, cuda or cpu: as given
    dtype: str
    mode: str
    candidates: list[str]  # a grid's kernel as its configurations (candidates.expand)
    reference: str
    shapes: list[dict[str, Any]]
    shapes_by_name: dict[str, dict[str, Any]]
    kernel_hashes: dict[str, str]  # each user kernel's source digest: a change reruns its shapes
    sanitize_crashes: bool
    fail_on_failed_candidates: bool
    timing: NotRequired[dict[str, Any]]
    lock: NotRequired[dict[str, Any]]
    tolerance: NotRequired[dict[str, float]]
    tolerances: NotRequired[dict[str, float]]  # declared approximations, per candidate or kernel
    stats: NotRequired[dict[str, Any]]
    calibrate: NotRequired[dict[str, Any]]
    ratchet: NotRequired[dict[str, Any]]
    report: NotRequired[dict[str, Any]]
    baseline: NotRequired[str]
    threads: NotRequired[int]


class ConfigError(ValueError):
    """The config cannot be run; the message names the field and the value."""


def _short_traceback(function: Callable[..., Any]) -> Callable[..., Any]:
    """Snakemake prints the traceback of an error raised while it parses the workflow: keep attnbench's
    frames out of it, the message says everything."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except ConfigError as error:
            raise error.with_traceback(None) from None

    return wrapper


# How many problems a config error lists; most configs have one or two.
MAX_LISTED = 10
# How long one of its lines may be, and how much of a value it shows.
MAX_LINE_CHARS = 300
SHOWN_CHARS = 60
# Unknown keys first, missing keys last (validate's docstring says why).
_RANK = {"additionalProperties": 0, "required": 2}


@_short_traceback
def check_files(paths: Iterable[str | os.PathLike[str]]) -> None:
    """Refuse a config file beyond attnbench.configfile's bounds (its size, a value's length, its values
    counted through its aliases), or that is not YAML (at its line and column): the Snakefile calls it
    on config.yaml and each --configfile before its `configfile:` directive has Snakemake load them."""
    try:
        configfile.check_files(paths)
    except (configfile.Unbounded, configfile.Invalid) as exc:
        raise ConfigError(str(exc)) from None


def _bounded(config: Any, name: str = "the config") -> None:
    """The bounds of a config file, on a config in memory (--config values, a config built in Python):
    nothing below walks it as a tree or takes its repr before this."""
    try:
        configfile.check_value(config, name)
    except configfile.Unbounded as exc:
        raise ConfigError(str(exc)) from None


@_short_traceback
def validate(config: Mapping[str, Any], schema_path: str | os.PathLike[str]) -> None:
    """Check `config` against the schema and list what is wrong, each with its path and, for a
    misspelt key, enum value or candidate, the closest valid one. Snakemake's own validate (which the
    Snakefile calls next, to fill the defaults) reports one error, in jsonschema's terms, followed by
    the schema and the whole offending value: hundreds of lines. A config beyond attnbench.configfile's
    bounds is refused first: jsonschema's messages take the repr of the value."""
    _bounded(config)
    validator = jsonschema.Draft202012Validator(files.load_schema(schema_path))
    # Most useful first: a misspelt key usually explains a missing required one next to it.
    errors = sorted(validator.iter_errors(config), key=lambda e: _RANK.get(e.validator, 1))
    lines = [_clipped(line) for error in errors for line in _describe(config, error)]
    if lines:
        hidden = len(lines) - MAX_LISTED
        raise ConfigError("\n".join(lines[:MAX_LISTED] + [f"... and {hidden} more"] * (hidden > 0)))


def _describe(config: Mapping[str, Any], error: jsonschema.ValidationError) -> list[str]:
    where, value, schema = _where(config, error.absolute_path), error.instance, error.validator_value
    if error.validator == "additionalProperties":
        known = sorted(error.schema.get("properties", {}))
        return [f"{where}: unknown key {_short(key)}{_suggest(key, known)}" for key in value if key not in known]
    if error.validator == "required":
        return [f"{where}: missing required key {key!r}" for key in schema if key not in value]
    if error.validator == "anyOf" and all(set(option) == {"required"} for option in schema):
        # a shape needs heads and dim (or a preset), and batch and seq (or seq_lens)
        options = [" and ".join(repr(key) for key in option["required"] if key not in value) for option in schema]
        return [f"{where}: missing required key {' (or '.join(options)}{')' * (len(options) - 1)}"]
    if error.validator == "pattern" and list(error.absolute_path)[-2:-1] == ["candidates"]:
        return [_unknown_candidate(where, value)]
    if error.validator == "enum":
        choices = ", ".join(map(str, schema))
        return [f"{where}: {_short(value)} is not one of {choices}{_suggest(value, schema)}"]
    if error.validator == "not" and set(schema) == {"pattern"}:
        return [f"{where}: {_short(value)} must not match {schema['pattern']!r}"]
    message = f"{where}: {error.message.replace(repr(value), _short(value), 1)}"
    if error.validator == "type" and isinstance(value, str) and _reads_as_scalar(value):
        if isinstance(yaml.safe_load(value), bool):  # --config key=true: Snakemake takes only True/False
            message += f" (on --config, write {str(yaml.safe_load(value))}: Snakemake reads other spellings as text)"
        else:
            message += (
                " (text: quoted in YAML, or inside [...] or {...} of --config, which Snakemake reads as text)"
            )
    return [message]


def _reads_as_scalar(text: str) -> bool:
    try:
        return isinstance(yaml.safe_load(text), (bool, int, float))
    except yaml.YAMLError:
        return False


def _where(config: Mapping[str, Any], path: Iterable[str | int]) -> str:
    """`cpu.shapes[0].batch (b2_h8_s128_d64)`: the path, and the name of the innermost named item."""
    text, node, named = "", config, ""
    for key in path:
        text += f"[{key}]" if isinstance(key, int) else f".{key}" if text else key
        node = node[key]
        if isinstance(key, int) and isinstance(node, Mapping) and isinstance(node.get("name"), str):
            named = f" ({node['name']})"
    if text.endswith(".name"):  # the name is the error itself
        named = ""
    return (text or "top level") + named


def _suggest(word: Any, choices: Iterable[Any]) -> str:
    close = difflib.get_close_matches(word, [str(c) for c in choices], n=1) if isinstance(word, str) else []
    return f"; did you mean {close[0]!r}?" if close else ""


def _short(value: Any, limit: int = SHOWN_CHARS) -> str:
    """The repr of `value`, at most `limit` characters: taken of a bounded part of it (a string's first
    characters, a few items of a list or mapping), never of the whole."""
    if isinstance(value, str):
        text = repr(value[:limit])
    else:
        shown = reprlib.Repr()
        shown.maxlevel, shown.maxstring, shown.maxother = 3, limit, limit
        shown.maxlist = shown.maxtuple = shown.maxdict = shown.maxset = 6
        text = shown.repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _clipped(line: str) -> str:
    return line if len(line) <= MAX_LINE_CHARS else line[: MAX_LINE_CHARS - 3] + "..."


def _unknown_candidate(where: str, name: Any) -> str:
    return (
        f"{where}: unknown candidate {_short(name)}: use one of {', '.join(candidates.BUILTIN)} or "
        f"module:function{_suggest(name, candidates.BUILTIN)}"
    )


@_short_traceback
def resolve(config: Mapping[str, Any], overrides: Mapping[str, Any] | None = None) -> RunConfig:
    """The config this run uses, a new dict (Snakemake's `config` is left as it was): on the CPU the
    `cpu:` section replaces the keys it names, and then `overrides` win over it.

    `overrides` are the keys given with `--config` (Snakemake's `workflow.config_settings.config`,
    already merged into `config`; merging them again changes nothing). Without this, `--config
    candidates=[flash,math]` on a CPU machine was silently replaced by `cpu: candidates`. They merge
    as Snakemake merges them into config.yaml: a mapping key by key (`--config "timing={mode: warm}"`
    changes the mode of the CPU's timing and keeps the rest), anything else replaced. A `--configfile`
    is not an override: it is merged into config.yaml, its `cpu:` section included, which then applies.

    Both the GPU and the CPU view are checked whatever device runs, so a mistake in the section this
    machine does not run is found here too, not on the cluster. `device: cuda` on a machine where torch
    cannot use a GPU fails here, at parse time, before any job.
    """
    _bounded(config)
    _bounded(overrides or {}, "--config")
    overrides = {key: value for key, value in (overrides or {}).items() if key != "cpu"}
    config = copy.deepcopy({**DEFAULTS, **config})
    update_config(config, copy.deepcopy(dict(overrides)))
    cpu_section = config.get("cpu") or {}
    gpu_view = {key: value for key, value in config.items() if key != "cpu"}
    cpu_view = copy.deepcopy(gpu_view | {k: v for k, v in cpu_section.items() if k in CPU_OVERRIDABLE})
    update_config(cpu_view, copy.deepcopy(overrides))
    for view, where in ((gpu_view, "shapes"), (cpu_view, "cpu.shapes" if "shapes" in cpu_section else "shapes")):
        view["shapes"] = _with_presets(_swept(view["shapes"], where), where)
    cpu_where: Callable[[str], str] = (
        (lambda key: f"cpu.{key}" if key in cpu_section and key not in overrides else key) if cpu_section else str
    )
    check(gpu_view)
    if cpu_section:
        check(cpu_view, cpu_where)
    _check_tolerances(config.get("tolerances") or {}, [gpu_view, cpu_view])
    requested = config["device"]
    if requested == "cuda" and (reason := device.cuda_unusable_reason()):
        raise ConfigError(f"device: 'cuda', but {reason}; use device: auto (falls back to the CPU) or cpu")
    resolved = device.resolve(requested)
    # Impossible shapes before any job: the view that runs here against this device's memory; on the
    # CPU with device: auto, the GPU view against any GPU's (it runs where there is one).
    if resolved == "cuda":
        _fits(gpu_view, "cuda", str)
    else:
        _fits(cpu_view, "cpu", cpu_where)
        if requested == "auto":
            _fits(gpu_view, "any GPU", str)
    run = cpu_view if resolved == "cpu" else gpu_view
    run |= {"device": resolved, "requested_device": requested}
    # Built once per parse, not once per job: a sweep can have thousands of jobs.
    run["shapes_by_name"] = {shape["name"]: shape for shape in run["shapes"]}
    # A kernel that declares a grid stands for its configurations (attnbench.candidates.expand).
    run["candidates"] = candidates.expand(run["candidates"])
    if run["reference"] not in run["candidates"]:
        configurations = [c for c in run["candidates"] if CandidateName.parse(c).family == run["reference"]]
        raise ConfigError(
            f"reference: {run['reference']!r} declares a grid of {len(configurations)} configurations; the"
            f" reference must be one candidate: name one configuration, e.g. {configurations[0]!r}"
        )
    # Once per kernel, not per configuration: a grid of 64 reads and hashes its sources once.
    kernels = [name for name in map(CandidateName.parse, run["candidates"]) if name.is_user]
    sources = {
        base: candidates.user_kernel_source_hash(base) for base in dict.fromkeys(k.family for k in kernels)
    }
    run["kernel_hashes"] = {str(kernel): sources[kernel.family] for kernel in kernels}
    return cast(RunConfig, run)


def _fits(view: dict[str, Any], on: str, where: Callable[[str], str]) -> None:
    """Refuse the first shape of `view` whose lower bound on memory (attnbench.capacity) exceeds what
    `on` has, with the numbers."""
    has, what = capacity.available(on)
    for shape in view["shapes"]:
        direction = shape.get("mode", view["mode"])
        if why := capacity.problem(shape, view["dtype"], direction, view["reference"], on, has, what):
            raise ConfigError(f"{where('shapes')}: {shape['name']}: {why}")


# How a swept key shows in the shape names it makes (sweep: {batch: [1, 16]} -> name_b1, name_b16).
SWEEP_NAMES = {"batch": "b", "seq": "s", "cache_lens": "cache", "seq_lens": "docs", "page_size": "page", "kv_dtype": ""}


def _swept(shapes: list[dict[str, Any]], where: str) -> list[dict[str, Any]]:
    """Each shape with a `sweep` replaced by one shape per combination of the sweep's values (a named
    sweep from presets.yaml, or the mapping given), named after them; the others as they are."""
    expanded = []
    for shape in shapes:
        if "sweep" not in shape:
            expanded.append(shape)
            continue
        given = shape["sweep"]
        try:
            axes = presets.sweep(given) if isinstance(given, str) else dict(given)
        except ValueError as exc:
            raise ConfigError(f"{where}: {shape.get('name')}: {exc}") from None
        base = {key: value for key, value in shape.items() if key != "sweep"}
        for combination in itertools.product(*(list(enumerate(values)) for values in axes.values())):
            parts = [base["name"]]
            for key, (index, value) in zip(axes, combination):
                if isinstance(value, bool):  # causal: true -> name_causal, false -> name_noncausal
                    parts.append(key if value else f"non{key}")
                    continue
                shown = value if isinstance(value, (int, float, str)) else index
                parts.append(re.sub(r"[^A-Za-z0-9.-]", "", f"{SWEEP_NAMES.get(key, key)}{shown}"))
            expanded.append({**base, **{key: value for key, (_, value) in zip(axes, combination)}, "name": "_".join(parts)})
    return expanded


def _with_presets(shapes: list[dict[str, Any]], where: str) -> list[dict[str, Any]]:
    """Each shape with its model preset's geometry filled in (attnbench.presets): the jobs' specs hold
    the numbers, so editing a preset reruns the shapes that use it."""
    filled = []
    for shape in shapes:
        try:
            filled.append(presets.apply(shape))
        except ValueError as exc:
            raise ConfigError(f"{where}: {shape.get('name')}: {exc}") from None
    return filled


def check(run: dict[str, Any], where: Callable[[str], str] = str) -> None:
    """What the schema cannot say: unique shape names, a reference among the candidates, known
    candidates whose user kernels exist (found here, not after a whole run), heads a multiple of
    kv_heads. `where` names a key in the messages (`cpu.shapes` for the CPU view)."""
    names = [shape["name"] for shape in run["shapes"]]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(f"{where('shapes')}: duplicate shape names {duplicates}")
    if run["reference"] not in run["candidates"]:
        raise ConfigError(
            f"{where('reference')}: {run['reference']!r} is not one of candidates {run['candidates']}"
        )
    for name in run["candidates"]:
        parsed = CandidateName.parse(name, strict=False)  # a malformed configuration: user_kernel_problem's
        if not (parsed.is_builtin or parsed.is_user):
            raise ConfigError(_unknown_candidate(where("candidates"), name))
        if parsed.is_user and (problem := candidates.user_kernel_problem(name)):
            raise ConfigError(f"{where('candidates')}: {name!r}: {problem}")
    for shape in run["shapes"]:
        problem = _shape_problem(shape)
        if problem:
            raise ConfigError(f"{where('shapes')}: {shape['name']}: {problem}")
    from attnbench import ratchet

    defaults = {"stats": (settings.ALPHA, settings.THRESHOLD, settings.RESOLUTION)}
    defaults["ratchet"] = tuple(ratchet.DEFAULTS[key] for key in ("alpha", "threshold", "resolution"))
    for section, (alpha, threshold, resolution) in defaults.items():
        given = run.get(section) or {}
        problem = _stats_problem(
            given.get("alpha", alpha), given.get("threshold", threshold), given.get("resolution", resolution),
            given.get("confidence"),
        )
        if problem:
            raise ConfigError(f"{where(section)}: {problem}")


def _check_tolerances(tolerances: dict[str, float], views: list[dict[str, Any]]) -> None:
    """Each declared tolerance names a candidate, or a kernel with configurations, of the GPU's or the
    CPU's candidates (the map is one for both: jobs apply it to the candidates each view runs)."""
    named = {name for view in views for name in view["candidates"]}
    named |= {CandidateName.parse(name, strict=False).family for name in named}
    for name in tolerances:
        if name not in named:
            raise ConfigError(
                f"tolerances: {name!r} is not one of candidates {sorted(named)}: a declared tolerance names "
                "a candidate, or a kernel with configurations"
            )


def _stats_problem(alpha: float, threshold: float, resolution: float, confidence: float | None) -> str | None:
    """What a comparison's settings say that would let a verdict contradict its interval, or None."""
    if resolution > threshold:
        return (
            f"resolution {resolution} exceeds threshold {threshold}: a verdict of 'same' could then sit "
            "beside an interval wholly outside the practical band; make resolution at most threshold"
        )
    if confidence is not None and not math.isclose(confidence, 1.0 - alpha):
        return (
            f"confidence {confidence} is not 1 - alpha ({1.0 - alpha:g}): the interval is the one the test "
            "inverts, so its confidence follows alpha; remove confidence or set alpha instead"
        )
    return None


def _decode_problem(shape: dict[str, Any], caches: list[int] | dict[str, Any]) -> str | None:
    """What a decode shape (cache_lens) says that cannot be measured, or None."""
    queries = shape.get("seq") or 1
    if any(key in shape for key in ("seq_kv", "seq_lens", "seq_lens_kv")):
        return "cache_lens gives each request's keys: leave out seq_kv, seq_lens and seq_lens_kv"
    if shape.get("causal_alignment") == "top_left":
        return "decode (cache_lens) is causal and bottom-right aligned: the new queries see the whole cache"
    if isinstance(caches, list):
        if len(caches) != shape["batch"]:
            return f"cache_lens lists {len(caches)} requests, batch is {shape['batch']}"
        shortest = min(caches)
    else:
        if not caches["min"] <= caches["mean"] <= caches["max"]:
            return f"cache_lens: mean {caches['mean']} is not between min {caches['min']} and max {caches['max']}"
        shortest = caches["min"]
    if shortest < queries:
        return f"a cache of {shortest} keys is shorter than the {queries} new queries it must hold"
    return None


def _shape_problem(shape: dict[str, Any]) -> str | None:
    """What a shape says that cannot be measured, or None (the schema checked each key alone; a shape a
    sweep or a preset completed is checked here for what the schema would have required)."""
    if "heads" not in shape or "dim" not in shape:
        return "missing heads and dim (give them, or a preset)"
    if not ({"batch", "seq"} <= shape.keys() or "seq_lens" in shape or {"batch", "cache_lens"} <= shape.keys()):
        return "missing batch and seq (or seq_lens, or batch and cache_lens)"
    heads, kv_heads = shape["heads"], shape.get("kv_heads") or shape["heads"]
    if heads % kv_heads:
        return f"heads {heads} is not a multiple of kv_heads {kv_heads}"
    if shape.get("prefix") and not shape.get("causal"):
        return "prefix (prefix-LM) needs causal: true (without causal every query sees every key already)"
    if shape.get("q_dtype") and shape.get("kv_dtype") != shape["q_dtype"]:
        return (
            f"q_dtype {shape['q_dtype']} needs kv_dtype {shape['q_dtype']}: fp8 queries read an fp8 cache of"
            " the same format, whose descale keeps an fp8 output in range"
        )
    caches = shape.get("cache_lens")
    if caches is not None:
        return _decode_problem(shape, caches)
    if shape.get("seq_lens_kv") is not None:
        if shape.get("seq_lens") is None or not isinstance(shape["seq_lens"], list):
            return "seq_lens_kv needs seq_lens as a list (each document's queries, then its keys)"
        if len(shape["seq_lens_kv"]) != len(shape["seq_lens"]):
            return f"seq_lens_kv has {len(shape['seq_lens_kv'])} documents, seq_lens {len(shape['seq_lens'])}"
    if shape.get("page_size") and caches is None:
        return "page_size pages a decode KV cache: give cache_lens too"
    lengths = shape.get("seq_lens")
    if lengths is not None:
        if shape.get("batch", 1) != 1 or "seq" in shape or "seq_kv" in shape:
            return "seq_lens gives the packed batch's tokens: leave out batch, seq and seq_kv (they follow from it)"
        if isinstance(lengths, dict) and lengths["min"] > lengths["max"]:
            return f"seq_lens: min {lengths['min']} is above max {lengths['max']}"
    return None


def shape_names(run: dict[str, Any]) -> list[str]:
    return [shape["name"] for shape in run["shapes"]]


def job_env(run: dict[str, Any]) -> str:
    """`env A=1 B=2` prefix: the lock's start-up variables, set before the job's Python starts."""
    variables = lock.job_env(run.get("lock"))
    return "env " + " ".join(f"{k}={shlex.quote(v)}" for k, v in sorted(variables.items()))
