"""Every defect of a request body is an InvalidInput whose message says what and where."""

from __future__ import annotations

import gzip
import json
import struct
from typing import Any

import pytest

from torchrig.errors import InvalidInput
from torchrig.protocol import decode_infer_request


def decode(body: bytes, header_length: int | None = None, **kwargs: Any) -> Any:
    return decode_infer_request(body, header_length=header_length, max_body_bytes=1 << 20, **kwargs)


def body_of(inputs: Any, blobs: Any = (), **extra: Any) -> tuple[bytes, int]:
    header = json.dumps({"inputs": inputs, **extra}).encode()
    return header + b"".join(blobs), len(header)


def fp32(name: str = "x", **fields: Any) -> dict[str, Any]:
    return {"name": name, "datatype": "FP32", "shape": [1, 2], "data": [1.0, 2.0], **fields}


def binary(name: str, datatype: str, shape: list[int], size: int) -> dict[str, Any]:
    return {
        "name": name,
        "datatype": datatype,
        "shape": shape,
        "parameters": {"binary_data_size": size},
    }


JSON_CASES: list[tuple[str, Any, str]] = [
    ("missing inputs", {"id": "1"}, 'no "inputs"'),
    (
        "input without name",
        {"inputs": [{"datatype": "FP32", "shape": [1], "data": [1]}]},
        r"inputs\[0\] has no \"name\"",
    ),
    (
        "input without datatype",
        {"inputs": [{"name": "x", "shape": [1], "data": [1]}]},
        "'x' has no \"datatype\"",
    ),
    (
        "input without shape",
        {"inputs": [{"name": "x", "datatype": "FP32", "data": [1]}]},
        "'x' has no \"shape\"",
    ),
    (
        "input without data",
        {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1]}]},
        "'x' has neither",
    ),
    (
        "unknown datatype",
        {"inputs": [fp32(datatype="FLOAT32")]},
        "'x' has datatype 'FLOAT32'.*FP32",
    ),
    ("negative dim", {"inputs": [fp32(shape=[-1, 2])]}, "'x' has shape .* negative"),
    ("float dim", {"inputs": [fp32(shape=[1.5, 2])]}, "input 'x' does not match.*shape"),
    ("inputs not a list", {"inputs": {"x": 1}}, r"Expected `array.*\$\.inputs"),
    (
        "too few values",
        {"inputs": [fp32(shape=[1, 3])]},
        "'x' has 2 values but shape \\[1, 3\\] needs 3",
    ),
    (
        "too many nested",
        {"inputs": [fp32(shape=[1, 1], data=[[1.0, 2.0]])]},
        "'x' has 2 values but shape",
    ),
    (
        "ragged",
        {"inputs": [fp32(shape=[2, 2], data=[[1.0, 2.0], [3.0]])]},
        "'x': data is not a regular array",
    ),
    (
        "string in floats",
        {"inputs": [fp32(data=["a", 1.0])]},
        "'x' is FP32: its JSON data must be numbers",
    ),
    # numpy alone would parse these strings as 1.5 and NaN
    ("numbers as strings", {"inputs": [fp32(data=["1.5", "NaN"])]}, "must be numbers .* strings"),
    ("booleans as floats", {"inputs": [fp32(data=[True, False])]}, "must be numbers .* booleans"),
    ("null among strings", {"inputs": [fp32(data=[None, "1"])]}, "must be numbers .* mixed"),
    # empty, yet numpy and torch refuse such shapes: a 400, not a 500
    ("empty with a huge dim", {"inputs": [fp32(shape=[2**63 - 1, 0], data=[])]}, "too large"),
    ("empty with huge dims", {"inputs": [fp32(shape=[2**31, 2**31, 0], data=[])]}, "too large"),
    (
        "float in ints",
        {"inputs": [fp32(datatype="INT64", data=[1, 2.5])]},
        "'x' is INT64: .*integers",
    ),
    ("int in bools", {"inputs": [fp32(datatype="BOOL", data=[1, 0])]}, "'x' is BOOL: .*true/false"),
    (
        "int out of range",
        {"inputs": [fp32(datatype="UINT8", data=[1, 256])]},
        "'x': values \\[1, 256\\] are out of range for UINT8",
    ),
    (
        "negative uint",
        {"inputs": [fp32(datatype="UINT32", data=[-1, 0])]},
        "'x': values .* out of range for UINT32",
    ),
    (
        "fp16 overflow",
        {"inputs": [fp32(datatype="FP16", data=[1e10, 0])]},
        "'x': data is not a regular array of FP16",
    ),
    ("bf16 json", {"inputs": [fp32(datatype="BF16")]}, "'x' is BF16 with JSON data.*binary"),
    (
        "bytes not strings",
        {"inputs": [fp32(datatype="BYTES", data=[1, 2])]},
        "'x' is BYTES: .*strings",
    ),
    ("duplicate names", {"inputs": [fp32(), fp32()]}, "'x' appears more than once"),
    (
        "shape beyond body",
        {"inputs": [fp32(shape=[10**6, 10**6])]},
        "'x': shape .* claims 1000000000000 elements",
    ),
    ("shape overflow", {"inputs": [fp32(shape=[2**40, 2**40])]}, "'x': shape .* is too large"),
    (
        "binary_data_size is a string",
        {"inputs": [fp32(parameters={"binary_data_size": "8"})]},
        "'x': binary_data_size must be",
    ),
    (
        "binary without header length",
        {"inputs": [binary("x", "FP32", [2], 8)]},
        "'x' has binary_data_size but .* Inference-Header-Content-Length",
    ),
    (
        "timeout not a number",
        {"inputs": [fp32()], "parameters": {"timeout": "1s"}},
        "timeout must be",
    ),
    (
        "binary_data_output not bool",
        {"inputs": [fp32()], "parameters": {"binary_data_output": "yes"}},
        "binary_data_output must be true or false",
    ),
    (
        "output binary_data not bool",
        {"inputs": [fp32()], "outputs": [{"name": "y", "parameters": {"binary_data": 1}}]},
        "output 'y': parameter binary_data",
    ),
    ("output without name", {"inputs": [fp32()], "outputs": [{}]}, r"outputs\[0\] has no \"name\""),
]


