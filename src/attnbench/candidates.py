"""Candidates: the SDPA backends forced one at a time, FlexAttention, and users' own kernels.

Each candidate becomes a callable of (q, k, v) -> output for one shape. A user kernel is named
"module:function" and called as function(q, k, v, causal=..., scale=...).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from attnbench.workloads import Shape

SDPA_BACKENDS = ("flash", "efficient", "cudnn", "math")
BUILTIN = (*SDPA_BACKENDS, "flex")

Kernel = Callable[[Any, Any, Any], Any]


def is_user_kernel(name: str) -> bool:
    return ":" in name


def _working_directory_on_path() -> None:
    """User kernels resolve from the working directory or PYTHONPATH, as with `python -c`."""
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)


def _import_user_module(module: str) -> Any:
    _working_directory_on_path()
    return importlib.import_module(module)


def user_kernel_source_hash(name: str) -> str:
    """Content hash of a user kernel's module, so editing the kernel reruns its benchmarks."""
    module = name.split(":", 1)[0]
    _working_directory_on_path()
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None or not Path(spec.origin).is_file():
        return "unresolved"
    return hashlib.sha256(Path(spec.origin).read_bytes()).hexdigest()[:16]


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


def unsupported_reason(exc: BaseException, warnings_seen: list[str]) -> str | None:
    """The library's reason when `exc` means 'this backend declines the shape', else None.

    SDPA raises "No available kernel" and explains why in warnings; FlexAttention and Inductor
    raise NotImplementedError or say "not supported".
    """
    text = str(exc)
    declined = (
        "No available kernel" in text
        or "No viable backend" in text
        or isinstance(exc, NotImplementedError)
        or "not supported" in text.lower()
        or "unsupported" in text.lower()
    )
    if not declined:
        return None
    reasons = [w.strip() for w in warnings_seen if w.strip()]
    return "; ".join(
        dict.fromkeys([*reasons, text.strip().splitlines()[0] if text.strip() else type(exc).__name__])
    )
