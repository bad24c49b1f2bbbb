"""Every doctor check, in the order they are run and shown, with its stable id."""

from __future__ import annotations

from torchrig.doctor.checks import build, gpu, libraries, probes, system
from torchrig.doctor.model import Check

CHECKS: tuple[Check, ...] = (
    Check("torch.installed", "torch imports; where it is installed", build.check_torch_installed),
    Check(
        "torch.build",
        "CPU, CUDA or ROCm build, and whether that suits the GPUs present",
        build.check_torch_build,
    ),
    Check(
        "gpu.visible",
        "NVIDIA GPUs are visible; a container that asked for GPUs but has none; --require-gpu",
        gpu.check_gpu_visible,
    ),
    Check(
        "gpu.cuda_visible_devices",
        "CUDA_VISIBLE_DEVICES hides all or part of the GPUs",
        gpu.check_cuda_visible_devices,
    ),
    Check(
        "driver.cuda",
        "the driver supports the build's CUDA (toolkit minimum, minor-version compatibility)",
        gpu.check_driver,
    ),
    Check(
        "driver.forward_compat",
        "libcuda from a cuda-compat package on a GPU that cannot use it (error 804)",
        libraries.check_forward_compat,
    ),
    Check(
        "gpu.arch",
        "each GPU's compute capability against the build's SASS/PTX architectures",
        gpu.check_gpu_arch,
    ),
    Check(
        "torch.cuda_init",
        "CUDA initialises in torch; known CUDA errors mapped to cause and fix",
        build.check_cuda_init,
    ),
    Check(
        "torch.sdpa",
        "the build has Flash Attention (else SDPA falls back to slower kernels)",
        build.check_sdpa_build,
    ),
    Check(
        "libs.cudnn",
        "cuDNN loads, matches the version torch was built against and the wheel's",
        libraries.check_cudnn,
    ),
    Check("libs.nccl", "NCCL present and the version the wheel ships", libraries.check_nccl),
    Check(
        "libs.shadowing",
        "CUDA libraries loaded (or loadable) from LD_LIBRARY_PATH instead of the wheel",
        libraries.check_shadowing,
    ),
    Check("gpu.mig", "MIG mode and instances", gpu.check_mig),
    Check("gpu.persistence", "driver persistence mode", gpu.check_persistence),
    Check(
        "gpu.health",
        "ECC errors, pending page retirement, row-remap failures",
        gpu.check_gpu_health,
    ),
    Check("system.shm", "/dev/shm large enough for NCCL and DataLoader workers", system.check_shm),
    Check(
        "system.memory", "container memory limit against the host and the GPUs", system.check_memory
    ),
    Check("system.cpu", "container CPU quota against torch's thread count", system.check_cpu),
    Check(
        "env.variables",
        "CUDA_LAUNCH_BLOCKING left on; malformed PYTORCH_CUDA_ALLOC_CONF",
        system.check_env,
    ),
    Check("probe.run", "--deep: the probe process finished", probes.check_probe_run, deep=True),
    Check(
        "probe.kernel",
        "--deep: a real kernel launch and a 512x512 matmul checked against the CPU per device",
        probes.check_probe_kernels,
        deep=True,
    ),
    Check(
        "probe.sdpa",
        "--deep: which SDPA backends (flash, efficient, cudnn, math) run, bf16 causal, timed",
        probes.check_probe_sdpa,
        deep=True,
    ),
    Check(
        "probe.allreduce",
        "--deep: an all-reduce across local GPUs (NCCL) or CPU ranks (gloo), checked and timed",
        probes.check_probe_allreduce,
        deep=True,
    ),
)
