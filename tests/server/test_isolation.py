"""One bad request among good ones, over real HTTP: only the bad one fails, with a 4xx.

Two ways a bad sparse index is caught: a ranker packed with its index range declared
refuses it before the model (a GPU never sees it); one packed without gets it from the
model, whose failing batch is split until only the culprit fails.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from serving import running
from torchrig.demo.models import EMBEDDING_ROWS, SPARSE_FEATURES, ranker
from torchrig.packaging import pack
from torchrig.repository import BatchingConfig, ModelConfig
from torchrig.settings import ServeSettings

ROUNDS = 30


def body(index: int) -> bytes:
    sparse = [index] + [7] * (SPARSE_FEATURES - 1)
    return json.dumps(
        {
            "inputs": [
                {"name": "dense", "datatype": "FP32", "shape": [1, 13], "data": [0.25] * 13},
                {"name": "sparse", "datatype": "INT64", "shape": [1, 26], "data": sparse},
            ]
        }
    ).encode()


@pytest.fixture(scope="module")
def rankers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Any]]:
    root = tmp_path_factory.mktemp("isolation") / "models"
    module, example = ranker()
    config = ModelConfig(batching=BatchingConfig(max_batch_size=64), device="cpu")
    for name, ranges in (("ranged", {"sparse": (0, EMBEDDING_ROWS - 1)}), ("unranged", None)):
        pack(
            module,
            example,
            name=name,
            repository=root,
            version=1,
            output_names=["probability"],
            config=config,
            golden_examples=0,
            input_ranges=ranges,
        )
    with running(root, ServeSettings(port=0, log_format="text")) as served:
        yield served


async def _rounds(url: str, model: str, bad_index: int) -> list[list[httpx.Response]]:
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        results = []
        for _ in range(ROUNDS):
            requests = [body(bad_index)] + [body(i) for i in (1, 2, 3)]
            results.append(
                list(
                    await asyncio.gather(
                        *(client.post(f"/v2/models/{model}/infer", content=b) for b in requests)
                    )
                )
            )
        return results


@pytest.mark.parametrize(
    ("model", "bad_index", "message"),
    [
        # the model's own error: index 26,000 is past the whole shared embedding table
        ("unranged", SPARSE_FEATURES * EMBEDDING_ROWS, "index out of range"),
        # inside the shared table but outside the feature's declared range
        ("ranged", EMBEDDING_ROWS, "outside its declared range [0, 999]"),
    ],
)
def test_one_bad_request_never_fails_its_batch_mates(
    rankers: tuple[str, Any], model: str, bad_index: int, message: str
) -> None:
    url, state = rankers
    results = asyncio.run(_rounds(url, model, bad_index))
    innocent_failures = [r.text for rnd in results for r in rnd[1:] if r.status_code != 200]
    assert innocent_failures == []
    bad = [rnd[0] for rnd in results]
    assert {r.status_code for r in bad} == {400}, [r.text for r in bad]
    assert all(message in r.json()["error"] for r in bad), bad[0].text
    assert all(len(r.json()["outputs"][0]["data"]) == 1 for rnd in results for r in rnd[1:])
    stats = state.registry.resolve(model).batcher.stats()
    # the unranged model saw every bad request and blamed it; the ranged one saw none
    assert stats.rejected_inputs == (ROUNDS if model == "unranged" else 0)
    assert stats.model_faults == 0


def test_the_server_still_answers_after_the_bad_requests(rankers: tuple[str, Any]) -> None:
    url, _ = rankers
    response = httpx.post(f"{url}/v2/models/unranged/infer", content=body(5), timeout=30)
    assert response.status_code == 200, response.text
