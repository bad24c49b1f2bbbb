"""Decoding V2 requests: JSON and binary round trips for every datatype, and every defect."""

from __future__ import annotations

import gzip
import json
import struct
import tracemalloc
import zlib
from typing import Any

import numpy as np
import pytest
import torch

from torchrig.errors import InvalidInput, PayloadTooLarge
from torchrig.protocol import BytesTensor, RequestedOutput, decode_infer_request
from torchrig.protocol.body import BodyBuffer

LIMIT = 1 << 20


def binary_body(
    inputs: list[dict[str, Any]], blobs: list[bytes], **extra: Any
) -> tuple[bytes, int]:
    header = json.dumps({"inputs": inputs, **extra}).encode()
    return header + b"".join(blobs), len(header)


def decode(body: bytes | memoryview, header_length: int | None = None, **kwargs: Any) -> Any:
    return decode_infer_request(body, header_length=header_length, max_body_bytes=LIMIT, **kwargs)


def json_request(inputs: list[dict[str, Any]], **extra: Any) -> bytes:
    return json.dumps({"inputs": inputs, **extra}).encode()


NUMERIC = [
    ("FP32", torch.float32, [[0.5, -1.25], [3.0, 1e-3]]),
    ("FP16", torch.float16, [[0.5, -1.25], [3.0, 2.0]]),
    ("FP64", torch.float64, [[0.1, -1e300], [3.0, 2.0]]),
    ("INT64", torch.int64, [[1, -(2**62)], [3, 4]]),
    ("INT32", torch.int32, [[1, -(2**31)], [3, 2**31 - 1]]),
    ("INT8", torch.int8, [[1, -128], [3, 127]]),
    ("UINT8", torch.uint8, [[0, 255], [3, 4]]),
    ("UINT64", torch.uint64, [[0, 2**64 - 1], [3, 4]]),
    ("BOOL", torch.bool, [[True, False], [False, True]]),
]


@pytest.mark.parametrize(("datatype", "dtype", "rows"), NUMERIC)
@pytest.mark.parametrize("nested", [True, False])
def test_json_inputs_decode_to_tensors(datatype: str, dtype: Any, rows: Any, nested: bool) -> None:
    data = rows if nested else [v for row in rows for v in row]
    body = json_request([{"name": "x", "datatype": datatype, "shape": [2, 2], "data": data}])
    tensor = decode(body).inputs["x"]
    assert tensor.dtype == dtype
    assert tensor.shape == (2, 2)
    assert tensor.tolist() == torch.tensor(rows, dtype=dtype).tolist()


@pytest.mark.parametrize(
    "dtype",
    [
        torch.float32,
        torch.float16,
        torch.bfloat16,
        torch.int64,
        torch.int32,
        torch.uint8,
        torch.bool,
    ],
)
def test_binary_inputs_round_trip_and_are_writable_and_aligned(dtype: Any) -> None:
    # An odd-sized UINT8 input first puts the next one at an unaligned offset in the body.
    first = torch.arange(3, dtype=torch.uint8)
    second = (torch.arange(6) % 2 == 0) if dtype == torch.bool else torch.arange(6).to(dtype)
    second = second.reshape(2, 3)
    from torchrig.dtypes import v2_datatype

    blobs = [first.numpy().tobytes(), second.view(torch.uint8).numpy().tobytes()]
    inputs = [
        {"name": "a", "datatype": "UINT8", "shape": [3], "parameters": {"binary_data_size": 3}},
        {
            "name": "b",
            "datatype": v2_datatype(dtype),
            "shape": [2, 3],
            "parameters": {"binary_data_size": len(blobs[1])},
        },
    ]
    body, header_length = binary_body(inputs, blobs)
    decoded = decode(body, header_length)
    assert torch.equal(decoded.inputs["a"], first)
    b = decoded.inputs["b"]
    assert b.dtype == dtype
    assert torch.equal(b, second)
    assert b.data_ptr() % b.element_size() == 0
    b.add_(1) if dtype != torch.bool else b.logical_not_()  # writable: no copy-on-write surprise


def test_binary_inputs_view_one_buffer_without_per_tensor_copies() -> None:
    blobs = [np.arange(4, dtype=np.float32).tobytes(), np.arange(4, dtype=np.int64).tobytes()]
    inputs = [
        {"name": "f", "datatype": "FP32", "shape": [1, 4], "parameters": {"binary_data_size": 16}},
        {"name": "i", "datatype": "INT64", "shape": [1, 4], "parameters": {"binary_data_size": 32}},
    ]
    body, header_length = binary_body(inputs, blobs)
    decoded = decode(body, header_length)
    f, i = decoded.inputs["f"], decoded.inputs["i"]
    # both view one aligned buffer: f's 16 bytes, then i at the next 16-byte boundary
    assert i.data_ptr() - f.data_ptr() == 16


