"""Candidates: the SDPA backends forced one at a time, FlexAttention, and users' own kernels.

Each candidate becomes a callable of (q, k, v) -> output for one workload (attnbench.workloads.Workload).
A user kernel is named "module:function" (or registered in this process under any name, by the Python
API), optionally with one configuration, "module:function[BLOCK_M=128,num_warps=8]". Undecorated, it
is called as function(q, k, v, causal=..., scale=...) on (batch, heads, seq, dim) tensors, as always.
The `kernel` decorator declares the rest of the contract (docs/kernels.md): the factory form, whose
setup runs outside the timed region, the layout of its tensors, and a grid of configurations, each of
which becomes a candidate of its own. A user kernel declines a shape by raising `Unsupported` (or
NotImplementedError); its message's wording never decides it.
"""

from __future__ import annotations

import ast
import difflib
import inspect
import itertools
import logging
import math
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from attnbench import masks
from attnbench.formatting import clip
from attnbench.usercode import (
    BUILTIN,
    REGISTERED,
    SDPA_BACKENDS,
    CandidateName,
    UserFunction,
    is_user_kernel,
    module_source,
    refused_module,
    user_function,
)
from attnbench.usercode import register as register  # the Python API's (attnbench.api)
from attnbench.usercode import unregister as unregister
from attnbench.usercode import user_kernel_source_hash as user_kernel_source_hash  # the config's
from attnbench.workloads import (
    DEFAULT_LAYOUT,
    LAYOUTS,
    PADDED,
    POOL,
    Shape,
    Workload,
    dense_mask_work,
    padded_length,
    padded_mask,
    padded_mask_mod,
    padded_queries,
    takes_padded,
)

# SDPA backends that PyTorch implements only for CUDA: on the CPU they decline every shape.
CUDA_ONLY = ("efficient", "cudnn")
# How long a status reason may be; the library's whole text is kept beside it (reason_detail). attnbench's
# own reasons end with their fix ("declare @attnbench.kernel(...) ... (docs/kernels.md)"): they fit whole.
REASON_CHARS = 400

Kernel = Callable[[Any, Any, Any], Any]
Config = dict[str, Any]
# The attribute the `kernel` decorator sets on a function.
DECLARATION_ATTRIBUTE = "__attnbench__"
_CONFIG_VALUE = re.compile(r"^[A-Za-z0-9_.+-]+$")


class Unsupported(Exception):
    """Raise it from your kernel to decline a shape, dtype or device: the candidate is `unsupported`
    with your message as the reason (any other exception is an `error`)."""


@dataclass(frozen=True)
class Declaration:
    """How attnbench calls a user kernel (set by the `kernel` decorator; undecorated: the defaults)."""

    factory: bool = False
    layout: str = DEFAULT_LAYOUT
    grid: tuple[Config, ...] = field(default=())  # configuration points; () for none
    deterministic: bool = False  # a claim, checked: calls on the same inputs are bitwise equal
    tolerance: float | None = None  # a declared approximation: the norm-wise error it may reach