@pytest.mark.parametrize(
    ("request_json", "pattern"), [c[1:] for c in JSON_CASES], ids=[c[0] for c in JSON_CASES]
)
def test_bad_json_requests(request_json: Any, pattern: str) -> None:
    with pytest.raises(InvalidInput, match=pattern) as info:
        decode(json.dumps(request_json).encode())
    assert info.value.status_code == 400


@pytest.mark.parametrize(
    ("body", "pattern"),
    [
        (b'{"inputs": [1,', "not valid JSON: .*truncated"),
        (b'{"inputs": [}', "not valid JSON: .*byte 12"),
        (b"[1, 2]", "must be a JSON object"),
        (b"", "not valid JSON"),
        (b'{"inputs": []}\x00\x01\x02', "Inference-Header-Content-Length"),
    ],
)
def test_malformed_json_says_where(body: bytes, pattern: str) -> None:
    with pytest.raises(InvalidInput, match=pattern):
        decode(body)


@pytest.mark.parametrize("where", ["data", "parameters", "request"])
def test_json_nested_too_deeply_is_a_400(where: str) -> None:
    deep = "[" * 2000 + "1" + "]" * 2000
    if where == "data":
        body = f'{{"inputs": [{{"name": "x", "datatype": "FP32", "shape": [1], "data": {deep}}}]}}'
    elif where == "parameters":
        body = f'{{"inputs": [], "parameters": {{"p": {deep}}}}}'
    else:
        body = deep
    with pytest.raises(InvalidInput, match=r"nested too deeply|must be a JSON object") as info:
        decode(body.encode())
    assert info.value.status_code == 400


def test_empty_binary_input_with_huge_dims_is_a_400() -> None:
    body, length = body_of([binary("x", "FP32", [2**31, 2**31, 0], 0)])
    with pytest.raises(InvalidInput, match="too large"):
        decode(body, length)


def test_binary_size_not_matching_shape() -> None:
    body, length = body_of([binary("x", "FP32", [1, 2], 12)], [b"\0" * 12])
    with pytest.raises(
        InvalidInput, match="'x': binary_data_size is 12 but shape \\[1, 2\\] of FP32 takes 8"
    ):
        decode(body, length)


def test_binary_body_too_short() -> None:
    body, length = body_of(
        [binary("a", "FP32", [2], 8), binary("b", "INT64", [2], 16)], [b"\0" * 20]
    )
    with pytest.raises(InvalidInput, match=r"'b': its 16 bytes .* end at byte .* only"):
        decode(body, length)


