"""The user's code: where a kernel `module:function` is found (without importing it), the hash of
its source, importing it, and a warm worker's reload of what changed since (`UserModules`); and a
candidate's name (`CandidateName`), which says whether it is the user's.

Why one module: discovery, hashing and reload must agree on which files are the user's, and the
checks that run before any job (in Snakemake's process, where nothing bounds an import) must never
run the user's code. Cheap to import (no torch, no numpy): the worker imports it before its first job.
"""

from __future__ import annotations

import ast
import hashlib
import importlib
import importlib.abc
import importlib.machinery
import linecache
import logging
import os
import re
import sys
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

SDPA_BACKENDS = ("flash", "efficient", "cudnn", "math")
BUILTIN = (*SDPA_BACKENDS, "flex")

UserFunction = Callable[..., Any]
# "module:function" with an optional configuration: "module:function[BLOCK_M=128,num_warps=8]"
_CONFIGURED = re.compile(r"^(?P<base>[^\[\]]+)\[(?P<config>[^\[\]]*)\]$")


@dataclass(frozen=True)
class CandidateName:
    """A candidate's name, parsed once: a built-in ("flash"), a user kernel ("module:function", or a
    name registered in this process) or one configuration of a user kernel's grid
    ("module:function[BLOCK_M=128,num_warps=8]"). Names stay plain strings in specs and result files;
    parse one where its parts are needed. Two names are equal when their text is."""

    text: str
    family: str = field(compare=False)  # the name without its configuration: the kernel it configures
    configuration: dict[str, Any] = field(compare=False)  # {} for none; values read as literals, else words

    @classmethod
    def parse(cls, text: str, *, strict: bool = True) -> CandidateName:
        """The parts of `text`: ValueError for a configuration that is not KEY=VALUE,..., unless not
        `strict` (a check that says elsewhere what is wrong with it): then it reads as none."""
        match = _CONFIGURED.match(text)
        if match is None:
            return cls(text, text, {})
        configuration: dict[str, Any] = {}
        for item in filter(None, (part.strip() for part in match["config"].split(","))):
            key, equals, value = item.partition("=")
            if not equals or not key.strip().isidentifier():
                if not strict:
                    return cls(text, match["base"], {})
                raise ValueError(f"{text!r}: {item!r} is not KEY=VALUE")
            try:
                configuration[key.strip()] = ast.literal_eval(value.strip())
            except (ValueError, SyntaxError):
                configuration[key.strip()] = value.strip()
        return cls(text, match["base"], configuration)

    def __str__(self) -> str:
        return self.text

    @property
    def module(self) -> str:
        """A `module:function` kernel's module; "" for any other name."""
        module, colon, _ = self.family.partition(":")
        return module if colon else ""

    @property
    def function(self) -> str:
        """A `module:function` kernel's function; "" for any other name."""
        return self.family.partition(":")[2]

    @property
    def is_user(self) -> bool:
        """A user kernel: `module:function`, or a callable registered in this process under its family."""
        return ":" in self.family or self.family in REGISTERED

    @property
    def is_builtin(self) -> bool:
        return self.text in BUILTIN


# Kernels given as Python callables (attnbench.api), by name, in this process only.
REGISTERED: dict[str, UserFunction] = {}


def is_user_kernel(name: str) -> bool:
    """Whether `name` is a user kernel's, even with a malformed configuration (candidates.
    user_kernel_problem says what is wrong with it)."""
    return CandidateName.parse(name, strict=False).is_user


def register(name: str, fn: UserFunction) -> None:
    """Make `fn` a candidate named `name` in this process (called as fn(q, k, v, causal=..., scale=...))."""
    if name in BUILTIN:
        raise ValueError(f"{name!r} is a built-in candidate: give your kernel another name")
    REGISTERED[name] = fn


def unregister(name: str) -> None:
    REGISTERED.pop(name, None)


# --- discovery, without importing -----------------------------------------------------------------


def _working_directory_on_path() -> None:
    """User kernels resolve from the working directory or PYTHONPATH, as with `python -c`."""
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)


def module_source(module: str) -> Path | None:
    _working_directory_on_path()
    try:
        spec = _find_spec(module)
    except (ImportError, ValueError):  # an empty name, or a finder that refuses it
        return None
    if spec is None or spec.origin is None or not Path(spec.origin).is_file():
        return None
    return Path(spec.origin)


