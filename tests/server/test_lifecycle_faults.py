"""Faults a real server survives: out of memory in a batch (split and retried, 507 only for
a row that never fits) and a poisoned CUDA context (not ready, not live), through a
packed model whose operator fails as CUDA does (the CPU path of the same code)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from faults import HUGE, POISON, body, pack_faulty
from serving import running
from torchrig.repository import BatchingConfig, ModelConfig
from torchrig.settings import ServeSettings

SETTINGS = ServeSettings(port=0, log_format="text")


@pytest.fixture(scope="module")
def oom_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Any]]:
    repo = tmp_path_factory.mktemp("oom") / "models"
    config = ModelConfig(
        batching=BatchingConfig(max_batch_size=16, max_queue_delay_ms=50, preferred_batch_sizes=[1])
    )
    pack_faulty(repo, "oom", 3, budget_rows=3, config=config)
    with running(repo, SETTINGS) as (url, state):
        yield url, state


def test_batches_that_do_not_fit_are_split_and_every_request_is_answered(
    oom_server: tuple[str, Any],
) -> None:
    url, state = oom_server
    sizes = [1, 2, 1, 2, 3, 1, 2, 1, 5, 1]  # more than fits in one call, together and alone

    async def main() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            return list(
                await asyncio.gather(
                    *(
                        client.post(
                            "/v2/models/oom/infer",
                            json=body([float(i * 10 + r) for r in range(n)]),
                        )
                        for i, n in enumerate(sizes)
                    )
                )
            )

    responses = asyncio.run(main())
    for i, (n, response) in enumerate(zip(sizes, responses, strict=True)):
        assert response.status_code == 200, response.text
        expected = [v for r in range(n) for v in (3.0 * (i * 10 + r), 0.0)]
        assert response.json()["outputs"][0]["data"] == expected
    stats = state.registry.resolve("oom").batcher.stats()
    assert stats.oom_splits >= 1  # the 5-row request alone did not fit: split by rows
    assert stats.oom_failures == 0


def test_a_row_that_never_fits_is_507_and_the_server_keeps_serving(
    oom_server: tuple[str, Any],
) -> None:
    url, _ = oom_server
    with httpx.Client(base_url=url, timeout=60) as client:
        response = client.post("/v2/models/oom/infer", json=body([1.0, 2.0], second=HUGE))
        assert response.status_code == 507, response.text
        message = response.json()["error"]
        assert "out of device memory even for a single row of a request of 2 rows" in message
        assert "max_batch_size" in message
        assert client.post("/v2/models/oom/infer", json=body([1.0])).status_code == 200
        assert client.get("/v2/health/ready").status_code == 200
        assert client.get("/v2/health/live").status_code == 200


def test_a_poisoned_device_turns_the_replica_unready_and_not_live(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    repo = tmp_path / "models"
    pack_faulty(repo, "p", 1)
    pack_faulty(repo, "q", 1)
    with (
        caplog.at_level(logging.INFO),
        running(repo, SETTINGS) as (url, _),
        httpx.Client(base_url=url, timeout=60) as client,
    ):
        assert client.get("/v2/health/ready").status_code == 200
        assert client.post("/v2/models/q/infer", json=body([1.0])).status_code == 200
        poisoned = client.post("/v2/models/p/infer", json=body([POISON]))
        assert poisoned.status_code == 503
        assert "illegal memory access" in poisoned.json()["error"]
        ready = client.get("/v2/health/ready")
        assert ready.status_code == 503
        assert "poisoned" in ready.json()["error"]
        live = client.get("/v2/health/live")
        assert live.status_code == 503  # so that Kubernetes restarts the pod
        other = client.post("/v2/models/q/infer", json=body([1.0]))
        assert other.status_code == 503  # no more work on a broken context
        assert "retry on another replica" in other.json()["error"]
    assert "the device context is poisoned" in caplog.text
