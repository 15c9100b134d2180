"""Model presets and named sweeps.

A shape may name a model (`preset: llama-3.1-8b`) instead of spelling out its attention geometry, so
the benchmarked shapes match the published configurations instead of whatever someone typed (issue
16). A shape may also name a sweep (`sweep: decode-serving`): lists of values for some of its keys
(batch, seq, cache_lens...), which the config expands into one shape per combination (issues 16 and
17), so that a prefill or decode sweep is a preset plus the lengths typical benchmarks use.

Both live in presets.yaml, shipped with the package, under `models:` and `sweeps:`; each entry cites
where its values come from.
"""

from __future__ import annotations

import copy
import difflib
import functools
import re
from collections.abc import Mapping
from importlib import resources
from typing import Any

import yaml

# The geometry a preset gives a shape; apply() copies these fields and nothing else.
GEOMETRY = ("heads", "kv_heads", "dim", "dim_v", "window", "softcap", "scale", "alibi")
# Documentation of the preset itself, kept out of shapes.
META = ("source", "notes")
REQUIRED = ("heads", "kv_heads", "dim", "source")
# Head dims the attention kernels of interest support (FlashAttention and friends stop at 256).
MAX_HEAD_DIM = 256
_FILE = "presets.yaml"
# The file's sections: models is required, sweeps optional.
SECTIONS = ("models", "sweeps")
# The shape keys a sweep may vary, each a list of values for one key (the config makes one shape per
# combination). Geometry comes from the shape (or its preset), never from a sweep.
SWEEP_KEYS = ("batch", "seq", "seq_lens", "cache_lens", "page_size", "kv_dtype", "causal")
KV_DTYPES = ("float8_e4m3fn", "float8_e5m2")
# A sweep's name may end up in shape names, so it is spelt as one (the config schema's name pattern).
_SWEEP_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


class PresetError(ValueError):
    """presets.yaml holds a preset that cannot be used; the message names it and the field."""


def load() -> dict[str, dict[str, Any]]:
    """Every preset by name, checked (a copy: callers may change it without changing the next load)."""
    return copy.deepcopy(_presets())


def names() -> list[str]:
    """The preset names, sorted: what a shape's `preset:` may say."""
    return sorted(_presets())


def sweep(name: str) -> dict[str, list[Any]]:
    """The axes of the named sweep: shape key -> the list of values it takes, in the file's order (a
    copy). The config makes one shape per combination of the values. An unknown name raises
    ValueError naming the sweeps, the closest ones first."""
    sweeps = _sweeps()
    if not isinstance(name, str) or name not in sweeps:
        raise ValueError(_unknown(name, sweeps, "sweep"))
    return {key: copy.deepcopy(value) for key, value in sweeps[name].items() if key in SWEEP_KEYS}


def sweep_names() -> list[str]:
    """The sweep names, sorted: what a shape's `sweep:` may say."""
    return sorted(_sweeps())


def load_sweeps() -> dict[str, dict[str, Any]]:
    """Every sweep by name, checked, with its source and notes beside its axes (a copy)."""
    return copy.deepcopy(_sweeps())


def apply(shape: Mapping[str, Any]) -> dict[str, Any]:
    """`shape` as a new dict with its `preset` key replaced by the preset's geometry fields, in the
    place the key held; a shape without one comes back as a plain copy.

    Keys the shape states itself win over the preset's, so one preset serves variants (`kv_heads: 1`
    for an MQA ablation). A shape's null for a geometry field drops the preset's value instead of
    passing null on: `window: null` runs a sliding-window model's shape with full attention.
    source and notes stay in the preset. An unknown name raises ValueError naming the presets.
    """
    if "preset" not in shape:
        return dict(shape)
    name = shape["preset"]
    presets = _presets()
    if not isinstance(name, str) or name not in presets:
        raise ValueError(_unknown(name, presets, "preset"))
    geometry = {k: v for k, v in presets[name].items() if k in GEOMETRY and k not in shape}
    merged: dict[str, Any] = {}
    for key, value in shape.items():
        if key == "preset":
            merged.update(copy.deepcopy(geometry))
        elif value is None and key in GEOMETRY:
            continue
        else:
            merged[key] = value
    return merged


def check(name: str, preset: Any) -> dict[str, Any]:
    """One preset checked, as a new dict: known keys only, each of its type, heads a multiple of
    kv_heads, head dims within MAX_HEAD_DIM; floats for softcap and scale even where YAML read an int.
    Raises PresetError."""
    where = f"{_FILE}: {name!r}"
    if not isinstance(preset, Mapping):
        raise PresetError(f"{where}: a preset is a mapping of fields, not {type(preset).__name__}")
    unknown = sorted(str(k) for k in preset if k not in GEOMETRY + META)
    if unknown:
        raise PresetError(f"{where}: unknown fields {unknown}; a preset may set {', '.join(GEOMETRY + META)}")
    missing = [k for k in REQUIRED if k not in preset]
    if missing:
        raise PresetError(f"{where}: missing {', '.join(missing)}")
    out: dict[str, Any] = {}
    for key, value in preset.items():
        out[key] = _field(where, key, value)
    if out["heads"] % out["kv_heads"]:
        raise PresetError(f"{where}: heads {out['heads']} is not a multiple of kv_heads {out['kv_heads']}")
    for key in ("dim", "dim_v"):
        if out.get(key, 0) > MAX_HEAD_DIM:
            raise PresetError(f"{where}: {key} {out[key]} is over {MAX_HEAD_DIM}")
    return out


