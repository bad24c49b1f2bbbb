"""Every doctor check, in the order they are run and shown, with its stable id, the facts it
reads and the knowledge its rules rest on (printed by `torchrig doctor --explain ID`)."""

from __future__ import annotations

from torchrig.doctor.checks import build, driver, gpu, libraries, probes, system
from torchrig.doctor.model import Check

# the knowledge behind the rules, by name; `doctor.explain` expands the data files
RELEASES = "data:torch_releases.json"
DRIVERS = "data:cuda_drivers.json"
ARCH_RULES = "data:arch_rules.json"
GPUS = "data:gpus.json"
JETSON = "data:jetson.json"
GPU_DRIVERS = "data:gpu_drivers.json"
SONAMES = "data:sonames.json"
ERRORS = "errors:torchrig.doctor.cuda_errors"
TORCH_TABLE = (
    "the installed torch's torch.cuda.PYTORCH_RELEASES_CODE_CC (its own arch table per CUDA "
    "version and host arch), trusted over the knowledge base where they differ"
)
MIG_DOC = "NVIDIA MIG User Guide: https://docs.nvidia.com/datacenter/tesla/mig-user-guide/"
TOOLKIT_DOC = (
    "NVIDIA Container Toolkit, driver capabilities (NVIDIA_DRIVER_CAPABILITIES: compute, "
    "utility, ...): https://docs.nvidia.com/datacenter/cloud-native/container-toolkit/"
)
LOADER_DOC = "ld.so(8): LD_PRELOAD, DT_RPATH, LD_LIBRARY_PATH and soname lookup order"
NCCL_SHM_DOC = (
    "NCCL troubleshooting, shared memory: "
    "https://docs.nvidia.com/deeplearning/nccl/user-guide/docs/troubleshooting.html"
)