def in_body_buffer(body: bytes, header_length: int | None) -> memoryview:
    """The body as the server holds it: written chunk by chunk into a BodyBuffer."""
    into = BodyBuffer(len(body), header_length)
    for start in range(0, len(body), 7):  # odd-sized chunks, as the network delivers them
        into.write(body[start : start + 7])
    return into.body()


def body_range(view: memoryview) -> tuple[int, int]:
    start = np.frombuffer(view, dtype=np.uint8).ctypes.data
    return start, start + len(view)


def test_a_body_buffer_is_viewed_in_place_where_tensors_are_aligned() -> None:
    frames = np.arange(2 * 4 * 4 * 3, dtype=np.uint8).reshape(2, 4, 4, 3)
    dense = np.arange(13, dtype=np.float32).reshape(1, 13)  # 52 bytes: what follows is skewed
    sparse = np.arange(26, dtype=np.int64).reshape(1, 26)
    blobs = [frames.tobytes(), dense.tobytes(), sparse.tobytes()]
    inputs = [
        {
            "name": n,
            "datatype": d,
            "shape": list(a.shape),
            "parameters": {"binary_data_size": a.nbytes},
        }
        for n, d, a in (
            ("frames", "UINT8", frames),
            ("dense", "FP32", dense),
            ("sparse", "INT64", sparse),
        )
    ]
    body, header_length = binary_body(inputs, blobs)
    view = in_body_buffer(body, header_length)
    low, high = body_range(view)
    decoded = decode(view, header_length)
    got = decoded.inputs
    assert got["frames"].numpy().tolist() == frames.tolist()
    assert got["dense"].numpy().tolist() == dense.tolist()
    assert got["sparse"].numpy().tolist() == sparse.tolist()
    # the first binary input starts aligned by construction and is the body's own bytes
    assert low <= got["frames"].data_ptr() < high
    assert got["frames"].data_ptr() % 16 == 0
    # 96 + 52 bytes in, sparse is misaligned in the body: it was copied out, aligned
    assert not low <= got["sparse"].data_ptr() < high
    assert got["sparse"].data_ptr() % 16 == 0
    got["frames"].add_(1)  # writable


def test_immutable_bytes_are_copied_once_even_when_aligned() -> None:
    frames = np.arange(48, dtype=np.uint8)
    inputs = [
        {"name": "f", "datatype": "UINT8", "shape": [48], "parameters": {"binary_data_size": 48}}
    ]
    body, header_length = binary_body(inputs, [frames.tobytes()])
    tensor = decode(body, header_length).inputs["f"]
    tensor.add_(1)  # torch cannot write into bytes: a copy it owns
    assert body[header_length:] == frames.tobytes()


@pytest.mark.parametrize("header_length", [None, 0, 1, 15, 16, 17, 333])
def test_body_buffer_places_the_first_binary_byte_aligned(header_length: int | None) -> None:
    size = 400
    into = BodyBuffer(size, header_length)
    into.write(bytes(range(256)) + bytes(144))
    view = into.body()
    low, _ = body_range(view)
    assert (low + (header_length or 0)) % 16 == 0
    assert bytes(view[:256]) == bytes(range(256))


def test_body_buffer_refuses_more_or_fewer_bytes_than_declared() -> None:
    into = BodyBuffer(10, None)
    into.write(b"12345")
    with pytest.raises(InvalidInput, match="has 5 bytes but its Content-Length is 10"):
        into.body()
    with pytest.raises(InvalidInput, match="longer than its Content-Length of 10"):
        into.write(b"123456")
    into.write(b"67890")
    assert bytes(into.body()) == b"1234567890"


def test_mixed_binary_and_json_inputs_keep_request_order() -> None:
    inputs = [
        {"name": "j1", "datatype": "INT64", "shape": [1, 2], "data": [7, 8]},
        {"name": "b1", "datatype": "FP32", "shape": [1, 2], "parameters": {"binary_data_size": 8}},
        {"name": "j2", "datatype": "BYTES", "shape": [1], "data": ["hé"]},
        {"name": "b2", "datatype": "BYTES", "shape": [2], "parameters": {"binary_data_size": 11}},
    ]
    blobs = [
        np.array([1.5, 2.5], dtype=np.float32).tobytes(),
        struct.pack("<I", 3) + b"abc" + struct.pack("<I", 0),
    ]
    body, header_length = binary_body(inputs, blobs)
    decoded = decode(body, header_length)
    assert list(decoded.inputs) == ["j1", "b1", "j2", "b2"]
    assert decoded.inputs["j1"].tolist() == [[7, 8]]
    assert decoded.inputs["b1"].tolist() == [[1.5, 2.5]]
    assert decoded.inputs["j2"] == ["hé".encode()]
    assert isinstance(decoded.inputs["b2"], BytesTensor)
    assert decoded.inputs["b2"] == [b"abc", b""]
    assert decoded.inputs["b2"].shape == (2,)
    assert decoded.inputs["b2"].dtype == "BYTES"