def _find_spec(module: str) -> importlib.machinery.ModuleSpec | None:
    """importlib.util.find_spec without importing the parent packages of a dotted name: that runs their
    code, here in the process that checks the config (Snakemake's), where nothing bounds it (found by
    trying it, issue 31: a package whose __init__ hangs hung the run before any job)."""
    if module in sys.modules:
        return getattr(sys.modules[module], "__spec__", None)
    path = None
    parts = module.split(".")
    for depth in range(1, len(parts) + 1):
        name = ".".join(parts[:depth])
        loaded = sys.modules.get(name)
        spec = getattr(loaded, "__spec__", None) if loaded is not None else None
        for finder in sys.meta_path if spec is None else ():
            find = getattr(finder, "find_spec", None)
            spec = find(name, path) if find is not None else None
            if spec is not None:
                break
        if spec is None or depth == len(parts):
            return spec
        if spec.submodule_search_locations is None:  # not a package: it has no submodules
            return None
        path = list(spec.submodule_search_locations)
    return None


def refused_module(module: str) -> str | None:
    """Why `module` may not be a kernel module, or None: the standard library and Python's built-in
    modules are not kernels (found by trying it: `os:system` and `builtins:eval` were reported "not
    found", and `subprocess:run` was accepted and called with the inputs)."""
    top = module.split(".")[0]
    if top in sys.stdlib_module_names or top in sys.builtin_module_names:
        which = "it is" if top == module else f"{top} is"
        return (
            f"refused: {module} is not a kernel module ({which} Python's standard library; a kernel's file"
            " must not take a standard-library name)"
        )
    return None


# --- importing ------------------------------------------------------------------------------------


def import_user_module(module: str) -> Any:
    from attnbench import guard

    guard.bind()  # torch's clocks bound before any user module runs
    _working_directory_on_path()
    return importlib.import_module(module)


def user_function(name: CandidateName) -> UserFunction:
    """The function a user kernel names (imports its module): registered, or `module:function`."""
    if name.family in REGISTERED:
        return REGISTERED[name.family]
    module, function = name.module, name.function
    if refused := refused_module(module):  # a spec not made from a checked config
        raise ValueError(refused)
    return getattr(import_user_module(module), function)


# --- hashing --------------------------------------------------------------------------------------


def user_kernel_source_hash(name: str) -> str:
    """Content hash of a user kernel's module and of the local modules it imports, directly or not,
    so that editing any of them reruns exactly the benchmarks that use the kernel. Found by trying
    it: a `wrap:attn` whose file only imported the real kernel from another local module reran
    nothing when that module changed. A module that imports nothing local hashes as it always did."""
    parsed = CandidateName.parse(name)
    if parsed.family in REGISTERED:
        return "in-process"
    source = module_source(parsed.module)
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
        for module in imported_modules(tree, path, root):
            for candidate in _module_files(module, root):
                if candidate != source.resolve() and candidate not in found:
                    found.add(candidate)
                    pending.append(candidate)
    return found


def imported_modules(tree: ast.Module, path: Path, root: Path) -> list[str]:
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


# --- a warm worker's hot reload -------------------------------------------------------------------


class _Imported(NamedTuple):
    """A user module as the worker imported it: its file, that file's content hash then, whether it is
    Python source compiled by the worker (`source`) or anything else (an extension, bytecode), and
    whether it lies under the worker's working directory (`local`: reloadable)."""

    path: str
    digest: str
    source: bool
    local: bool