CHECKS: tuple[Check, ...] = (
    Check(
        "torch.installed",
        "torch imports; where it is installed",
        build.check_torch_installed,
        facts=("torch.version", "torch.location", "torch_error"),
        sources=(RELEASES,),
    ),
    Check(
        "torch.build",
        "CPU, CUDA or ROCm build, and whether that suits the GPUs present (a CPU or ROCm "
        "build on an NVIDIA node fails)",
        build.check_torch_build,
        facts=("torch.version", "torch.cuda", "torch.hip", "gpus[].name", "os.machine"),
        sources=(RELEASES, JETSON),
    ),
    Check(
        "gpu.visible",
        "NVIDIA GPUs are visible; a container that asked for GPUs but has none; --require-gpu",
        gpu.check_gpu_visible,
        facts=("gpus[]", "nvml_error", "container.device_nodes", "container.gpu_requested"),
        sources=(TOOLKIT_DOC, ERRORS),
    ),
    Check(
        "gpu.cuda_visible_devices",
        "CUDA_VISIBLE_DEVICES hides all or part of the GPUs",
        gpu.check_cuda_visible_devices,
        facts=("env.CUDA_VISIBLE_DEVICES", "gpus[].index", "gpus[].uuid", "gpus[].mig_enabled"),
        sources=("CUDA C Programming Guide, CUDA environment variables (CUDA_VISIBLE_DEVICES)",),
    ),
    Check(
        "driver.cuda",
        "the driver supports the build's CUDA (toolkit minimum, minor-version compatibility; "
        "on a Jetson, JetPack's CUDA; for a CUDA outside the driver table, the highest CUDA "
        "the driver itself reports)",
        driver.check_driver,
        facts=("torch.cuda", "driver.version", "driver.cuda_version", "gpus[].compute_capability"),
        sources=(DRIVERS, JETSON, RELEASES),
    ),
    Check(
        "driver.gpu_support",
        "the driver branch supports each GPU's architecture (Blackwell needs R570 or newer)",
        driver.check_gpu_support,
        facts=("driver.version", "gpus[].compute_capability"),
        sources=(GPU_DRIVERS, GPUS),
    ),
    Check(
        "driver.userspace_match",
        "the nvidia kernel module and the driver's user-space libraries are one version "
        "(a driver upgraded without a reboot: NVML's 'Driver/library version mismatch', 803)",
        driver.check_userspace_match,
        facts=(
            "driver.version",
            "libraries[libcuda].version",
            "nvml_error",
            "torch.cuda_init_error",
        ),
        sources=(ERRORS,),
    ),
    Check(
        "driver.nvml",
        "NVML works (nvidia-smi, GPU metrics, ECC and row-remap health need it)",
        driver.check_nvml,
        facts=("nvml_error", "torch.cuda_available", "env.NVIDIA_DRIVER_CAPABILITIES"),
        sources=(TOOLKIT_DOC,),
    ),
    Check(
        "driver.forward_compat",
        "libcuda from a cuda-compat package on a GPU that cannot use it (error 804)",
        libraries.check_forward_compat,
        facts=("libraries[libcuda].path", "gpus[].name"),
        sources=(GPUS, ERRORS),
    ),
    Check(
        "gpu.arch",
        "each GPU's compute capability against the build's SASS/PTX architectures for this "
        "host architecture",
        gpu.check_gpu_arch,
        facts=(
            "torch.arch_list",
            "torch.release_arch_table",
            "torch.version",
            "os.machine",
            "gpus[].compute_capability",
            "driver.version",
        ),
        sources=(TORCH_TABLE, RELEASES, ARCH_RULES, JETSON, DRIVERS),
    ),
    Check(
        "torch.cuda_init",
        "CUDA initialises in torch; torch's and CUDA's error texts mapped to cause and fix, "
        "pointing at the check that found the cause",
        build.check_cuda_init,
        facts=("torch.cuda_available", "torch.cuda_init_error", "torch.device_count"),
        sources=(ERRORS,),
    ),
    Check(
        "torch.sdpa",
        "the build has Flash Attention (else SDPA falls back to slower kernels)",
        build.check_sdpa_build,
        facts=("torch.flash_attention_available", "torch.build_flags"),
        sources=("PyTorch scaled_dot_product_attention docs (backends and their requirements)",),
    ),
    Check(
        "libs.cudnn",
        "cuDNN loads, matches the version torch was built against and the wheel's",
        libraries.check_cudnn,
        facts=(
            "torch.cudnn_version",
            "torch.cudnn_compile_version",
            "torch.cudnn_error",
            "env.LD_PRELOAD",
        ),
        sources=(RELEASES, ERRORS),
    ),
    Check(
        "libs.nccl",
        "NCCL present and the version the wheel ships",
        libraries.check_nccl,
        facts=("torch.nccl_version", "gpus[]"),
        sources=(RELEASES,),
    ),
    Check(
        "libs.shadowing",
        "CUDA libraries that the process loads (LD_PRELOAD first) or would load from "
        "LD_LIBRARY_PATH instead of the wheel's, judged by soname major",
        libraries.check_shadowing,
        facts=("libraries[]", "library_candidates[]", "env.LD_PRELOAD", "torch.cuda"),
        sources=(SONAMES, LOADER_DOC),
    ),
    Check(
        "gpu.mig",
        "MIG mode and instances, and what a MIG slice limits",
        gpu.check_mig,
        facts=("gpus[].mig_enabled", "gpus[].mig_devices", "gpus[].memory_total_bytes"),
        sources=(MIG_DOC,),
    ),
    Check(
        "gpu.persistence",
        "driver persistence mode",
        gpu.check_persistence,
        facts=("gpus[].persistence_mode",),
        sources=("NVIDIA driver persistence: https://docs.nvidia.com/deploy/driver-persistence/",),
    ),
    Check(
        "gpu.health",
        "ECC errors, pending page retirement, row-remap failures",
        gpu.check_gpu_health,
        facts=(
            "gpus[].remapped_rows_failure",
            "gpus[].remapped_rows_pending",
            "gpus[].retired_pages_pending",
            "gpus[].ecc_uncorrected_volatile",
        ),
        sources=(
            "NVIDIA GPU memory error management: https://docs.nvidia.com/deploy/a100-gpu-mem-error-mgmt/",
        ),
    ),
    Check(
        "system.shm",
        "/dev/shm large enough for NCCL and DataLoader workers",
        system.check_shm,
        facts=("shm.total_bytes", "gpus[]"),
        sources=(NCCL_SHM_DOC,),
    ),
    Check(
        "system.memory",
        "container memory limit against the host and the GPUs",
        system.check_memory,
        facts=("cgroup.memory_limit_bytes", "host_memory_bytes", "gpus[].memory_total_bytes"),
    ),
    Check(
        "system.cpu",
        "container CPU quota against torch's thread count",
        system.check_cpu,
        facts=("cgroup.cpu_quota_cores", "torch.num_threads"),
    ),
    Check(
        "env.variables",
        "CUDA_LAUNCH_BLOCKING left on; malformed PYTORCH_CUDA_ALLOC_CONF",
        system.check_env,
        facts=("env.CUDA_LAUNCH_BLOCKING", "env.PYTORCH_CUDA_ALLOC_CONF"),
        sources=("PyTorch CUDA semantics, memory management (PYTORCH_CUDA_ALLOC_CONF)",),
    ),
    Check(
        "probe.run",
        "--deep: the probe process finished",
        probes.check_probe_run,
        deep=True,
        facts=("probes.error", "probes.duration_s"),
    ),
    Check(
        "probe.kernel",
        "--deep: a real kernel launch and a 512x512 matmul checked against the CPU per device",
        probes.check_probe_kernels,
        deep=True,
        facts=("probes.kernels[]",),
        sources=(ERRORS,),
    ),
    Check(
        "probe.sdpa",
        "--deep: which SDPA backends (flash, efficient, cudnn, math) run, bf16 causal, timed",
        probes.check_probe_sdpa,
        deep=True,
        facts=("probes.sdpa[]",),
        sources=(ERRORS,),
    ),
    Check(
        "probe.allreduce",
        "--deep: an all-reduce across local GPUs (NCCL) or CPU ranks (gloo), checked and timed",
        probes.check_probe_allreduce,
        deep=True,
        facts=("probes.allreduce",),
        sources=(ERRORS, NCCL_SHM_DOC),
    ),
)
