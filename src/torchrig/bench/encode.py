"""Client-side V2 inference requests: numpy arrays -> JSON, or JSON + binary tensor data.

The counterpart of `torchrig.protocol.decode_infer_request`, kept here rather than in
`torchrig.protocol` because that package imports torch, and the load generator's worker
processes should start in a fraction of a second without it. Numpy and msgspec only.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

import msgspec
import numpy as np

from torchrig.dtypes import V2_TO_TORCH

_LENGTH = struct.Struct("<I")


def numpy_dtype(datatype: str) -> Any:
    """The numpy dtype holding a V2 datatype's values; BF16 is held as its uint16 bits."""
    if datatype == "BF16":
        return np.dtype(np.uint16)
    return np.dtype(V2_TO_TORCH[datatype])


@dataclass(frozen=True)
class RequestTensor:
    """One input of a request: name, V2 datatype, shape and data.

    `data` is a numpy array of `numpy_dtype(datatype)` (BF16: the upper 16 bits of each
    float32), or for BYTES a flat list of bytes in row-major order.
    """

    name: str
    datatype: str
    shape: tuple[int, ...]
    data: Any


@dataclass(frozen=True)
class EncodedRequest:
    """An encoded request body; `header_length` is the Inference-Header-Content-Length
    (None: the body is all JSON)."""

    body: bytes
    header_length: int | None

    @property
    def headers(self) -> dict[str, str]:
        if self.header_length is None:
            return {"Content-Type": "application/json"}
        return {
            "Content-Type": "application/octet-stream",
            "Inference-Header-Content-Length": str(self.header_length),
        }


def encode_infer_request(
    inputs: list[RequestTensor], *, binary: bool, request_id: str | None = None
) -> EncodedRequest:
    """A V2 request body for `inputs`, all JSON or all binary.

    Binary requests also ask for binary outputs (`binary_data_output`), so neither side
    spends time on JSON numbers. BF16 has no JSON form: a ValueError names the input.
    """
    wire: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    for tensor in inputs:
        entry: dict[str, Any] = {
            "name": tensor.name,
            "datatype": tensor.datatype,
            "shape": list(tensor.shape),
        }
        if binary:
            blob = _binary_data(tensor)
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            entry["data"] = _json_data(tensor)
        wire.append(entry)
    document: dict[str, Any] = {"inputs": wire}
    if request_id is not None:
        document["id"] = request_id
    if binary:
        document["parameters"] = {"binary_data_output": True}
    header = msgspec.json.encode(document)
    if not binary:
        return EncodedRequest(header, None)
    return EncodedRequest(header + b"".join(blobs), len(header))


def _binary_data(tensor: RequestTensor) -> bytes:
    if tensor.datatype == "BYTES":
        parts: list[bytes] = []
        for value in tensor.data:
            parts.append(_LENGTH.pack(len(value)))
            parts.append(value)
        return b"".join(parts)
    array = np.ascontiguousarray(tensor.data, dtype=numpy_dtype(tensor.datatype))
    return array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes()


def _json_data(tensor: RequestTensor) -> Any:
    if tensor.datatype == "BF16":
        raise ValueError(
            f"input {tensor.name!r} is BF16, which has no JSON form: send binary data instead"
        )
    if tensor.datatype == "BYTES":
        return [value.decode("utf-8", "replace") for value in tensor.data]
    return np.asarray(tensor.data).ravel().tolist()
