"""Tensor data on the wire <-> torch: JSON `data` arrays and the binary tensor extension.

Binary layout (Triton's extension): little-endian, no padding, BOOL one byte per element,
each BYTES element a 4-byte little-endian length followed by its bytes.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch

from torchrig.errors import InvalidInput
from torchrig.protocol.types import BytesTensor

# V2 datatypes whose elements have a fixed size, with their torch and numpy dtypes.
TORCH_DTYPES: dict[str, Any] = {
    "BOOL": torch.bool,
    "UINT8": torch.uint8,
    "UINT16": torch.uint16,
    "UINT32": torch.uint32,
    "UINT64": torch.uint64,
    "INT8": torch.int8,
    "INT16": torch.int16,
    "INT32": torch.int32,
    "INT64": torch.int64,
    "FP16": torch.float16,
    "BF16": torch.bfloat16,
    "FP32": torch.float32,
    "FP64": torch.float64,
}
V2_OF_TORCH: dict[Any, str] = {dtype: name for name, dtype in TORCH_DTYPES.items()}
NUMPY_DTYPES: dict[str, Any] = {  # BF16 has no numpy dtype: it never goes through numpy
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
}
ITEMSIZE: dict[str, int] = {name: dtype.itemsize for name, dtype in TORCH_DTYPES.items()}
DATATYPES = (*TORCH_DTYPES, "BYTES")
MAX_DIMS = 64  # numpy's limit; no real model comes near it
MAX_ELEMENTS = 2**63 - 1
# numpy and torch refuse a shape whose non-zero dimensions multiply past their index
# range even when a zero makes it empty ([2**63 - 1, 0]): the extent is bounded too
MAX_EXTENT = 2**60
_FLOATS = frozenset({"FP16", "BF16", "FP32", "FP64"})
_LENGTH = struct.Struct("<I")


def element_count(name: str, shape: Sequence[int]) -> int:
    """The number of elements of `shape`, checked: no negative dims, no overflow."""
    # the usual shape first: every dim positive, well within the bounds (then the count is
    # its extent too)
    if shape and len(shape) <= MAX_DIMS and min(shape) > 0:
        count = math.prod(shape)
        if count <= MAX_EXTENT:
            return count
    if len(shape) > MAX_DIMS:
        raise InvalidInput(f"input {name!r} has {len(shape)} dimensions; at most {MAX_DIMS}")
    if shape and min(shape) < 0:
        raise InvalidInput(
            f"input {name!r} has shape {list(shape)} with a negative dimension; a request "
            "gives the actual sizes (-1 appears only in model metadata)"
        )
    count = math.prod(shape)
    # the product of the non-zero dimensions: bounded too when a zero makes the count 0
    extent = count if count else math.prod([dim or 1 for dim in shape])
    if count > MAX_ELEMENTS or extent > MAX_EXTENT:
        raise InvalidInput(
            f"input {name!r}: shape {list(shape)} is too large (its non-zero dimensions "
            f"multiply past {MAX_EXTENT}); give the tensor's actual sizes"
        )
    return count


def _flatten(data: Any) -> Iterator[Any]:
    for item in data:
        if isinstance(item, list):
            yield from _flatten(item)
        else:
            yield item


def json_bytes_tensor(name: str, shape: Sequence[int], count: int, data: Any) -> BytesTensor:
    """A BYTES input's JSON `data` (strings, flat or nested) as UTF-8 elements."""
    items = [data] if not isinstance(data, list) else _flatten(data)
    try:
        values = [item.encode() for item in items]
    except AttributeError:
        raise InvalidInput(
            f"input {name!r} is BYTES: its JSON data must be strings (binary data for raw bytes)"
        ) from None
    if len(values) != count:
        raise InvalidInput(
            f"input {name!r} has {len(values)} values but shape {list(shape)} needs {count}"
        )
    return BytesTensor(values, shape)


def json_tensor(name: str, datatype: str, shape: Sequence[int], count: int, data: Any) -> Any:
    """A fixed-size input's JSON `data`, flat or nested row-major, as a tensor of `shape`.

    Integers must be JSON integers within the datatype's range, BOOL must be JSON booleans;
    floats accept JSON numbers only (and null, as NaN; never strings such as "1.5").
    Call under `np.errstate(over="raise")` so that values beyond a float type's range are
    reported, not turned into inf.
    """
    if datatype == "BF16":
        raise InvalidInput(
            f"input {name!r} is BF16 with JSON data; BF16 travels only as binary data "
            "(parameter binary_data_size; tritonclient: set_data_from_numpy(binary_data=True))"
        )
    if isinstance(data, list) and data and not isinstance(data[0], list) and len(data) != count:
        raise InvalidInput(
            f"input {name!r} has {len(data)} values but shape {list(shape)} needs {count}"
        )
    target = NUMPY_DTYPES[datatype]
    try:
        if datatype in _FLOATS:
            array = _numbers(name, datatype, data, target)
        else:
            array = _exact(name, datatype, data, target)
    except (ValueError, TypeError, OverflowError, FloatingPointError) as exc:
        raise InvalidInput(
            f"input {name!r}: data is not a regular array of {datatype} values ({exc})"
        ) from None
    if array.size != count:
        raise InvalidInput(
            f"input {name!r} has {array.size} values but shape {list(shape)} needs {count}"
        )
    return torch.from_numpy(array.reshape(shape))


