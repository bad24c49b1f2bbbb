"""The GPU twin of tests/server/test_replicas.py: `device = "auto"` on a real GPU.

On one GPU, auto placement is one replica on cuda:0 with `instances` CUDA lanes, and
concurrent batches overlap on those lanes. With two GPUs or more, every GPU gets a replica
and concurrent batches land on each; on a machine with one GPU that part is skipped (no
multi-GPU machine has run it so far: the CPU test with two injected replicas covers the
routing)."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch

from doubles import until
from faults import body, gate, pack_faulty
from serving import running
from torchrig.repository import BatchingConfig, ModelConfig
from torchrig.settings import ServeSettings

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]

SETTINGS = ServeSettings(port=0, log_format="text")
TAG = 1502
VERSION = 3
INSTANCES = 2


@pytest.fixture
def auto_placed(tmp_path: Path) -> Iterator[tuple[str, Any]]:
    repo = tmp_path / "models"
    config = ModelConfig(
        instances=INSTANCES,
        # the Faulty operator holds batches in Python: a replayed graph would not
        cuda_graphs=False,
        batching=BatchingConfig(max_batch_size=16, preferred_batch_sizes=[1]),
    )
    pack_faulty(repo, "auto", VERSION, tag=TAG, config=config)
    with running(repo, SETTINGS) as (url, state):
        yield url, state


def _infer(url: str, values: list[float]) -> list[float]:
    response = httpx.post(f"{url}/v2/models/auto/infer", json=body(values), timeout=60)
    assert response.status_code == 200, response.text
    data: list[float] = response.json()["outputs"][0]["data"]
    return data[0::2]


def test_auto_places_a_replica_on_every_gpu_with_its_lanes(
    auto_placed: tuple[str, Any],
) -> None:
    url, state = auto_placed
    served = state.registry.resolve("auto")
    replicas = served.replicas
    assert replicas is not None
    count = torch.cuda.device_count()
    assert [s.device for s in replicas.stats()] == [f"cuda:{k}" for k in range(count)]
    config = httpx.get(f"{url}/v2/models/auto/config", timeout=30).json()
    assert config["instance_group"] == [
        {"name": "auto_0", "kind": "KIND_GPU", "count": INSTANCES, "gpus": list(range(count))}
    ]
    assert _infer(url, [1.0, 2.0]) == [1.0 * VERSION, 2.0 * VERSION]


def test_concurrent_batches_overlap_on_the_lanes_and_spread_over_gpus(
    auto_placed: tuple[str, Any],
) -> None:
    url, state = auto_placed
    replicas = state.registry.resolve("auto").replicas
    assert replicas is not None
    busy = len(replicas) * INSTANCES  # every lane of every GPU

    def inflight() -> list[int]:
        return [stat.inflight_batches for stat in replicas.stats()]

    held = gate(TAG)
    held.clear()
    try:
        with ThreadPoolExecutor(busy) as pool:
            futures = []
            for index in range(busy):
                futures.append(pool.submit(_infer, url, [float(index)]))
                until(lambda n=index + 1: sum(inflight()) == n, f"{index + 1} batches running")
            assert inflight() == [INSTANCES] * len(replicas)  # even over the GPUs
            held.set()
            answers = [future.result() for future in futures]
    finally:
        held.set()
    assert answers == [[index * VERSION] for index in range(busy)]


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 or more GPUs")
def test_each_gpu_serves_batches(auto_placed: tuple[str, Any]) -> None:
    url, state = auto_placed
    replicas = state.registry.resolve("auto").replicas
    assert replicas is not None
    for value in range(4 * len(replicas)):
        assert _infer(url, [float(value)]) == [value * VERSION]
    assert all(stat.batches > 0 for stat in replicas.stats())
