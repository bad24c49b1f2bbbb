"""`[padding]`: a model that ignores padded positions (a mask input) shares batches between
lengths, each request padded to its bucket and its answer cut back to its own length."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch

from sequence_model import WIDTH, MaskedSequenceEncoder, masked_example, tokens
from serving import running
from torchrig.errors import RepositoryError
from torchrig.packaging import pack
from torchrig.packaging.manifest import DynamicDim, TensorSpec
from torchrig.repository import BatchingConfig, ModelConfig
from torchrig.repository.config import PaddingConfig, parse_config
from torchrig.runtime.padding import Padding
from torchrig.settings import ServeSettings

LENGTHS = (3, 5, 12, 16, 40)  # bucket 16 holds the first four, bucket 64 the last


@pytest.fixture(scope="module")
def model() -> MaskedSequenceEncoder:
    return MaskedSequenceEncoder().eval()


def pack_masked(root: Path, model: MaskedSequenceEncoder, name: str, padding: bool) -> None:
    batching = BatchingConfig(max_batch_size=16, max_queue_delay_ms=300)
    pack(
        model,
        masked_example(),
        name=name,
        repository=root,
        version=1,
        dynamic_dims={"tokens": {1: (1, 64)}, "mask": {1: (1, 64)}},
        golden_examples=1,
        config=ModelConfig(
            batching=batching,
            device="cpu",
            padding=PaddingConfig(buckets=[16, 64]) if padding else None,
        ),
    )


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, model: MaskedSequenceEncoder
) -> Iterator[tuple[str, Any]]:
    root = tmp_path_factory.mktemp("padding") / "models"
    pack_masked(root, model, "padded", padding=True)
    pack_masked(root, model, "exact", padding=False)
    with running(root, ServeSettings(port=0, log_format="text")) as (url, state):
        yield url, state


def body(ids: torch.Tensor) -> dict[str, Any]:
    mask = [True] * ids.numel()
    return {
        "inputs": [
            {"name": "tokens", "datatype": "INT64", "shape": list(ids.shape),
             "data": ids.flatten().tolist()},
            {"name": "mask", "datatype": "BOOL", "shape": list(ids.shape), "data": mask},
        ]
    }  # fmt: skip


def send_all(url: str, model: str, requests: list[torch.Tensor]) -> list[httpx.Response]:
    async def main() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=url, timeout=120) as client:
            return await asyncio.gather(
                *(client.post(f"/v2/models/{model}/infer", json=body(ids)) for ids in requests)
            )

    return asyncio.run(main())


def output(response: httpx.Response, name: str) -> torch.Tensor:
    found = next(o for o in response.json()["outputs"] if o["name"] == name)
    return torch.tensor(found["data"], dtype=torch.float32).reshape(found["shape"])


def test_lengths_share_a_batch_and_each_answer_is_its_own(
    server: tuple[str, Any], model: MaskedSequenceEncoder
) -> None:
    url, state = server
    requests = [tokens(n, seed=n) for n in LENGTHS]
    counts = {}
    for name in ("padded", "exact"):
        batcher = state.registry.resolve(name).batcher
        before = batcher.stats()
        answers = send_all(url, name, requests)
        for ids, response in zip(requests, answers, strict=True):
            assert response.status_code == 200, response.text
            with torch.inference_mode():
                alone = model(ids, torch.ones_like(ids, dtype=torch.bool))
            torch.testing.assert_close(output(response, "scores"), alone["scores"])
            encoded = output(response, "encoded")
            assert encoded.shape == (1, ids.shape[1], WIDTH)  # cut back to its own length
            torch.testing.assert_close(encoded, alone["encoded"])
        after = batcher.stats()
        assert after.isolation_splits == before.isolation_splits
        counts[name] = after.batches - before.batches
    assert counts["padded"] == 2, counts  # bucket 16 (four lengths), then bucket 64
    assert counts["exact"] == len(LENGTHS), counts  # without [padding]: one per length


def test_padding_and_cutting_back() -> None:
    dims = [DynamicDim(input="tokens", dim=1, min=1, max=64)]
    outputs = [
        TensorSpec(name="encoded", datatype="FP32", shape=[-1, -1, 8]),
        TensorSpec(name="classes", datatype="FP32", shape=[-1, 16]),  # 16, not a length
    ]
    padding = Padding.of(dims, outputs, [16, 64], {"tokens": 7})
    padded, crop = padding.apply({"tokens": torch.ones(2, 5, dtype=torch.int64)})
    assert padded["tokens"].shape == (2, 16)
    assert padded["tokens"][:, 5:].eq(7).all()
    assert crop is not None
    cut = crop({"encoded": torch.zeros(2, 16, 8), "classes": torch.zeros(2, 16)})
    assert cut["encoded"].shape == (2, 5, 8)
    assert cut["classes"].shape == (2, 16)  # a fixed dimension is never cut
    same, none = padding.apply({"tokens": torch.ones(1, 64, dtype=torch.int64)})
    assert none is None
    assert same["tokens"].shape == (1, 64)


def test_padding_buckets_are_checked() -> None:
    with pytest.raises(RepositoryError, match=r"padding.buckets \[64, 16\] must be positive"):
        parse_config("[padding]\nbuckets = [64, 16]\n", origin="m/config.toml")
    assert parse_config("[padding]\nvalues = { mask = 0 }\n").padding == PaddingConfig(
        values={"mask": 0}
    )


def test_padding_without_dynamic_dims_is_ignored_with_a_warning(tmp_path: Path) -> None:
    root = tmp_path / "models"
    pack(
        torch.nn.Linear(4, 2),
        (torch.randn(2, 4),),
        name="linear",
        repository=root,
        version=1,
        golden_examples=0,
        config=ModelConfig(device="cpu", padding=PaddingConfig()),
    )
    with running(root, ServeSettings(port=0, log_format="text")) as (url, state):
        served = state.registry.resolve("linear")
        assert any("[padding] is ignored" in w for w in served.warnings), served.warnings
        answer = httpx.post(
            f"{url}/v2/models/linear/infer",
            json={"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 4],
                              "data": [1.0, 2.0, 3.0, 4.0]}]},
        )  # fmt: skip
        assert answer.status_code == 200, answer.text
