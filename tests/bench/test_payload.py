"""Requests the generator builds: shapes from metadata, and bodies that torchrig's own
decoder reads back as the tensors that were encoded (JSON and binary, every datatype)."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest
import torch

from torchrig.bench.client import Connection, ConnectionFailed, encode_request, parse_url
from torchrig.bench.encode import encode_infer_request, numpy_dtype
from torchrig.bench.payload import (
    InputShape,
    ModelMetadata,
    TensorMetadata,
    build_pool,
    parse_shape_option,
    random_tensor,
    resolve_shapes,
)
from torchrig.errors import UsageError
from torchrig.protocol import BytesTensor, decode_infer_request

DATATYPES = [
    "BOOL",
    "UINT8",
    "UINT16",
    "UINT32",
    "UINT64",
    "INT8",
    "INT16",
    "INT32",
    "INT64",
    "FP16",
    "BF16",
    "FP32",
    "FP64",
    "BYTES",
]


def _model(*inputs: tuple[str, str, list[int]]) -> ModelMetadata:
    return ModelMetadata(name="m", inputs=[TensorMetadata(*spec) for spec in inputs])


@pytest.mark.parametrize("binary", [True, False])
def test_every_datatype_round_trips_through_the_server_decoder(binary: bool) -> None:
    rng = np.random.default_rng(0)
    datatypes = DATATYPES if binary else [d for d in DATATYPES if d != "BF16"]
    tensors = [random_tensor(InputShape(f"in_{d}", d, (2, 3)), rng) for d in datatypes]
    encoded = encode_infer_request(tensors, binary=binary, request_id="7")
    decoded = decode_infer_request(
        encoded.body, header_length=encoded.header_length, max_body_bytes=1 << 20
    )
    assert decoded.id == "7"
    assert decoded.binary_output_default is binary
    for tensor in tensors:
        value: Any = decoded.inputs[tensor.name]
        if tensor.datatype == "BYTES":
            assert isinstance(value, BytesTensor)
            assert list(value) == tensor.data
            assert value.shape == (2, 3)
        elif tensor.datatype == "BF16":
            assert value.dtype == torch.bfloat16
            assert value.view(torch.int16).numpy().view(np.uint16).tolist() == tensor.data.tolist()
        else:
            assert value.numpy().dtype == numpy_dtype(tensor.datatype)
            assert value.numpy().tolist() == tensor.data.tolist()


def test_random_integers_are_small_non_negative_indices() -> None:
    spec = InputShape("sparse", "INT64", (64, 26))
    data = random_tensor(spec, np.random.default_rng(0)).data
    assert data.min() >= 0
    assert data.max() < 100


def test_bf16_has_no_json_form() -> None:
    shapes = resolve_shapes(_model(("x", "BF16", [-1, 4])), None, {})
    with pytest.raises(UsageError, match="input 'x' is BF16, which has no JSON form"):
        build_pool(parse_url("http://h:1"), "/v2/models/m/infer", shapes, binary=False)


def test_the_batch_dimension_and_open_dims_are_filled() -> None:
    metadata = _model(("image", "UINT8", [-1, 3, -1, -1]), ("scale", "FP32", [1]))
    shapes = resolve_shapes(metadata, 8, parse_shape_option(("image=3,224,224",)))
    assert shapes.rows == 8
    assert [s.shape for s in shapes.inputs] == [(8, 3, 224, 224), (1,)]


def test_open_dims_without_shape_name_the_input_and_the_flag() -> None:
    metadata = _model(("tokens", "INT64", [-1, -1]))
    with pytest.raises(UsageError, match=r"input 'tokens' .* --shape tokens=16"):
        resolve_shapes(metadata, None, {})


def test_batch_on_a_model_without_a_batch_dimension() -> None:
    metadata = _model(("x", "FP32", [4, 4]))
    assert resolve_shapes(metadata, None, {}).rows == 1
    with pytest.raises(UsageError, match="has no batch dimension"):
        resolve_shapes(metadata, 2, {})


def test_pool_holds_distinct_complete_http_requests() -> None:
    endpoint = parse_url("http://127.0.0.1:8000/prefix/v2")
    assert endpoint.prefix == "/prefix"
    shapes = resolve_shapes(_model(("x", "FP32", [-1, 4])), 2, {})
    pool = build_pool(endpoint, "/v2/models/m/infer", shapes, binary=True)
    assert len(pool) == len(set(pool)) == 8
    head, _, body = pool[0].partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    assert lines[0] == "POST /prefix/v2/models/m/infer HTTP/1.1"
    assert "Host: 127.0.0.1:8000" in lines
    assert f"Content-Length: {len(body)}" in lines
    assert any(line.startswith("Inference-Header-Content-Length: ") for line in lines)


def test_a_response_without_length_is_an_error_not_a_guess() -> None:
    """A body ended by closing the connection (no Content-Length, not chunked) is refused."""

    async def scenario() -> str:
        async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\npartial body")
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(answer, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server:
            endpoint = parse_url(f"http://127.0.0.1:{port}")
            connection = await Connection.open(endpoint, 5.0)
            with pytest.raises(ConnectionFailed) as caught:
                await connection.send(encode_request(endpoint, "GET", "/v2"), 5.0)
            return str(caught.value)

    assert "closed the connection" in asyncio.run(scenario())
