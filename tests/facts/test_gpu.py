"""The GPU path of the same collection and probes; the CPU path is tested everywhere else.

These need a CUDA GPU and a CUDA build of torch, and skip without them.
"""

from __future__ import annotations

import pytest
import torch

from torchrig.facts import collect_snapshot
from torchrig.facts.model import Snapshot

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def gpu_snapshot() -> Snapshot:
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    return collect_snapshot(deep=True, probe_timeout_s=300.0)


def test_quick_facts_of_a_gpu_machine(gpu_snapshot: Snapshot) -> None:
    assert gpu_snapshot.torch is not None
    assert gpu_snapshot.torch.cuda == torch.version.cuda
    assert gpu_snapshot.torch.cuda_available
    assert gpu_snapshot.torch.cuda_init_error is None
    assert gpu_snapshot.torch.arch_list
    assert gpu_snapshot.torch.device_count == torch.cuda.device_count()
    assert gpu_snapshot.driver is not None
    assert gpu_snapshot.driver.version
    assert gpu_snapshot.gpus
    for gpu in gpu_snapshot.gpus:
        assert gpu.compute_capability is not None
        assert gpu.memory_total_bytes
    loaded = {library.name for library in gpu_snapshot.libraries}
    assert "libcuda" in loaded
    if gpu_snapshot.torch.cudnn_version is not None:
        assert "libcudnn" in loaded
    if gpu_snapshot.torch.nccl_version is not None:
        assert gpu_snapshot.torch.nccl_version.count(".") >= 2


def test_nvml_agrees_with_torch(gpu_snapshot: Snapshot) -> None:
    if gpu_snapshot.nvml_error is not None:
        pytest.skip(f"NVML unusable here: {gpu_snapshot.nvml_error}")
    assert gpu_snapshot.driver is not None
    assert gpu_snapshot.driver.source == "nvml"
    assert gpu_snapshot.driver.cuda_version is not None
    major, minor = torch.cuda.get_device_capability(0)
    assert f"{major}.{minor}" in {gpu.compute_capability for gpu in gpu_snapshot.gpus}


def test_kernel_and_sdpa_probes_on_every_gpu(gpu_snapshot: Snapshot) -> None:
    probes = gpu_snapshot.probes
    assert probes is not None
    assert probes.error is None
    devices = [f"cuda:{index}" for index in range(torch.cuda.device_count())]
    assert [kernel.device for kernel in probes.kernels] == devices
    for kernel in probes.kernels:
        assert kernel.ok, kernel.error
        assert kernel.matmul_max_rel_error is not None
        assert kernel.matmul_max_rel_error < 1e-4
    for sdpa in probes.sdpa:
        assert (sdpa.dtype, sdpa.shape) == ("bfloat16", [8, 16, 2048, 64])
        backends = {backend.backend: backend for backend in sdpa.backends}
        assert backends["math"].ok, backends["math"].error


def test_nccl_allreduce_across_all_gpus(gpu_snapshot: Snapshot) -> None:
    probes = gpu_snapshot.probes
    assert probes is not None
    allreduce = probes.allreduce
    assert allreduce is not None
    assert (allreduce.backend, allreduce.world_size) == ("nccl", torch.cuda.device_count())
    assert allreduce.ok, allreduce.error
    assert allreduce.median_ms is not None
