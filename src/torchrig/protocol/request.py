"""Decoding a V2 inference request (JSON, or JSON + binary tensor data) into tensors."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import msgspec
import numpy as np

from torchrig.errors import InvalidInput
from torchrig.packaging.manifest import TensorSpec
from torchrig.protocol.body import ALIGN as _ALIGN
from torchrig.protocol.body import Buffer, decompress_body
from torchrig.protocol.classification import class_count
from torchrig.protocol.shared_memory import ShmReader, private_copy, shm_place
from torchrig.protocol.tensors import (
    DATATYPES,
    ITEMSIZE,
    binary_bytes_tensor,
    binary_tensor,
    element_count,
    json_bytes_tensor,
    json_tensor,
)
from torchrig.protocol.types import DecodedRequest, RequestedOutput


class _WireInput(msgspec.Struct):
    # Required fields are optional here so that a missing one gets a message naming the input.
    name: str | None = None
    datatype: str | None = None
    shape: list[int] | None = None
    parameters: dict[str, Any] | None = None
    data: Any = None


class _WireOutput(msgspec.Struct):
    name: str | None = None
    parameters: dict[str, Any] | None = None


class _WireRequest(msgspec.Struct):
    id: str | None = None
    parameters: dict[str, Any] | None = None
    inputs: list[_WireInput] | None = None
    outputs: list[_WireOutput] | None = None


_DECODER = msgspec.json.Decoder(_WireRequest)
_DATATYPES = frozenset(DATATYPES)
_TOO_DEEP = (
    "the request body's JSON is nested too deeply; tensor data is at most as deep as its "
    "shape (or flat)"
)
_INPUT_PATH = re.compile(r"\$\.inputs\[(\d+)\]")


class _Binary(msgspec.Struct):
    """Where one binary input's bytes lie in the body and where they go in the buffer."""

    index: int
    name: str
    datatype: str
    shape: list[int]
    count: int
    start: int  # in the (decompressed) body
    size: int
    target: int = 0  # in the aligned buffer


def decode_infer_request(  # noqa: PLR0915 - one pass over the inputs, of three kinds
    body: Buffer,
    *,
    header_length: int | None,
    content_encoding: str | None = None,
    max_body_bytes: int,
    specs: list[TensorSpec] | None = None,
    accept: Callable[[str, str, list[int]], None] | None = None,
    shm_read: ShmReader | None = None,
) -> DecodedRequest:
    """Decode an infer request body into named tensors; every defect is an `InvalidInput`.

    `header_length` is the Inference-Header-Content-Length header (None: the body is all
    JSON). Binary tensors view a writable body (`BodyBuffer`) where they are aligned in
    it, and are otherwise copied once into one aligned buffer that the tensors view; JSON
    data is converted through numpy. BYTES inputs become `BytesTensor`s. The datatypes
    named in the request are the truth: `specs` is accepted for the server's convenience
    but signature checks are the server's job. `accept(name, datatype, shape)`, called for
    each input once the JSON header is parsed and before any tensor data is converted, can
    refuse a request cheaply (an unknown input, a wrong datatype or shape).
    """
    del specs  # the request's datatypes decide; the server validates against the signature
    data = decompress_body(body, content_encoding, max_body_bytes)
    if header_length is None:
        header: Buffer = data
    else:
        if not 0 <= header_length <= len(data):
            raise InvalidInput(
                f"Inference-Header-Content-Length is {header_length} but the body has "
                f"{len(data)} bytes; it must be the length of the JSON part of the body"
            )
        header = memoryview(data)[:header_length]
    request = _parse(header, binary_follows=header_length is None)
    if request.inputs is None:
        raise InvalidInput('the inference request has no "inputs" list')

    values: list[Any] = [None] * len(request.inputs)
    names: list[str] = []
    seen: set[str] = set()
    pending_json: list[tuple[int, str, str, list[int], int, Any]] = []
    binaries: list[_Binary] = []
    position = len(data) if header_length is None else header_length
    for index, wire in enumerate(request.inputs):
        name, datatype, shape = wire.name, wire.datatype, wire.shape
        if not name or datatype is None or datatype not in _DATATYPES or shape is None:
            name, datatype, shape = _describe(index, wire)  # raises: names what is wrong
        if name in seen:
            raise InvalidInput(f"input {name!r} appears more than once in the request")
        seen.add(name)
        names.append(name)
        count = element_count(name, shape)
        if accept is not None:
            accept(name, datatype, shape)
        place = None if not wire.parameters else shm_place(wire.parameters, f"input {name!r}")
        if place is not None:
            values[index] = _from_shared_memory(
                wire, (name, datatype, shape, count), place, shm_read
            )
            continue
        size = _binary_data_size(name, wire.parameters)
        if size is None:
            if wire.data is None:
                raise InvalidInput(
                    f'input {name!r} has neither "data" nor a binary_data_size parameter'
                )
            if count > len(header):  # every JSON value takes at least one byte
                raise InvalidInput(
                    f"input {name!r}: shape {shape} claims {count} elements but the JSON "
                    f"header has only {len(header)} bytes"
                )
            pending_json.append((index, name, datatype, shape, count, wire.data))
            continue
        if header_length is None:
            raise InvalidInput(
                f"input {name!r} has binary_data_size but the request has no "
                "Inference-Header-Content-Length header to say where its JSON part ends"
            )
        if wire.data is not None:
            raise InvalidInput(f'input {name!r} has both "data" and binary_data_size')
        _check_binary_size(name, datatype, shape, count, size)
        if position + size > len(data):
            raise InvalidInput(
                f"input {name!r}: its {size} bytes of binary data would end at byte "
                f"{position + size} but the body has only {len(data)} bytes"
            )
        binaries.append(_Binary(index, name, datatype, shape, count, position, size))
        position += size
    if position != len(data):
        raise InvalidInput(
            f"the body has {len(data) - position} bytes after the last binary input; the "
            "binary_data_size parameters must add up to the body after the JSON header"
        )

    if pending_json:
        _convert_json(pending_json, values)
    if binaries:
        _materialize(data, binaries, values)

    parameters = request.parameters
    if not parameters:
        return DecodedRequest(
            request.id,
            {},
            dict(zip(names, values, strict=True)),
            None if request.outputs is None else _requested_outputs(request.outputs),
            False,
            None,
        )
    return DecodedRequest(
        id=request.id,
        parameters=parameters,
        inputs=dict(zip(names, values, strict=True)),
        outputs=_requested_outputs(request.outputs),
        binary_output_default=_flag(parameters, "binary_data_output", "the request"),
        timeout_s=_timeout_s(parameters),
    )


