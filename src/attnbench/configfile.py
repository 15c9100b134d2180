"""Config files and values read within bounds, before Snakemake's loader and the schema see them.

Found by trying it (issue 31): a 1.3 KB YAML alias bomb inside a validated value hung `snakemake`
for over 150 s, and one 50 MB string value for over 300 s. YAML loads an alias as the node it names,
shared, so a few lines hold a billion values, which everything that walks the config as a tree
(jsonschema's error message takes the repr of the value, Snakemake's update_config copies mappings
one by one, a job's spec is JSON) then expands. Here a file is refused when it is larger than
MAX_FILE_BYTES, when one of its values is longer than MAX_VALUE_CHARS, when it holds more than
MAX_NODES values or nests deeper than MAX_DEPTH with every alias counted each time it is used, and
when its text expanded through its aliases exceeds MAX_FILE_BYTES: read by libyaml's composer
(nothing is constructed, each node is counted once and its expanded size remembered), so refusing
costs milliseconds whatever the file expands to. `check_value` applies the same bounds to a config
already in memory (`--config` values, --configfile files Snakemake loaded before the workflow ran,
a config built in Python), walking at most MAX_NODES values.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

# A config file's size, and its text expanded through its aliases (the default config.yaml is 7 KB).
MAX_FILE_BYTES = 2**20
# One value (a string: a name, a title, a path), in characters.
MAX_VALUE_CHARS = 10_000
# Values in a config, each alias counted every time it is used (the default config.yaml has ~700).
MAX_NODES = 100_000
# Levels of nesting (the default config.yaml has 6: cpu.shapes[0].cache_lens.min).
MAX_DEPTH = 64


class Unbounded(ValueError):
    """A config file or value is beyond a bound; the message names the file, the line and the bound."""


class Invalid(ValueError):
    """A config file that is not YAML: the message is `file:line:column: problem`, then the line."""


def check_files(paths: Iterable[str | os.PathLike[str]]) -> None:
    """check_file for each of `paths` that exists (Snakemake says which are missing)."""
    for path in paths:
        if Path(path).is_file():
            check_file(path)


def check_file(path: str | os.PathLike[str]) -> None:
    """Refuse (Unbounded) a config file beyond a bound, reading at most MAX_FILE_BYTES of it. A file
    that is neither JSON nor YAML passes: Snakemake's loader says so in its own words."""
    name = os.fspath(path)
    size = os.stat(path).st_size
    if size > MAX_FILE_BYTES:
        raise Unbounded(
            f"{name} is {_bytes(size)}, more than the {_bytes(MAX_FILE_BYTES)} a config file may be"
        )
    with open(path, "rb") as stream:
        raw = stream.read(MAX_FILE_BYTES + 1)
    if len(raw) > MAX_FILE_BYTES:  # grew since its size was read
        raise Unbounded(f"{name} is more than the {_bytes(MAX_FILE_BYTES)} a config file may be")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Unbounded(
            f"{name} is not UTF-8 text (byte {exc.start}): a config file is YAML or JSON"
        ) from None
    try:  # as Snakemake reads it: JSON first, which has no aliases
        loaded = json.loads(text)
    except ValueError:
        pass
    else:
        check_value(loaded, name)
        return
    root = None
    # libyaml's composer first (milliseconds for a whole file); PyYAML's own, which Snakemake's loader
    # uses, where libyaml refuses the text (more than 1,000 levels of flow nesting)
    failed: Exception | None = None
    for loader in dict.fromkeys((getattr(yaml, "CSafeLoader", yaml.SafeLoader), yaml.SafeLoader)):
        try:
            root = yaml.compose(text, Loader=loader)
            break
        except (yaml.YAMLError, RecursionError) as exc:
            failed = exc
    if root is not None:
        _Nodes(name).size(root, 0)
    elif isinstance(failed, yaml.MarkedYAMLError) and failed.problem_mark is not None:
        raise Invalid(_where(name, text, failed)) from None


def _where(name: str, text: str, error: yaml.MarkedYAMLError) -> str:
    """`config.yaml:12:5: expected ',' or ']', but got ':'`, the line, and a caret under the column:
    what an editor jumps to (YAML's own message names "<unicode string>" and no file)."""
    mark = error.problem_mark
    lines = text.splitlines() or [""]
    line = lines[min(mark.line, len(lines) - 1)]
    problem = error.problem or str(error)
    context = f" ({error.context})" if error.context else ""
    return f"{name}:{mark.line + 1}:{mark.column + 1}: {problem}{context}\n  {line}\n  {' ' * mark.column}^"