def _digest(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


def _current_digest(path: str) -> str | None:
    try:
        return _digest(Path(path).read_bytes())
    except OSError:  # removed, or unreadable: changed
        return None


def _library_dirs() -> list[Path]:
    """Where the interpreter's and installed packages' modules live, and attnbench's own: never the user's."""
    import site
    import sysconfig

    import attnbench

    paths = sysconfig.get_paths()
    found = [paths[name] for name in ("stdlib", "platstdlib", "purelib", "platlib") if name in paths]
    found += [*site.getsitepackages(), site.getusersitepackages(), str(Path(attnbench.__file__).parent)]
    return [Path(path).resolve() for path in dict.fromkeys(found)]


class UserModules(importlib.abc.MetaPathFinder):
    """The user's modules that a warm worker imported, and their reload when their files change.

    Installed on sys.meta_path just before the PathFinder, it sees each module imported from a file
    on sys.path that is not the interpreter's, an installed package's or attnbench's: a user module.
    Python source is compiled by `_SourceLoader`, which records the hash of exactly the bytes it
    compiled (never a .pyc: its check is the file's mtime in whole seconds and its size, which an edit
    within a second that keeps the size passes); anything else is hashed when it is found.

    `refresh` (before each request): the modules still loaded whose files' content changed, with every
    user module that imports one of them, directly or through others (named in its import statements,
    a function's included, or found among its globals: a module, or an object defined in one, that is
    reloaded), and every submodule of a reloaded package, are dropped from sys.modules and imported
    again, in the order they were first imported (a module whose file is gone is only dropped). The
    worker retires instead (a fresh worker imports everything anew) when a changed file is not Python
    source or lies outside the working directory, a re-import raises, or a user kernel's source hash
    in the spec changed while its module, loaded here, is not one the worker reloads (an installed
    package's, say).

    Not seen: modules loaded other than through sys.path (importlib.util.spec_from_file_location),
    and references to the old code that outlive the reload in modules that are not the user's (a
    registry in an installed library). Those need a fresh worker: ATTNBENCH_WORKER_IDLE_S=0 or a new
    working directory.
    """

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.libraries = _library_dirs()
        self.imported: dict[str, _Imported] = {}
        self.kernel_hashes: dict[str, str] = {}
        self._library_entries: dict[str, bool] = {}  # a package's __path__ entry: in a library?

    def install(self) -> None:
        finders = [type(finder) if not isinstance(finder, type) else finder for finder in sys.meta_path]
        at = finders.index(importlib.machinery.PathFinder) if importlib.machinery.PathFinder in finders else 0
        sys.meta_path.insert(at, self)

    def _place(self, origin: str) -> bool | None:
        """None for a library's file (or attnbench's), else whether it is under the working directory."""
        path = Path(origin).resolve()
        if any(path.is_relative_to(library) for library in self.libraries):
            return None
        return path.is_relative_to(self.root)

    def _in_library(self, entry: str) -> bool:
        if entry not in self._library_entries:
            self._library_entries[entry] = self._place(entry) is None
        return self._library_entries[entry]

    def find_spec(
        self, fullname: str, path: Any = None, target: Any = None
    ) -> importlib.machinery.ModuleSpec | None:
        if path is not None and all(self._in_library(str(entry)) for entry in path):
            return None  # a library's submodule (torch imports hundreds during a first shape): not searched twice
        spec = importlib.machinery.PathFinder.find_spec(fullname, path, target)
        if spec is None or not spec.has_location or spec.origin is None:
            return None  # not found, or a namespace package: the PathFinder's own answer stands
        local = self._place(spec.origin)
        if local is None:
            return None
        if type(spec.loader) is importlib.machinery.SourceFileLoader:
            spec.loader = _SourceLoader(fullname, spec.origin, self, local)
        else:
            digest = _current_digest(spec.origin)
            if digest is not None:
                self.imported[fullname] = _Imported(spec.origin, digest, False, local)
        return spec

    def record(self, name: str, path: str, content: bytes, local: bool) -> None:
        self.imported[name] = _Imported(path, _digest(content), True, local)

    def _loaded(self) -> dict[str, _Imported]:
        """The recorded modules that are still in sys.modules, as recorded (not re-imported otherwise)."""
        return {
            name: entry
            for name, entry in self.imported.items()
            if getattr(sys.modules.get(name), "__file__", None) == entry.path
        }

    def refresh(self, spec: dict[str, Any]) -> tuple[list[str], str | None]:
        """(modules reloaded, why the worker must retire instead, or None)."""
        loaded = self._loaded()
        changed = sorted(
            name for name, entry in loaded.items() if _current_digest(entry.path) != entry.digest
        )
        reloaded: list[str] = []
        if changed:
            unsafe = [name for name in changed if not (loaded[name].source and loaded[name].local)]
            if unsafe:
                return [], (
                    f"cannot reload changed module(s) {', '.join(unsafe)}: only Python source under its working"
                    f" directory {self.root} is reloaded"
                )
            why, reloaded = self._reload(changed, loaded)
            if why is not None:
                return [], why
            edited = [name for name in changed if name in reloaded]
            others = [name for name in reloaded if name not in changed]
            gone = [name for name in changed if name not in reloaded]
            logging.getLogger("attnbench.worker").info(
                f"worker pid {os.getpid()} reloaded changed module(s) {', '.join(edited) or 'none'}"
                + (f" and the module(s) that import them: {', '.join(others)}" if others else "")
                + (f"; dropped removed module(s) {', '.join(gone)}" if gone else "")
            )
        why = self._kernel_outside(spec)
        return (reloaded, None) if why is None else ([], why)

    def _reload(self, changed: list[str], loaded: dict[str, _Imported]) -> tuple[str | None, list[str]]:
        drop = set(changed)
        imports = {name: _imported_names(entry, self.root) for name, entry in loaded.items()}

        def uses_dropped(name: str) -> bool:
            within = tuple(f"{dropped}." for dropped in drop)
            imported = any(other in drop or other.startswith(within) for other in imports[name])
            return imported or _holds(sys.modules[name], drop)

        growing = True
        while growing:  # until no other module imports or holds what is dropped, directly or not
            users = {name for name in loaded.keys() - drop if uses_dropped(name)}
            drop |= users
            growing = bool(users)
        compiled = sorted(name for name in drop if not loaded[name].source)
        if compiled:  # an extension that holds a changed module's objects cannot be imported again
            return (
                f"cannot reload module(s) {', '.join(compiled)} (not Python source) that use changed ones",
                [],
            )
        packages = tuple(f"{name}." for name in drop)
        removed = [name for name in sys.modules if name in drop or name.startswith(packages)]
        for name in removed:
            module = sys.modules.pop(name)
            # Else a traceback, or inspect.getsource (which Triton's JIT compiles), may show the old lines.
            linecache.cache.pop(getattr(module, "__file__", None) or "", None)
        importlib.invalidate_caches()
        # A module whose file is gone stays dropped: a module that still imports it fails below.
        again = [name for name in removed if name not in loaded or Path(loaded[name].path).is_file()]
        for name in again:
            try:
                import_user_module(name)
            except (Exception, SystemExit) as exc:
                why = f"could not reload changed module(s) {', '.join(changed)}: importing {name} raised"
                return f"{why} {type(exc).__name__}: {exc}", []
        return None, again

    def _kernel_outside(self, spec: dict[str, Any]) -> str | None:
        """A user kernel whose source hash changed, in a module loaded here that `refresh` does not
        reload (an installed package, say): the key used to hold these hashes, so this keeps its word."""
        hashes = spec.get("kernel_hashes") or {}
        for name, digest in hashes.items():
            module = CandidateName.parse(name).module
            before = self.kernel_hashes.get(name)
            entry = self.imported.get(module)
            reloadable = entry is not None and entry.source and entry.local
            if before not in (None, digest) and module in sys.modules and not reloadable:
                return (
                    f"cannot reload user kernel {name}: its source changed, and its module {module} is not"
                    f" Python source under its working directory {self.root}"
                )
        self.kernel_hashes.update(hashes)
        return None


def _imported_names(entry: _Imported, root: Path) -> set[str]:
    """The modules that a user module's source imports, anywhere in it (a function's own imports too),
    relative imports resolved under `root`; none for a file that is not source or does not parse."""
    if not entry.source:
        return set()
    try:
        tree = ast.parse(Path(entry.path).read_bytes(), filename=entry.path)
    except (OSError, SyntaxError, ValueError):
        return set()
    return set(imported_modules(tree, Path(entry.path), root))


def _holds(module: types.ModuleType, names: set[str]) -> bool:
    """Whether `module`'s globals hold one of the modules `names`, or an object defined in one (a
    function, class or instance), other than its own submodules (which the import system sets there)."""
    own = f"{module.__name__}."
    for attribute, value in list(vars(module).items()):
        try:
            if isinstance(value, types.ModuleType):
                if value.__name__ in names and value.__name__ != own + attribute:
                    return True
            elif getattr(value, "__module__", None) in names:
                return True
        except Exception:  # an object whose attributes raise: it holds nothing we know of
            continue
    return False


class _SourceLoader(importlib.machinery.SourceFileLoader):
    """Compiles a user module from its source, always, and records the hash of what it compiled."""

    def __init__(self, fullname: str, path: str, modules: UserModules, local: bool) -> None:
        super().__init__(fullname, path)
        self._modules = modules
        self._local = local

    def get_code(self, fullname: str) -> Any:
        path = self.get_filename(fullname)
        source = self.get_data(path)
        self._modules.record(fullname, path, source, self._local)
        return self.source_to_code(source, path)
