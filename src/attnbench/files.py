"""Reading and writing result files: atomic writes, schema versions, schema validation."""

from __future__ import annotations

import functools
import glob
import hashlib
import json
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from attnbench import SCHEMA_VERSION

_UMASK = os.umask(0)
os.umask(_UMASK)


class ResultFileError(ValueError):
    """A result, baseline or config file is unreadable or does not match its schema."""


def jsonable(value: Any) -> Any:
    """Replace non-finite floats by None: JSON has no NaN or infinity, and a reader must not guess."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        return jsonable(value.item())
    return value


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write to a temporary file in the same folder, then rename: readers never see a partial file."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    # A writer killed (kill -9) between creating its temporary file and the rename leaves it behind;
    # each output has one writer (its job), so the next write of the same target clears them.
    for stale in target.parent.glob(f".{glob.escape(target.name)}.*.tmp"):
        stale.unlink(missing_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; results are meant to be shared
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def load_schema(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The schema at `path`, parsed once per content: the report job checks every result file against
    the bench schema, and in a warm worker the same schemas are read job after job (pure-Python YAML
    parsing was a third of the report's own time). Keyed by the file's stat, so an edited schema is
    read again. Callers must not modify what it returns."""
    stat = os.stat(path)
    return _parsed_schema(os.path.abspath(path), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=64)
def _parsed_schema(path: str, mtime_ns: int, size: int) -> dict[str, Any]:
    text = Path(path).read_text(encoding="utf-8")
    if path.endswith((".yaml", ".yml")):
        import yaml

        return yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    return json.loads(text)


def validate(data: Any, schema_path: str | os.PathLike[str] | None, *, source: str) -> None:
    """Raise ResultFileError naming the file and the offending field."""
    if schema_path is None:
        return
    # Here, not at the top: 0.1 s of every job's start, and a job served by a warm worker has its
    # document validated there (cli.main, docs/scale.md).
    import jsonschema

    schema = load_schema(schema_path)
    version = schema.get("properties", {}).get("schema", {})
    readable = (
        version.get("enum") or [version["const"]] if ("enum" in version or "const" in version) else None
    )
    if readable and isinstance(data, dict) and "schema" in data and data["schema"] not in readable:
        raise ResultFileError(
            f"{source}: written with result schema {data.get('schema')}; this attnbench reads schema "
            f"{' or '.join(map(str, readable))} here: run the step that wrote it again (Snakemake does "
            "when the step's spec names the new version)"
        )
    validator = jsonschema.Draft202012Validator(schema)
    error = jsonschema.exceptions.best_match(validator.iter_errors(data))
    if error is not None:
        field = "/".join(str(p) for p in error.absolute_path) or "(top level)"
        raise ResultFileError(f"{source}: field '{field}': {error.message}")


def stamped(data: dict[str, Any]) -> dict[str, Any]:
    """`data` as it is written: the schema version first, JSON's values only."""
    return jsonable({"schema": SCHEMA_VERSION, **data})


def write_json(
    path: str | os.PathLike[str],
    data: dict[str, Any],
    schema_path: str | os.PathLike[str] | None = None,
) -> None:
    """Stamp the schema version, validate (unless `schema_path` is None), and write atomically."""
    payload = stamped(data)
    validate(payload, schema_path, source=str(path))
    atomic_write_text(path, json.dumps(payload, indent=1, sort_keys=False) + "\n")


def read_json(
    path: str | os.PathLike[str], schema_path: str | os.PathLike[str] | None = None
) -> dict[str, Any]:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ResultFileError(f"{path}: cannot be read as JSON: {exc}") from exc
    validate(data, schema_path, source=str(path))
    return data


PACKAGE_DIR = Path(__file__).parent


def source_digest() -> str:
    """attnbench's own source (every module of the package), hashed: what a warm worker or a
    remembered measurement was made by."""
    digest = hashlib.sha256()
    for path in sorted(PACKAGE_DIR.glob("*.py")):
        digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()


def cache_dir() -> Path:
    """Where attnbench remembers answers across runs on this machine: XDG_CACHE_HOME, else ~/.cache."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "attnbench"


@dataclass(frozen=True)
class Memo:
    """Answers remembered across runs, one small JSON file per key in `folder`. A key is JSON (what
    the answer depends on); it is stored beside the answer and compared on reading, so a changed
    dependency finds nothing. Unreadable or unwritable files cost a fresh answer, nothing else."""

    folder: Path

    def path(self, key: Any) -> Path:
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()
        return self.folder / f"{digest[:16]}.json"

    def recall(self, key: Any) -> Any | None:
        try:
            stored = json.loads(self.path(key).read_text(encoding="utf-8"))
            return stored["answer"] if stored["key"] == jsonable(key) else None
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def remember(self, key: Any, answer: Any) -> None:
        try:
            write_json(self.path(key), {"key": key, "answer": answer})
        except OSError:
            pass