def _from_shared_memory(
    wire: _WireInput,
    declared: tuple[str, str, list[int], int],
    place: tuple[str, int, int],
    shm_read: ShmReader | None,
) -> Any:
    """An input's tensor from its shared-memory region (viewing it; integer inputs copied,
    see `private_copy`);
    `declared` is its (name, datatype, shape, element count)."""
    name, datatype, shape, count = declared
    if shm_read is None:
        raise InvalidInput(f"input {name!r}: shared memory is not available here")
    if wire.data is not None or "binary_data_size" in (wire.parameters or {}):
        raise InvalidInput(f"input {name!r} has both data and a shared-memory region")
    region, offset, size = place
    if datatype != "BYTES" and size != count * ITEMSIZE[datatype]:
        raise InvalidInput(
            f"input {name!r}: shared_memory_byte_size is {size} but {datatype} {shape} "
            f"takes {count * ITEMSIZE[datatype]} bytes"
        )
    data = private_copy(datatype, shm_read(region, offset, size, f"input {name!r}"))
    if datatype == "BYTES":
        return binary_bytes_tensor(name, data, start=0, size=size, shape=shape, count=count)
    return binary_tensor(data, 0, datatype, shape, count)


def _convert_json(
    pending: list[tuple[int, str, str, list[int], int, Any]], values: list[Any]
) -> None:
    """The JSON inputs' data -> tensors (or BYTES elements), into `values` by index."""
    with np.errstate(over="raise"):
        for index, name, datatype, shape, count, json_data in pending:
            try:
                if datatype == "BYTES":
                    values[index] = json_bytes_tensor(name, shape, count, json_data)
                else:
                    values[index] = json_tensor(name, datatype, shape, count, json_data)
            except RecursionError:
                raise InvalidInput(f"input {name!r}: {_TOO_DEEP}") from None


_UTF8_BOM = b"\xef\xbb\xbf"


def _parse(header: Buffer, *, binary_follows: bool) -> _WireRequest:
    if header[:3] == _UTF8_BOM:  # RFC 8259 §8.1 lets a parser ignore it; some clients send it
        header = memoryview(header)[3:]
    try:
        return _DECODER.decode(header)
    except RecursionError:
        raise InvalidInput(_TOO_DEEP) from None
    except msgspec.ValidationError as exc:
        raise InvalidInput(_schema_message(header, str(exc))) from None
    except msgspec.DecodeError as exc:
        hint = ""
        if binary_follows and "trailing characters" in str(exc):
            hint = " (binary data after the JSON needs an Inference-Header-Content-Length header)"
        elif b"\x00" in bytes(header[:4]) or header[:2] in (b"\xff\xfe", b"\xfe\xff"):
            hint = " (it looks like UTF-16 or UTF-32; send JSON encoded as UTF-8)"
        raise InvalidInput(f"the request body is not valid JSON: {exc}{hint}") from None


def _schema_message(header: Buffer, message: str) -> str:
    if message.startswith("Expected `object`") and "` - at `" not in message:
        return f"the inference request must be a JSON object ({message})"
    try:  # the typed parse stops at the first wrong type, possibly before a JSON error
        untyped = msgspec.json.decode(header)
    except msgspec.DecodeError as exc:
        return f"the request body is not valid JSON: {exc}"
    except RecursionError:
        return _TOO_DEEP
    match = _INPUT_PATH.search(message)
    if match:  # name the input, when it has a name
        wire = untyped["inputs"][int(match.group(1))]
        name = wire.get("name") if isinstance(wire, dict) else None
        if isinstance(name, str):
            return f"input {name!r} does not match the V2 request schema: {message}"
    return f"the inference request does not match the V2 request schema: {message}"


