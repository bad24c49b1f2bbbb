"""Hand-written snapshots of machines we do not have: GPU nodes, containers, broken setups.

Each builder returns a real `Snapshot` (the same type `collect_snapshot` produces), so the
doctor judges them exactly as it judges a live machine.
"""

from __future__ import annotations

from typing import Any

from torchrig.facts.model import (
    CgroupFacts,
    ContainerFacts,
    DriverFacts,
    GpuFacts,
    LoadedLibrary,
    OsFacts,
    PythonFacts,
    ShmFacts,
    Snapshot,
    TorchFacts,
)

GIB = 1024**3
MIB = 1024**2

ARCHS = {
    # older wheels than the knowledge base's releases (torch 2.5-2.7): judged on the
    # driver's own report of its CUDA
    "cu118": ["sm_50", "sm_60", "sm_70", "sm_75", "sm_80", "sm_86", "sm_37", "sm_90"],
    "cu124": ["sm_50", "sm_60", "sm_70", "sm_75", "sm_80", "sm_86", "sm_90"],
    "cu126": ["sm_50", "sm_60", "sm_70", "sm_75", "sm_80", "sm_86", "sm_90"],
    "cu128": ["sm_70", "sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120"],
    "cu128-2.11": ["sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120"],
    "cu129": ["sm_70", "sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120"],
    "cu130": ["sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120"],
    "cu132": ["sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120"],
}
CUDA = {
    "cu118": "11.8",
    "cu124": "12.4",
    "cu126": "12.6",
    "cu128": "12.8",
    "cu129": "12.9",
    "cu130": "13.0",
    "cu132": "13.2",
}
CUDNN = {
    "cu118": 90100,
    "cu124": 90100,
    "cu126": 91002,
    "cu128": 91002,
    "cu129": 91002,
    "cu130": 91300,
    "cu132": 91300,
}
NCCL = {
    "cu118": "2.21.5",
    "cu124": "2.21.5",
    "cu126": "2.27.5",
    "cu128": "2.27.5",
    "cu129": "2.27.5",
    "cu130": "2.27.7",
    "cu132": "2.27.7",
}
SITE = "/opt/venv/lib/python3.11/site-packages"

GPU_MODELS = {
    "H100": ("NVIDIA H100 80GB HBM3", "9.0", 80 * GIB),
    "RTX 5090": ("NVIDIA GeForce RTX 5090", "12.0", 32 * GIB),
    "V100": ("Tesla V100-SXM2-32GB", "7.0", 32 * GIB),
    "L4": ("NVIDIA L4", "8.9", 24 * GIB),
    "A100": ("NVIDIA A100-SXM4-80GB", "8.0", 80 * GIB),
}


def torch_build(version: str, *, arch_key: str | None = None, **extra: Any) -> TorchFacts:
    variant = version.split("+", 1)[1] if "+" in version else "cpu"
    if not variant.startswith("cu"):  # cpu, xpu: no CUDA facts
        return TorchFacts(version=version, location=f"{SITE}/torch", num_threads=8, **extra)
    fields: dict[str, Any] = {
        "version": version,
        "location": f"{SITE}/torch",
        "cuda": CUDA[variant],
        "arch_list": ARCHS[arch_key or variant],
        "cudnn_version": CUDNN[variant],
        "cudnn_compile_version": CUDNN[variant],
        "nccl_version": NCCL[variant],
        "build_flags": {"USE_CUDNN": "ON", "USE_NCCL": "1", "USE_FLASH_ATTENTION": "ON"},
        "flash_attention_available": True,
        "cuda_available": True,
        "device_count": 1,
        "num_threads": 8,
    }
    fields.update(extra)
    return TorchFacts(**fields)