def test_binary_body_with_trailing_bytes() -> None:
    body, length = body_of([binary("a", "FP32", [2], 8)], [b"\0" * 9])
    with pytest.raises(InvalidInput, match="1 bytes after the last binary input"):
        decode(body, length)


def test_header_length_beyond_body() -> None:
    body, _ = body_of([fp32()])
    with pytest.raises(InvalidInput, match=f"Inference-Header-Content-Length is {len(body) + 1}"):
        decode(body, len(body) + 1)


def test_header_length_wrong_cuts_the_json() -> None:
    body, length = body_of([binary("a", "FP32", [2], 8)], [b"\0" * 8])
    with pytest.raises(InvalidInput, match="not valid JSON"):
        decode(body, length - 1)


def test_binary_and_data_together() -> None:
    spec = binary("x", "FP32", [2], 8)
    spec["data"] = [1.0, 2.0]
    body, length = body_of([spec], [b"\0" * 8])
    with pytest.raises(InvalidInput, match="'x' has both"):
        decode(body, length)


@pytest.mark.parametrize(
    ("blob", "pattern"),
    [
        (struct.pack("<I", 1) + b"a" + b"\0\0\0", "'s': binary BYTES data ends before element 1"),
        (struct.pack("<I", 1) + b"a" + struct.pack("<I", 9), "'s': BYTES element 1 claims 9 bytes"),
        (struct.pack("<I", 0) * 2 + b"zz", "'s': its 2 BYTES elements take 8 bytes but"),
    ],
)
def test_bad_binary_bytes(blob: bytes, pattern: str) -> None:
    body, length = body_of([binary("s", "BYTES", [2], len(blob))], [blob])
    with pytest.raises(InvalidInput, match=pattern):
        decode(body, length)


def test_bytes_binary_size_too_small_for_count() -> None:
    body, length = body_of([binary("s", "BYTES", [3], 8)], [b"\0" * 8])
    with pytest.raises(InvalidInput, match="'s': binary_data_size 8 is too small for 3 BYTES"):
        decode(body, length)


@pytest.mark.parametrize(
    ("body", "encoding", "pattern"),
    [
        (b"not gzip at all", "gzip", "not valid gzip data"),
        (gzip.compress(b'{"inputs": []}', mtime=0)[:-6], "gzip", "truncated"),
        (gzip.compress(b'{"inputs": []}', mtime=0) + b"junk", "gzip", "4 bytes after the end"),
        (b'{"inputs": []}', "br", "Content-Encoding 'br' is not supported"),
    ],
)
def test_bad_content_encoding(body: bytes, encoding: str, pattern: str) -> None:
    with pytest.raises(InvalidInput, match=pattern):
        decode(body, content_encoding=encoding)


def test_unknown_fields_and_parameters_are_ignored() -> None:
    body = json.dumps(
        {
            "inputs": [fp32(parameters={"shared_memory_region": None, "whatever": [1]}, extra=1)],
            "parameters": {"priority": 1, "sequence_start": True, "triton_x": "y", "other": {}},
            "future_field": True,
        }
    ).encode()
    assert decode(body).inputs["x"].tolist() == [[1.0, 2.0]]


def test_a_utf8_byte_order_mark_is_ignored() -> None:
    """RFC 8259 lets a parser ignore it; Windows tools (PowerShell's files) write one."""
    bom = b"\xef\xbb\xbf"
    inputs = [{"name": "x", "datatype": "FP32", "shape": [2], "data": [1.5, 2.5]}]
    request = decode(bom + json.dumps({"inputs": inputs}).encode())
    assert request.inputs["x"].tolist() == [1.5, 2.5]
    body, length = body_of([binary("x", "FP32", [2], 8)], [struct.pack("<2f", 1.5, 2.5)])
    request = decode(bom + body, header_length=length + len(bom))
    assert request.inputs["x"].tolist() == [1.5, 2.5]


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-32"])
def test_json_in_another_unicode_encoding_is_named(encoding: str) -> None:
    inputs = [{"name": "x", "datatype": "FP32", "shape": [1], "data": [1.5]}]
    with pytest.raises(InvalidInput, match="send JSON encoded as UTF-8"):
        decode(json.dumps({"inputs": inputs}).encode(encoding))