def _numbers(name: str, datatype: str, data: Any, target: Any) -> Any:
    """Float data from JSON numbers (null: NaN); numpy alone would parse strings."""
    array = np.array(data)
    kind = array.dtype.kind
    if kind in "iuf":
        return array.astype(target)
    if kind == "O" and all(
        value is None or (type(value) in (int, float)) for value in _flatten_array(array)
    ):
        return np.array(data, dtype=target)
    if not array.size:
        return array.astype(target)
    raise InvalidInput(
        f"input {name!r} is {datatype}: its JSON data must be numbers (or null for NaN), "
        f"not {'booleans' if kind == 'b' else 'strings' if kind in 'US' else 'mixed values'}"
    )


def _flatten_array(array: Any) -> Iterator[Any]:
    for value in array.flat:
        if isinstance(value, list):
            yield from _flatten(value)
        else:
            yield value


def _exact(name: str, datatype: str, data: Any, target: Any) -> Any:
    """BOOL and integer data without silent conversions: no floats, no wrap-around.

    A JSON boolean among integers reads as 0/1 (numpy's choice; finding it would take a
    Python loop over every value).
    """
    array = np.array(data)
    if not array.size:
        return array.astype(target)  # np.array([]) is float64: only the dtype matters
    kind = array.dtype.kind
    if datatype == "BOOL":
        if kind != "b":
            raise InvalidInput(f"input {name!r} is BOOL: its JSON data must be true/false")
        return array
    if kind in "fO" and datatype == "UINT64":
        # values beyond int64 make numpy pick float64 or object: check them one by one
        objects = np.array(data, dtype=object)
        if all(type(value) is int for value in objects.flat):
            return objects.astype(target)  # OverflowError when out of range
    elif kind in "iu":
        if array.dtype != target:
            info = np.iinfo(target)
            low, high = int(array.min()), int(array.max())
            if low < info.min or high > info.max:
                raise InvalidInput(
                    f"input {name!r}: values [{low}, {high}] are out of range for {datatype}"
                )
            array = array.astype(target)
        return array
    raise InvalidInput(
        f"input {name!r} is {datatype}: its JSON data must be integers in its range "
        f"(got {'booleans' if kind == 'b' else array.dtype.name + ' values'})"
    )


def binary_tensor(buffer: Any, offset: int, datatype: str, shape: Sequence[int], count: int) -> Any:
    """A tensor viewing `count` elements at `offset` of a writable, aligned uint8 array.

    numpy slices and views are cheaper than torch's (this runs once per input), and
    `torch.from_numpy` of a writable array shares its memory without a warning.
    """
    if datatype == "BF16":  # numpy has no bfloat16: view its bits, then reinterpret in torch
        bits = buffer[offset : offset + 2 * count].view(np.int16).reshape(shape)
        return torch.from_numpy(bits).view(torch.bfloat16)
    dtype = NUMPY_DTYPES[datatype]
    return torch.from_numpy(
        buffer[offset : offset + count * dtype.itemsize].view(dtype).reshape(shape)
    )


def binary_bytes_tensor(
    name: str, data: Any, *, start: int, size: int, shape: Sequence[int], count: int
) -> BytesTensor:
    """A BYTES input's binary data: `count` elements of 4-byte length + bytes, exactly `size`."""
    view = memoryview(data)
    end = start + size
    position = start
    values: list[bytes] = []
    for index in range(count):
        if position + 4 > end:
            raise InvalidInput(
                f"input {name!r}: binary BYTES data ends before element {index} of {count}"
            )
        (length,) = _LENGTH.unpack_from(view, position)
        position += 4
        if position + length > end:
            raise InvalidInput(
                f"input {name!r}: BYTES element {index} claims {length} bytes, beyond its "
                f"binary_data_size of {size}"
            )
        values.append(bytes(view[position : position + length]))
        position += length
    if position != end:
        raise InvalidInput(
            f"input {name!r}: its {count} BYTES elements take {position - start} bytes but "
            f"binary_data_size is {size}"
        )
    return BytesTensor(values, shape)


def serialize_bytes(values: Sequence[bytes | str]) -> bytes:
    """BYTES elements in the binary layout: each a 4-byte little-endian length + bytes."""
    parts: list[bytes] = []
    for value in values:
        raw = value.encode() if isinstance(value, str) else bytes(value)
        parts.append(_LENGTH.pack(len(raw)))
        parts.append(raw)
    return b"".join(parts)
