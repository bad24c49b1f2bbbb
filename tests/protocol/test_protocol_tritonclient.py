"""Interoperability with the real tritonclient: its request bodies decode, our responses parse."""

from __future__ import annotations

import gzip
import zlib
from typing import Any

import ml_dtypes
import numpy as np
import pytest
import torch
import tritonclient.http as triton_http

from torchrig.packaging.manifest import TensorSpec
from torchrig.protocol import decode_infer_request, encode_infer_response

ARRAYS: dict[str, tuple[str, Any]] = {
    "fp32": ("FP32", np.array([[0.5, -1.5, 3.25]], dtype=np.float32)),
    "fp16": ("FP16", np.array([[0.5, -1.5, 3.25]], dtype=np.float16)),
    "int64": ("INT64", np.array([[1, -(2**40), 7]], dtype=np.int64)),
    "int32": ("INT32", np.array([[1, -5, 7]], dtype=np.int32)),
    "uint8": ("UINT8", np.array([[0, 200, 255]], dtype=np.uint8)),
    "bool": ("BOOL", np.array([[True, False, True]])),
    "bytes": ("BYTES", np.array([[b"ab", b"", "héllo".encode()]], dtype=np.object_)),
    "bf16": ("BF16", np.array([[0.5, -1.5, 3.25]], dtype=ml_dtypes.bfloat16)),
}


def triton_inputs(binary: bool) -> list[Any]:
    inputs = []
    for name, (datatype, array) in ARRAYS.items():
        infer_input = triton_http.InferInput(name, list(array.shape), datatype)
        infer_input.set_data_from_numpy(array, binary_data=binary or datatype == "BF16")
        inputs.append(infer_input)
    return inputs


def as_numpy(value: Any) -> Any:
    if isinstance(value, list):
        return np.array(value, dtype=np.object_).reshape(value.shape)  # type: ignore[attr-defined]
    if value.dtype == torch.bfloat16:
        return value.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
    return value.numpy()


@pytest.mark.parametrize("binary", [True, False])
@pytest.mark.parametrize("compression", [None, "gzip", "deflate"])
def test_tritonclient_request_bodies_decode(binary: bool, compression: str | None) -> None:
    body, header_length = triton_http.InferenceServerClient.generate_request_body(
        triton_inputs(binary),
        request_id="abc",
        timeout=1_500_000,
        priority=2,
        sequence_id=4,
        parameters={"custom": 1},
    )
    if compression == "gzip":
        body = gzip.compress(body)
    elif compression == "deflate":
        body = zlib.compress(body)
    decoded = decode_infer_request(
        body, header_length=header_length, content_encoding=compression, max_body_bytes=1 << 20
    )
    assert decoded.id == "abc"
    assert decoded.timeout_s == pytest.approx(1.5)
    assert decoded.binary_output_default is True  # tritonclient sets it when no outputs listed
    assert decoded.outputs is None
    assert list(decoded.inputs) == list(ARRAYS)
    for name, (_, array) in ARRAYS.items():
        np.testing.assert_array_equal(as_numpy(decoded.inputs[name]), array)


def test_tritonclient_requested_outputs_decode() -> None:
    outputs = [
        triton_http.InferRequestedOutput("a", binary_data=False),
        triton_http.InferRequestedOutput("b", binary_data=True),
    ]
    body, header_length = triton_http.InferenceServerClient.generate_request_body(
        triton_inputs(True)[:1], outputs=outputs
    )
    decoded = decode_infer_request(body, header_length=header_length, max_body_bytes=1 << 20)
    assert [(o.name, o.binary) for o in decoded.outputs or []] == [("a", False), ("b", True)]
    assert decoded.binary_output_default is False


@pytest.mark.parametrize("binary", [True, False])
def test_tritonclient_reads_our_responses(binary: bool) -> None:
    outputs = {
        "fp32": torch.tensor([[0.5, -1.5], [2.0, 3.0]]),
        "fp16": torch.tensor([0.5, -1.5], dtype=torch.float16),
        "int64": torch.tensor([[1, -(2**40)]]),
        "uint8": torch.tensor([0, 255], dtype=torch.uint8),
        "bool": torch.tensor([True, False]),
        "bf16": torch.tensor([0.5, -1.5], dtype=torch.bfloat16),
    }
    specs = [
        TensorSpec(name=name, datatype=datatype, shape=[-1])
        for name, datatype in [
            ("fp32", "FP32"),
            ("fp16", "FP16"),
            ("int64", "INT64"),
            ("uint8", "UINT8"),
            ("bool", "BOOL"),
            ("bf16", "BF16"),
            ("bytes", "BYTES"),
        ]
    ]
    texts = [b"x", "é".encode(), b""]
    body, headers = encode_infer_response(
        model_name="m",
        model_version="3",
        request_id="id-7",
        outputs={**outputs, "bytes": texts},
        specs=specs,
        requested=None,
        binary_output_default=binary,
    )
    length = headers.get("inference-header-content-length")
    result = triton_http.InferResult.from_response_body(
        body, header_length=int(length) if length else None
    )
    assert result.get_response()["id"] == "id-7"
    for name, tensor in outputs.items():
        expected = as_numpy(tensor)
        got = result.as_numpy(name)
        assert got.dtype == expected.dtype, name
        np.testing.assert_array_equal(got, expected)
    got_bytes = result.as_numpy("bytes")
    assert [v if isinstance(v, bytes) else v.encode() for v in got_bytes.tolist()] == texts
