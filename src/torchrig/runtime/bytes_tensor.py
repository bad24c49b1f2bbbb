"""BYTES tensors: what torch cannot hold, shaped and sliced like a tensor, so the batcher,
the steps and the codecs pass them where tensors go."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import SupportsIndex, overload


class BytesTensor(list[bytes]):
    """A BYTES tensor: its elements in row-major order (a flat `list[bytes]`) and its shape.

    It carries `shape` (a tuple) and `dtype` ("BYTES") like a tensor does, so signature
    checks that read `.shape` and `.dtype` work on it unchanged; a slice takes rows as a
    tensor's does and `concat` joins rows, so the batcher batches and splits it as tensors.
    """

    __slots__ = ("shape",)
    dtype = "BYTES"

    def __init__(self, items: Iterable[bytes], shape: Sequence[int]) -> None:
        super().__init__(items)
        self.shape: tuple[int, ...] = tuple(shape)

    def __repr__(self) -> str:
        return f"BytesTensor({list.__repr__(self)}, shape={list(self.shape)})"

    @property
    def row_size(self) -> int:
        """Elements per row (per index of dimension 0)."""
        size = 1
        for dim in self.shape[1:]:
            size *= dim
        return size

    @overload
    def __getitem__(self, index: SupportsIndex) -> bytes: ...

    @overload
    def __getitem__(self, index: slice) -> BytesTensor: ...

    def __getitem__(self, index: SupportsIndex | slice) -> bytes | BytesTensor:
        """An element by flat index, or a slice of rows (dimension 0), as a tensor's
        `t[a:b]` is: what the batcher does to split a batch's outputs per request."""
        if not isinstance(index, slice):
            return list.__getitem__(self, index)
        if index.step not in (None, 1):
            raise ValueError("BytesTensor slices rows with step 1 only")
        rows = self.shape[0] if self.shape else 1
        start, stop, _ = index.indices(rows)
        stop = max(start, stop)
        size = self.row_size
        items = list.__getitem__(self, slice(start * size, stop * size))
        return BytesTensor(items, (stop - start, *self.shape[1:]))

    @staticmethod
    def concat(parts: Sequence[BytesTensor]) -> BytesTensor:
        """Join BYTES tensors along dimension 0 (their other dimensions must agree)."""
        items: list[bytes] = []
        rows = 0
        for part in parts:
            if tuple(part.shape[1:]) != tuple(parts[0].shape[1:]):
                raise ValueError(
                    f"BYTES tensors of shapes {list(parts[0].shape)} and {list(part.shape)} "
                    "cannot be joined along dimension 0"
                )
            items.extend(part)
            rows += part.shape[0] if part.shape else 1
        return BytesTensor(items, (rows, *parts[0].shape[1:]))
