"""A sequence model with a dynamic length, served: concurrent requests of lengths 1, 7, 64
and 300 over REST and gRPC, each answered as the model answers it alone; -1 in every
signature the server shows; a length outside the declared range refused with its name."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import numpy as np
import pytest
import torch
from tritonclient import grpc as tgrpc
from tritonclient import http as thttp
from tritonclient.utils import InferenceServerException

from sequence_model import MAX_LENGTH, SequenceClassifier, example, tokens
from serving import running
from torchrig.packaging import pack
from torchrig.repository import BatchingConfig, ModelConfig
from torchrig.settings import ServeSettings

LENGTHS = (1, 7, 64, 300)
COPIES = 3  # requests per length, so that requests of one length can share a batch


@pytest.fixture(scope="module")
def model() -> SequenceClassifier:
    return SequenceClassifier().eval()


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, model: SequenceClassifier
) -> Iterator[tuple[str, Any]]:
    root = tmp_path_factory.mktemp("dynamic") / "models"
    # the first request of a batch waits up to 200 ms for company: concurrent requests of
    # one length join it, those of other lengths wait for the next batches
    batching = BatchingConfig(max_batch_size=16, max_queue_delay_ms=200)
    pack(
        model,
        example(),
        name="seq",
        repository=root,
        version=1,
        dynamic_dims={"tokens": {1: (1, MAX_LENGTH)}},
        golden_examples=1,
        config=ModelConfig(batching=batching, device="cpu"),
    )
    with running(root, ServeSettings(port=0, log_format="text")) as (url, state):
        yield url, state


def alone(model: SequenceClassifier, ids: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return model(ids)  # type: ignore[no-any-return]


def body(ids: torch.Tensor) -> bytes:
    tensor = {"name": "tokens", "datatype": "INT64", "shape": list(ids.shape)}
    return json.dumps({"inputs": [{**tensor, "data": ids.flatten().tolist()}]}).encode()


def test_concurrent_lengths_over_rest_batch_by_length(
    server: tuple[str, Any], model: SequenceClassifier
) -> None:
    url, state = server
    batcher = state.registry.resolve("seq").batcher
    before = batcher.stats()
    requests = [tokens(n, seed=10 * n + copy) for n in LENGTHS for copy in range(COPIES)]

    async def send_all() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=url, timeout=120) as client:
            return await asyncio.gather(
                *(client.post("/v2/models/seq/infer", content=body(ids)) for ids in requests)
            )

    answers = asyncio.run(send_all())
    for ids, response in zip(requests, answers, strict=True):
        assert response.status_code == 200, response.text
        output = response.json()["outputs"][0]
        assert output["shape"] == [1, 4]
        got = torch.tensor(output["data"], dtype=torch.float32).reshape(1, 4)
        torch.testing.assert_close(got, alone(model, ids), rtol=1e-4, atol=1e-5)
    after = batcher.stats()
    assert after.requests - before.requests == len(requests)
    assert after.batches - before.batches < len(requests)  # some requests shared a batch
    assert after.isolation_splits == before.isolation_splits  # no batch mixed lengths
    assert after.failed_batches == before.failed_batches


def test_concurrent_lengths_over_grpc(server: tuple[str, Any], model: SequenceClassifier) -> None:
    _, state = server
    client = tgrpc.InferenceServerClient(state.grpc_address)
    requests = [tokens(n, seed=20 * n + copy) for n in LENGTHS for copy in range(COPIES)]

    def infer(ids: torch.Tensor) -> np.ndarray:
        tensor = tgrpc.InferInput("tokens", list(ids.shape), "INT64")
        tensor.set_data_from_numpy(ids.numpy())
        return client.infer("seq", [tensor]).as_numpy("output")  # type: ignore[no-any-return]

    with ThreadPoolExecutor(len(requests)) as pool:
        answers = list(pool.map(infer, requests))
    for ids, got in zip(requests, answers, strict=True):
        torch.testing.assert_close(torch.tensor(got), alone(model, ids), rtol=1e-4, atol=1e-5)


def test_every_signature_shows_the_dynamic_length(server: tuple[str, Any]) -> None:
    url, state = server
    meta = httpx.get(f"{url}/v2/models/seq").json()
    assert meta["inputs"] == [{"name": "tokens", "datatype": "INT64", "shape": [-1, -1]}]
    assert meta["outputs"][0]["shape"] == [-1, 4]
    grpc_client = tgrpc.InferenceServerClient(state.grpc_address)
    grpc_meta = grpc_client.get_model_metadata("seq", as_json=True)
    assert grpc_meta["inputs"][0]["shape"] == ["-1", "-1"]
    http_config = thttp.InferenceServerClient(url.removeprefix("http://")).get_model_config("seq")
    assert http_config["input"][0]["dims"] == [-1]  # Triton leaves the batch dimension out
    grpc_config = grpc_client.get_model_config("seq", as_json=True)["config"]
    assert grpc_config["input"][0]["dims"] == ["-1"]


@pytest.mark.parametrize("length", [MAX_LENGTH + 88, 0])
def test_a_length_outside_the_range_is_refused_by_name(
    server: tuple[str, Any], length: int
) -> None:
    url, state = server
    ids = torch.zeros((1, length), dtype=torch.int64)
    response = httpx.post(f"{url}/v2/models/seq/infer", content=body(ids))
    assert response.status_code == 400, response.text
    message = response.json()["error"]
    assert f"input tokens has size {length} in dimension 1" in message
    assert "outside its declared range 1-512" in message
    client = tgrpc.InferenceServerClient(state.grpc_address)
    tensor = tgrpc.InferInput("tokens", [1, length], "INT64")
    tensor.set_data_from_numpy(ids.numpy())
    with pytest.raises(InferenceServerException) as refused:
        client.infer("seq", [tensor])
    assert refused.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert "outside its declared range 1-512" in str(refused.value.message())
    # the server goes on serving in-range lengths
    ok = httpx.post(f"{url}/v2/models/seq/infer", content=body(tokens(MAX_LENGTH, seed=1)))
    assert ok.status_code == 200, ok.text
