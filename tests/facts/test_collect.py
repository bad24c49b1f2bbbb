"""A real quick snapshot of this machine, and its round trip through JSON."""

from __future__ import annotations

import os
import sys

import pytest
import torch

from torchrig.facts import collect_snapshot
from torchrig.facts.model import SCHEMA_VERSION, Snapshot, snapshot_from_json, snapshot_to_json

CPU_ONLY = torch.version.cuda is None and not os.path.exists("/dev/nvidiactl")


@pytest.fixture(scope="module")
def snapshot() -> Snapshot:
    return collect_snapshot()


def test_snapshot_round_trips_through_json(snapshot: Snapshot) -> None:
    data = snapshot_to_json(snapshot)

    assert snapshot_from_json(data) == snapshot
    assert data.endswith(b"\n")


def test_quick_snapshot_has_no_probes(snapshot: Snapshot) -> None:
    assert snapshot.probes is None
    assert snapshot.schema_version == SCHEMA_VERSION
    assert snapshot.taken_at.endswith("Z")


def test_the_basics_of_this_machine(snapshot: Snapshot) -> None:
    assert snapshot.python.executable == sys.executable
    assert snapshot.cpu_count is not None
    assert snapshot.cpu_count >= 1
    assert snapshot.torch is not None
    assert snapshot.torch.version == torch.__version__
    assert snapshot.torch_error is None
    if sys.platform.startswith("linux"):
        assert snapshot.host_memory_bytes is not None
        assert snapshot.shm is not None
        assert snapshot.shm.total_bytes is not None
        assert snapshot.shm.total_bytes > 0
        assert snapshot.os.libc is None or snapshot.os.libc.startswith("glibc")


@pytest.mark.skipif(not CPU_ONLY, reason="this machine has a CUDA torch or NVIDIA devices")
def test_a_cpu_only_machine(snapshot: Snapshot) -> None:
    assert snapshot.torch is not None
    assert snapshot.torch.cuda is None
    assert snapshot.torch.cuda_available is False
    assert snapshot.gpus == []
    assert snapshot.nvml_error is not None
    assert snapshot.driver is None
    assert snapshot.libraries == []
    assert snapshot.container.device_nodes == []


def test_cgroup_is_parsed_or_unknown(snapshot: Snapshot) -> None:
    assert snapshot.cgroup.version in (None, 1, 2)
    if snapshot.cgroup.version is None:
        assert snapshot.cgroup.memory_limit_bytes is None


def test_snapshot_without_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torch", None)

    snapshot = collect_snapshot(environ={})

    assert snapshot.torch is None
    assert snapshot.torch_error == "torch is not installed"
    assert snapshot.env == {}
    assert snapshot.python.version
    assert snapshot_from_json(snapshot_to_json(snapshot)) == snapshot


def test_collect_respects_the_passed_environ(tmp_path: pytest.TempPathFactory) -> None:
    snapshot = collect_snapshot(
        environ={"NVIDIA_VISIBLE_DEVICES": "all", "KUBERNETES_SERVICE_HOST": "10.0.0.1"}
    )

    assert snapshot.container.gpu_requested
    assert snapshot.container.runtime == "kubernetes"
    assert snapshot.env == {"KUBERNETES_SERVICE_HOST": "10.0.0.1", "NVIDIA_VISIBLE_DEVICES": "all"}
