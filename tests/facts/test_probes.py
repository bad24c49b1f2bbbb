"""The --deep probes for real on this machine (CPU path: "cpu" device, gloo with 2 ranks),
and every way the probe process can fail turning into `ProbeFacts.error`."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from torchrig.facts import collect_snapshot
from torchrig.facts.model import ProbeFacts, Snapshot, snapshot_from_json, snapshot_to_json
from torchrig.facts.probes import run_probes
from torchrig.facts.probes.allreduce import bus_bandwidth_gbps, probe_allreduce
from torchrig.facts.probes.kernel import probe_kernel
from torchrig.facts.probes.sdpa import probe_sdpa

HAS_CUDA = torch.cuda.is_available()
PROBE_TIMEOUT_S = 120.0


@pytest.fixture(scope="module")
def deep() -> Snapshot:
    return collect_snapshot(deep=True, probe_timeout_s=PROBE_TIMEOUT_S)


def probes_of(snapshot: Snapshot) -> ProbeFacts:
    assert snapshot.probes is not None
    return snapshot.probes


def test_deep_snapshot_runs_the_probes(deep: Snapshot) -> None:
    probes = probes_of(deep)

    assert probes.error is None
    assert probes.duration_s is not None
    assert 0 < probes.duration_s <= PROBE_TIMEOUT_S  # bounded by its own timeout
    assert snapshot_from_json(snapshot_to_json(deep)) == deep


@pytest.mark.skipif(HAS_CUDA, reason="CUDA devices are probed instead of the CPU")
def test_kernel_probe_on_cpu(deep: Snapshot) -> None:
    (kernel,) = probes_of(deep).kernels

    assert (kernel.device, kernel.ok, kernel.error) == ("cpu", True, None)
    assert kernel.kernel_ms is not None
    assert kernel.kernel_ms > 0
    assert kernel.matmul_max_rel_error is not None
    assert kernel.matmul_max_rel_error < 1e-4


@pytest.mark.skipif(HAS_CUDA, reason="CUDA devices are probed instead of the CPU")
def test_sdpa_probe_on_cpu(deep: Snapshot) -> None:
    (sdpa,) = probes_of(deep).sdpa

    assert (sdpa.device, sdpa.dtype, sdpa.shape, sdpa.causal) == (
        "cpu",
        "float32",
        [1, 4, 256, 64],
        True,
    )
    backends = {backend.backend: backend for backend in sdpa.backends}
    assert list(backends) == ["flash", "efficient", "cudnn", "math"]
    math = backends["math"]
    assert (math.ok, math.error) == (True, None)
    assert math.median_ms is not None
    assert math.median_ms > 0
    # No CUDA here: the cuDNN backend cannot run, and says so.
    cudnn = backends["cudnn"]
    assert not cudnn.ok
    assert cudnn.median_ms is None
    assert cudnn.error


@pytest.mark.skipif(HAS_CUDA, reason="NCCL across GPUs is used instead of gloo")
def test_gloo_allreduce_with_two_ranks(deep: Snapshot) -> None:
    allreduce = probes_of(deep).allreduce

    assert allreduce is not None
    assert (allreduce.backend, allreduce.world_size, allreduce.ok, allreduce.error) == (
        "gloo",
        2,
        True,
        None,
    )
    assert allreduce.size_bytes == 16 * 1024 * 1024
    assert allreduce.median_ms is not None
    assert allreduce.median_ms > 0
    assert allreduce.bus_bandwidth_gbps is not None
    assert allreduce.bus_bandwidth_gbps > 0


def test_kernel_probe_in_process() -> None:
    probe = probe_kernel("cpu")

    assert probe.ok, probe.error
    assert probe.matmul_max_rel_error is not None


def test_kernel_probe_on_a_device_that_does_not_exist() -> None:
    probe = probe_kernel("no-such-device:0")

    assert not probe.ok
    assert probe.error is not None
    assert "no-such-device" in probe.error


def test_sdpa_probe_in_process() -> None:
    probe = probe_sdpa("cpu")

    assert probe.error is None
    assert [backend.backend for backend in probe.backends if backend.ok][-1] == "math"


def test_allreduce_failure_is_recorded(tmp_path: Path) -> None:
    # gloo cannot bind to an interface that does not exist: both ranks fail to join.
    environ = {**os.environ, "GLOO_SOCKET_IFNAME": "torchrig-no-such-if0"}

    probe = probe_allreduce(
        backend="gloo", world_size=2, workdir=tmp_path, timeout_s=60.0, environ=environ
    )

    assert not probe.ok
    assert probe.error is not None
    assert "torchrig-no-such-if0" in probe.error
    assert probe.median_ms is None


def test_allreduce_deadline_kills_the_workers(tmp_path: Path) -> None:
    # Far less than a worker needs to start Python and import torch.
    probe = probe_allreduce(backend="gloo", world_size=2, workdir=tmp_path, timeout_s=0.05)

    assert not probe.ok
    assert probe.error is not None
    assert probe.error.startswith("did not finish within 0.05 s (killed rank 0, 1)")


def test_bus_bandwidth() -> None:
    # 16 MiB across 4 ranks in 1 ms: 2·(3/4)·16 MiB per ms.
    bandwidth = bus_bandwidth_gbps(16 * 1024 * 1024, 4, 1.0)

    assert bandwidth == pytest.approx(25.165824)
    assert bus_bandwidth_gbps(16 * 1024 * 1024, 1, 1.0) is None


def test_runner_timeout_becomes_an_error() -> None:
    probes = run_probes(timeout_s=0.001)

    assert probes.error is not None
    assert probes.error.startswith("the probes did not finish within 0.001 s")
    assert probes.kernels == []
    assert probes.duration_s is not None


def test_runner_records_a_child_that_cannot_start_python() -> None:
    probes = run_probes(timeout_s=60.0, environ={**os.environ, "PYTHONHOME": "/nonexistent"})

    assert probes.error is not None
    assert probes.error.startswith("the probe process exited with code 1; stderr: ")
    assert "Fatal Python error" in probes.error


def test_runner_records_a_crashing_child(tmp_path: Path) -> None:
    # sitecustomize runs at interpreter start-up: a real SIGKILL, as the OOM killer sends.
    (tmp_path / "sitecustomize.py").write_text(
        "import os, signal, sys\n"
        "sys.stderr.write('about to be killed\\n')\n"
        "sys.stderr.flush()\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )

    probes = run_probes(timeout_s=60.0, environ={**os.environ, "PYTHONPATH": str(tmp_path)})

    assert probes.error == "the probe process was killed by SIGKILL; stderr: about to be killed"


def test_runner_records_garbage_output(tmp_path: Path) -> None:
    (tmp_path / "sitecustomize.py").write_text(
        "import os\nprint('hello', flush=True)\nos._exit(0)\n"
    )

    probes = run_probes(timeout_s=60.0, environ={**os.environ, "PYTHONPATH": str(tmp_path)})

    assert probes.error is not None
    assert probes.error.startswith("the probe process printed no valid result")


def test_deep_snapshot_with_a_failing_probe_process_still_collects() -> None:
    snapshot = collect_snapshot(deep=True, probe_timeout_s=0.001)

    assert snapshot.torch is not None
    probes = probes_of(snapshot)
    assert probes.error is not None
    assert probes.error.startswith("the probes did not finish")
