"""Tensors named by shared-memory region instead of carried in the request or response
(the system shared-memory extension): the parameters that say where, and the callbacks the
codecs use to read and write registered regions (the server's `torchrig.server.shm`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torchrig.errors import InvalidInput

# bytes, or an array whose memory is written as it lies (C-contiguous)
Buffer = Any
# reads `size` bytes at `offset` of a registered region, as a writable uint8 array viewing
# the region (no copy; see `private_copy`): (region, offset, size, what the bytes are for)
ShmReader = Callable[[str, int, int, str], Any]
# writes an output's bytes into a region, returns how many: (region, offset, size, data, what)
ShmWriter = Callable[[str, int, int, Buffer, str], int]
# integer inputs a model may index with: copied out of shared memory, so that a client
# rewriting its region after validation cannot put an index out of range under the model
COPIED_DATATYPES = frozenset(("INT8", "INT16", "INT32", "INT64", "UINT16", "UINT32", "UINT64"))


def private_copy(datatype: str, data: Any) -> Any:
    """`data` read from shared memory, copied if its datatype could index (see above);
    floats, booleans and UINT8 pixels stay views of the client's region."""
    return data.copy() if datatype in COPIED_DATATYPES else data


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