def _field(where: str, key: str, value: Any) -> Any:
    """One field checked and normalised (bool is an int to Python, so it is refused by name)."""
    if key in ("heads", "kv_heads", "dim", "dim_v"):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise PresetError(f"{where}: {key} must be a positive integer, not {value!r}")
        return value
    if key == "window":
        if (
            not isinstance(value, list)
            or len(value) != 2
            or any(isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in value)
        ):
            raise PresetError(f"{where}: window must be [left, right], two integers >= 0, not {value!r}")
        return list(value)
    if key in ("softcap", "scale"):
        if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
            raise PresetError(f"{where}: {key} must be a positive number, not {value!r}")
        return float(value)
    if key == "alibi":
        if not isinstance(value, bool):
            raise PresetError(f"{where}: alibi must be true or false, not {value!r}")
        return value
    if not isinstance(value, str) or (key == "source" and not value.strip()):
        raise PresetError(
            f"{where}: {key} must be {'non-empty ' if key == 'source' else ''}text, not {value!r}"
        )
    return value


def check_sweep(name: str, entry: Any) -> dict[str, Any]:
    """One sweep checked, as a new dict: axes among SWEEP_KEYS, each a non-empty list of distinct
    values the config schema accepts for that key, plus a source (and optional notes). Values that
    cannot go together in any shape are refused too: seq_lens beside batch, seq or cache_lens; a
    listed cache_lens whose length is not every batch; a cache shorter than the new queries.
    Raises PresetError."""
    where = f"{_FILE}: sweep {name!r}"
    if not isinstance(name, str) or not _SWEEP_NAME.match(name) or ".." in name:
        raise PresetError(
            f"{_FILE}: sweep names are letters, digits, _, . and -, as shape names; not {name!r}"
        )
    if not isinstance(entry, Mapping):
        raise PresetError(f"{where}: a sweep is a mapping of shape keys to lists, not {type(entry).__name__}")
    unknown = sorted(str(k) for k in entry if k not in SWEEP_KEYS + META)
    if unknown:
        raise PresetError(f"{where}: unknown keys {unknown}; a sweep may vary {', '.join(SWEEP_KEYS)}")
    if not any(key in entry for key in SWEEP_KEYS):
        raise PresetError(f"{where}: no axes; a sweep varies some of {', '.join(SWEEP_KEYS)}")
    if "source" not in entry:
        raise PresetError(f"{where}: missing source")
    out: dict[str, Any] = {}
    for key, values in entry.items():
        if key in META:
            out[key] = _field(where, key, values)
            continue
        if not isinstance(values, list) or not values:
            raise PresetError(f"{where}: {key} must be a non-empty list of values, not {values!r}")
        out[key] = [_axis_value(where, key, value) for value in values]
        repeated = [v for i, v in enumerate(out[key]) if v in out[key][:i]]
        if repeated:
            raise PresetError(f"{where}: {key} lists {repeated[0]!r} twice (two shapes alike)")
    _check_combinations(where, out)
    return out


def _axis_value(where: str, key: str, value: Any) -> Any:
    """One value of one axis, checked as the config schema checks that key."""
    if key in ("batch", "seq", "page_size"):
        if not _positive_int(value):
            raise PresetError(f"{where}: {key} values must be positive integers, not {value!r}")
        return value
    if key == "causal":
        if not isinstance(value, bool):
            raise PresetError(f"{where}: causal values must be true or false, not {value!r}")
        return value
    if key == "kv_dtype":
        if value not in KV_DTYPES:
            raise PresetError(
                f"{where}: kv_dtype values must be one of {', '.join(KV_DTYPES)}, not {value!r}"
            )
        return value
    # seq_lens and cache_lens: a list of lengths, or a distribution to draw them from
    fields = {"seq_lens": ("min", "max", "total"), "cache_lens": ("min", "max", "mean")}[key]
    if isinstance(value, list):
        if not value or not all(_positive_int(n) for n in value):
            raise PresetError(f"{where}: {key}: a list of lengths holds positive integers, not {value!r}")
        return list(value)
    if not isinstance(value, Mapping):
        raise PresetError(
            f"{where}: {key} values are lists of lengths or {{{', '.join(fields)}, seed}}, not {value!r}"
        )
    spelt = f"{key} {dict(value)!r}"
    unknown = sorted(str(k) for k in value if k not in (*fields, "seed"))
    missing = [k for k in fields if k not in value]
    if unknown or missing:
        raise PresetError(f"{where}: {spelt}: give {', '.join(fields)} and optionally seed, nothing else")
    for field in fields:
        number = value[field]
        if field == "mean":  # a number; the others integers
            if isinstance(number, bool) or not isinstance(number, int | float) or not number >= 1:
                raise PresetError(f"{where}: {spelt}: mean must be a number >= 1")
        elif not _positive_int(number):
            raise PresetError(f"{where}: {spelt}: {field} must be a positive integer")
    seed = value.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise PresetError(f"{where}: {spelt}: seed must be an integer >= 0")
    if value["min"] > value["max"]:
        raise PresetError(f"{where}: {spelt}: min is above max")
    if key == "cache_lens" and not value["min"] <= value["mean"] <= value["max"]:
        raise PresetError(f"{where}: {spelt}: mean is not between min and max")
    return dict(value)


