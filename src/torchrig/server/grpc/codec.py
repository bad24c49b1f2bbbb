"""ModelInferRequest / ModelInferResponse (the gRPC messages) <-> tensors.

Inputs arrive either as typed contents (`contents.fp32_contents` and the like) or, as
tritonclient.grpc sends them, as `raw_input_contents`: one little-endian byte string per
input, in input order, laid out as the binary tensor extension lays out REST bodies (BYTES
elements each a 4-byte length and the bytes). A request uses one or the other for all its
inputs. Outputs always go back as `raw_output_contents`, which every V2 gRPC client reads.
What a request declares (name, datatype, shape) is checked before its data is touched.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from torchrig.errors import InferenceFailed, InvalidInput
from torchrig.packaging.manifest import TensorSpec
from torchrig.protocol.classification import class_count, classify
from torchrig.protocol.shared_memory import ShmReader, ShmWriter, private_copy, shm_place
from torchrig.protocol.tensors import (
    DATATYPES,
    ITEMSIZE,
    MAX_DIMS,
    TORCH_DTYPES,
    binary_bytes_tensor,
    binary_tensor,
    element_count,
    json_tensor,
    serialize_bytes,
)
from torchrig.protocol.types import BytesTensor, DecodedRequest, RequestedOutput
from torchrig.server.grpc.generated import grpc_service_pb2 as pb

# the typed-contents field that carries each datatype (FP16 and BF16 have none: raw only)
CONTENTS_FIELD = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}
Declared = Callable[[str, str, list[int]], None]
# raw contents from this size on are viewed, not copied (smaller `bytes` objects may be
# shared by the interpreter, and copying them costs nothing)
VIEW_FROM_BYTES = 64 * 1024


def parameter(value: pb.InferParameter) -> Any:
    """The Python value of an InferParameter (None when it holds none)."""
    kind = value.WhichOneof("parameter_choice")
    return None if kind is None else getattr(value, kind)


def decode_request(
    request: pb.ModelInferRequest,
    *,
    accept: Declared,
    max_body_bytes: int,
    shm_read: ShmReader | None = None,
    raw_contents: Sequence[Any] | None = None,
) -> DecodedRequest:
    """The request's inputs as tensors (BytesTensor for BYTES), its outputs and parameters.

    `accept(name, datatype, shape)` checks each input's declaration against the model's
    signature before its data is converted (InvalidInput names what is wrong). Inputs in
    shared memory are read with `shm_read`; the others come in `raw_input_contents` (one
    each, in order; or in `raw_contents`, views split off before parsing) or all in typed
    contents."""
    raw = list(request.raw_input_contents) if raw_contents is None else raw_contents
    in_shm = [_shm(tensor.parameters, f"input {tensor.name!r}") for tensor in request.inputs]
    direct = sum(1 for place in in_shm if place is None)
    if raw and len(raw) != direct:
        raise InvalidInput(
            f"the request has {direct} inputs outside shared memory but {len(raw)} "
            "raw_input_contents; give raw contents for each of them, in input order, or "
            "typed contents for all"
        )
    inputs: dict[str, Any] = {}
    raw_index = 0
    for tensor, place in zip(request.inputs, in_shm, strict=True):
        name, datatype = tensor.name, tensor.datatype
        shape = list(tensor.shape)
        if datatype not in DATATYPES:
            raise InvalidInput(
                f"input {name!r} has datatype {datatype!r}; V2 datatypes are "
                + ", ".join(DATATYPES)
            )
        if len(shape) > MAX_DIMS:
            raise InvalidInput(f"input {name!r} has {len(shape)} dimensions; at most {MAX_DIMS}")
        if name in inputs:
            raise InvalidInput(f"input {name!r} is given twice")
        accept(name, datatype, shape)
        count = element_count(name, shape)
        if place is not None:
            if shm_read is None:
                raise InvalidInput(f"input {name!r}: shared memory is not available here")
            region, offset, size = place
            if datatype != "BYTES" and size != count * ITEMSIZE[datatype]:
                raise InvalidInput(
                    f"input {name!r}: shared_memory_byte_size is {size} but {datatype} "
                    f"{shape} takes {count * ITEMSIZE[datatype]} bytes"
                )
            data = private_copy(datatype, shm_read(region, offset, size, f"input {name!r}"))
            inputs[name] = _buffer_tensor(name, datatype, shape, count, data)
        elif raw:
            inputs[name] = _raw_tensor(name, datatype, shape, count, raw[raw_index])
            raw_index += 1
        else:
            inputs[name] = _typed_tensor(name, datatype, shape, count, tensor.contents)
    parameters = {key: parameter(value) for key, value in request.parameters.items()}
    outputs = None
    if request.outputs:
        outputs = []
        for output in request.outputs:
            where = f"output {output.name!r}"
            classes = 0
            if "classification" in output.parameters:
                classes = class_count(parameter(output.parameters["classification"]), where)
            place = _shm(output.parameters, where)
            if place is not None and shm_read is None:
                raise InvalidInput(f"{where}: shared memory is not available here")
            outputs.append(RequestedOutput(output.name, True, classes, place))
    return DecodedRequest(
        id=request.id or None,
        parameters=parameters,
        inputs=inputs,
        outputs=outputs,
        binary_output_default=True,
        timeout_s=_timeout_s(parameters.get("timeout")),
    )


def _shm(parameters: Any, what: str) -> tuple[str, int, int] | None:
    if "shared_memory_region" not in parameters:
        return None
    values = {key: parameter(value) for key, value in parameters.items()}
    place = shm_place(values, what)
    if place is not None and place[2] is None:
        raise InvalidInput(f"{what}: shared_memory_region needs shared_memory_byte_size")
    return place


def _buffer_tensor(name: str, datatype: str, shape: list[int], count: int, data: Any) -> Any:
    """A tensor (or BytesTensor) of a private uint8 array's bytes."""
    if datatype == "BYTES":
        return binary_bytes_tensor(name, data, start=0, size=len(data), shape=shape, count=count)
    return binary_tensor(data, 0, datatype, shape, count)


