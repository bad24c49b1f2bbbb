"""Every V2 endpoint and error status, with httpx, against a real server."""

from __future__ import annotations

import gzip
import json
import zlib
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch

from torchrig.packaging import load_program, read_manifest

GOOD = {
    "inputs": [
        {"name": "dense", "datatype": "FP32", "shape": [2, 13], "data": [0.5] * 26},
        {"name": "sparse", "datatype": "INT64", "shape": [2, 26], "data": list(range(52))},
    ]
}


def expected_ranker(demo_repo: Path, body: dict[str, Any]) -> list[float]:
    directory = demo_repo / "ranker" / "1"
    program = load_program(directory, read_manifest(directory))
    dense = torch.tensor(body["inputs"][0]["data"], dtype=torch.float32).reshape(-1, 13)
    sparse = torch.tensor(body["inputs"][1]["data"], dtype=torch.int64).reshape(-1, 26)
    with torch.inference_mode():
        out = program({"dense": dense, "sparse": sparse})
    return [float(v) for v in out["probability"].reshape(-1)]


def test_health_and_metadata(server: tuple[str, Any]) -> None:
    url, _ = server
    with httpx.Client(base_url=url) as client:
        assert client.get("/v2/health/live").status_code == 200
        assert client.get("/v2/health/ready").status_code == 200
        meta = client.get("/v2").json()
        assert meta["name"] == "torchrig"
        assert "binary_tensor_data" in meta["extensions"]
        model = client.get("/v2/models/ranker").json()
        assert model["name"] == "ranker"
        assert model["versions"] == ["1"]
        assert {i["name"]: (i["datatype"], i["shape"]) for i in model["inputs"]} == {
            "dense": ("FP32", [-1, 13]),
            "sparse": ("INT64", [-1, 26]),
        }
        assert client.get("/v2/models/ranker/versions/1").json()["name"] == "ranker"
        assert client.get("/v2/models/ranker/ready").status_code == 200
        assert client.get("/v2/models/ranker/versions/1/ready").status_code == 200
        index = client.post("/v2/repository/index").json()
        assert {(r["name"], r["state"]) for r in index} >= {("ranker", "READY")}


def test_json_infer_equals_the_in_process_model(server: tuple[str, Any], demo_repo: Path) -> None:
    url, _ = server
    response = httpx.post(f"{url}/v2/models/ranker/infer", content=json.dumps({**GOOD, "id": "r1"}))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model_name"] == "ranker"
    assert body["model_version"] == "1"
    assert body["id"] == "r1"
    (out,) = body["outputs"]
    assert (out["name"], out["datatype"], out["shape"]) == ("probability", "FP32", [2, 1])
    assert out["data"] == pytest.approx(expected_ranker(demo_repo, GOOD), rel=1e-6)


def _compress(raw: bytes, encoding: str) -> bytes:
    return gzip.compress(raw) if encoding == "gzip" else zlib.compress(raw)


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
def test_compressed_json_bodies_give_the_models_answer(
    server: tuple[str, Any], demo_repo: Path, encoding: str
) -> None:
    url, _ = server
    dense = [0.1 * i for i in range(39)]
    sparse = [7 * i for i in range(78)]
    body = {
        "inputs": [
            {"name": "dense", "datatype": "FP32", "shape": [3, 13], "data": dense},
            {"name": "sparse", "datatype": "INT64", "shape": [3, 26], "data": sparse},
        ]
    }
    response = httpx.post(
        f"{url}/v2/models/ranker/versions/1/infer",
        content=_compress(json.dumps(body).encode(), encoding),
        headers={"content-encoding": encoding},
    )
    assert response.status_code == 200, response.text
    (out,) = response.json()["outputs"]
    assert out["shape"] == [3, 1]
    assert out["data"] == pytest.approx(expected_ranker(demo_repo, body), rel=1e-6)


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
def test_compressed_binary_bodies_give_the_models_answer(
    server: tuple[str, Any], encoding: str
) -> None:
    """The binary extension compressed as a whole: the header length is of the plain body."""
    url, _ = server
    x = torch.arange(-24, 24, dtype=torch.bfloat16).reshape(6, 8)
    raw = x.view(torch.int16).numpy().tobytes()
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "x",
                    "datatype": "BF16",
                    "shape": [6, 8],
                    "parameters": {"binary_data_size": len(raw)},
                }
            ],
            "outputs": [{"name": "y", "parameters": {"binary_data": True}}],
        }
    ).encode()
    response = httpx.post(
        f"{url}/v2/models/halver/infer",
        content=_compress(header + raw, encoding),
        headers={
            "content-encoding": encoding,
            "inference-header-content-length": str(len(header)),
        },
    )
    assert response.status_code == 200, response.text
    length = int(response.headers["inference-header-content-length"])
    y = torch.frombuffer(bytearray(response.content[length:]), dtype=torch.bfloat16)
    assert torch.equal(y.reshape(6, 8), x * 0.5)


