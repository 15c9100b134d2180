"""The result documents as types: a benchmark of one shape (`ShapeResult`, results/bench) and its
candidates (`CandidateResult`), and the comparisons of one shape (`ShapeComparisons`,
results/compare), built from the JSON that attnbench.files.read_json validated against the schema.

Why here: this is the one place that looks at a file's version. A file written before a field existed
(schema 2, or schema 3 before its minor version `schema_minor`) gets that field's meaning in `_upgrade`
(the layout all such files used, the bound's margin, the dense-mask work from the pairs), so no reader
defaults a field. Each additive change to a document adds one to its minor version and one step here;
a change that readers cannot follow raises SCHEMA_VERSION instead (files.validate refuses those files,
naming their version).

A document keeps what it was read from (`to_json` gives it back, upgraded): the types name the fields
the readers use; the rest (the audit's record, a crash's details, the timing record) stays JSON."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from attnbench import SCHEMA_VERSION
from attnbench.results import Json, Status
from attnbench.settings import BOUND_MARGIN

# Every document files.write_json writes carries this field: "sha256:" and the hex digest of the canonical
# JSON (sorted keys, no spaces) of the document without it. files.read_json recomputes it for the kinds
# whose schema names the field. Not a signature (anyone can recompute it): it tells a file damaged or
# edited after attnbench wrote it from the one written.
DIGEST = "content_digest"

# Additive changes to a bench document since schema 3 (bench.schema.yaml's schema_minor): 1 records
# every candidate's layout and dense_mask_work and the bound's margin; 2 each checked candidate's
# accuracy metrics per output, and an approximate one's declared tolerance.
BENCH_MINOR = 2


def _interval(pair: list[float] | None) -> tuple[float, float] | None:
    """An interval as the files hold it ([lo, hi] or null) as a pair."""
    return None if pair is None else (pair[0], pair[1])


def version(document: Mapping[str, Any]) -> tuple[int, int]:
    """(schema, schema_minor) of a document; files without a minor version are minor 0, and one not
    yet written (no schema: files.write_json stamps it) is this attnbench's."""
    return int(document.get("schema", SCHEMA_VERSION)), int(document.get("schema_minor", 0))


@dataclass(frozen=True)
class CandidateResult:
    """One candidate's result on one shape (bench.schema.yaml's `candidate`)."""

    name: str
    status: Status
    reason: str | None
    samples_ms: tuple[float, ...]
    median_ms: float | None
    ci95_ms: tuple[float, float] | None
    rel_ci: float | None
    target_met: bool | None
    tflops: float | None
    peak_mem_mb: float | None
    rel_error: float | None
    calls_per_sample: int | None
    layout: str | None  # None: it failed before it declared one
    dense_mask_work: float | None
    fraction_of_bound: float | None
    oom_risk: bool | None
    setup_ms: float | None
    compile_ms: float | None
    remeasured: tuple[str, ...]
    footprint: Mapping[str, Any]  # memory.footprint's record; empty where the candidate did not run
    deterministic: Mapping[str, Any]  # the repeat check's record; empty where none ran
    ran: Mapping[str, Any]  # what the profiled call launched (kernels, streams); empty without one
    # per output (out; dq, dk, dv with the backward): rel_error, max_abs_error, worst_row_error and
    # worst_row, cosine, outside_fraction on the first input set; empty where it was not checked
    accuracy: Mapping[str, Mapping[str, Any]]
    declared_tolerance: float | None  # ok only by its declared tolerance: an approximate result
    document: Json = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, name: str, entry: Mapping[str, Any]) -> CandidateResult:
        return cls(
            name=name,
            status=Status(entry["status"]),
            reason=entry["reason"],
            samples_ms=tuple(entry["samples_ms"]),
            median_ms=entry["median_ms"],
            ci95_ms=_interval(entry["ci95_ms"]),
            rel_ci=entry["rel_ci"],
            target_met=entry["target_met"],
            tflops=entry["tflops"],
            peak_mem_mb=entry["peak_mem_mb"],
            rel_error=entry["rel_error"],
            calls_per_sample=entry.get("calls_per_sample"),
            layout=entry.get("layout"),
            dense_mask_work=entry.get("dense_mask_work"),
            fraction_of_bound=entry.get("fraction_of_bound"),
            oom_risk=entry.get("oom_risk"),
            setup_ms=entry.get("setup_ms"),
            compile_ms=entry.get("compile_ms"),
            remeasured=tuple(entry.get("remeasured") or ()),
            footprint=entry.get("footprint") or {},
            deterministic=entry.get("deterministic") or {},
            ran=entry.get("ran") or {},
            accuracy=entry.get("accuracy") or {},
            declared_tolerance=(entry.get("approximate") or {}).get("declared"),
            document=dict(entry),
        )

    def to_json(self) -> Json:
        return dict(self.document)

    @property
    def exact(self) -> bool:
        """Ok within the run dtype's tolerance: a result ranked with the others (not approximate)."""
        return self.status == Status.OK and self.declared_tolerance is None

    def text(self, key: str) -> str:
        """A text the candidate's entry keeps beside its reason (reason_detail, traceback); empty if none."""
        return str(self.document.get(key) or "")