def kernel(
    *,
    factory: bool = False,
    layout: str = DEFAULT_LAYOUT,
    grid: Mapping[str, Sequence[Any]] | Sequence[Config] | None = None,
    deterministic: bool = False,
    tolerance: float | None = None,
) -> Callable[[UserFunction], UserFunction]:
    """Declare how attnbench calls your kernel (docs/kernels.md).

    factory: the function is `prepare(workload, q, k, v, **config) -> run`, and `run(q, k, v)` is
      what is timed, on the same tensors (refilled in place between checks). Layout conversion,
      planning, descriptors, block masks and compilation belong in `prepare`: it runs once, outside
      the timed region, and its time is recorded (setup_ms). Without it, the function itself is timed
      as `function(q, k, v, causal=..., scale=..., **config)`.
    layout: "bhsd" (batch, heads, seq, dim; the default) or "bshd" (batch, seq, heads, dim): q, k, v
      are made in this layout before timing, and the output (and gradients) must be in it.
    grid: configurations, as {"BLOCK_M": [64, 128], "num_warps": [4, 8]} (every combination) or as a
      list of dicts; each becomes the candidate `module:function[BLOCK_M=64,num_warps=4]`, its values
      passed as keyword arguments. Write it as a literal (or a module-level name bound to one): the
      workflow reads it without importing your module.
    deterministic: a claim that calls on the same inputs give bitwise the same outputs; attnbench
      checks it on five calls and calls the kernel incorrect when they differ.
    tolerance: the kernel approximates on purpose (int8 or fp8 arithmetic): its norm-wise relative
      error against float64 may reach this. Within the run dtype's tolerance it is an exact result;
      beyond it and within this one it is `ok` but approximate, said wherever it is shown and ranked
      apart from the exact results; beyond this one it is incorrect. The config's `tolerances` map
      overrides it per candidate.
    """
    declaration = Declaration(
        factory=factory,
        layout=layout,
        grid=tuple(grid_points(grid)),
        deterministic=deterministic,
        tolerance=declared_tolerance(tolerance),
    )
    if layout not in LAYOUTS:
        raise ValueError(f"layout {layout!r}: use one of {', '.join(LAYOUTS)}")

    def declare(fn: UserFunction) -> UserFunction:
        setattr(fn, DECLARATION_ATTRIBUTE, declaration)
        return fn

    return declare


def declared_tolerance(value: Any) -> float | None:
    """A declared tolerance, checked: a positive finite number, or None for none."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
        raise ValueError(f"tolerance {value!r}: a declared tolerance is a positive number (e.g. 3e-2)")
    return float(value)


def grid_points(grid: Mapping[str, Sequence[Any]] | Sequence[Config] | None) -> list[Config]:
    """A grid's configurations: every combination of a dict of value lists (in its key order), or a
    list of dicts as given."""
    if not grid:
        return []
    if isinstance(grid, Mapping):
        keys = list(grid)
        for key, values in grid.items():
            if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or not values:
                raise ValueError(f"grid[{key!r}] must be a non-empty list of values")
        points = [dict(zip(keys, combination)) for combination in itertools.product(*grid.values())]
    else:
        points = [dict(point) for point in grid]
    for point in points:
        configured_name("kernel", point)  # every key and value must make a valid name
    return points


def configured_name(base: str, config: Mapping[str, Any]) -> str:
    """`base[K=V,...]`, the candidate name of one configuration (`base` itself for none)."""
    if not config:
        return base
    parts = []
    for key, value in config.items():
        text = repr(value) if not isinstance(value, str) else value
        if not str(key).isidentifier() or not _CONFIG_VALUE.match(text):
            raise ValueError(
                f"configuration {key}={value!r}: keys must be identifiers and values numbers, booleans or"
                " words (letters, digits, _ . + -)"
            )
        parts.append(f"{key}={text}")
    return f"{base}[{','.join(parts)}]"


def user_kernel_problem(name: str) -> str | None:
    """Why the user kernel `module:function` cannot be run, or None: checked before any job runs,
    without importing the module (the workflow parses its config in every job on a cluster). The
    module must not be the standard library's, must exist and parse, and define or import `function`
    at top level (a module that star-imports is given the benefit of the doubt); a function defined
    there must take the call attnbench makes (`signature_problem`)."""
    try:
        parsed = CandidateName.parse(name)
    except ValueError as exc:
        return str(exc)
    base, given = parsed.family, parsed.configuration
    if base in REGISTERED:
        return _registered_signature_problem(name, base, given)
    module, function = parsed.module, parsed.function
    if not module or not function.isidentifier():
        return f"{name!r} is not module:function"
    if refused := refused_module(module):
        return refused
    source = module_source(module)
    if source is None:
        return f"module {module!r} not found (looked in the working directory {os.getcwd()} and PYTHONPATH)"
    try:
        tree = ast.parse(source.read_bytes(), filename=str(source))
    except SyntaxError as exc:
        return f"module {module!r} ({source}) does not parse: line {exc.lineno}: {exc.msg}"
    defined: set[str] = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            defined.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            if any(alias.name == "*" for alias in node.names):
                return None
            defined.update((alias.asname or alias.name).split(".")[0] for alias in node.names)
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            defined.update(n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name))
        elif isinstance(node, (ast.If, ast.Try, ast.With)):  # definitions under a guard
            defined.update(n.name for n in ast.walk(node) if isinstance(n, (ast.FunctionDef, ast.ClassDef)))
            defined.update(
                n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)
            )
    if function in defined:
        try:
            declared = static_declaration(base)
        except ValueError as exc:
            return str(exc)
        return signature_problem(tree, function, declared, _configurations(declared, given))
    close = difflib.get_close_matches(function, sorted(d for d in defined if not d.startswith("_")), n=1)
    hint = f"; did you mean {module}:{close[0]}?" if close else ""
    return f"module {module!r} ({source}) defines no {function!r}{hint}"


# Decorators that leave a function's parameters as written, so its definition says how it can be
# called; under any other decorator (functools.partial, a JIT's launcher...) it is taken on trust.
SIGNATURE_KEEPING = ("kernel", "compile", "no_grad", "inference_mode", "enable_grad")


def call_form(declared: Declaration, config: Config) -> tuple[list[str], list[str]]:
    """(positional, keyword) argument names of the call attnbench makes (attnbench.candidates._user):
    prepare(workload, q, k, v, **config) for a factory, function(q, k, v, causal=..., scale=...,
    **config) otherwise."""
    if declared.factory:
        return ["workload", "q", "k", "v"], list(config)
    return ["q", "k", "v"], ["causal", "scale", *config]


def _configurations(declared: Declaration, given: Config) -> list[Config]:
    """The configurations a candidate is called with: the one its name gives, else its grid's."""
    return [given] if given else list(declared.grid) or [{}]


