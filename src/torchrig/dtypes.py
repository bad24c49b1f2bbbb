"""V2 (Open Inference Protocol) datatypes and their torch dtypes, in one table.

torch is imported lazily; the table itself is plain strings so the protocol layer and
the manifest can use it without importing torch.
"""

from __future__ import annotations

from typing import Any

# V2 datatype -> torch dtype attribute name
V2_TO_TORCH: dict[str, str] = {
    "BOOL": "bool",
    "UINT8": "uint8",
    "UINT16": "uint16",
    "UINT32": "uint32",
    "UINT64": "uint64",
    "INT8": "int8",
    "INT16": "int16",
    "INT32": "int32",
    "INT64": "int64",
    "FP16": "float16",
    "BF16": "bfloat16",
    "FP32": "float32",
    "FP64": "float64",
}
TORCH_TO_V2: dict[str, str] = {v: k for k, v in V2_TO_TORCH.items()}
FLOAT_DATATYPES = frozenset({"FP16", "BF16", "FP32", "FP64"})


def torch_dtype(datatype: str) -> Any:
    """The torch dtype of a V2 datatype ("FP32" -> torch.float32)."""
    import torch

    return getattr(torch, V2_TO_TORCH[datatype])


def v2_datatype(dtype: Any) -> str:
    """The V2 datatype of a torch dtype (torch.float32 -> "FP32"); KeyError if none."""
    return TORCH_TO_V2[str(dtype).removeprefix("torch.")]
