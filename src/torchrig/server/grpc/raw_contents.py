"""ModelInfer requests whose raw tensor bytes are not copied on the way in.

protobuf's Python parser copies every `bytes` field twice: into its arena when the message
is parsed, and into a new `bytes` object when the field is read. For a request carrying
8 frames of 224x224x3 in `raw_input_contents` that is two 1.2 MB copies per call (and the
page faults of two fresh allocations), more than the rest of the call's decoding.

`parse_infer_request`, ModelInfer's request deserializer, splits a large request's
serialized bytes at its top-level fields first: every `raw_input_contents` entry becomes a
memoryview into the bytes gRPC received, and the generated parser parses the other
fields (names, shapes, parameters: a few hundred bytes). The split reads only the
top-level keys and lengths, which all of ModelInferRequest's fields are (strings,
messages, maps and bytes: length-delimited). Anything else -- an unexpected wire type, a
length past the end, a small request -- is handed to the generated parser whole, which
accepts or refuses it as it always does.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import grpc

from torchrig.server.grpc.generated import grpc_service_pb2 as pb

RAW_INPUT_CONTENTS = 7  # the field number of ModelInferRequest.raw_input_contents
LENGTH_DELIMITED = 2  # the wire type of strings, bytes, messages and maps
SPLIT_FROM_BYTES = 64 * 1024  # smaller requests: the generated parser's copies cost little


class InferCall(NamedTuple):  # a tuple: made once per call, cheaper than a dataclass
    """A deserialized ModelInferRequest, and its raw contents when they were split off
    (None: they are in `request.raw_input_contents`, if any)."""

    request: pb.ModelInferRequest
    raw: list[memoryview] | None = None

    def raw_bytes(self) -> int:
        return sum(view.nbytes for view in self.raw) if self.raw else 0


def parse_infer_request(wire: bytes) -> InferCall:
    """ModelInfer's request deserializer (see the module's docstring)."""
    if len(wire) >= SPLIT_FROM_BYTES:
        split = _split(wire)
        if split is not None:
            others, raw = split
            return InferCall(pb.ModelInferRequest.FromString(others), raw)
    return InferCall(pb.ModelInferRequest.FromString(wire))


def _split(wire: bytes) -> tuple[bytes, list[memoryview]] | None:
    """(the other top-level fields, serialized; views of the raw contents), or None when
    the bytes are not the plain sequence of length-delimited fields expected."""
    view = memoryview(wire)
    end = len(wire)
    position = 0
    others: list[memoryview] = []
    raw: list[memoryview] = []
    while position < end:
        start = position
        key, position = _varint(wire, position)
        if key is None or key & 7 != LENGTH_DELIMITED or key >> 3 == 0:
            return None
        length, position = _varint(wire, position)
        if length is None or length > end - position:
            return None
        if key >> 3 == RAW_INPUT_CONTENTS:
            raw.append(view[position : position + length])
        else:
            others.append(view[start : position + length])
        position += length
    if not raw:
        return None
    return b"".join(others), raw


def _varint(data: bytes, position: int) -> tuple[int | None, int]:
    """A base-128 varint at `position` (at most 10 bytes): (value, the position after it),
    or (None, ...) if it does not end in time."""
    result = shift = 0
    end = min(len(data), position + 10)
    while position < end:
        byte = data[position]
        position += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, position
        shift += 7
    return None, position


class _Registration:
    """Stands in for the server while the generated code registers the service's
    handlers, so that ModelInfer's deserializer can be swapped before they reach it."""

    def __init__(self) -> None:
        self.service = ""
        self.handlers: dict[str, Any] = {}

    def add_generic_rpc_handlers(self, handlers: Any) -> None:
        pass  # made again from `handlers` below

    def add_registered_method_handlers(self, service: str, handlers: dict[str, Any]) -> None:
        self.service, self.handlers = service, dict(handlers)


def register(add_to_server: Any, servicer: Any, server: grpc.aio.Server) -> None:
    """`add_to_server(servicer, server)` (the generated function), with ModelInfer's
    requests deserialized by `parse_infer_request`."""
    registration = _Registration()
    add_to_server(servicer, registration)
    handlers = registration.handlers
    handlers["ModelInfer"] = handlers["ModelInfer"]._replace(
        request_deserializer=parse_infer_request
    )
    generic = grpc.method_handlers_generic_handler(registration.service, handlers)
    server.add_generic_rpc_handlers((generic,))
    server.add_registered_method_handlers(registration.service, handlers)
