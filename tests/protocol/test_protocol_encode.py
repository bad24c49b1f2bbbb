"""Encoding V2 responses: per-output binary flags, binary_data_output, BF16, BYTES, errors."""

from __future__ import annotations

import json
import struct
from typing import Any

import pytest
import torch

from torchrig.errors import InvalidInput
from torchrig.packaging.manifest import TensorSpec
from torchrig.protocol import (
    BytesTensor,
    RequestedOutput,
    encode_error,
    encode_infer_response,
    model_metadata,
    server_metadata,
)

SPECS = [
    TensorSpec(name="score", datatype="FP32", shape=[-1, 1]),
    TensorSpec(name="ids", datatype="INT64", shape=[-1, 2]),
    TensorSpec(name="flags", datatype="BOOL", shape=[-1]),
]
OUTPUTS = {
    "score": torch.tensor([[0.5], [0.25]]),
    "ids": torch.tensor([[1, 2], [3, 4]]),
    "flags": torch.tensor([True, False]),
}


def encode(requested: list[RequestedOutput] | None, default: bool, **kw: Any) -> Any:
    args: dict[str, Any] = {
        "model_name": "ranker",
        "model_version": "1",
        "request_id": "r1",
        "outputs": OUTPUTS,
        "specs": SPECS,
        "requested": requested,
        "binary_output_default": default,
    }
    args.update(kw)
    return encode_infer_response(**args)


def split(body: bytes, headers: dict[str, str]) -> tuple[dict[str, Any], bytes]:
    length = int(headers.get("inference-header-content-length", len(body)))
    return json.loads(body[:length]), body[length:]


def test_all_outputs_as_json() -> None:
    body, headers = encode(None, False)
    assert headers == {"content-type": "application/json"}
    response = json.loads(body)
    assert response["model_name"] == "ranker"
    assert response["model_version"] == "1"
    assert response["id"] == "r1"
    assert [o["name"] for o in response["outputs"]] == ["score", "ids", "flags"]
    score, ids, flags = response["outputs"]
    assert score == {"name": "score", "datatype": "FP32", "shape": [2, 1], "data": [0.5, 0.25]}
    assert ids["data"] == [1, 2, 3, 4]
    assert flags["data"] == [True, False]


def test_binary_data_output_makes_every_output_binary() -> None:
    body, headers = encode(None, True)
    assert headers["content-type"] == "application/octet-stream"
    header, raw = split(body, headers)
    sizes = [o["parameters"]["binary_data_size"] for o in header["outputs"]]
    assert sizes == [8, 32, 2]
    assert all("data" not in o for o in header["outputs"])
    expected = b"".join(t.numpy().tobytes() for t in OUTPUTS.values())
    assert raw == expected


def test_per_output_flags_override_the_default_and_pick_order() -> None:
    requested = [RequestedOutput("ids", binary=True), RequestedOutput("score")]
    body, headers = encode(requested, False)
    header, raw = split(body, headers)
    assert [o["name"] for o in header["outputs"]] == ["ids", "score"]
    assert header["outputs"][0]["parameters"] == {"binary_data_size": 32}
    assert header["outputs"][1]["data"] == [0.5, 0.25]
    assert raw == OUTPUTS["ids"].numpy().tobytes()

    body, headers = encode([RequestedOutput("score", binary=False)], True)
    assert headers == {"content-type": "application/json"}


def test_unknown_requested_output_is_invalid_input() -> None:
    with pytest.raises(InvalidInput, match=r"no output 'nope'.*score, ids, flags"):
        encode([RequestedOutput("nope")], False)


def test_bf16_output_is_sent_binary_even_when_json_is_asked() -> None:
    value = torch.tensor([1.5, -2.0], dtype=torch.bfloat16)
    specs = [TensorSpec(name="y", datatype="BF16", shape=[-1])]
    body, headers = encode(None, False, outputs={"y": value}, specs=specs)
    header, raw = split(body, headers)
    assert header["outputs"][0]["parameters"] == {"binary_data_size": 4}
    assert torch.equal(torch.frombuffer(bytearray(raw), dtype=torch.bfloat16), value)


def test_bytes_outputs_json_and_binary() -> None:
    specs = [TensorSpec(name="s", datatype="BYTES", shape=[-1])]
    value = BytesTensor([b"ab", b""], [2])
    body, headers = encode(None, False, outputs={"s": value}, specs=specs)
    assert json.loads(body)["outputs"][0]["data"] == ["ab", ""]
    body, headers = encode(None, True, outputs={"s": value}, specs=specs)
    _, raw = split(body, headers)
    assert raw == struct.pack("<I", 2) + b"ab" + struct.pack("<I", 0)
    # not UTF-8: no JSON string can carry it, so it goes binary
    body, headers = encode(None, False, outputs={"s": [b"\xff"]}, specs=specs)
    header, raw = split(body, headers)
    assert header["outputs"][0]["shape"] == [1]
    assert raw == struct.pack("<I", 1) + b"\xff"


def test_outputs_are_converted_to_the_signature_dtype_and_made_contiguous() -> None:
    specs = [TensorSpec(name="y", datatype="FP16", shape=[-1, -1])]
    value = torch.arange(6, dtype=torch.float32).reshape(2, 3).t()  # not contiguous
    body, headers = encode(None, True, outputs={"y": value}, specs=specs)
    header, raw = split(body, headers)
    assert header["outputs"][0]["shape"] == [3, 2]
    decoded = torch.frombuffer(bytearray(raw), dtype=torch.float16).reshape(3, 2)
    assert torch.equal(decoded, value.half())


def test_missing_id_and_version_are_omitted() -> None:
    body, _ = encode(None, False, request_id=None, model_version=None)
    assert set(json.loads(body)) == {"model_name", "outputs"}


def test_error_and_metadata_bodies() -> None:
    assert json.loads(encode_error('bad "x"')) == {"error": 'bad "x"'}
    assert json.loads(server_metadata("torchrig", "0.1.0", ["binary_tensor_data"])) == {
        "name": "torchrig",
        "version": "0.1.0",
        "extensions": ["binary_tensor_data"],
    }
    assert json.loads(
        model_metadata("ranker", ["1", "2"], "pytorch_torch.export", SPECS[:1], SPECS[1:2])
    ) == {
        "name": "ranker",
        "versions": ["1", "2"],
        "platform": "pytorch_torch.export",
        "inputs": [{"name": "score", "datatype": "FP32", "shape": [-1, 1]}],
        "outputs": [{"name": "ids", "datatype": "INT64", "shape": [-1, 2]}],
    }