@dataclass(frozen=True)
class Bound:
    """The shape's attainable time from the measured ceilings (attnbench.audit.bound)."""

    bound_ms: float
    margin: float  # a median is impossible above 1 + margin + ceiling_rel_ci of the bound
    limited_by: str
    intensity: float | None
    ceiling_rel_ci: float

    @classmethod
    def from_json(cls, record: Mapping[str, Any]) -> Bound:
        return cls(**{key: record[key] for key in cls.__dataclass_fields__})

    @property
    def allowed(self) -> float:
        """The largest fraction of the bound a median may reach and stay possible."""
        return 1.0 + self.margin + self.ceiling_rel_ci


@dataclass(frozen=True)
class ShapeResult:
    """A benchmark of one shape (results/bench/{shape}.json, bench.schema.yaml)."""

    schema: tuple[int, int]
    shape: Mapping[str, Any]  # the shape as configured: name, batch, heads, seq, mask, ...
    device: str
    dtype: str
    mode: str
    timing: Mapping[str, Any]
    flops: float
    min_bytes: int
    bound: Bound | None
    device_info: Mapping[str, Any]
    device_total_mb: float | None
    provenance: Mapping[str, Any] | None
    host: Mapping[str, Any]  # the host's load while measuring (attnbench.host); empty in older files
    created: str | None
    verified: bool  # it carries its content digest (written since digests; files.read_json checked it)
    candidates: dict[str, CandidateResult]
    document: Json = field(repr=False, compare=False)

    @property
    def name(self) -> str:
        return str(self.shape["name"])

    @classmethod
    def from_json(cls, document: Mapping[str, Any]) -> ShapeResult:
        data = _upgrade(document)
        bound = data.get("bound")
        return cls(
            schema=version(data),
            shape=data["shape"],
            device=data["device"],
            dtype=data["dtype"],
            mode=data["mode"],
            timing=data["timing"],
            flops=data["flops"],
            min_bytes=data["min_bytes"],
            bound=None if bound is None else Bound.from_json(bound),
            device_info=data.get("device_info") or {},
            device_total_mb=(data.get("memory") or {}).get("device_total_mb"),
            provenance=data.get("provenance"),
            host=data.get("host") or {},
            created=data.get("created"),
            verified=DIGEST in data,
            candidates={name: CandidateResult.from_json(name, e) for name, e in data["candidates"].items()},
            document=data,
        )

    def to_json(self) -> Json:
        return {**self.document, "candidates": {n: c.to_json() for n, c in self.candidates.items()}}