def signature_problem(
    tree: ast.Module, function: str, declared: Declaration, configs: list[Config]
) -> str | None:
    """Why `function`, as the module's top level last binds it, cannot take the call attnbench makes
    with any of `configs`, or None (also when it is not bound by a plain def or lambda there, or is
    decorated by what may change its parameters: taken on trust)."""
    bound = None
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            bound = node if node.name == function else bound
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            if any((alias.asname or alias.name).split(".")[0] == function for alias in node.names):
                bound = node
        elif any(
            (isinstance(n, ast.Name) and n.id == function and isinstance(n.ctx, ast.Store))
            or (isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and n.name == function)
            for n in ast.walk(node)
        ):
            bound = node  # an assignment, or a definition under a guard (taken on trust)
    if isinstance(bound, ast.Assign) and isinstance(bound.value, ast.Lambda) and len(bound.targets) == 1:
        arguments, shown = bound.value.args, f"lambda {ast.unparse(bound.value.args)}"
    elif isinstance(bound, (ast.FunctionDef, ast.AsyncFunctionDef)):
        for decorator in bound.decorator_list:
            called = decorator.func if isinstance(decorator, ast.Call) else decorator
            if (getattr(called, "attr", None) or getattr(called, "id", None)) not in SIGNATURE_KEEPING:
                return None
        arguments, shown = bound.args, f"{function}({ast.unparse(bound.args)})"
        if isinstance(bound, ast.AsyncFunctionDef):
            return f"refused: {shown} is async def: calling it returns a coroutine, not the output"
    else:
        return None
    for config in configs:
        positional, keywords = call_form(declared, config)
        why = _unbindable(arguments, positional, keywords)
        if why:
            call = ", ".join([*positional, *(f"{key}=..." for key in keywords)])
            return f"refused: {shown} cannot be called as attnbench calls it, {function}({call}): {why}"
    return None