class _Nodes:
    """The composed YAML graph of one file, each node's expanded size computed once."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.sizes: dict[int, tuple[int, int] | None] = {}  # id -> (values, characters); None while open
        self.aliased = False

    def size(self, node: yaml.Node, depth: int) -> tuple[int, int]:
        key = id(node)
        if key in self.sizes:
            self.aliased = True
            known = self.sizes[key]
            if known is None:
                raise Unbounded(
                    f"{self.name} line {_line(node)}: an alias refers to a value that contains it"
                )
            return known
        if depth > MAX_DEPTH:
            raise Unbounded(f"{self.name} line {_line(node)}: nested more than {MAX_DEPTH} levels deep")
        self.sizes[key] = None
        if isinstance(node, yaml.ScalarNode):
            if len(node.value) > MAX_VALUE_CHARS:
                raise Unbounded(
                    f"{self.name} line {_line(node)}: a value of {len(node.value):,} characters, more than the"
                    f" {MAX_VALUE_CHARS:,} a config value may have"
                )
            values, chars = 1, len(node.value)
        else:
            children: list[yaml.Node] = (
                [item for pair in node.value for item in pair]
                if isinstance(node, yaml.MappingNode)
                else list(node.value)
            )
            values, chars = 1, 0
            for child in children:
                more, text = self.size(child, depth + 1)
                values, chars = values + more, chars + text
                self._bounded(values, chars)
        self._bounded(values, chars)
        self.sizes[key] = (values, chars)
        return values, chars

    def _bounded(self, values: int, chars: int) -> None:
        how = " through aliases" if self.aliased else ""
        if values > MAX_NODES:
            raise Unbounded(f"{self.name} uses more than {MAX_NODES:,} nodes{how}")
        if chars > MAX_FILE_BYTES and self.aliased:
            raise Unbounded(
                f"{self.name} expands through aliases to more than {_bytes(MAX_FILE_BYTES)} of text"
            )


def check_value(value: Any, name: str = "the config") -> None:
    """Refuse (Unbounded) a config in memory beyond the bounds a file has (a shared list or mapping
    counted each time it is used, as YAML aliases load), walking at most MAX_NODES values: call it
    before anything walks the config as a tree or takes its repr."""
    seen: set[int] = set()
    shared = False
    values = chars = 0
    pending: list[tuple[Any, tuple[Any, ...]]] = [(value, ())]
    while pending:
        node, path = pending.pop()
        values += 1
        how = " through aliases" if shared else ""
        if values > MAX_NODES:
            raise Unbounded(f"{name} uses more than {MAX_NODES:,} nodes{how}")
        if len(path) > MAX_DEPTH:
            raise Unbounded(f"{name}: {_path(path)} is nested more than {MAX_DEPTH} levels deep{how}")
        if isinstance(node, (str, bytes)):
            if len(node) > MAX_VALUE_CHARS:
                raise Unbounded(
                    f"{name}: {_path(path)}: a value of {len(node):,} characters, more than the"
                    f" {MAX_VALUE_CHARS:,} a config value may have"
                )
            chars += len(node)
            if chars > MAX_FILE_BYTES and shared:
                raise Unbounded(
                    f"{name} expands through aliases to more than {_bytes(MAX_FILE_BYTES)} of text"
                )
            continue
        if isinstance(node, (Mapping, list, tuple)):
            shared = shared or id(node) in seen
            seen.add(id(node))
        if isinstance(node, Mapping):
            for key, item in node.items():
                pending += [(key, (*path, key)), (item, (*path, key))]
        elif isinstance(node, (list, tuple)):
            pending += [(item, (*path, index)) for index, item in enumerate(node)]


def _path(path: tuple[Any, ...]) -> str:
    text = ""
    for key in path:
        shown = key if isinstance(key, int) else str(key)[:40]
        text += f"[{shown}]" if isinstance(key, int) else f".{shown}" if text else shown
    return text or "top level"


def _line(node: yaml.Node) -> int:
    return int(node.start_mark.line) + 1


def _bytes(count: int) -> str:
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if count >= size:
            return f"{count / size:.3g} {unit}"
    return f"{count} bytes"
