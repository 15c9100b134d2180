"""Candidates: the SDPA backends forced one at a time, FlexAttention, and users' own kernels.

Each candidate becomes a callable of (q, k, v) -> output for one shape. A user kernel is named
"module:function" (or registered in this process under any name, by the Python API) and called as
function(q, k, v, causal=..., scale=...). A user kernel declines a shape by raising `Unsupported`
(or NotImplementedError); its message's wording never decides it.
"""

from __future__ import annotations

import ast
import difflib
import hashlib
import importlib
import importlib.util
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from attnbench.formatting import clip
from attnbench.workloads import Shape

SDPA_BACKENDS = ("flash", "efficient", "cudnn", "math")
BUILTIN = (*SDPA_BACKENDS, "flex")
# SDPA backends that PyTorch implements only for CUDA: on the CPU they decline every shape.
CUDA_ONLY = ("efficient", "cudnn")
# How long a status reason may be; the library's whole text is kept beside it (reason_detail).
REASON_CHARS = 200

Kernel = Callable[[Any, Any, Any], Any]
UserFunction = Callable[..., Any]


class Unsupported(Exception):
    """Raise it from your kernel to decline a shape, dtype or device: the candidate is `unsupported`
    with your message as the reason (any other exception is an `error`)."""


# Kernels given as Python callables (attnbench.api), by name, in this process only.
_REGISTERED: dict[str, UserFunction] = {}


def register(name: str, fn: UserFunction) -> None:
    """Make `fn` a candidate named `name` in this process (called as fn(q, k, v, causal=..., scale=...))."""
    if name in BUILTIN:
        raise ValueError(f"{name!r} is a built-in candidate: give your kernel another name")
    _REGISTERED[name] = fn


def unregister(name: str) -> None:
    _REGISTERED.pop(name, None)


def is_user_kernel(name: str) -> bool:
    return ":" in name or name in _REGISTERED


def known(name: str) -> bool:
    return name in BUILTIN or is_user_kernel(name)


def _working_directory_on_path() -> None:
    """User kernels resolve from the working directory or PYTHONPATH, as with `python -c`."""
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)


def _import_user_module(module: str) -> Any:
    _working_directory_on_path()
    return importlib.import_module(module)


def _module_source(module: str) -> Path | None:
    _working_directory_on_path()
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):  # a parent package that does not exist, or an empty name
        return None
    if spec is None or spec.origin is None or not Path(spec.origin).is_file():
        return None
    return Path(spec.origin)