def _unbindable(arguments: ast.arguments, positional: list[str], keywords: list[str]) -> str | None:
    """Why Python would raise TypeError binding these arguments to these parameters, or None."""
    params = [a.arg for a in [*arguments.posonlyargs, *arguments.args]]
    only = {a.arg for a in arguments.posonlyargs}
    if len(positional) > len(params) and arguments.vararg is None:
        return f"it takes {len(params)} positional arguments, attnbench passes {len(positional)}"
    filled = set(params[: len(positional)])
    keyword_only = {a.arg for a in arguments.kwonlyargs}
    for key in keywords:
        if key in params and key not in only:
            if key in filled:
                return f"it would get {key!r} twice, by position and by keyword"
            filled.add(key)
        elif key in keyword_only:
            filled.add(key)
        elif arguments.kwarg is None:
            return (
                f"{key!r} is positional-only there, attnbench passes it by keyword"
                if key in only
                else f"it has no parameter {key!r}"
            )
    required = params[: len(params) - len(arguments.defaults)]
    required += [a.arg for a, default in zip(arguments.kwonlyargs, arguments.kw_defaults) if default is None]
    missing = [name for name in required if name not in filled]
    if missing:
        return f"it requires {', '.join(map(repr, missing))}, which attnbench does not pass"
    return None


def _registered_signature_problem(name: str, base: str, given: Config) -> str | None:
    """signature_problem for a callable registered in this process (attnbench.compare), read with
    inspect; a callable whose signature cannot be read is taken on trust."""
    fn = REGISTERED[base]
    declared = declaration(base)
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        return None
    for config in _configurations(declared, given):
        positional, keywords = call_form(declared, config)
        try:
            signature.bind(*positional, **dict.fromkeys(keywords))
        except TypeError as exc:
            call = ", ".join([*positional, *(f"{key}=..." for key in keywords)])
            return f"refused: {name}{signature} cannot be called as attnbench calls it, ({call}): {exc}"
    return None


def static_declaration(name: str) -> Declaration:
    """A user kernel's `kernel` declaration, read from its module's source without importing it (the
    workflow parses its config on every job); the defaults when it is not decorated, or when it is
    registered in this process (its function carries the declaration). ValueError when a decorator
    argument is not a literal."""
    parsed = CandidateName.parse(name)
    base, function = parsed.family, parsed.function
    if base in REGISTERED:
        return declaration(base)
    source = module_source(parsed.module)
    if source is None:
        return Declaration()
    tree = ast.parse(source.read_bytes(), filename=str(source))
    literals = {
        target.id: node.value
        for node in tree.body
        if isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None
        for target in (node.targets if isinstance(node, ast.Assign) else [node.target])
        if isinstance(target, ast.Name)
    }
    for node in tree.body:
        if not (isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == function):
            continue
        for decorator in node.decorator_list:
            called = decorator.func if isinstance(decorator, ast.Call) else None
            named = getattr(called, "attr", None) or getattr(called, "id", None)
            if named != "kernel" or not isinstance(decorator, ast.Call):
                continue
            arguments: dict[str, Any] = {}
            for keyword in decorator.keywords:
                value = (
                    literals.get(keyword.value.id, keyword.value)
                    if isinstance(keyword.value, ast.Name)
                    else keyword.value
                )
                try:
                    arguments[str(keyword.arg)] = ast.literal_eval(value)
                except ValueError:
                    raise ValueError(
                        f"{base}: @kernel({keyword.arg}=...) must be a literal, or a module-level name bound to"
                        f" one (line {decorator.lineno} of {source}): the workflow reads it without importing the module"
                    ) from None
            return Declaration(
                factory=bool(arguments.get("factory", False)),
                layout=str(arguments.get("layout", DEFAULT_LAYOUT)),
                grid=tuple(grid_points(arguments.get("grid"))),
                deterministic=bool(arguments.get("deterministic", False)),
                tolerance=declared_tolerance(arguments.get("tolerance")),
            )
    return Declaration()


def expand(names: Sequence[str]) -> list[str]:
    """The candidates a config's list stands for: a user kernel that declares a grid, named without a
    configuration, stands for every configuration of its grid; everything else for itself."""
    expanded: list[str] = []
    for name in names:
        parsed = CandidateName.parse(name, strict=False)
        if parsed.is_user and parsed.family == name:
            points = static_declaration(name).grid
            expanded += [configured_name(name, point) for point in points] if points else [name]
        else:
            expanded.append(name)
    return list(dict.fromkeys(expanded))


