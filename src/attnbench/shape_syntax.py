"""The compact shape syntax of `attnbench run --shape` and of `attnbench.compare(shapes=...)`:

    b2_h8_s512_d64                   batch 2, heads 8, seq 512, dim 64
    b2_h8_kv2_s512_d64_causal        kv_heads 2 (GQA), causal; tokens in any order, separated by _
    b1_h8_s128_skv4096_d64           seq_kv 4096 (the keys' length; default seq)
    batch=2,heads=8,seq=1024,dim=64,causal=true[,kv_heads=2,seq_kv=..,name=..]

A compact name is kept as the shape's name; key=value shapes are named from their fields. Either
becomes a config shape entry, checked here, before any job: its own module, because the command line
(attnbench.quick) and the Python API (attnbench.api) both read it."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

SHAPE_SYNTAX = (
    "b<batch>_h<heads>_s<seq>_d<dim>[_kv<kv_heads>][_skv<seq_kv>][_causal] (tokens in any order), "
    "or batch=..,heads=..,seq=..,dim=..[,causal=true][,kv_heads=..][,seq_kv=..][,name=..]"
)
_TOKENS = {"b": "batch", "h": "heads", "s": "seq", "d": "dim", "kv": "kv_heads", "skv": "seq_kv"}
_TOKEN = re.compile(r"(skv|kv|b|h|s|d)(\d+)")
_FIELDS = ("batch", "heads", "seq", "dim", "kv_heads", "seq_kv")
_REQUIRED = ("batch", "heads", "seq", "dim")
_NAME = re.compile(r"[A-Za-z0-9_.-]+")
_TRUE, _FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")


class ShapeError(ValueError):
    """A shape that cannot be read; the message shows the syntax."""


def shape_name(entry: Mapping[str, Any]) -> str:
    """The compact name of a shape's fields, kv and skv only where they differ from heads and seq."""
    name = f"b{entry['batch']}_h{entry['heads']}"
    if entry.get("kv_heads") and entry["kv_heads"] != entry["heads"]:
        name += f"_kv{entry['kv_heads']}"
    name += f"_s{entry['seq']}"
    if entry.get("seq_kv") and entry["seq_kv"] != entry["seq"]:
        name += f"_skv{entry['seq_kv']}"
    name += f"_d{entry['dim']}"
    return name + ("_causal" if entry.get("causal") else "")


def _boolean(text: str, field: str, shape: str) -> bool:
    if text.lower() in _TRUE:
        return True
    if text.lower() in _FALSE:
        return False
    raise ShapeError(f"shape {shape!r}: {field}={text!r} is not true or false")


def _compact(text: str) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": text}
    for token in text.split("_"):
        match = _TOKEN.fullmatch(token)
        if token in ("causal", "gqa"):  # gqa: a label the default config's names carry; kv says how many
            field, value = token, True
        elif match:
            field, value = _TOKENS[match[1]], int(match[2])
        else:
            raise ShapeError(f"shape {text!r}: cannot read {token!r}; write {SHAPE_SYNTAX}")
        if field in entry:
            raise ShapeError(f"shape {text!r}: {token!r} given twice")
        entry[field] = value
    entry.pop("gqa", None)
    return entry


def _key_values(text: str) -> dict[str, Any]:
    entry: dict[str, Any] = {}
    for item in text.split(","):
        key, equals, value = (part.strip() for part in item.partition("="))
        if not equals or not value:
            raise ShapeError(f"shape {text!r}: {item!r} is not key=value; write {SHAPE_SYNTAX}")
        if key in entry:
            raise ShapeError(f"shape {text!r}: {key} given twice")
        if key in _FIELDS:
            if not value.isdigit():
                raise ShapeError(f"shape {text!r}: {key}={value!r} is not a positive integer")
            entry[key] = int(value)
        elif key == "causal":
            entry[key] = _boolean(value, key, text)
        elif key in ("name", "mode"):
            entry[key] = value
        else:
            raise ShapeError(f"shape {text!r}: unknown field {key!r}; write {SHAPE_SYNTAX}")
    return entry


def parse_shape(text: str) -> dict[str, Any]:
    """A config shape entry ({name, batch, heads, seq, dim, causal, kv_heads?, seq_kv?}) from either syntax."""
    text = text.strip()
    return shape_entry(_key_values(text) if "=" in text else _compact(text))


def shape_entry(shape: Any) -> dict[str, Any]:
    """A config shape entry from a string, a dict with the config's fields, or a workloads.Shape: checked,
    causal filled in, named from its fields when it has no name."""
    if isinstance(shape, str):
        return parse_shape(shape)
    if hasattr(shape, "as_dict"):  # workloads.Shape, without importing it here
        shape = shape.as_dict()
    if not isinstance(shape, Mapping):
        raise ShapeError(f"a shape is a string ({SHAPE_SYNTAX}), a dict or a Shape, not {shape!r}")
    entry = dict(shape)
    unknown = set(entry) - {*_FIELDS, "causal", "name", "mode"}
    if unknown:
        raise ShapeError(f"shape {entry}: unknown fields {sorted(unknown)}")
    missing = [field for field in _REQUIRED if field not in entry]
    if missing:
        raise ShapeError(f"shape {entry}: missing {', '.join(missing)}; write {SHAPE_SYNTAX}")
    for field in _FIELDS:
        value = entry.get(field)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ShapeError(f"shape {entry}: {field} must be a positive integer, not {value!r}")
    entry["causal"] = bool(entry.get("causal", False))
    if entry.get("kv_heads") and entry["heads"] % entry["kv_heads"]:
        raise ShapeError(
            f"shape {entry}: heads {entry['heads']} is not a multiple of kv_heads {entry['kv_heads']}"
        )
    name = str(entry.get("name") or shape_name(entry))
    if not _NAME.fullmatch(name) or ".." in name:
        raise ShapeError(f"shape name {name!r}: use letters, digits, _ . - (and no ..)")
    return {"name": name, **{k: v for k, v in entry.items() if k != "name"}}