def _timeout_s(value: Any) -> float | None:
    """Triton's `timeout` parameter: microseconds, an integer; 0 means none."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidInput(
            f"parameter timeout {value!r} must be a non-negative integer of microseconds"
        )
    return value / 1e6 if value else None


def _raw_tensor(name: str, datatype: str, shape: list[int], count: int, data: Any) -> Any:
    """An input of `raw_input_contents`: `bytes`, or a memoryview into the request gRPC
    received (`raw_contents.py`)."""
    if datatype == "BYTES":
        return binary_bytes_tensor(name, data, start=0, size=len(data), shape=shape, count=count)
    expected = count * ITEMSIZE[datatype]
    if len(data) != expected:
        raise InvalidInput(
            f"input {name!r}: its raw contents are {len(data)} bytes but {datatype} "
            f"{shape} takes {expected}"
        )
    view = np.frombuffer(data, np.uint8)
    if len(data) < VIEW_FROM_BYTES or view.ctypes.data % ITEMSIZE[datatype]:
        # small (a copy costs nothing), or not aligned to its elements: a writable copy
        return _buffer_tensor(
            name, datatype, shape, count, np.frombuffer(bytearray(data), np.uint8)
        )
    # large: the tensor views the request's own bytes (no copy of a 1 MB frame batch);
    # torch warns that it cannot mark them read-only
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return _buffer_tensor(name, datatype, shape, count, view)


def _typed_tensor(
    name: str, datatype: str, shape: list[int], count: int, contents: pb.InferTensorContents
) -> Any:
    field = CONTENTS_FIELD.get(datatype)
    if field is None:
        raise InvalidInput(
            f"input {name!r} is {datatype}, which has no typed contents field; send it in "
            "raw_input_contents (tritonclient.grpc does so by default)"
        )
    others = [other.name for other, _ in contents.ListFields() if other.name != field]
    if others:
        raise InvalidInput(
            f"input {name!r} is {datatype} but its contents are in {', '.join(others)}; "
            f"put them in {field}"
        )
    values = getattr(contents, field)
    if len(values) != count:
        raise InvalidInput(
            f"input {name!r} has {len(values)} values in {field} but shape {shape} needs {count}"
        )
    if datatype == "BYTES":
        return BytesTensor(list(values), shape)
    with np.errstate(over="raise"):
        return json_tensor(name, datatype, shape, count, list(values))


def encode_response(
    *,
    model_name: str,
    model_version: str,
    request_id: str | None,
    outputs: dict[str, Any],
    specs: Sequence[TensorSpec],
    requested: list[RequestedOutput] | None,
    labels: dict[str, list[str]] | None = None,
    batching: bool = True,
    shm_write: ShmWriter | None = None,
) -> pb.ModelInferResponse:
    """The response with every chosen output in `raw_output_contents`, in the order
    requested (signature order when the request named none)."""
    by_name = {spec.name: spec for spec in specs}
    chosen: list[tuple[TensorSpec, RequestedOutput | None]]
    if requested is None:
        chosen = [(spec, None) for spec in specs]
    else:
        chosen = []
        for output in requested:
            spec = by_name.get(output.name)
            if spec is None:
                raise InvalidInput(
                    f"model {model_name} has no output {output.name!r}; its outputs are "
                    + ", ".join(s.name for s in specs)
                )
            chosen.append((spec, output))
    response = pb.ModelInferResponse(
        model_name=model_name, model_version=model_version, id=request_id or ""
    )
    for spec, asked in chosen:
        if spec.name not in outputs:
            raise InferenceFailed(f"model {model_name} produced no output {spec.name!r}")
        value, wire_spec = outputs[spec.name], spec
        if asked is not None and asked.class_count:
            label_list = (labels or {}).get(spec.name)
            value = classify(
                spec.name, spec.datatype, value, asked.class_count, label_list, batching=batching
            )
            wire_spec = TensorSpec(name=spec.name, datatype="BYTES", shape=[])
        shape, memory = output_memory(wire_spec, value)
        tensor = response.outputs.add(name=spec.name, datatype=wire_spec.datatype, shape=shape)
        if asked is not None and asked.shared_memory is not None and shm_write is not None:
            region, offset, size = asked.shared_memory
            # the tensor's own memory goes into the region: no bytes object in between
            written = shm_write(region, offset, size, memory, f"output {spec.name!r}")
            tensor.parameters["shared_memory_region"].string_param = region
            tensor.parameters["shared_memory_byte_size"].int64_param = written
            if offset:
                tensor.parameters["shared_memory_offset"].int64_param = offset
            # raw_output_contents stay one per output, as clients index them
            response.raw_output_contents.append(b"")
        else:
            response.raw_output_contents.append(
                memory if isinstance(memory, bytes) else memory.tobytes()
            )
    return response


def output_memory(spec: TensorSpec, value: Any) -> tuple[list[int], Any]:
    """An output's shape and its bytes: BYTES serialized, a tensor as a flat, C-contiguous
    numpy array sharing the (CPU) tensor's memory where it can."""
    if spec.datatype == "BYTES":
        elements = [item if isinstance(item, bytes | str) else bytes(item) for item in value]
        shape = [int(d) for d in value.shape] if hasattr(value, "shape") else [len(elements)]
        return shape, serialize_bytes(elements)
    tensor = value.detach()
    target = TORCH_DTYPES[spec.datatype]
    if tensor.dtype != target:
        tensor = tensor.to(target)
    if tensor.device.type != "cpu":
        tensor = tensor.cpu()
    shape = list(tensor.shape)
    flat = tensor.contiguous().reshape(-1)
    if spec.datatype == "BF16":
        flat = flat.view(torch.int16)
    return shape, flat.numpy()