def declaration(name: str, workload: Workload | None = None) -> Declaration:
    """How candidate `name` is called (imports a user kernel's module). Built-ins are plain bhsd, but
    for SDPA's fused backends on a packed batch of documents on CUDA: thd, which they get as nested
    (jagged) tensors (`sdpa_takes_jagged`); for SDPA and flex on a decode batch: padded, the requests
    as a batch (attnbench.workloads.PADDED); and for flex on a paged decode batch: the pool of pages
    (attnbench.workloads.POOL, read through PyTorch's PagedAttention)."""
    if not is_user_kernel(name):
        if workload is not None and sdpa_takes_jagged(name, workload):
            return Declaration(layout="thd")
        if workload is not None and name == "flex" and workload.page_size and takes_padded(workload):
            return Declaration(layout=POOL)
        if workload is not None and name in (*SDPA_BACKENDS, "flex") and takes_padded(workload):
            return Declaration(layout=PADDED)
        return Declaration()
    found = getattr(user_function(CandidateName.parse(name)), DECLARATION_ATTRIBUTE, None)
    return found if isinstance(found, Declaration) else Declaration()


def _sdpa(backend_name: str, workload: Workload, inputs: Sequence[Any]) -> Kernel:
    """SDPA with the backend forced. Plain causal is `is_causal`; bottom-right causal alone is PyTorch's
    lower-right CausalBias (which flash and efficient take natively); a packed batch of documents goes
    to the fused backends on CUDA as nested (jagged) tensors; a decode batch as a padded batch with a
    key-padding mask (attnbench.workloads.PADDED); any other mask, documents or ALiBi is a
    dense attn_mask (boolean, or float with the ALiBi bias), built here, before timing, which a
    backend takes or declines with its own reason. SDPA has no soft-capping."""
    import torch
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel

    backend = {
        "flash": SDPBackend.FLASH_ATTENTION,
        "efficient": SDPBackend.EFFICIENT_ATTENTION,
        "cudnn": SDPBackend.CUDNN_ATTENTION,
        "math": SDPBackend.MATH,
    }[backend_name]
    if workload.softcap:
        raise Unsupported("SDPA has no soft-capping of the scores (flex has: score_mod)")
    extra: dict[str, Any] = {"enable_gqa": True} if workload.gqa else {}
    if sdpa_takes_jagged(backend_name, workload):
        return _jagged_sdpa(backend_name, backend, workload, inputs, extra)
    if workload.layout == PADDED:
        extra["attn_mask"] = padded_mask(workload, torch.device(workload.device))
    elif sdpa_needs_dense_mask(workload):
        extra["attn_mask"] = _dense_mask(workload, torch.device(workload.device))
    elif workload.causal and workload.causal_alignment == "bottom_right":
        from torch.nn.attention.bias import causal_lower_right

        extra["attn_mask"] = causal_lower_right(workload.seq, workload.seq_kv)
    else:
        extra["is_causal"] = workload.causal

    def run(q: Any, k: Any, v: Any) -> Any:
        with sdpa_kernel(backend):
            return F.scaled_dot_product_attention(q, k, v, scale=workload.scale, **extra)

    return run


JAGGED_BACKENDS = ("flash", "efficient", "cudnn")


def sdpa_takes_jagged(name: str, workload: Workload) -> bool:
    """Whether SDPA backend `name` gets this workload as nested (jagged) tensors: a packed batch of
    documents that attend within themselves (causal inside or not; no window, prefix, ALiBi or
    soft-cap, queries and keys of the same lengths), on CUDA, where PyTorch's fused backends take
    jagged tensors and skip the pairs between documents. math takes no causal jagged input, and on the
    CPU no fused backend takes any: there the documents reach SDPA as one row with a dense
    block-diagonal mask, whose wasted work the report states."""
    return (
        name in JAGGED_BACKENDS
        and workload.device == "cuda"
        and workload.seq_lens is not None
        and workload.seq_lens_kv is None
        and workload.window is None
        and not workload.prefix
        and not workload.alibi
        and not workload.softcap
    )