def test_metrics_after_traffic(server: tuple[str, Any]) -> None:
    url, _ = server
    httpx.post(f"{url}/v2/models/ranker/infer", content=json.dumps(GOOD))
    httpx.post(f"{url}/v2/models/ranker/infer", content=b"{")
    text = httpx.get(f"{url}/metrics").text
    assert 'torchrig_request_success_total{model="ranker"' in text
    assert "torchrig_request_failure_total" in text
    assert "torchrig_batch_size" in text
    assert 'torchrig_model_ready{model="ranker",version="1"} 1.0' in text


def _infer(url: str, body: Any, **kw: Any) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(f"{url}/v2/models/ranker/infer", content=content, **kw)


BAD = [
    (b"{not json", 400, "JSON"),
    (
        {
            "inputs": [
                {**GOOD["inputs"][0], "datatype": "FP64", "data": [0.5] * 26},
                GOOD["inputs"][1],
            ]
        },
        400,
        "FP64",
    ),
    ({"inputs": [{**GOOD["inputs"][0], "data": [0.5] * 25}, GOOD["inputs"][1]]}, 400, "dense"),
    ({"inputs": [GOOD["inputs"][0]]}, 400, "sparse"),
    (
        {
            "inputs": [
                *GOOD["inputs"],
                {"name": "extra", "datatype": "FP32", "shape": [2], "data": [1, 2]},
            ]
        },
        400,
        "extra",
    ),
    ({"inputs": [{**GOOD["inputs"][0], "shape": [-2, 13]}, GOOD["inputs"][1]]}, 400, "dense"),
    ({"inputs": [{**GOOD["inputs"][0], "shape": [10**9, 10**9]}, GOOD["inputs"][1]]}, 400, "dense"),
    (
        {
            "inputs": [
                {
                    "name": "dense",
                    "datatype": "FP32",
                    "shape": [1, 13],
                    "parameters": {"binary_data_size": 52},
                },
                GOOD["inputs"][1],
            ]
        },
        400,
        "dense",
    ),
    (
        {
            "inputs": [
                {**GOOD["inputs"][0], "shape": [65, 13], "data": [0.5] * 65 * 13},
                {**GOOD["inputs"][1], "shape": [65, 26], "data": [1] * 65 * 26},
            ]
        },
        400,
        "max_batch_size",
    ),
]


@pytest.mark.parametrize(("body", "status", "needle"), BAD)
def test_bad_requests_are_clear_4xx_and_the_server_keeps_serving(
    server: tuple[str, Any], demo_repo: Path, body: Any, status: int, needle: str
) -> None:
    url, _ = server
    response = _infer(url, body)
    assert response.status_code == status, response.text
    assert needle in response.json()["error"]
    good = _infer(url, GOOD)
    assert good.status_code == 200
    assert good.json()["outputs"][0]["data"] == pytest.approx(
        expected_ranker(demo_repo, GOOD), rel=1e-6
    )


def test_unknown_model_version_path_and_method(server: tuple[str, Any]) -> None:
    url, _ = server
    with httpx.Client(base_url=url) as client:
        assert client.post("/v2/models/nope/infer", content=b"{}").status_code == 404
        assert (
            client.post("/v2/models/ranker/versions/7/infer", content=json.dumps(GOOD)).status_code
            == 404
        )
        assert client.get("/v2/models/nope").status_code == 404
        assert client.get("/v2/models/ranker/versions/7/ready").status_code == 404
        missing = client.get("/v3/everything")
        assert missing.status_code == 404
        assert "error" in missing.json()
        wrong = client.get("/v2/models/ranker/infer")
        assert wrong.status_code == 405
        assert wrong.headers["allow"] == "POST"