def _check_combinations(where: str, axes: Mapping[str, Any]) -> None:
    """What no combination of the sweep's values can measure (attnbench.config refuses such shapes)."""
    if "seq_lens" in axes:
        clash = [key for key in ("batch", "seq", "cache_lens") if key in axes]
        if clash:
            raise PresetError(
                f"{where}: seq_lens gives a packed batch's tokens: it cannot go with {', '.join(clash)}"
            )
    caches = axes.get("cache_lens", [])
    for batch in axes.get("batch", []):
        for lengths in caches:
            if isinstance(lengths, list) and len(lengths) != batch:
                raise PresetError(
                    f"{where}: cache_lens lists {len(lengths)} requests, and batch takes {batch}"
                )
    queries = max(axes.get("seq", [1]))
    for lengths in caches:
        shortest = min(lengths) if isinstance(lengths, list) else lengths["min"]
        if shortest < queries:
            raise PresetError(
                f"{where}: a cache of {shortest} keys is shorter than the {queries} new queries of seq"
            )


def _positive_int(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, int) and value > 0


@functools.cache
def _text() -> Any:
    """presets.yaml, loaded once per process."""
    return yaml.safe_load(resources.files("attnbench").joinpath(_FILE).read_text(encoding="utf-8"))


@functools.cache
def _presets() -> dict[str, dict[str, Any]]:
    """The models of presets.yaml, checked once per process (the workflow applies presets at parse time)."""
    return parse(_text())


@functools.cache
def _sweeps() -> dict[str, dict[str, Any]]:
    """The sweeps of presets.yaml, checked once per process."""
    return parse_sweeps(_text())


def _sections(data: Any) -> Mapping[str, Any]:
    """The loaded file's top level, checked: `models:` (required) and `sweeps:`, nothing else."""
    if not isinstance(data, Mapping) or "models" not in data:
        raise PresetError(f"{_FILE}: must have a models: section mapping preset names to presets")
    unknown = sorted(str(k) for k in data if k not in SECTIONS)
    if unknown:
        raise PresetError(f"{_FILE}: unknown sections {unknown}; the file has {' and '.join(SECTIONS)}")
    return data


def parse(data: Any) -> dict[str, dict[str, Any]]:
    """The model presets of a loaded presets.yaml (its `models:` section), each checked. Raises
    PresetError."""
    models = _sections(data)["models"]
    if not isinstance(models, Mapping) or not models:
        raise PresetError(f"{_FILE}: models: must map preset names to presets")
    presets = {}
    for name, preset in models.items():
        if not isinstance(name, str) or not name:
            raise PresetError(f"{_FILE}: preset names are text, not {name!r}")
        presets[name] = check(name, preset)
    return presets


def parse_sweeps(data: Any) -> dict[str, dict[str, Any]]:
    """The sweeps of a loaded presets.yaml (its `sweeps:` section, none when absent), each checked.
    Raises PresetError."""
    sweeps = _sections(data).get("sweeps")
    if sweeps is None:
        return {}
    if not isinstance(sweeps, Mapping):
        raise PresetError(f"{_FILE}: sweeps: must map sweep names to sweeps")
    return {name: check_sweep(name, entry) for name, entry in sweeps.items()}


def _unknown(name: Any, known_names: Mapping[str, Any], kind: str) -> str:
    """The message for an unknown preset or sweep: every name, and the closest ones (case aside) first."""
    known = sorted(known_names)
    message = f"unknown {kind} {name!r}: use one of {', '.join(known)}"
    if isinstance(name, str):
        lowered = {k.lower(): k for k in known}
        close = difflib.get_close_matches(name.lower(), list(lowered), n=3, cutoff=0.6)
        if close:
            message += "; did you mean " + " or ".join(repr(lowered[c]) for c in close) + "?"
    return message
