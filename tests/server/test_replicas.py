"""Replicas of one model version on several devices, served by a real server.

This box has no GPU, so the replica list is injected the way a user lists it:
`devices = ["cpu", "cpu"]` in config.toml gives two real replicas (two loaded copies of
the packed program), driven by the same code that places one replica per GPU with
`device = "auto"` (tests/runtime/test_placement.py covers the GPU lists themselves).
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from doubles import until
from faults import POISON, body, gate, pack_faulty
from serving import running
from torchrig.repository import BatchingConfig, ModelConfig
from torchrig.server.triton import instance_groups
from torchrig.settings import ServeSettings

SETTINGS = ServeSettings(port=0, log_format="text")
TAG = 1501  # this module's gate on the Faulty operator
VERSION = 3  # the model answers y = x * VERSION


def _config(devices: list[str]) -> ModelConfig:
    return ModelConfig(
        devices=devices,
        batching=BatchingConfig(max_batch_size=16, preferred_batch_sizes=[1]),
    )


@pytest.fixture
def two_replicas(tmp_path: Path) -> Iterator[tuple[str, Any]]:
    repo = tmp_path / "models"
    pack_faulty(repo, "spread", VERSION, tag=TAG, config=_config(["cpu", "cpu"]))
    with running(repo, SETTINGS) as (url, state):
        yield url, state


def _infer(url: str, values: list[float]) -> httpx.Response:
    return httpx.post(f"{url}/v2/models/spread/infer", json=body(values), timeout=60)


def _answer(response: httpx.Response) -> list[float]:
    assert response.status_code == 200, response.text
    data: list[float] = response.json()["outputs"][0]["data"]
    return data[0::2]  # column 0 of each row


def test_concurrent_batches_go_to_the_least_busy_replica(two_replicas: tuple[str, Any]) -> None:
    url, state = two_replicas
    replicas = state.registry.resolve("spread").replicas
    assert replicas is not None
    assert len(replicas) == 2

    def inflight() -> list[int]:
        return [stat.inflight_batches for stat in replicas.stats()]

    held = gate(TAG)
    held.clear()  # the model holds every batch until the gate opens
    try:
        with ThreadPoolExecutor(2) as pool:
            first = pool.submit(_infer, url, [1.0])
            until(lambda: sum(inflight()) == 1, "the first batch running")
            second = pool.submit(_infer, url, [2.0, 5.0])
            # the busy replica is skipped: the second batch runs beside the first
            until(lambda: inflight() == [1, 1], lambda: f"both replicas busy, got {inflight()}")
            held.set()
            answers = [_answer(first.result()), _answer(second.result())]
    finally:
        held.set()
    assert answers == [[1.0 * VERSION], [2.0 * VERSION, 5.0 * VERSION]]  # the model's
    stats = replicas.stats()
    assert [s.batches for s in stats] == [1, 1]
    assert sorted(s.rows for s in stats) == [1, 2]

    # idle replicas take batches in turn: sequential requests alternate
    for value in range(4):
        assert _answer(_infer(url, [float(value)])) == [value * VERSION]
    assert [s.batches for s in replicas.stats()] == [3, 3]

    metrics = httpx.get(f"{url}/metrics", timeout=30).text
    for index in (0, 1):
        labels = f'device="cpu",gpu="",model="spread",replica="{index}",version="{VERSION}"'
        assert f"torchrig_replica_batches{{{labels}}} 3.0" in metrics
        assert f"torchrig_replica_serving{{{labels}}} 1.0" in metrics

    config = httpx.get(f"{url}/v2/models/spread/config", timeout=30).json()
    assert config["instance_group"] == [{"name": "spread_0", "kind": "KIND_CPU", "count": 2}]


def test_a_poisoned_replica_leaves_the_rotation_and_the_others_serve(
    two_replicas: tuple[str, Any],
) -> None:
    url, _ = two_replicas
    with httpx.Client(base_url=url, timeout=60) as client:
        poisoned = client.post("/v2/models/spread/infer", json=body([POISON]))
        assert poisoned.status_code == 503
        assert "illegal memory access" in poisoned.json()["error"]

        # the model is still served, by the replica left
        for value in range(3):
            answer = client.post("/v2/models/spread/infer", json=body([float(value)]))
            assert _answer(answer) == [value * VERSION]
        assert client.get("/v2/health/ready").status_code == 200
        assert client.get("/v2/health/live").status_code == 200
        ready = client.get("/v2/models/spread/ready")
        assert ready.status_code == 200
        states = [r["state"] for r in ready.json()["replicas"]]
        assert sorted(states) == ["poisoned", "serving"]
        out = next(r for r in ready.json()["replicas"] if r["state"] == "poisoned")
        assert "illegal memory access" in out["reason"]
        metrics = client.get("/metrics").text
        assert metrics.count("torchrig_replica_serving{") == 2
        assert f'replica="{out["replica"]}",version="{VERSION}"}} 0.0' in metrics

        # the last replica poisoned: nothing serves the model, the server must restart
        assert client.post("/v2/models/spread/infer", json=body([POISON])).status_code == 503
        assert client.get("/v2/health/ready").status_code == 503
        assert client.get("/v2/health/live").status_code == 503
        assert client.post("/v2/models/spread/infer", json=body([1.0])).status_code == 503


def test_instance_groups_follow_the_placement() -> None:
    # device = "auto" on a 4-GPU pod with instances = 2: Triton's one group over the GPUs
    gpus = ["cuda:0", "cuda:1", "cuda:2", "cuda:3"]
    assert instance_groups("m", gpus, 2) == [
        {"name": "m_0", "kind": "KIND_GPU", "count": 2, "gpus": [0, 1, 2, 3]}
    ]
    # devices = ["cuda:0", "cuda:1", "cuda:1"]: two copies on GPU 1
    assert instance_groups("m", ["cuda:0", "cuda:1", "cuda:1"], 1) == [
        {"name": "m_0", "kind": "KIND_GPU", "count": 1, "gpus": [0]},
        {"name": "m_1", "kind": "KIND_GPU", "count": 2, "gpus": [1]},
    ]