def _upgrade(document: Mapping[str, Any]) -> Json:
    """A bench document as the current minor version writes it: the fields older files lack, given
    the meaning they had then, one step per minor version. Before 1: every candidate timed in a
    schema 2 or 3.0 file was in the default layout, the bound's margin was the audit's for the
    device, and an SDPA backend's dense-mask work follows from the pairs and its layout. Before 2:
    no accuracy metrics beside rel_error (CandidateResult.accuracy is empty) and no approximate
    results (a kernel beyond the dtype's tolerance was incorrect)."""
    data = dict(document)
    if version(data) >= (3, 1):
        return data
    # Here, not at the top: only older files pay for the workloads' import; a job's process reads
    # documents (attnbench.files) before it hands its job to the warm worker.
    from attnbench.candidates import sdpa_dense_mask_work
    from attnbench.workloads import DEFAULT_LAYOUT

    if data.get("bound") is not None and "margin" not in data["bound"]:
        data["bound"] = {**data["bound"], "margin": BOUND_MARGIN[data["device"]]}
    entries = {}
    for name, entry in data["candidates"].items():
        layout = entry.get("layout", DEFAULT_LAYOUT if entry["status"] == Status.OK else None)
        work = entry.get(
            "dense_mask_work", sdpa_dense_mask_work(name, data.get("pairs"), layout or DEFAULT_LAYOUT)
        )
        entries[name] = {**entry, "layout": layout, "dense_mask_work": work}
    data["candidates"] = entries
    return data


@dataclass(frozen=True)
class Comparison:
    """One candidate against one baseline on one shape (compare.schema.yaml's `comparisons` item),
    or the same comparison corrected across the run (autotune.json): `p_adjusted` then differs from
    p_value and the interval and verdict are the corrected ones."""

    candidate: str
    baseline: str | None  # None in autotune.json's corrections, which are all with the reference
    speedup: float | None
    speedup_ci: tuple[float, float] | None
    confidence: float
    p_value: float | None
    p_adjusted: float | None
    verdict: str
    significant: bool | None
    rounds: int | None
    rounds_to_decide: int | None
    hedges_g: float | None
    cliffs_delta: float | None
    document: Json = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, entry: Mapping[str, Any]) -> Comparison:
        return cls(
            candidate=entry["candidate"],
            baseline=entry.get("baseline"),
            speedup=entry.get("speedup"),
            speedup_ci=_interval(entry["speedup_ci"]),
            confidence=entry["confidence"],
            p_value=entry.get("p_value"),
            p_adjusted=entry.get("p_adjusted", entry.get("p_value")),
            verdict=entry["verdict"],
            significant=entry.get("significant"),
            rounds=entry.get("rounds"),
            rounds_to_decide=entry.get("rounds_to_decide"),
            hedges_g=entry.get("hedges_g"),
            cliffs_delta=entry.get("cliffs_delta"),
            document=dict(entry),
        )

    def to_json(self) -> Json:
        return dict(self.document)


@dataclass(frozen=True)
class ShapeComparisons:
    """The comparisons of one shape (results/compare/{shape}.json, compare.schema.yaml)."""

    shape: str
    reference: str
    method: Mapping[str, Any]  # the test and its settings (absent where none ran: empty)
    reason: str | None  # why there are no comparisons (the reference is not ok)
    comparisons: tuple[Comparison, ...]
    skipped: Mapping[str, Mapping[str, Any]]  # candidate -> {status, reason}: not ok, not compared
    document: Json = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, document: Mapping[str, Any]) -> ShapeComparisons:
        return cls(
            shape=document["shape"],
            reference=document["reference"],
            method=document.get("method") or {},
            reason=document.get("reason"),
            comparisons=tuple(Comparison.from_json(c) for c in document["comparisons"]),
            skipped={s["candidate"]: s for s in document.get("skipped", [])},
            document=dict(document),
        )

    def with_reference(self) -> dict[str, Comparison]:
        """Candidate -> its comparison with the shape's reference."""
        return {c.candidate: c for c in self.comparisons if c.baseline == self.reference}

    def to_json(self) -> Json:
        return dict(self.document)


@dataclass(frozen=True)
class Pick:
    """A shape's fastest correct candidate in autotune.json (or a kernel's fastest configuration)."""

    candidate: str
    median_ms: float
    ci95_ms: tuple[float, float] | None

    @classmethod
    def from_json(cls, entry: Mapping[str, Any]) -> Pick:
        return cls(entry["candidate"], entry["median_ms"], _interval(entry["ci95_ms"]))


