"""Which scaled_dot_product_attention backends can run here, and how fast.

A build without Flash Attention silently falls back to the math backend, which is
~60× slower on an H100 and materialises the whole attention matrix: the model that
was fine on a laptop OOMs in production. Forcing each backend in turn shows which
ones really run.
"""

from __future__ import annotations

import contextlib
import statistics
import time
import warnings
from typing import Any

from torchrig.facts.model import SdpaBackendProbe, SdpaProbe

CUDA_SHAPE = (8, 16, 2048, 64)  # batch, heads, sequence, head dim: a realistic LLM layer
CPU_SHAPE = (1, 4, 256, 64)  # small enough for a laptop core
BACKENDS = ("flash", "efficient", "cudnn", "math")
TIMED_RUNS = 5


def probe_sdpa(device: str) -> SdpaProbe:
    """Run causal attention on `device` under each backend (bf16 on CUDA, fp32 on CPU)."""
    import torch

    on_cuda = device.startswith("cuda")
    shape = CUDA_SHAPE if on_cuda else CPU_SHAPE
    dtype = torch.bfloat16 if on_cuda else torch.float32
    try:
        q, k, v = (torch.randn(shape, dtype=dtype, device=device) for _ in range(3))
    except Exception as exc:
        return SdpaProbe(
            device=device,
            dtype=_dtype_name(dtype),
            shape=list(shape),
            error=f"{type(exc).__name__}: {exc}",
        )
    # CUDA events record on the current device's stream: make it the probed one.
    with torch.cuda.device(q.device) if on_cuda else contextlib.nullcontext():
        backends = [_probe_backend(torch, name, q, k, v) for name in BACKENDS]
    return SdpaProbe(
        device=device, dtype=_dtype_name(dtype), shape=list(shape), causal=True, backends=backends
    )


def _probe_backend(torch: Any, name: str, q: Any, k: Any, v: Any) -> SdpaBackendProbe:
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.nn.functional import scaled_dot_product_attention

    backend = {
        "flash": SDPBackend.FLASH_ATTENTION,
        "efficient": SDPBackend.EFFICIENT_ATTENTION,
        "cudnn": SDPBackend.CUDNN_ATTENTION,
        "math": SDPBackend.MATH,
    }[name]

    def attend() -> Any:
        return scaled_dot_product_attention(q, k, v, is_causal=True)

    # A backend that cannot run warns why ("Flash attention requires ...") and then
    # raises "No available kernel"; both texts together name the cause.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            with sdpa_kernel(backend):
                out = attend()  # warm-up: kernel selection, workspace, autotuning
                if not bool(torch.isfinite(out).all()):
                    return SdpaBackendProbe(
                        backend=name, ok=False, error="the output has NaN or inf values"
                    )
                times = [_time_ms(torch, attend, q.device) for _ in range(TIMED_RUNS)]
        except Exception as exc:
            reasons = [str(w.message).strip() for w in caught]
            error = " | ".join([f"{type(exc).__name__}: {exc}".strip(), *reasons])
            return SdpaBackendProbe(backend=name, ok=False, error=error)
    return SdpaBackendProbe(backend=name, ok=True, median_ms=statistics.median(times))


def _time_ms(torch: Any, run: Any, device: Any) -> float:
    if device.type == "cuda":
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        start.record()
        run()
        end.record()
        end.synchronize()
        return float(start.elapsed_time(end))
    begin = time.perf_counter()
    run()
    return (time.perf_counter() - begin) * 1000.0


def _dtype_name(dtype: Any) -> str:
    return str(dtype).removeprefix("torch.")
