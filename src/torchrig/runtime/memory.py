"""A model version's memory, measured at load and held against its `memory_budget`.

On CUDA the measure is the allocator's peak during load and warm-up above what was
allocated before (`torch.cuda.max_memory_allocated`), which is what the version will need
at its largest batch; on CPU, where no allocator can be asked, it is the bytes of the
program's parameters and buffers (or, for a program that does not expose them, of its
files). A version over budget is refused with both numbers and the fix. Loads run one at
a time, so other work on the same device is the only noise in the CUDA figure.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from torchrig.errors import InsufficientMemory
from torchrig.repository.budget import format_bytes, parse_memory_budget


@dataclass
class LoadMeasure:
    """Filled by `measured_load`: bytes the version used and how they were measured."""

    used_bytes: int = 0
    how: str = ""


def _cuda_index(device: str) -> int | None:
    if not device.startswith("cuda"):
        return None
    return int(device.split(":", 1)[1]) if ":" in device else 0


@contextmanager
def measured_load(device: str) -> Iterator[LoadMeasure]:
    """Measure the CUDA allocator across the block (load and warm-up) on `device`."""
    measure = LoadMeasure()
    index = _cuda_index(device)
    if index is None:
        yield measure
        return
    import torch

    torch.cuda.synchronize(index)
    before = torch.cuda.memory_allocated(index)
    torch.cuda.reset_peak_memory_stats(index)
    yield measure
    torch.cuda.synchronize(index)
    measure.used_bytes = max(0, torch.cuda.max_memory_allocated(index) - before)
    measure.how = "CUDA memory at its peak during load and warm-up"


def host_bytes(program: Any, file_bytes: int) -> tuple[int, str]:
    """Parameter and buffer bytes of a loaded program's module, else its files' bytes."""
    import torch

    module = getattr(program, "module", program)
    if isinstance(module, torch.nn.Module):
        tensors = [*module.parameters(), *module.buffers()]
        if tensors:
            seen: set[int] = set()
            total = 0
            for tensor in tensors:  # tied weights count once
                if tensor.data_ptr() not in seen:
                    seen.add(tensor.data_ptr())
                    total += tensor.numel() * tensor.element_size()
            return total, "parameters and buffers"
    return file_bytes, "the program's files"


def device_total_bytes(device: str) -> int:
    """Memory of the device a fraction budget refers to (the GPU's, or the host's)."""
    index = _cuda_index(device)
    if index is not None:
        import torch

        return int(torch.cuda.get_device_properties(index).total_memory)
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def check_budget(
    where: str, budget_value: str | float | None, used_bytes: int, how: str, device: str
) -> None:
    """Refuse a version whose measured memory exceeds its budget (InsufficientMemory)."""
    if budget_value is None:
        return
    budget = parse_memory_budget(budget_value)
    total = device_total_bytes(device)
    limit = budget.limit(total)
    if used_bytes > limit:
        raise InsufficientMemory(
            f"{where} needs {format_bytes(used_bytes)} ({how}) on {device}, over its "
            f"memory_budget of {budget.describe(total)}. Raise memory_budget in the model's "
            "config.toml, lower batching.max_batch_size (warm-up runs the largest batch), "
            "or serve it on a device with more room."
        )