def _describe(index: int, wire: _WireInput) -> tuple[str, str, list[int]]:
    if not wire.name:
        raise InvalidInput(f'inputs[{index}] has no "name"')
    name = wire.name
    if wire.datatype is None:
        raise InvalidInput(f'input {name!r} has no "datatype"')
    if wire.datatype not in DATATYPES:
        raise InvalidInput(
            f"input {name!r} has datatype {wire.datatype!r}; V2 datatypes are "
            + ", ".join(DATATYPES)
        )
    if wire.shape is None:
        raise InvalidInput(f'input {name!r} has no "shape"')
    return name, wire.datatype, wire.shape


def _binary_data_size(name: str, parameters: dict[str, Any] | None) -> int | None:
    if not parameters or "binary_data_size" not in parameters:
        return None
    size = parameters["binary_data_size"]
    if type(size) is not int or size < 0:
        raise InvalidInput(
            f"input {name!r}: binary_data_size must be a non-negative integer, not {size!r}"
        )
    return size


def _check_binary_size(name: str, datatype: str, shape: list[int], count: int, size: int) -> None:
    if datatype == "BYTES":
        if size < 4 * count:  # each element carries a 4-byte length
            raise InvalidInput(
                f"input {name!r}: binary_data_size {size} is too small for {count} BYTES "
                f"elements of shape {shape} (each takes at least 4 bytes)"
            )
        return
    expected = count * ITEMSIZE[datatype]
    if size != expected:
        raise InvalidInput(
            f"input {name!r}: binary_data_size is {size} but shape {shape} of {datatype} "
            f"takes {expected} bytes"
        )


def _materialize(data: Buffer, binaries: list[_Binary], values: list[Any]) -> None:
    """Make the fixed-size binary inputs into tensors, copying only where needed.

    A body the server read into a writable, aligned buffer (`BodyBuffer`, as the server
    does) is viewed in place: a tensor whose bytes start at a multiple of
    `_ALIGN` there costs no copy. Otherwise (immutable `bytes`, which torch cannot view
    writable, or a start that a packed body leaves unaligned, e.g. INT64 after FP32) the
    input is copied once into one aligned buffer that the tensors view.
    """
    source = np.frombuffer(data, dtype=np.uint8)
    in_place = source.flags.writeable
    address = source.ctypes.data
    total = 0
    for binary in binaries:
        if binary.datatype == "BYTES":
            continue
        if in_place and (address + binary.start) % _ALIGN == 0:
            binary.target = -1  # viewed where it is
            continue
        binary.target = total
        total += -(-binary.size // _ALIGN) * _ALIGN
    buffer = np.empty(total, dtype=np.uint8)  # numpy aligns data to at least 16 bytes
    for binary in binaries:
        if binary.datatype != "BYTES" and binary.target >= 0:
            end = binary.target + binary.size
            buffer[binary.target : end] = source[binary.start : binary.start + binary.size]
    for binary in binaries:
        if binary.datatype == "BYTES":
            values[binary.index] = binary_bytes_tensor(
                binary.name,
                data,
                start=binary.start,
                size=binary.size,
                shape=binary.shape,
                count=binary.count,
            )
        elif binary.target < 0:
            values[binary.index] = binary_tensor(
                source, binary.start, binary.datatype, binary.shape, binary.count
            )
        else:
            values[binary.index] = binary_tensor(
                buffer, binary.target, binary.datatype, binary.shape, binary.count
            )


def _requested_outputs(wires: list[_WireOutput] | None) -> list[RequestedOutput] | None:
    if wires is None:
        return None
    outputs: list[RequestedOutput] = []
    seen: set[str] = set()
    for index, wire in enumerate(wires):
        if not wire.name:
            raise InvalidInput(f'outputs[{index}] has no "name"')
        if wire.name in seen:
            raise InvalidInput(f"output {wire.name!r} is requested more than once")
        seen.add(wire.name)
        parameters = wire.parameters or {}
        where = f"output {wire.name!r}"
        binary = _flag(parameters, "binary_data", where, None)
        classes = parameters.get("classification")
        if classes is not None:
            classes = class_count(classes, where)
        place = shm_place(parameters, where)
        outputs.append(RequestedOutput(wire.name, binary, classes or 0, place))
    return outputs


def _flag(parameters: dict[str, Any], key: str, where: str, default: Any = False) -> Any:
    value = parameters.get(key, default)
    if value is not default and not isinstance(value, bool):
        raise InvalidInput(f"{where}: parameter {key} must be true or false, not {value!r}")
    return value


def _timeout_s(parameters: dict[str, Any]) -> float | None:
    value = parameters.get("timeout")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise InvalidInput(
            f"parameter timeout must be a non-negative number of microseconds, not {value!r}"
        )
    return value / 1e6 if value else None
