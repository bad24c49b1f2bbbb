"""Tensors named by shared-memory region instead of carried in the request or response
(the system shared-memory extension): the parameters that say where, and the callbacks the
codecs use to read and write registered regions (the server's `torchrig.server.shm`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torchrig.errors import InvalidInput

# reads `size` bytes at `offset` of a registered region, as a private writable uint8 array:
# (region, offset, size, what the bytes are for)
ShmReader = Callable[[str, int, int, str], Any]
# writes an output's bytes into a region: (region, offset, size, data, what)
ShmWriter = Callable[[str, int, int, bytes, str], None]


def shm_place(parameters: Any, what: str) -> tuple[str, int, int] | None:
    """(region, offset, byte_size) of a tensor's shared_memory_* parameters, or None."""
    region = parameters.get("shared_memory_region")
    if region is None:
        return None
    size = parameters.get("shared_memory_byte_size")
    offset = parameters.get("shared_memory_offset", 0)
    if not isinstance(region, str) or not region:
        raise InvalidInput(f"{what}: shared_memory_region must be a region's name")
    for key, value in (("shared_memory_byte_size", size), ("shared_memory_offset", offset)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise InvalidInput(f"{what}: {key} must be a non-negative integer, not {value!r}")
    return region, offset, size
