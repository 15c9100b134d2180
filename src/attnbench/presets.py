"""Model presets: a shape may name a model (`preset: llama-3.1-8b`) instead of spelling out its
attention geometry, so the benchmarked shapes match the published configurations instead of
whatever someone typed (issue 16).

The presets live in presets.yaml, shipped with the package; each cites where its values come from.
"""

from __future__ import annotations

import copy
import difflib
import functools
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


class PresetError(ValueError):
    """presets.yaml holds a preset that cannot be used; the message names it and the field."""


def load() -> dict[str, dict[str, Any]]:
    """Every preset by name, checked (a copy: callers may change it without changing the next load)."""
    return copy.deepcopy(_presets())


def names() -> list[str]:
    """The preset names, sorted: what a shape's `preset:` may say."""
    return sorted(_presets())


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
        raise ValueError(_unknown(name, presets))
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


@functools.cache
def _presets() -> dict[str, dict[str, Any]]:
    """presets.yaml, read and checked once per process (the workflow applies presets at parse time)."""
    text = resources.files("attnbench").joinpath(_FILE).read_text(encoding="utf-8")
    return parse(yaml.safe_load(text))


def parse(data: Any) -> dict[str, dict[str, Any]]:
    """The presets of a loaded presets.yaml, each checked. Raises PresetError."""
    if not isinstance(data, Mapping) or not data:
        raise PresetError(f"{_FILE}: must map preset names to presets")
    presets = {}
    for name, preset in data.items():
        if not isinstance(name, str) or not name:
            raise PresetError(f"{_FILE}: preset names are text, not {name!r}")
        presets[name] = check(name, preset)
    return presets


def _unknown(name: Any, presets: Mapping[str, Any]) -> str:
    """The message for an unknown preset: every name, and the closest ones (case aside) first."""
    known = sorted(presets)
    message = f"unknown preset {name!r}: use one of {', '.join(known)}"
    if isinstance(name, str):
        lowered = {k.lower(): k for k in known}
        close = difflib.get_close_matches(name.lower(), list(lowered), n=3, cutoff=0.6)
        if close:
            message += "; did you mean " + " or ".join(repr(lowered[c]) for c in close) + "?"
    return message
