"""Which built-in attention takes fp8 on this PyTorch, and what it returns (issue 17, item 3).

For each fp8 format (e4m3, e5m2) and each built-in (the four SDPA backends, compiled FlexAttention),
a small decode problem two ways: q, k and v all in fp8, and q in bfloat16 with k and v in fp8 (an fp8
KV cache). Prints whether the call ran, the output's dtype, and its relative error against float64
attention over the same (dequantised) values, or the library's first line of refusal.

    python3 benchmarks/fp8_support.py          # on a GPU machine; docs/examples/h200-decode/fp8_support.txt
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.nn.attention.flex_attention import flex_attention

from attnbench.workloads import FP8_DESCALE, relative_error

BACKENDS = {
    "flash": SDPBackend.FLASH_ATTENTION,
    "efficient": SDPBackend.EFFICIENT_ATTENTION,
    "cudnn": SDPBackend.CUDNN_ATTENTION,
    "math": SDPBackend.MATH,
}


def main() -> None:
    warnings.simplefilter("ignore")
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name()}")
    flex = torch.compile(flex_attention, dynamic=False)
    shape = (4, 8, 1, 128), (4, 8, 2048, 128)
    for fmt, descale in FP8_DESCALE.items():
        dtype = getattr(torch, fmt)
        q = torch.randn(shape[0], device="cuda")
        k, v = (torch.randn(shape[1], device="cuda") for _ in range(2))
        held = [(t / descale).to(dtype) for t in (q, k, v)]  # what an fp8 tensor holds
        values = [t.double() * descale for t in held]
        want = F.scaled_dot_product_attention(*values)
        for queries in ("fp8", "bfloat16"):
            qq = held[0] if queries == "fp8" else values[0].to(torch.bfloat16)
            q_descale = descale if queries == "fp8" else 1.0
            scale = q.shape[-1] ** -0.5 * q_descale * descale
            calls = {name: _sdpa(backend, scale) for name, backend in BACKENDS.items()}
            calls["flex"] = _flex(flex, scale)
            for name, call in calls.items():
                try:
                    out = call(qq, *held[1:])
                    error = relative_error(out.double() * descale, want)
                    print(f"{fmt:14} q {queries:8} {name:9} ran: output {out.dtype}, rel_error {error:.4f}")
                except Exception as exc:  # the library's refusal is the finding
                    first = str(exc).strip().splitlines()[0][:160]
                    print(f"{fmt:14} q {queries:8} {name:9} refused: {type(exc).__name__}: {first}")


def _sdpa(backend: SDPBackend, scale: float):
    def call(q, k, v):
        with sdpa_kernel(backend):
            return F.scaled_dot_product_attention(q, k, v, scale=scale)

    return call


def _flex(flex, scale: float):
    def call(q, k, v):
        return flex(q, k, v, scale=scale)

    return call


if __name__ == "__main__":
    main()
