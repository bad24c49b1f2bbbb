"""Encoding a V2 inference response (JSON, or JSON + binary tensor data) and errors."""

from __future__ import annotations

from typing import Any

import msgspec
import torch

from torchrig.errors import InferenceFailed, InvalidInput
from torchrig.packaging.manifest import TensorSpec
from torchrig.protocol.classification import classify
from torchrig.protocol.shared_memory import ShmWriter
from torchrig.protocol.tensors import TORCH_DTYPES, serialize_bytes
from torchrig.protocol.types import RequestedOutput


class _WireOutputTensor(msgspec.Struct, omit_defaults=True):
    name: str
    datatype: str
    shape: list[int]
    parameters: dict[str, Any] | None = None
    data: list[Any] | None = None


class _WireResponse(msgspec.Struct, omit_defaults=True):
    model_name: str
    model_version: str | None = None
    id: str | None = None
    outputs: list[_WireOutputTensor] = []


class _WireError(msgspec.Struct):
    error: str


_ENCODER = msgspec.json.Encoder()


def encode_infer_response(
    *,
    model_name: str,
    model_version: str | None,
    request_id: str | None,
    outputs: dict[str, Any],
    specs: list[TensorSpec],
    requested: list[RequestedOutput] | None,
    binary_output_default: bool,
    labels: dict[str, list[str]] | None = None,
    batching: bool = True,
    shm_write: ShmWriter | None = None,
) -> tuple[bytes, dict[str, str]]:
    """The response body and the headers it needs, named in lowercase (content-type, and
    inference-header-content-length for binary outputs).

    Outputs come in the order requested, or in signature order when the request listed
    none. Each is binary when its request said so, else when `binary_output_default`
    (the request's binary_data_output) is true. BF16 has no JSON form and a BYTES output
    that is not UTF-8 has no JSON string: those are sent binary even when JSON was asked
    for, which tritonclient reads transparently. A tensor whose dtype differs from its
    signature's datatype is converted to it, so clients get what model metadata promises.
    """
    if requested is None:
        chosen: list[tuple[TensorSpec, bool, int, tuple[str, int, int] | None]] = [
            (spec, binary_output_default, 0, None) for spec in specs
        ]
    else:
        by_name = {spec.name: spec for spec in specs}
        chosen = []
        for output in requested:
            spec = by_name.get(output.name)
            if spec is None:
                raise InvalidInput(
                    f"model {model_name} has no output {output.name!r}; its outputs are "
                    + ", ".join(spec.name for spec in specs)
                )
            binary = binary_output_default if output.binary is None else output.binary
            if output.shared_memory is not None:
                binary = True  # its bytes go into the region, in the binary layout
            chosen.append((spec, binary, output.class_count, output.shared_memory))

    wire_outputs: list[_WireOutputTensor] = []
    raw: list[Any] = []
    for spec, binary, classes, place in chosen:
        if spec.name not in outputs:
            raise InferenceFailed(f"model {model_name} produced no output {spec.name!r}")
        value = outputs[spec.name]
        if classes:
            value = classify(
                spec.name,
                spec.datatype,
                value,
                classes,
                (labels or {}).get(spec.name),
                batching=batching,
            )
            wire, blob = _bytes_output(spec.name, value, binary)
        elif spec.datatype == "BYTES":
            wire, blob = _bytes_output(spec.name, value, binary)
        else:
            wire, blob = _tensor_output(spec, value, binary)
        if place is not None and shm_write is not None:
            region, offset, size = place
            data = bytes(blob)
            shm_write(region, offset, size, data, f"output {spec.name!r}")
            params: dict[str, Any] = {
                "shared_memory_region": region,
                "shared_memory_byte_size": len(data),
            }
            if offset:
                params["shared_memory_offset"] = offset
            wire = _WireOutputTensor(wire.name, wire.datatype, wire.shape, params)
            blob = None
        wire_outputs.append(wire)
        if blob is not None:
            raw.append(blob)

    header = _ENCODER.encode(
        _WireResponse(
            model_name=model_name, model_version=model_version, id=request_id, outputs=wire_outputs
        )
    )
    if not raw:
        return header, {"content-type": "application/json"}
    headers = {
        "inference-header-content-length": str(len(header)),
        "content-type": "application/octet-stream",
    }
    return b"".join([header, *raw]), headers


def _tensor_output(spec: TensorSpec, value: Any, binary: bool) -> tuple[_WireOutputTensor, Any]:
    target = TORCH_DTYPES[spec.datatype]
    tensor = value.detach() if value.requires_grad else value
    if tensor.dtype != target:
        tensor = tensor.to(target)
    if not tensor.is_cpu:
        tensor = tensor.cpu()
    shape = list(tensor.shape)
    flat = tensor.reshape(-1)  # a view when contiguous, else the one copy we need
    if spec.datatype == "BF16":
        binary = True  # no JSON form: see encode_infer_response
        array = flat.view(torch.int16).numpy()
    else:
        array = flat.numpy()
    if binary:
        params = {"binary_data_size": array.nbytes}
        return _WireOutputTensor(spec.name, spec.datatype, shape, params), memoryview(array)
    return _WireOutputTensor(spec.name, spec.datatype, shape, data=array.tolist()), None


def _bytes_output(name: str, value: Any, binary: bool) -> tuple[_WireOutputTensor, Any]:
    elements = [item if isinstance(item, bytes | str) else bytes(item) for item in value]
    shape = [int(dim) for dim in value.shape] if hasattr(value, "shape") else [len(elements)]
    if not binary:
        try:
            strings = [item if isinstance(item, str) else item.decode() for item in elements]
        except UnicodeDecodeError:
            binary = True  # not UTF-8: no JSON string can carry it
        else:
            return _WireOutputTensor(name, "BYTES", shape, data=strings), None
    blob = serialize_bytes(elements)
    params = {"binary_data_size": len(blob)}
    return _WireOutputTensor(name, "BYTES", shape, params), blob


def encode_error(message: str) -> bytes:
    """The V2 error body: `{"error": message}`."""
    return _ENCODER.encode(_WireError(message))
