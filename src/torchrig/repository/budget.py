"""A model's `memory_budget` in config.toml: bytes with a unit ("4GiB") or a fraction (0.5).

A fraction is of the device's memory (the GPU's on CUDA, the host's on CPU). The check at
load time lives in `torchrig.runtime.memory`; here the value is only parsed and described.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

UNITS = {
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "tb": 1000**4,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
}
SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]+)\s*$")
HELP = 'use bytes with a unit ("4GiB", "512MiB", "2GB") or a fraction of device memory (0.5)'


@dataclass(frozen=True)
class MemoryBudget:
    """Exactly one of `bytes` and `fraction` is set."""

    bytes: int | None = None
    fraction: float | None = None

    def limit(self, device_total_bytes: int) -> int:
        """The budget in bytes on a device with `device_total_bytes` of memory."""
        if self.bytes is not None:
            return self.bytes
        return int((self.fraction or 0.0) * device_total_bytes)

    def describe(self, device_total_bytes: int | None = None) -> str:
        if self.bytes is not None:
            return format_bytes(self.bytes)
        text = f"{self.fraction:g} of device memory"
        if device_total_bytes:
            text += f" ({format_bytes(self.limit(device_total_bytes))})"
        return text


def parse_memory_budget(value: str | float) -> MemoryBudget:
    """Parse a config value; ValueError with the fix for anything else."""
    if isinstance(value, bool):
        raise ValueError(f"memory_budget {value!r} is not a size; {HELP}")
    if isinstance(value, (int, float)):
        if not 0 < value <= 1:
            raise ValueError(
                f"memory_budget {value!r}: a number is a fraction of device memory in (0, 1]; "
                'for bytes write a string with a unit, e.g. "4GiB"'
            )
        return MemoryBudget(fraction=float(value))
    match = SIZE.match(value)
    if match is None or match.group(2).lower() not in UNITS:
        raise ValueError(f"memory_budget {value!r} is not a size; {HELP}")
    size = int(float(match.group(1)) * UNITS[match.group(2).lower()])
    if size <= 0:
        raise ValueError(f"memory_budget {value!r} must be more than 0 bytes")
    return MemoryBudget(bytes=size)


def format_bytes(size: int | float) -> str:
    """1536 -> "1.5 KiB"; for messages."""
    if abs(size) < 1024:
        return f"{size:.0f} B"
    value = float(size) / 1024
    for unit in ("KiB", "MiB"):
        if abs(value) < 1024:
            return f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"