@dataclass(frozen=True)
class Rival:
    """Another correct candidate of a shape against its fastest, corrected across the run; `tied`
    when the corrected verdict is "same" (autotune.rival_comparisons)."""

    candidate: str
    median_ms: float
    comparison: Comparison  # the speedup over the fastest (at most about 1), its interval, p, verdict
    tied: bool

    @classmethod
    def from_json(cls, entry: Mapping[str, Any]) -> Rival:
        return cls(entry["candidate"], entry["median_ms"], Comparison.from_json(entry), entry["tied"])


@dataclass(frozen=True)
class ShapeChoice:
    """One shape in autotune.json (or in one kernel's configurations): the fastest and its rivals."""

    shape: str
    fastest: Pick | None  # None: nothing ran ok
    rivals: tuple[Rival, ...]
    not_ok: tuple[
        Mapping[str, Any], ...
    ]  # a kernel's configurations that did not run ok: {candidate, status}

    @classmethod
    def from_json(cls, entry: Mapping[str, Any]) -> ShapeChoice:
        fastest = entry["fastest"]
        return cls(
            shape=entry["shape"],
            fastest=None if fastest is None else Pick.from_json(fastest),
            rivals=tuple(Rival.from_json(r) for r in entry["rivals"]),
            not_ok=tuple(entry.get("not_ok", ())),
        )

    def ties(self) -> list[Rival]:
        """The rivals tied with the fastest, fastest first."""
        return sorted((r for r in self.rivals if r.tied), key=lambda r: r.median_ms)


@dataclass(frozen=True)
class Family:
    """A kernel with configurations (autotune.json's `configurations.families`): per shape its
    fastest configuration and those tied with it, the ranking and the one recommended everywhere."""

    family: str
    configurations: tuple[str, ...]
    shapes: tuple[ShapeChoice, ...]
    ranking: tuple[Mapping[str, Any], ...]
    recommendation: Mapping[str, Any] | None
    reason: str | None  # why there is no recommendation

    @classmethod
    def from_json(cls, entry: Mapping[str, Any]) -> Family:
        return cls(
            family=entry["family"],
            configurations=tuple(entry["configurations"]),
            shapes=tuple(ShapeChoice.from_json(s) for s in entry["shapes"]),
            ranking=tuple(entry["ranking"]),
            recommendation=entry["recommendation"],
            reason=entry["reason"],
        )


@dataclass(frozen=True)
class Analysis:
    """The run-wide analysis (results/report/autotune.json, autotune.schema.yaml): every comparison
    with the reference corrected across the run's `family` comparisons, each shape's fastest and its
    ties, and the kernels with configurations."""

    alpha: float
    family: int
    n_reference: int  # comparisons in the compare files
    n_autotune: int  # comparisons with each shape's fastest
    n_configurations: int | None  # comparisons within configurations (None: none in older files)
    corrected: dict[tuple[str, str], Comparison]  # (shape, candidate) -> with the reference, corrected
    shapes: dict[str, ShapeChoice]  # in the config's order
    families: tuple[Family, ...]
    document: Json = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, document: Mapping[str, Any]) -> Analysis:
        configurations = document.get("configurations") or {}
        return cls(
            alpha=document["alpha"],
            family=document["family"],
            n_reference=document["reference"]["n_comparisons"],
            n_autotune=document["n_autotune_comparisons"],
            n_configurations=configurations.get("n_comparisons"),
            corrected={
                (c["shape"], c["candidate"]): Comparison.from_json(c)
                for c in document["reference"]["comparisons"]
            },
            shapes={s["shape"]: ShapeChoice.from_json(s) for s in document["shapes"]},
            families=tuple(Family.from_json(f) for f in configurations.get("families", [])),
            document=dict(document),
        )

    def to_json(self) -> Json:
        return dict(self.document)

    def family_of(self) -> dict[str, str]:
        """Configuration -> its kernel, for the kernels analysed as configurations."""
        return {name: f.family for f in self.families for name in f.configurations}

    def all_corrected(self) -> list[Comparison]:
        """Every corrected comparison: with the reference, with each shape's fastest, within configurations."""
        rivals = [r.comparison for s in self.shapes.values() for r in s.rivals]
        within = [r.comparison for f in self.families for s in f.shapes for r in s.rivals]
        return [*self.corrected.values(), *rivals, *within]