def test_bytes_json_nested_keeps_shape() -> None:
    body = json_request(
        [{"name": "s", "datatype": "BYTES", "shape": [2, 1], "data": [["a"], ["b"]]}]
    )
    value = decode(body).inputs["s"]
    assert value == [b"a", b"b"]
    assert value.shape == (2, 1)


def test_empty_tensors_decode() -> None:
    inputs = [
        {"name": "j", "datatype": "INT32", "shape": [0, 3], "data": []},
        {"name": "b", "datatype": "FP32", "shape": [2, 0], "parameters": {"binary_data_size": 0}},
    ]
    body, header_length = binary_body(inputs, [])
    decoded = decode(body, header_length)
    assert decoded.inputs["j"].shape == (0, 3)
    assert decoded.inputs["j"].dtype == torch.int32
    assert decoded.inputs["b"].shape == (2, 0)


def test_request_fields_outputs_and_parameters() -> None:
    body = json_request(
        [{"name": "x", "datatype": "FP32", "shape": [1], "data": [1.0], "parameters": {"z": 1}}],
        id="r-1",
        parameters={
            "timeout": 250_000,
            "priority": 3,
            "sequence_id": 9,
            "triton_enable_empty_final_response": True,
            "binary_data_output": True,
            "custom": "kept",
        },
        outputs=[{"name": "y", "parameters": {"binary_data": False}}, {"name": "z"}],
    )
    decoded = decode(body)
    assert decoded.id == "r-1"
    assert decoded.timeout_s == pytest.approx(0.25)
    assert decoded.binary_output_default is True
    assert decoded.parameters["custom"] == "kept"
    assert decoded.outputs == [RequestedOutput("y", False), RequestedOutput("z", None)]


def test_defaults_when_request_says_nothing() -> None:
    decoded = decode(json_request([{"name": "x", "datatype": "FP32", "shape": [1], "data": [1]}]))
    assert decoded.id is None
    assert decoded.outputs is None
    assert decoded.binary_output_default is False
    assert decoded.timeout_s is None
    assert decoded.parameters == {}


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "deflate-raw", "identity", None])
def test_compressed_bodies(encoding: str | None) -> None:
    inputs = [
        {"name": "x", "datatype": "FP32", "shape": [1, 2], "parameters": {"binary_data_size": 8}},
        {"name": "y", "datatype": "INT64", "shape": [1], "data": [5]},
    ]
    body, header_length = binary_body(inputs, [np.array([1, 2], dtype=np.float32).tobytes()])
    if encoding == "gzip":
        body = gzip.compress(body)
    elif encoding == "deflate":
        body = zlib.compress(body)
    elif encoding == "deflate-raw":
        compressor = zlib.compressobj(wbits=-zlib.MAX_WBITS)
        body = compressor.compress(body) + compressor.flush()
        encoding = "deflate"
    decoded = decode(body, header_length, content_encoding=encoding)
    assert decoded.inputs["x"].tolist() == [[1.0, 2.0]]
    assert decoded.inputs["y"].tolist() == [5]


def test_decompression_bomb_is_payload_too_large() -> None:
    bomb = gzip.compress(b" " * (64 * LIMIT))  # 64 MiB of spaces in ~64 KiB
    assert len(bomb) < LIMIT
    tracemalloc.start()
    try:
        with pytest.raises(PayloadTooLarge, match="expands beyond"):
            decode(bomb, content_encoding="gzip")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * LIMIT
    assert PayloadTooLarge("x").status_code == 413


def test_identity_body_over_the_limit_is_payload_too_large() -> None:
    with pytest.raises(PayloadTooLarge):
        decode_infer_request(b"{" * 101, header_length=None, max_body_bytes=100)


def test_huge_shape_fails_fast_without_allocating() -> None:
    shape = [1_000_000, 1_000_000]  # 10^12 elements
    cases = [
        binary_body(
            [
                {
                    "name": "x",
                    "datatype": "FP32",
                    "shape": shape,
                    "parameters": {"binary_data_size": 8},
                }
            ],
            [b"\0" * 8],
        ),
        binary_body(
            [
                {
                    "name": "x",
                    "datatype": "FP32",
                    "shape": shape,
                    "parameters": {"binary_data_size": 4 * 10**12},
                }
            ],
            [b"\0" * 8],
        ),
        (json_request([{"name": "x", "datatype": "FP32", "shape": shape, "data": [1.0]}]), None),
        (json_request([{"name": "x", "datatype": "BYTES", "shape": shape, "data": ["a"]}]), None),
        binary_body(
            [
                {
                    "name": "x",
                    "datatype": "BYTES",
                    "shape": shape,
                    "parameters": {"binary_data_size": 8},
                }
            ],
            [b"\0" * 8],
        ),
    ]
    tracemalloc.start()
    try:
        for body, header_length in cases:
            with pytest.raises(InvalidInput, match="'x'"):
                decode(body, header_length)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < LIMIT