def _jagged_sdpa(
    backend_name: str, backend: Any, workload: Workload, inputs: Sequence[Any], extra: dict[str, Any]
) -> Kernel:
    """SDPA on nested (jagged) tensors made from the thd inputs and the documents' offsets: views, no
    copy. PyTorch says why a backend declines jagged inputs in its log, not in its error, so one call
    is made here, before timing, with the log heard: a decline is `unsupported` with those words."""
    import torch
    import torch.nn.functional as F
    from torch.nn.attention import sdpa_kernel

    offsets = torch.tensor(masks.documents(workload)[0], device=workload.device, dtype=torch.int64)
    # given, not computed from the offsets: that would be a device-to-host copy in every timed call
    lengths = {"min_seqlen": min(workload.seq_lens or [0]), "max_seqlen": max(workload.seq_lens or [0])}

    def run(q: Any, k: Any, v: Any) -> Any:
        nested = [
            torch.nested.nested_tensor_from_jagged(t, offsets, **lengths).transpose(1, 2) for t in (q, k, v)
        ]
        with sdpa_kernel(backend):
            out = F.scaled_dot_product_attention(
                *nested, is_causal=workload.causal, scale=workload.scale, **extra
            )
        return out.transpose(1, 2).values()

    heard = _Heard()
    log = logging.getLogger("torch.nested._internal.sdpa")
    log.addHandler(heard)
    try:
        with torch.no_grad():
            run(*inputs[:3])
    except RuntimeError as exc:
        if "No viable backend" not in str(exc):
            raise
        # the same headers as SDPA's warnings for dense inputs: the forced backend's lines are its reasons
        why = "; ".join(_backend_warnings(backend_name, heard.lines))
        why = why or f"PyTorch has no {backend_name} kernel for nested tensors on {workload.device}"
        raise Unsupported(f"{backend_name} on nested (jagged) tensors: {why}") from exc
    finally:
        log.removeHandler(heard)
    return run


class _Heard(logging.Handler):
    """The lines a logger emits while it is attached."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage().strip())


def sdpa_needs_dense_mask(shape: Shape) -> bool:
    """Whether SDPA gets this shape's mask as a dense attn_mask (a window, a prefix, documents, ALiBi):
    the backends that take one compute every query-key pair and mask most of them away."""
    return shape.window is not None or shape.seq_lens is not None or bool(shape.prefix) or shape.alibi


def sdpa_dense_mask_work(name: str, pairs: dict[str, Any] | None, layout: str) -> float | None:
    """The work an SDPA backend given the mask dense or padded does over the work the mask asks for
    (workloads.dense_mask_work); None for every other kernel, and for SDPA given nested tensors."""
    return dense_mask_work(pairs, layout) if name in SDPA_BACKENDS else None


def _dense_mask(workload: Workload, device: Any) -> Any:
    """The whole mask as SDPA's attn_mask: boolean, or with ALiBi the bias with -inf where masked, in
    the workload's dtype (1 or heads, seq, seq_kv)."""
    import torch

    shape = workload.shape
    rows = torch.arange(workload.seq, device=device)[:, None]
    cols = torch.arange(workload.seq_kv, device=device)[None, :]
    allowed = masks.mask_mod(shape, device)
    seen = (
        allowed(None, None, rows, cols)
        if allowed is not None
        else torch.ones(workload.seq, workload.seq_kv, dtype=torch.bool, device=device)
    )
    modify = masks.score_mod(shape, device)
    if modify is None:
        return seen[None, None]
    heads = torch.arange(workload.heads, device=device).view(1, -1, 1, 1)
    zero = torch.zeros(1, workload.heads, workload.seq, workload.seq_kv, device=device)
    bias = modify(zero, None, heads, rows[None, None], cols[None, None])
    return bias.masked_fill(~seen, float("-inf")).to(workload.torch_dtype)


