"""Reading and writing result files: atomic writes, schema versions, schema validation, and each
document's content digest and internal consistency, checked when it is read (`read_json`)."""

from __future__ import annotations

import functools
import glob
import hashlib
import json
import logging
import math
import os
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from attnbench import SCHEMA_VERSION
from attnbench.documents import DIGEST, ShapeComparisons, ShapeResult
from attnbench.results import MEDIAN_REL_TOLERANCE, Status, median_problem

_UMASK = os.umask(0)
os.umask(_UMASK)


class ResultFileError(ValueError):
    """A result, baseline or config file is unreadable, does not match its schema, or disagrees with
    itself (`verify`). `path`: the file, when one is to blame (a reader may move it aside)."""

    def __init__(self, message: str, path: str | os.PathLike[str] | None = None) -> None:
        super().__init__(message)
        self.path = None if path is None else str(path)


UNVERIFIED = "no content digest (written by an attnbench older than digests): read unverified"
SHOWN = 2  # problems a refusal's line names
log = logging.getLogger("attnbench.files")


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


def schema_file(schemas: Path | None, name: str) -> Path | None:
    """The schema `name` in the directory `schemas`; None (no validation) without a directory."""
    return None if schemas is None else schemas / f"{name}.schema.yaml"


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
    # Here, not at the top: its import is a visible part of every job's start, and a job served by a
    # warm worker has its document validated there (cli.main, docs/scale.md).
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


def canonical_digest(content: Any) -> str:
    """The "sha256:" digest of `content`'s canonical JSON (sorted keys, no spaces); ValueError for NaN
    or infinity, numbers JSON does not have. The same for a document written and read back: JSON
    floats round-trip exactly."""
    text = json.dumps(content, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()


def content_digest(document: Mapping[str, Any]) -> str:
    """canonical_digest of `document`, its DIGEST field left out."""
    try:
        return canonical_digest({key: value for key, value in document.items() if key != DIGEST})
    except ValueError as exc:  # NaN or infinity: not one write_json wrote
        raise ValueError(f"a number that JSON does not have ({exc})") from None


def write_json(
    path: str | os.PathLike[str],
    data: dict[str, Any],
    schema_path: str | os.PathLike[str] | None = None,
) -> None:
    """Stamp the schema version and the content digest, validate (unless `schema_path` is None), and
    write atomically."""
    payload = stamped({key: value for key, value in data.items() if key != DIGEST})
    payload[DIGEST] = content_digest(payload)
    validate(payload, schema_path, source=str(path))
    atomic_write_text(path, json.dumps(payload, indent=1, sort_keys=False) + "\n")


def read_json(
    path: str | os.PathLike[str], schema_path: str | os.PathLike[str] | None = None
) -> dict[str, Any]:
    """The document at `path`, validated against `schema_path` and checked against itself (`verify`);
    ResultFileError naming the file (`path`) and the field otherwise."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ResultFileError(f"{path}: cannot be read as JSON: {exc}", path) from exc
    try:
        validate(data, schema_path, source=str(path))
    except ResultFileError as exc:
        raise ResultFileError(str(exc), path) from None
    if schema_path is not None:
        verify(data, schema_path, source=str(path))
    return data


def read_bench(path: str | os.PathLike[str], schemas: Path | None) -> ShapeResult:
    """A benchmark file (results/bench) as its readers take it: checked (`read_json`), then typed."""
    return ShapeResult.from_json(read_json(path, schema_file(schemas, "bench")))


def read_comparisons(path: str | os.PathLike[str], schemas: Path | None) -> ShapeComparisons:
    """A compare file (results/compare) as its readers take it: checked (`read_json`), then typed."""
    return ShapeComparisons.from_json(read_json(path, schema_file(schemas, "compare")))


def verify(data: Any, schema_path: str | os.PathLike[str], *, source: str) -> None:
    """Refuse (ResultFileError, naming the file and field) a document that disagrees with itself: its
    content digest, where its schema names DIGEST, and the invariants of its kind (CHECKS, by the
    schema's file name). A document without a digest was written before digests: accepted, with a
    warning, after its invariants held; one without a digest that records its provenance (written
    since) had it removed, and is refused."""
    if not isinstance(data, dict):
        return
    kind = Path(schema_path).name.split(".", 1)[0]
    problems = list(CHECKS[kind](data)) if kind in CHECKS else []
    if DIGEST in load_schema(schema_path).get("properties", {}):
        recorded = data.get(DIGEST)
        if recorded is None and "provenance" in data:
            problems.append(
                (DIGEST, "missing from a file that records its provenance: removed after it was written")
            )
        elif recorded is None:
            log.warning("%s: %s", source, UNVERIFIED)
        else:
            try:
                found = content_digest(data)
            except ValueError as exc:
                problems.append((DIGEST, str(exc)))
            else:
                if recorded != found:
                    problems.append(
                        (
                            DIGEST,
                            f"{recorded} is not the digest of the content ({found}): changed after it was written",
                        )
                    )
    if problems:
        shown = "; ".join(f"field '{field}': {why}" for field, why in problems[:SHOWN])
        more = f" (and {len(problems) - SHOWN} more)" if len(problems) > SHOWN else ""
        raise ResultFileError(
            f"{source}: {shown}{more}: refused, changed or damaged since it was written", source
        )


def _bench_problems(document: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """A benchmark document's numbers against each other, as (field, why): each candidate's median
    is its samples' median and lies in its ci95_ms, and no result with status ok is faster than the
    shape's bound allows (the audit would have made it untrusted; attnbench.audit.judge)."""
    bench = ShapeResult.from_json(document)
    for name, result in bench.candidates.items():
        field = f"candidates/{name}"
        if problem := median_problem(result.document):
            yield f"{field}/{problem[0]}", problem[1]
        median = result.median_ms
        if median is None or not result.samples_ms:
            continue
        if result.ci95_ms is not None:
            low, high = result.ci95_ms
            slack = abs(median) * MEDIAN_REL_TOLERANCE
            if not low - slack <= median <= high + slack:
                yield f"{field}/ci95_ms", f"[{low:.6g}, {high:.6g}] does not hold its median_ms {median:.6g}"
        if bench.bound is not None and result.status == Status.OK:
            fraction = bench.bound.bound_ms / median if median > 0 else math.inf
            if fraction > bench.bound.allowed * (1 + MEDIAN_REL_TOLERANCE):
                yield (
                    f"{field}/median_ms",
                    f"{median:.6g} ms, with status ok, is {fraction:.0%} of the shape's bound "
                    f"({bench.bound.bound_ms:.4g} ms, {bench.bound.limited_by}-bound; at most "
                    f"{bench.bound.allowed:.0%}): faster than measured physics, which the audit makes untrusted",
                )


# The invariants of each document kind, by its schema's file name (verify).
CHECKS = {"bench": _bench_problems}


def set_aside(path: str | os.PathLike[str]) -> Path | None:
    """Move a refused or unreadable file out of the way, beside itself as NAME.refused-TIME (kept for
    inspection; no reader or rule names it), so that the step that makes it runs again: the path
    it moved to, or None when there was no file."""
    source = Path(path)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    target = source.with_name(f"{source.name}.refused-{stamp}")
    n = 1
    while target.exists():
        n += 1
        target = source.with_name(f"{source.name}.refused-{stamp}-{n}")
    try:
        os.replace(source, target)
    except FileNotFoundError:
        return None
    return target


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