def user_kernel_source_hash(name: str) -> str:
    """Content hash of a user kernel's module and of the local modules it imports, directly or not,
    so that editing any of them reruns exactly the benchmarks that use the kernel. Found by trying
    it: a `wrap:attn` whose file only imported the real kernel from another local module reran
    nothing when that module changed. A module that imports nothing local hashes as it always did."""
    if name in _REGISTERED:
        return "in-process"
    source = _module_source(name.split(":", 1)[0])
    if source is None:
        return "unresolved"
    root = Path.cwd().resolve()
    local = local_imports(source, root)
    if not local:
        return hashlib.sha256(source.read_bytes()).hexdigest()[:16]
    digest = hashlib.sha256(source.read_bytes())
    for path in sorted(local):  # named relative to the working directory: a moved checkout reruns nothing
        digest.update(b"\0" + path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def local_imports(source: Path, root: Path) -> set[Path]:
    """The files under `root` (the working directory: where user kernels live, never site-packages)
    that `source` imports, directly or through each other, found by reading their imports (nothing
    is imported). A module that does not parse counts with its text alone."""
    root = root.resolve()
    found: set[Path] = set()
    pending = [source.resolve()]
    while pending:
        path = pending.pop()
        try:
            tree = ast.parse(path.read_bytes(), filename=str(path))
        except (SyntaxError, ValueError):
            continue
        for module in _imported_modules(tree, path, root):
            for candidate in _module_files(module, root):
                if candidate != source.resolve() and candidate not in found:
                    found.add(candidate)
                    pending.append(candidate)
    return found


def _imported_modules(tree: ast.Module, path: Path, root: Path) -> list[str]:
    """Dotted names an AST imports, relative imports resolved against `path`'s package under `root`;
    `from a import b` names both a and a.b (b may be a submodule)."""
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = path.parent
                for _ in range(node.level - 1):
                    package = package.parent
                if not package.is_relative_to(root):
                    continue
                prefix = ".".join(package.relative_to(root).parts)
                base = ".".join(part for part in (prefix, base) if part)
            names += [base, *(f"{base}.{alias.name}" if base else alias.name for alias in node.names)]
    return [name for name in names if name]


def _module_files(module: str, root: Path) -> list[Path]:
    """The files under `root` that importing `module` runs: each package's __init__.py on the way,
    and the module's own file."""
    files: list[Path] = []
    parts = module.split(".")
    for depth in range(1, len(parts) + 1):
        base = root.joinpath(*parts[:depth])
        for candidate in (base / "__init__.py", base.with_suffix(".py")):
            if candidate.is_file():
                files.append(candidate.resolve())
                break
    return files


def user_kernel_problem(name: str) -> str | None:
    """Why the user kernel `module:function` cannot be found, or None: checked before any job runs,
    without importing the module (the workflow parses its config in every job on a cluster). The
    module must exist and parse, and define or import `function` at top level (a module that
    star-imports is given the benefit of the doubt)."""
    if name in _REGISTERED:
        return None
    module, _, function = name.partition(":")
    if not module or not function.isidentifier():
        return f"{name!r} is not module:function"
    source = _module_source(module)
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
        return None
    close = difflib.get_close_matches(function, sorted(d for d in defined if not d.startswith("_")), n=1)
    hint = f"; did you mean {module}:{close[0]}?" if close else ""
    return f"module {module!r} ({source}) defines no {function!r}{hint}"


def _sdpa(backend_name: str, shape: Shape) -> Kernel:
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel

    backend = {
        "flash": SDPBackend.FLASH_ATTENTION,
        "efficient": SDPBackend.EFFICIENT_ATTENTION,
        "cudnn": SDPBackend.CUDNN_ATTENTION,
        "math": SDPBackend.MATH,
    }[backend_name]
    extra = {"enable_gqa": True} if shape.gqa else {}

    def run(q: Any, k: Any, v: Any) -> Any:
        with sdpa_kernel(backend):
            return F.scaled_dot_product_attention(q, k, v, is_causal=shape.causal, scale=shape.scale, **extra)

    return run


def _flex(shape: Shape, device: str) -> Kernel:
    import torch
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    compiled = torch.compile(flex_attention, dynamic=False)
    block_mask = None
    if shape.causal:
        block_mask = create_block_mask(
            lambda b, h, q_idx, kv_idx: q_idx >= kv_idx,
            B=None,
            H=None,
            Q_LEN=shape.seq,
            KV_LEN=shape.seq_kv,
            device=device,
        )

    def run(q: Any, k: Any, v: Any) -> Any:
        return compiled(q, k, v, block_mask=block_mask, scale=shape.scale, enable_gqa=shape.gqa)

    return run


def _user(name: str, shape: Shape) -> Kernel:
    if name in _REGISTERED:
        fn = _REGISTERED[name]
    else:
        module, function = name.split(":", 1)
        fn = getattr(_import_user_module(module), function)

    def run(q: Any, k: Any, v: Any) -> Any:
        return fn(q, k, v, causal=shape.causal, scale=shape.scale)

    return run


def build(name: str, shape: Shape, device: str) -> Kernel:
    if name in SDPA_BACKENDS:
        return _sdpa(name, shape)
    if name == "flex":
        return _flex(shape, device)
    if is_user_kernel(name):
        return _user(name, shape)
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
_SDPA_HEADERS = {"flash": "flash attention", "efficient": "memory efficient", "cudnn": "cudnn attention"}


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