def _flex(workload: Workload, device: str) -> Kernel:
    """FlexAttention with the workload's mask as a mask_mod (a BlockMask built here, before timing, so
    fully masked blocks are skipped) and soft-capping and ALiBi as a score_mod (attnbench.masks). A
    decode batch comes padded (PADDED: the mask hides each request's padding, whose blocks are
    skipped) or, paged, as the pool of pages that PyTorch's PagedAttention maps (POOL). An fp8 cache
    and fp8 queries are read as they are, their descales folded into the softmax scale and the
    cache's applied to the output, which with fp8 queries flex returns in fp8: widened to the run's
    dtype in the call."""
    import torch
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    compiled = torch.compile(flex_attention, dynamic=False)
    shape = workload.shape
    score_mod = masks.score_mod(shape, device)
    if workload.layout in (PADDED, POOL):
        block_mask = _flex_decode_mask(workload, device)
    else:
        allowed = masks.mask_mod(shape, device)
        block_mask = None
        if allowed is not None:
            block_mask = create_block_mask(
                allowed, B=None, H=None, Q_LEN=workload.seq, KV_LEN=workload.seq_kv, device=device
            )
    descale, dtype = workload.kv_descale, workload.torch_dtype
    scale = workload.scale * workload.q_descale * descale

    def run(q: Any, k: Any, v: Any) -> Any:
        out = compiled(
            q, k, v, score_mod=score_mod, block_mask=block_mask, scale=scale, enable_gqa=workload.gqa
        )
        out = out if out.dtype == dtype else out.to(dtype)
        return out * descale if descale != 1.0 else out

    return run


