"""ModelInfer's deserializer: large requests' raw contents viewed, not copied, and the same
request as protobuf's own parse; anything unexpected left to protobuf."""

from __future__ import annotations

import numpy as np
import pytest
from google.protobuf.message import DecodeError

from torchrig.server.grpc.generated import grpc_service_pb2 as pb
from torchrig.server.grpc.raw_contents import SPLIT_FROM_BYTES, parse_infer_request


def large_request() -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="frames", model_version="1", id="r1")
    request.parameters["timeout"].int64_param = 5
    frames = request.inputs.add(name="frames", datatype="UINT8", shape=[2, 224, 224, 3])
    frames.parameters["binary_data_size"].int64_param = 2 * 224 * 224 * 3
    request.inputs.add(name="scale", datatype="FP32", shape=[1])
    request.outputs.add(name="pixel")
    rng = np.random.default_rng(0)
    request.raw_input_contents.append(
        rng.integers(0, 255, 2 * 224 * 224 * 3).astype(np.uint8).tobytes()
    )
    request.raw_input_contents.append(np.float32(0.5).tobytes())
    return request


def test_a_large_request_is_split_into_the_same_fields_and_views() -> None:
    request = large_request()
    wire = request.SerializeToString()
    call = parse_infer_request(wire)
    assert call.raw is not None
    assert [bytes(view) for view in call.raw] == list(request.raw_input_contents)
    assert all(view.obj is wire for view in call.raw)  # views of what gRPC received
    assert not call.request.raw_input_contents
    whole = pb.ModelInferRequest()
    whole.CopyFrom(call.request)
    whole.raw_input_contents.extend(bytes(view) for view in call.raw)
    assert whole == request
    assert call.raw_bytes() == sum(len(raw) for raw in request.raw_input_contents)


def test_small_requests_and_requests_without_raw_contents_are_parsed_whole() -> None:
    small = pb.ModelInferRequest(model_name="ranker")
    small.raw_input_contents.append(b"\0" * 52)
    call = parse_infer_request(small.SerializeToString())
    assert call.raw is None
    assert call.request == small
    typed = pb.ModelInferRequest(model_name="ranker")
    typed.inputs.add(name="x", datatype="BYTES", shape=[1]).contents.bytes_contents.append(
        b"x" * SPLIT_FROM_BYTES
    )
    call = parse_infer_request(typed.SerializeToString())
    assert (call.raw, call.request) == (None, typed)


@pytest.mark.parametrize(
    "tail",
    [
        b"\x08\x01",  # a varint field (wire type 0): not the split's to judge
        b"\x3a\xff\xff\xff\xff\x0f",  # raw contents claiming 4 GB
        b"\x3a",  # a key without its length
        b"\x3a\x80\x80\x80\x80\x80\x80\x80\x80\x80\x80",  # a length that never ends
    ],
)
def test_unexpected_bytes_are_left_to_protobuf(tail: bytes) -> None:
    wire = large_request().SerializeToString() + tail
    try:
        expected = pb.ModelInferRequest.FromString(wire)
    except DecodeError:
        with pytest.raises(DecodeError):
            parse_infer_request(wire)
        return
    call = parse_infer_request(wire)
    assert call.raw is None
    assert call.request == expected
