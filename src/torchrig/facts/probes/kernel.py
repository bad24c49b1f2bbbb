"""A real kernel launch and a matmul checked against a CPU reference, on one device.

This is what proves that the build has code for the GPU's architecture ("no
kernel image is available for execution on the device" shows up here, not at
import) and that the device computes correctly.
"""

from __future__ import annotations

import time
from typing import Any

from torchrig.facts.model import KernelProbe

ELEMENTS = 1 << 20
MATMUL_SIZE = 512
# fp32 with IEEE accumulation lands near 1e-6 of the largest value; TF32 near 1e-3.
MATMUL_TOLERANCE = 1e-4


def probe_kernel(device: str) -> KernelProbe:
    """Launch an elementwise kernel and a 512×512 fp32 matmul on `device` and check both."""
    import torch

    try:
        dev = torch.device(device)
        _disable_tf32(torch)
        x = torch.arange(ELEMENTS, dtype=torch.float32, device=dev)
        _elementwise(x)  # the first launch loads the module: errors surface here
        _synchronize(torch, dev)
        start = time.perf_counter()
        y = _elementwise(x)
        _synchronize(torch, dev)
        kernel_ms = (time.perf_counter() - start) * 1000.0
        expected = torch.arange(ELEMENTS, dtype=torch.float32) * 2 + 1
        if not torch.equal(y.cpu(), expected):
            return KernelProbe(
                device=device,
                ok=False,
                kernel_ms=kernel_ms,
                error="an elementwise kernel returned wrong values",
            )
        error = _matmul_relative_error(torch, dev)
    except Exception as exc:  # the error text is the finding ("no kernel image ...")
        return KernelProbe(device=device, ok=False, error=_describe(exc))
    if error > MATMUL_TOLERANCE:
        return KernelProbe(
            device=device,
            ok=False,
            kernel_ms=kernel_ms,
            matmul_max_rel_error=error,
            error=(
                f"a {MATMUL_SIZE}x{MATMUL_SIZE} fp32 matmul differs from the CPU reference by "
                f"{error:.2e} (relative), above {MATMUL_TOLERANCE:.0e}"
            ),
        )
    return KernelProbe(device=device, ok=True, kernel_ms=kernel_ms, matmul_max_rel_error=error)


def _elementwise(x: Any) -> Any:
    return x.mul(2).add_(1)


def _matmul_relative_error(torch: Any, dev: Any) -> float:
    """Largest deviation of the device's fp32 matmul from a float64 CPU reference, relative
    to the reference's largest magnitude (element-wise ratios blow up near zero)."""
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(MATMUL_SIZE, MATMUL_SIZE, generator=generator)
    b = torch.randn(MATMUL_SIZE, MATMUL_SIZE, generator=generator)
    reference = a.double() @ b.double()
    result = (a.to(dev) @ b.to(dev)).cpu().double()
    return float(((result - reference).abs().max() / reference.abs().max()).item())


def _disable_tf32(torch: Any) -> None:
    matmul = torch.backends.cuda.matmul
    if hasattr(matmul, "fp32_precision"):  # the API from torch 2.9 on
        matmul.fp32_precision = "ieee"
    else:
        matmul.allow_tf32 = False


def _synchronize(torch: Any, dev: Any) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