def _flex_decode_mask(workload: Workload, device: str) -> Any:
    """The BlockMask of a padded decode batch: per request, its own cache (bottom-right causal); on a
    paged cache converted by PyTorch's PagedAttention to the pool, whose page table is the workload's
    (set here, not drawn by PagedAttention's allocator, so that every candidate reads the same pages)."""
    import torch
    from torch.nn.attention.flex_attention import create_block_mask

    requests = len(workload.cu_seqlens_k) - 1
    queries = padded_queries(workload)
    page = workload.page_size
    longest = -(-padded_length(workload) // page) * page if page else padded_length(workload)
    logical = create_block_mask(
        padded_mask_mod(workload, device),
        B=requests,
        H=None,
        Q_LEN=queries,
        KV_LEN=longest,
        device=device,
        **({"BLOCK_SIZE": (128, page)} if page else {}),
    )
    if workload.layout != POOL:
        return logical
    from torch.nn.attention.experimental._paged_attention import PagedAttention

    paged = PagedAttention(workload.num_pages, page, requests, device=device)
    for request, pages in enumerate(workload.page_table):
        physical = torch.tensor(pages, device=device)
        paged.page_table[request, : len(pages)] = physical
        paged.physical_to_logical[request, physical] = torch.arange(len(pages), device=device)
        paged.capacity[request] = len(pages) * page
    lengths = torch.tensor(workload.seq_lens_kv, device=device)
    return paged.convert_logical_block_mask(logical, kv_len=lengths)


def check_layout(name: str, layout: str, workload: Workload) -> None:
    """Unsupported when candidate `name` (in `layout`) cannot read this workload's cache: checked
    before its inputs are made in that layout (a paged pool needs a page table). SDPA reads neither
    fp8 nor a paged cache; flex reads both, a paged cache as a decode batch."""
    fp8 = f"{workload.kv_dtype} KV cache" if workload.kv_dtype else f"{workload.q_dtype} queries"
    if not is_user_kernel(name):
        if name in SDPA_BACKENDS and (workload.kv_dtype or workload.q_dtype):
            raise Unsupported(
                f"SDPA takes no {fp8} (q, k and v share one dtype, no backend has an fp8 kernel):"
                " flex and kernels that read fp8 run this shape"
            )
        if workload.page_size and (name in SDPA_BACKENDS or layout != POOL):
            unless = (
                ""
                if name in SDPA_BACKENDS
                else " unless the shape is a decode batch without window, prefix or ALiBi"
            )
            raise Unsupported(
                f"{'SDPA' if name in SDPA_BACKENDS else name} reads a contiguous KV cache{unless}, this shape's"
                f" is paged (page_size {workload.page_size}): the same shape without page_size measures the"
                " contiguous equivalent"
            )
    if (workload.kv_dtype or workload.q_dtype) and workload.mode == "forward_backward":
        raise Unsupported(f"{fp8} takes no gradient: forward only")
    if workload.page_size and workload.mode == "forward_backward":
        raise Unsupported("a paged KV cache is read in decode: forward only")
    if not is_user_kernel(name):
        return
    if workload.page_size and layout != "paged":
        raise Unsupported(
            f"this shape's cache is paged (page_size {workload.page_size}): declare @attnbench.kernel(layout='paged')"
        )
    if layout == "paged" and not workload.page_size:
        raise Unsupported("the paged layout needs a shape with page_size (a paged KV cache)")


def _user(name: str, workload: Workload, inputs: Sequence[Any]) -> Kernel:
    parsed = CandidateName.parse(name)
    base, config = parsed.family, parsed.configuration
    fn = user_function(parsed)

    if declaration(name).factory:
        run = fn(workload, *inputs[:3], **config)
        if not callable(run):
            raise TypeError(
                f"{base} is declared factory=True but returned {type(run).__name__}, not a callable"
            )
        return run

    beyond = [words for words in workload.features() if not words.startswith("a value head dim")]
    if beyond:
        raise Unsupported(
            f"this shape has {', '.join(beyond)}, which a plain function(q, k, v, causal, scale) is not told: declare"
            " @attnbench.kernel(factory=True) to receive the workload (docs/kernels.md)"
        )

    def call(q: Any, k: Any, v: Any) -> Any:
        return fn(q, k, v, causal=workload.causal, scale=workload.scale, **config)

    return call


def build(name: str, workload: Workload, inputs: Sequence[Any] = ()) -> Kernel:
    """Candidate `name` as a callable of (q, k, v) for `workload`. A factory kernel's setup runs here,
    on `inputs` (q, k, v in the candidate's layout): the caller times this apart from the calls."""
    if name in SDPA_BACKENDS:
        return _sdpa(name, workload, inputs)
    if name == "flex":
        return _flex(workload, workload.device)
    if is_user_kernel(name):
        return _user(name, workload, inputs)
    raise ValueError(f"unknown candidate {name!r}: use one of {BUILTIN} or module:function")


def unsupported_reason(
    name: str, device: str, exc: BaseException, warnings_seen: list[str]
) -> tuple[str, str] | None:
    """(reason, detail) when `exc` means that candidate `name` declines the shape, else None: the
    reason is one concise line, the detail the library's whole text.

    A user kernel declines only explicitly (Unsupported or NotImplementedError). SDPA raises "No
    available kernel" (or "No viable backend") and explains why in warnings about every backend,
    of which the forced backend's own are the reason; FlexAttention and Inductor raise
    NotImplementedError or say "not supported".
    """
    text = str(exc).strip()
    lines = [w.strip() for w in warnings_seen if w.strip()]
    detail = "; ".join(dict.fromkeys([*lines, text or type(exc).__name__]))
    if isinstance(exc, (Unsupported, NotImplementedError)):
        return _concise(text or type(exc).__name__), detail
    if is_user_kernel(name):
        return None
    sdpa_declined = "No available kernel" in text or "No viable backend" in text
    if not (sdpa_declined or "not supported" in text.lower() or "unsupported" in text.lower()):
        return None
    if sdpa_declined and device == "cpu" and name in CUDA_ONLY:
        return f"needs CUDA: PyTorch has no CPU implementation of the {name} backend", detail
    own = _backend_warnings(name, lines) if sdpa_declined else []
    return _concise("; ".join(own) if own else (text.splitlines()[0] if text else type(exc).__name__)), detail


# How SDPA's warnings name each backend ("Flash attention kernel not used because:" and so on).
_SDPA_HEADERS = {
    "flash": "flash attention",
    "efficient": "memory efficient",
    "cudnn": "cudnn attention",
    "math": "math attention",
}


def _backend_warnings(name: str, lines: list[str]) -> list[str]:
    """The warnings that SDPA printed under the forced backend's "... not used because:" header."""
    own: list[str] = []
    inside = False
    for line in lines:
        if "not used because" in line.lower():
            inside = line.lower().startswith(_SDPA_HEADERS.get(name, "\0"))
            continue
        if inside:
            own.append(line)
    return list(dict.fromkeys(own))


def _concise(text: str) -> str:
    """One line of at most REASON_CHARS characters."""
    return clip(" ".join(text.split()), REASON_CHARS)
