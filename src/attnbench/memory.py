"""Device memory: peak per candidate, device totals, and out-of-memory handling."""

from __future__ import annotations

import gc
import re
from typing import Any

MB = 2**20
OOM_RISK_FRACTION = 0.85


def device_memory(device: str) -> dict[str, float | None]:
    if device != "cuda":
        return {"device_total_mb": None, "device_free_mb": None}
    import torch

    free, total = torch.cuda.mem_get_info()
    return {"device_total_mb": total / MB, "device_free_mb": free / MB}


def reset_peak(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()


def read_peak(device: str) -> dict[str, Any]:
    """Peak allocated and reserved since the last reset; None on the CPU, which keeps no such counter."""
    if device != "cuda":
        return {"peak_mem_mb": None, "peak_reserved_mb": None, "oom_risk": None}
    import torch

    torch.cuda.synchronize()
    reserved = torch.cuda.max_memory_reserved()
    total = torch.cuda.mem_get_info()[1]
    return {
        "peak_mem_mb": torch.cuda.max_memory_allocated() / MB,
        "peak_reserved_mb": reserved / MB,
        "oom_risk": reserved > OOM_RISK_FRACTION * total,
    }


def is_out_of_memory(exc: BaseException) -> bool:
    """CUDA's OutOfMemoryError, or the CPU allocator's refusal (a RuntimeError of its own)."""
    import torch

    text = str(exc).lower()
    return (
        isinstance(exc, torch.OutOfMemoryError) or "out of memory" in text or "can't allocate memory" in text
    )


def oom_reason(exc: BaseException) -> str:
    """Keep the size that failed at the front of the reason: CUDA says 'Tried to allocate 20.00 GiB',
    the CPU allocator 'you tried to allocate 281474976710656 bytes'."""
    text = str(exc)
    first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    size = re.search(r"Tried to allocate [0-9.]+ [KMGT]i?B", text)
    if size is None and (cpu := re.search(r"tried to allocate (\d+) bytes", text)):
        first = first[first.find("DefaultCPUAllocator") :] if "DefaultCPUAllocator" in first else first
        return f"Tried to allocate {int(cpu.group(1)) / 2**30:.2f} GiB: {first}"
    return f"{size.group(0)}: {first}" if size and size.group(0) not in first else first


def release(device: str) -> None:
    """Give memory back after a failure so the next candidate starts from the same state."""
    gc.collect()
    if device == "cuda":
        import torch

        torch.cuda.synchronize()
        torch.cuda.empty_cache()