def gpus(model: str, count: int = 1, **extra: Any) -> list[GpuFacts]:
    name, cc, memory = GPU_MODELS[model]
    healthy: dict[str, Any] = {
        "memory_used_bytes": 0,
        "mig_enabled": False,
        "persistence_mode": True,
        "ecc_enabled": True,
        "ecc_uncorrected_volatile": 0,
        "retired_pages_pending": False,
        "remapped_rows_pending": False,
        "remapped_rows_failure": False,
    }
    healthy.update(extra)
    return [
        GpuFacts(
            index=i,
            name=name,
            uuid=f"GPU-{model.replace(' ', '')}-{i:04d}-aaaa",
            compute_capability=cc,
            memory_total_bytes=memory,
            **healthy,
        )
        for i in range(count)
    ]


def wheel_libraries(variant: str) -> list[LoadedLibrary]:
    nv = f"{SITE}/nvidia"
    cudnn = "9" if variant != "cpu" else None
    return [
        LoadedLibrary(
            name="libcudnn",
            path=f"{nv}/cudnn/lib/libcudnn.so.{cudnn}",
            version=cudnn,
            from_wheel=True,
        ),
        LoadedLibrary(
            name="libcublas", path=f"{nv}/cublas/lib/libcublas.so.12", version="12", from_wheel=True
        ),
        LoadedLibrary(
            name="libnccl", path=f"{nv}/nccl/lib/libnccl.so.2", version="2", from_wheel=True
        ),
        LoadedLibrary(
            name="libcuda",
            path="/usr/lib/x86_64-linux-gnu/libcuda.so.570.86.15",
            version="570.86.15",
            from_wheel=False,
        ),
    ]


def node(
    *,
    torch: str | None = "2.9.1+cu128",
    gpu: str | None = "H100",
    gpu_count: int = 1,
    driver: str | None = "570.86.15",
    driver_cuda: str | None = "12.8",
    shm_bytes: int = 64 * GIB,
    env: dict[str, str] | None = None,
    arch_key: str | None = None,
    torch_extra: dict[str, Any] | None = None,
    gpu_extra: dict[str, Any] | None = None,
    libraries: list[LoadedLibrary] | None = None,
    container: ContainerFacts | None = None,
    cgroup: CgroupFacts | None = None,
    **extra: Any,
) -> Snapshot:
    """A Linux node (or container) with `gpu_count` GPUs of one model and a torch wheel."""
    the_gpus = gpus(gpu, gpu_count, **(gpu_extra or {})) if gpu else []
    the_torch = None
    if torch is not None:
        fields = dict(torch_extra or {})
        if gpu is None and "+cu" in torch:
            fields.setdefault("cuda_available", False)
            fields.setdefault("device_count", 0)
        else:
            fields.setdefault("device_count", gpu_count)
        the_torch = torch_build(torch, arch_key=arch_key, **fields)
    variant = torch.split("+", 1)[1] if torch and "+" in torch else "cpu"
    libs = (
        libraries
        if libraries is not None
        else (wheel_libraries(variant) if gpu and variant != "cpu" else [])
    )
    return Snapshot(
        taken_at="2026-11-27T00:00:00Z",
        hostname="gpu-node-1",
        os=OsFacts(
            system="Linux",
            release="6.8.0",
            machine="x86_64",
            distro="Ubuntu 24.04.1 LTS",
            libc="glibc 2.39",
        ),
        python=PythonFacts(
            version="3.11.7", implementation="CPython", executable="/opt/venv/bin/python"
        ),
        torch=the_torch,
        torch_error=None if torch else "torch is not installed",
        driver=DriverFacts(version=driver, cuda_version=driver_cuda, nvml_version="12.570.86.15")
        if driver and gpu
        else None,
        nvml_error=None if gpu else "NVML Shared Library Not Found",
        gpus=the_gpus,
        libraries=libs,
        cgroup=cgroup or CgroupFacts(),
        host_memory_bytes=512 * GIB,
        cpu_count=64,
        shm=ShmFacts(total_bytes=shm_bytes, free_bytes=shm_bytes),
        container=container
        or ContainerFacts(device_nodes=["/dev/nvidia0", "/dev/nvidiactl"] if gpu else []),
        env=env or {},
        **extra,
    )
