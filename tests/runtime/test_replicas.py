"""The replica set on its own: least-busy routing, turns on ties, and taking replicas out
of rotation by device, with tiny real models standing for replicas on named devices (the
server test, tests/server/test_replicas.py, runs packed models)."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import torch

from doubles import until
from torchrig.errors import DeviceUnhealthy
from torchrig.runtime.replicas import ReplicaSet, handled


class Scaled:
    """y = x * factor on a named device; a batch of value -1 fails as a poisoned GPU does,
    and `hold` keeps batches in flight."""

    def __init__(self, device: str, factor: float) -> None:
        self.device = device
        self.factor = factor
        self.hold = threading.Event()
        self.hold.set()
        self.unloaded = False

    def infer(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        self.hold.wait(30)
        x = inputs["x"]
        if bool((x == -1).any()):
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        return {"y": x * self.factor}

    def unload(self) -> None:
        self.unloaded = True


def batch(*values: float) -> dict[str, Any]:
    return {"x": torch.tensor(values).reshape(-1, 1)}


def test_idle_replicas_take_batches_in_turn() -> None:
    replicas = ReplicaSet([Scaled("cuda:0", 1.0), Scaled("cuda:1", 10.0)])
    answers = [float(replicas.infer(batch(1.0))["y"][0, 0]) for _ in range(4)]
    assert answers == [1.0, 10.0, 1.0, 10.0]
    assert [s.batches for s in replicas.stats()] == [2, 2]


def test_a_busy_replica_is_passed_over() -> None:
    first, second = Scaled("cuda:0", 1.0), Scaled("cuda:1", 10.0)
    replicas = ReplicaSet([first, second])
    first.hold.clear()
    with ThreadPoolExecutor(1) as pool:
        held = pool.submit(replicas.infer, batch(1.0, 2.0))
        until(lambda: replicas.stats()[0].inflight_rows == 2, "the first batch running")
        # cuda:0 is busy: three batches in a row go to cuda:1
        for _ in range(3):
            assert float(replicas.infer(batch(3.0))["y"][0, 0]) == 30.0
        first.hold.set()
        assert held.result()["y"].flatten().tolist() == [1.0, 2.0]
    assert [s.batches for s in replicas.stats()] == [1, 3]
    assert [s.rows for s in replicas.stats()] == [2, 3]


def test_a_poisoned_replica_leaves_the_rotation_and_is_reported() -> None:
    reported: list[str] = []
    replicas = ReplicaSet(
        [Scaled("cuda:0", 1.0), Scaled("cuda:1", 10.0)],
        on_fault=lambda device, exc: reported.append(device),
    )
    with pytest.raises(RuntimeError, match="illegal memory access") as caught:
        replicas.infer(batch(-1.0))  # the batch that hit the fault fails; no retry
    assert reported == ["cuda:0"]
    # marked, so the batcher's report does not count it again as a fault of the first GPU
    assert handled(caught.value)
    assert not handled(RuntimeError("CUDA error: an illegal memory access was encountered"))
    assert replicas.healthy == 1
    assert [s.state for s in replicas.stats()] == ["poisoned", "serving"]
    assert [float(replicas.infer(batch(2.0))["y"][0, 0]) for _ in range(3)] == [20.0] * 3
    # the registry takes out every replica on a poisoned GPU, other models' too
    assert replicas.take_out("cuda:1", "cuda:1 poisoned by another model") == 0
    with pytest.raises(DeviceUnhealthy, match="every replica of this model is out"):
        replicas.infer(batch(1.0))


def test_unload_releases_every_replica() -> None:
    executors = [Scaled("cpu", 1.0), Scaled("cpu", 1.0)]
    replicas = ReplicaSet(executors)
    replicas.unload()
    assert all(e.unloaded for e in executors)
    assert replicas.device == "cpu"  # where built-in steps decode: the first replica's
