"""NVIDIA's own HTTP client against torchrig: live, ready, metadata, infer (binary and JSON)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from tritonclient import http

from torchrig.packaging import load_program, read_manifest


def in_process(demo_repo: Path, model: str, inputs: dict[str, np.ndarray]) -> np.ndarray:
    directory = demo_repo / model / "1"
    program = load_program(directory, read_manifest(directory))
    with torch.inference_mode():
        out = program({k: torch.from_numpy(v) for k, v in inputs.items()})
    (tensor,) = out.values()
    result: np.ndarray = tensor.numpy()
    return result


@pytest.fixture
def client(server: tuple[str, Any]) -> http.InferenceServerClient:
    url, _ = server
    return http.InferenceServerClient(url.removeprefix("http://"))


def test_live_ready_and_metadata(client: http.InferenceServerClient) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("ranker")
    assert "binary_tensor_data" in client.get_server_metadata()["extensions"]
    meta = client.get_model_metadata("classifier")
    assert meta["inputs"][0]["shape"] == [-1, 3, 64, 64]


@pytest.mark.parametrize("binary_in", [True, False])
@pytest.mark.parametrize("binary_out", [True, False])
def test_ranker_infer_matches_in_process(
    client: http.InferenceServerClient, demo_repo: Path, binary_in: bool, binary_out: bool
) -> None:
    rng = np.random.default_rng(7)
    arrays = {
        "dense": rng.standard_normal((5, 13)).astype(np.float32),
        "sparse": rng.integers(0, 1000, (5, 26)).astype(np.int64),
    }
    dense = http.InferInput("dense", [5, 13], "FP32")
    dense.set_data_from_numpy(arrays["dense"], binary_data=binary_in)
    sparse = http.InferInput("sparse", [5, 26], "INT64")
    sparse.set_data_from_numpy(arrays["sparse"], binary_data=binary_in)
    outputs = [http.InferRequestedOutput("probability", binary_data=binary_out)]
    result = client.infer("ranker", [dense, sparse], outputs=outputs, request_id="t-1")
    got = result.as_numpy("probability")
    assert got is not None
    np.testing.assert_allclose(got, in_process(demo_repo, "ranker", arrays), rtol=1e-6)
    assert result.get_response()["id"] == "t-1"


def test_default_request_is_all_binary(client: http.InferenceServerClient, demo_repo: Path) -> None:
    images = np.random.default_rng(3).standard_normal((2, 3, 64, 64)).astype(np.float32)
    pixels = http.InferInput("image", [2, 3, 64, 64], "FP32")
    pixels.set_data_from_numpy(images)  # binary by default, outputs binary by default
    result = client.infer("classifier", [pixels])
    logits = result.as_numpy(result.get_response()["outputs"][0]["name"])
    assert logits is not None
    np.testing.assert_allclose(
        logits, in_process(demo_repo, "classifier", {"image": images}), rtol=1e-5, atol=1e-6
    )


def test_errors_reach_the_client(client: http.InferenceServerClient) -> None:
    dense = http.InferInput("dense", [1, 12], "FP32")
    dense.set_data_from_numpy(np.zeros((1, 12), dtype=np.float32))
    with pytest.raises(http.InferenceServerException, match="dense"):
        client.infer("ranker", [dense])
    with pytest.raises(http.InferenceServerException):
        client.get_model_metadata("nope")
