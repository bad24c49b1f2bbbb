"""Which errors of a batch are which: out of memory (retry smaller), or a poisoned device.

A CUDA out-of-memory error leaves the context usable: the batcher splits the batch and
retries. A device-side assert, an illegal memory access or a failed launch poisons the
CUDA context for good: every later kernel of this process fails, so the only cure is a
new process, and the server must say so (not ready, not live) instead of failing each
request while it still looks healthy.
"""

from __future__ import annotations

from typing import Any

# messages of CUDA errors after which the context cannot be used again
POISON_MARKERS = (
    "device-side assert",
    "illegal memory access",
    "illegal address",
    "unspecified launch failure",
    "misaligned address",
    "illegal instruction",
    "an uncorrectable ecc error",
)
OOM_MARKERS = ("out of memory", "cudaerrormemoryallocation")


def _torch() -> Any:
    import torch

    return torch


def _chain(exc: BaseException) -> list[BaseException]:
    """The error and the ones it was raised from (an executor may wrap what torch raised)."""
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and len(chain) < 8 and current not in chain:
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def _oom(exc: BaseException) -> bool:
    if isinstance(exc, _torch().OutOfMemoryError):
        return True
    message = str(exc).lower()
    return (
        isinstance(exc, RuntimeError)
        and ("cuda" in message or "cublas" in message or "hip" in message)
        and any(marker in message for marker in OOM_MARKERS)
    )


def is_out_of_memory(exc: BaseException) -> bool:
    """torch.OutOfMemoryError (the same class as torch.cuda.OutOfMemoryError), or a CUDA
    error whose message says so (some kernels report OOM as a plain RuntimeError), also
    when it is what the raised error was raised from."""
    return any(_oom(error) for error in _chain(exc))


def _poison(exc: BaseException) -> bool:
    message = str(exc).lower()
    if any(marker in message for marker in POISON_MARKERS):
        return True
    accelerator_error = getattr(_torch(), "AcceleratorError", None)
    if accelerator_error is not None and isinstance(exc, accelerator_error):
        return True
    return isinstance(exc, RuntimeError) and "cuda error" in message


def poisons_device(exc: BaseException) -> bool:
    """An error after which this process's CUDA context is unusable (out of memory is not
    one: the context survives it)."""
    return not is_out_of_memory(exc) and any(_poison(error) for error in _chain(exc))


def free_cached_memory() -> None:
    """Give the caching allocator's free blocks back before a retry (CUDA only)."""
    torch = _torch()
    if torch.cuda.is_initialized():
        torch.cuda.empty_cache()