def test_body_over_the_limit_is_413(server: tuple[str, Any]) -> None:
    url, _ = server
    response = _infer(url, b"x" * (2 * 1024 * 1024))
    assert response.status_code == 413
    assert "limit" in response.json()["error"]
    bomb = gzip.compress(b" " * (8 * 1024 * 1024))
    response = _infer(url, bomb, headers={"content-encoding": "gzip"})
    assert response.status_code == 413
    assert _infer(url, GOOD).status_code == 200


def test_bf16_travels_binary(server: tuple[str, Any]) -> None:
    url, _ = server
    x = torch.arange(16, dtype=torch.bfloat16).reshape(2, 8)
    raw = x.view(torch.int16).numpy().tobytes()
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "x",
                    "datatype": "BF16",
                    "shape": [2, 8],
                    "parameters": {"binary_data_size": len(raw)},
                }
            ],
            "outputs": [{"name": "y", "parameters": {"binary_data": True}}],
        }
    ).encode()
    response = httpx.post(
        f"{url}/v2/models/halver/infer",
        content=header + raw,
        headers={"inference-header-content-length": str(len(header))},
    )
    assert response.status_code == 200, response.text
    length = int(response.headers["inference-header-content-length"])
    meta = json.loads(response.content[:length])
    assert meta["outputs"][0]["datatype"] == "BF16"
    y = torch.frombuffer(bytearray(response.content[length:]), dtype=torch.bfloat16)
    assert torch.equal(y.reshape(2, 8), x * 0.5)


def test_shutting_down_turns_readiness_off_and_refuses_new_work(demo_repo: Path) -> None:
    from serving import running
    from torchrig.settings import ServeSettings

    with running(demo_repo, ServeSettings(port=0, log_format="text")) as (url, state):
        assert httpx.get(f"{url}/v2/health/ready").status_code == 200
        # what the SIGTERM handler sets first; test_shutdown.py sends the real signal
        state.shutting_down = True
        ready = httpx.get(f"{url}/v2/health/ready")
        assert ready.status_code == 503
        assert "shutting down" in ready.json()["error"]
        refused = _infer(url, GOOD)
        assert refused.status_code == 503
        assert refused.headers["retry-after"] == "1"
        assert httpx.get(f"{url}/v2/health/live").status_code == 200


def _classifier_binary(rows: int) -> tuple[torch.Tensor, bytes, int]:
    images = torch.randn(rows, 3, 64, 64, generator=torch.Generator().manual_seed(rows))
    raw = images.numpy().tobytes()
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "image",
                    "datatype": "FP32",
                    "shape": list(images.shape),
                    "parameters": {"binary_data_size": len(raw)},
                }
            ],
            "outputs": [{"name": "logits", "parameters": {"binary_data": True}}],
        }
    ).encode()
    return images, header + raw, len(header)


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_large_binary_bodies_decode_the_same_however_they_are_framed(
    server: tuple[str, Any], demo_repo: Path, framing: str
) -> None:
    # 16 images of 3x64x64 FP32: 786 KB, many network reads. With a Content-Length the
    # server writes them into one aligned buffer the tensor views; chunked, it joins them.
    url, _ = server
    images, body, header_length = _classifier_binary(16)
    directory = demo_repo / "classifier" / "1"
    program = load_program(directory, read_manifest(directory))
    with torch.inference_mode():
        expected = program({"image": images})["logits"]
    content: Any = body
    if framing == "chunked":
        content = iter([body[i : i + 10_000] for i in range(0, len(body), 10_000)])
    response = httpx.post(
        f"{url}/v2/models/classifier/infer",
        content=content,
        headers={"inference-header-content-length": str(header_length)},
    )
    assert response.status_code == 200, response.text
    assert ("content-length" in response.request.headers) == (framing == "content-length")
    json_length = int(response.headers["inference-header-content-length"])
    logits = torch.frombuffer(bytearray(response.content[json_length:]), dtype=torch.float32)
    assert torch.allclose(logits.reshape(16, 10), expected, atol=1e-5)
