"""Rows of a batch: joining requests' tensors once, and naming them in messages."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def describe_inputs(inputs: Mapping[str, Any]) -> str:
    """`name DATATYPE[shape]` for each input, as an error message names them."""
    from torchrig.dtypes import v2_datatype

    parts = []
    for name, tensor in inputs.items():
        try:
            datatype = v2_datatype(tensor.dtype)
        except (KeyError, AttributeError):
            datatype = type(tensor).__name__
        parts.append(f"{name} {datatype}{list(getattr(tensor, 'shape', []))}")
    return ", ".join(parts)


def concat_rows(parts: list[Mapping[str, Any]], *, pin: bool = False) -> dict[str, Any]:
    """Concatenate tensors by name along the batch dimension into fresh tensors, in pinned
    (page-locked) host memory when `pin`, ready for an asynchronous device copy. BYTES
    tensors (the inputs of built-in steps) are joined as lists."""
    import torch

    joined: dict[str, Any] = {}
    for name in parts[0]:
        tensors = [part[name] for part in parts]
        first = tensors[0]
        if getattr(first, "dtype", None) == "BYTES":  # a BytesTensor: built-in steps' input
            joined[name] = type(first).concat(tensors)
            continue
        rows = sum(int(tensor.shape[0]) for tensor in tensors)
        out = torch.empty((rows, *first.shape[1:]), dtype=first.dtype, pin_memory=pin)
        joined[name] = torch.cat(tensors, out=out)
    return joined
