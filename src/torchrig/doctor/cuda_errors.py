"""Known CUDA and torch failure messages, each with its usual cause, fix and source.

The texts are what torch, the CUDA runtime and NVML print; users paste them into search
engines. Patterns are regular expressions, case-insensitive; the first match wins, so
torch's own wording (more specific) comes before the CUDA runtime's generic errors.

`related_checks` names the doctor checks that judge the cause from facts: when one of
them finds a problem, it carries the verdict and the check that saw the message points
at it (see `doctor.attribution`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Where torch's own texts come from. The wording is the same in an older (01a6a16d) and
# the newest stored (68e217b9) version of the file; not re-read at each release tag.
_C10 = "pytorch/pytorch c10/cuda/CUDAFunctions.cpp device_count_impl"
_TORCH_PY = "pytorch/pytorch torch/cuda/__init__.py _lazy_init (read in the installed torch 2.13.0)"
_CUDNN_PY = (
    "pytorch/pytorch torch/backends/cudnn/__init__.py _init (read in the installed torch 2.13.0)"
)
_RUNTIME = "CUDA Runtime API, cudaError_t (https://docs.nvidia.com/cuda/cuda-runtime-api/)"
_ACCESS_FIX = (
    "give the process the GPUs: on the host install the NVIDIA driver; in a container start it "
    "with `--gpus all` (NVIDIA container toolkit) or request nvidia.com/gpu in the pod's "
    "resources"
)


@dataclass(frozen=True)
class KnownCudaError:
    key: str  # a short id for the failure
    patterns: tuple[str, ...]
    cause: str
    fix: str
    source: str = _RUNTIME
    verified: bool = True
    related_checks: tuple[str, ...] = ()
    # the fix lies with the host's GPU driver (on WSL2: the Windows driver, not the node's)
    host_driver: bool = False


KNOWN_ERRORS: tuple[KnownCudaError, ...] = (
    KnownCudaError(
        "driver-library-mismatch",
        (
            r"driver/library version mismatch",
            r"nvml/rm version mismatch",
            r"unsupported display driver\s*/\s*cuda driver combination",
            r"\berror\W{0,3}803\b",
        ),
        "the nvidia kernel module and the driver's user-space libraries (libcuda, "
        "libnvidia-ml) are different versions: the driver was upgraded without a reboot",
        "drain the node, then reboot it (or unload and reload the nvidia kernel modules: "
        "`rmmod nvidia_uvm nvidia_drm nvidia_modeset nvidia && modprobe nvidia nvidia_uvm`)",
        "nvidia-ml-py NVML_ERROR_LIB_RM_VERSION_MISMATCH 'RM has detected an NVML/RM version "
        "mismatch.' (read in nvidia-ml-py 13.615.71); nvidia-smi 'Failed to initialize NVML: "
        "Driver/library version mismatch'; " + _RUNTIME + " cudaErrorSystemDriverMismatch (803)",
        False,
        ("driver.userspace_match",),
        host_driver=True,
    ),
    KnownCudaError(
        "torch-driver-too-old",
        (r"driver on your system is too old",),
        "the NVIDIA driver supports an older CUDA than the one this torch build ships",
        "upgrade the driver to the build's CUDA minimum, or install a build for the driver's "
        "CUDA (see driver.cuda)",
        _C10 + ": 'The NVIDIA driver on your system is too old (found version N)'",
        True,
        ("driver.cuda", "driver.gpu_support"),
        host_driver=True,
    ),
    KnownCudaError(
        "torch-no-driver",
        (r"found no nvidia driver on your system",),
        "torch found no CUDA driver (libcuda) at all: no NVIDIA driver on this host, or a "
        "container started without the NVIDIA runtime",
        _ACCESS_FIX,
        _C10 + ": 'Found no NVIDIA driver on your system'",
        True,
        ("driver.userspace_match", "gpu.visible"),
        host_driver=True,
    ),
    KnownCudaError(
        "torch-no-gpus",
        (r"no cuda gpus are available",),
        "the CUDA driver works but enumerates no GPU: usually CUDA_VISIBLE_DEVICES hides every "
        "GPU (empty, -1, or indices/UUIDs that do not exist), else the container got none",
        "unset CUDA_VISIBLE_DEVICES or set it to existing GPU indices or UUIDs; in a container, "
        + _ACCESS_FIX,
        _C10 + " device_count_ensure_non_zero: 'No CUDA GPUs are available'",
        True,
        ("gpu.cuda_visible_devices", "gpu.visible"),
    ),
    KnownCudaError(
        "torch-cudnn-incompatible",
        (r"cudnn version incompatibility",),
        "a cuDNN other than the one torch was built against is loaded, and torch refuses it",
        "remove the other cuDNN from LD_PRELOAD and LD_LIBRARY_PATH so the wheel's own "
        "nvidia-cudnn loads",
        _CUDNN_PY + ": 'cuDNN version incompatibility: PyTorch was compiled against ...'",
        True,
        ("libs.shadowing", "libs.cudnn"),
    ),
    KnownCudaError(
        "torch-init-failed",
        (r"cuda driver initialization failed",),
        "the CUDA driver could not initialise (error 3): no usable GPU, or the driver's "
        "user-space libraries do not match the kernel module",
        "check `nvidia-smi`; if it reports a driver/library mismatch, reboot the node; in a "
        "container make sure libcuda comes from the host driver (NVIDIA container toolkit)",
        _C10 + ": 'CUDA driver initialization failed, you might not have a CUDA gpu.'",
        True,
        ("driver.userspace_match", "gpu.visible"),
        host_driver=True,
    ),
    KnownCudaError(
        "torch-unknown-error",
        (r"cuda unknown error - this may be due to an incorrectly set up environment",),
        "cudaGetDeviceCount failed with cudaErrorUnknown: the driver is in a bad state (after "
        "suspend/resume, a missing nvidia_uvm module) or CUDA_VISIBLE_DEVICES changed after start",
        "set CUDA_VISIBLE_DEVICES before the process starts; reload the nvidia_uvm kernel module "
        "or reboot the node; check dmesg for Xid errors",
        _C10 + ": 'CUDA unknown error - this may be due to an incorrectly set up environment'",
        True,
        ("driver.userspace_match",),
        host_driver=True,
    ),
    KnownCudaError(
        "torch-forked",
        (r"cannot re-initialize cuda in forked subprocess",),
        "a forked child process used CUDA after its parent had initialised it",
        "start worker processes with the 'spawn' (or 'forkserver') start method: "
        "multiprocessing.set_start_method('spawn')",
        _TORCH_PY + ": 'Cannot re-initialize CUDA in forked subprocess'",
    ),
    KnownCudaError(
        "torch-not-compiled",
        (r"torch not compiled with cuda enabled",),
        "this torch is a CPU-only (or ROCm) build",
        "install a CUDA build of torch (see torch.build)",
        _TORCH_PY + ": 'Torch not compiled with CUDA enabled'",
        True,
        ("torch.build",),
    ),
    KnownCudaError(
        "driver-insufficient",
        ("driver version is insufficient", r"\berror\W{0,3}35\b", "cudaerrorinsufficientdriver"),
        "the NVIDIA driver is older than the CUDA runtime this torch build ships (error 35)",
        "upgrade the node's driver to the minimum for the build's CUDA major, or install a "
        "torch build for an older CUDA (see driver.cuda)",
        related_checks=("driver.cuda", "driver.gpu_support"),
        host_driver=True,
    ),
    KnownCudaError(
        "forward-compat-unsupported",
        ("forward compatibility was attempted", r"\berror\W{0,3}804\b"),
        "CUDA forward-compatibility libraries (cuda-compat) are loaded on a GPU or driver "
        "that does not support them (error 804): they work only on datacenter GPUs",
        "remove the cuda-compat directory (e.g. /usr/local/cuda/compat) from LD_LIBRARY_PATH "
        "or the image, or use a torch build whose CUDA the host driver supports natively",
        related_checks=("driver.forward_compat",),
    ),
    KnownCudaError(
        "fabric-manager",
        ("system not yet initialized", r"\berror\W{0,3}802\b"),
        "an NVSwitch system whose nvidia-fabricmanager is not running (error 802)",
        "start nvidia-fabricmanager on the node with the same version as the driver "
        "(systemctl enable --now nvidia-fabricmanager)",
    ),
    KnownCudaError(
        "no-device",
        ("no cuda-capable device is detected", r"\berror\W{0,3}100\b"),
        "the process sees no GPU: the container was started without GPU access or "
        "CUDA_VISIBLE_DEVICES hides every GPU",
        "start the container with --gpus all (NVIDIA container toolkit) or request "
        "nvidia.com/gpu in the pod's resources; check CUDA_VISIBLE_DEVICES",
        related_checks=("gpu.cuda_visible_devices", "gpu.visible"),
        host_driver=True,
    ),
    KnownCudaError(
        "no-kernel-image",
        ("no kernel image is available", r"\berror\W{0,3}209\b"),
        "the torch build has no code for this GPU's architecture",
        "install a torch build whose CUDA variant compiles this architecture (see gpu.arch)",
        related_checks=("gpu.arch",),
    ),
    KnownCudaError(
        "invalid-device-function",
        ("invalid device function", r"\berror\W{0,3}98\b"),
        "code built for another GPU architecture was launched (often a custom extension "
        "built with the wrong TORCH_CUDA_ARCH_LIST)",
        "rebuild the extension with TORCH_CUDA_ARCH_LIST including this GPU's compute "
        "capability, or install a matching torch build",
        related_checks=("gpu.arch",),
    ),
    KnownCudaError(
        "unknown-error",
        ("unknown error", r"\berror\W{0,3}999\b"),
        "the driver is in a bad state (often after suspend/resume or a driver upgrade "
        "without reboot, or a missing nvidia-uvm module)",
        "reload the nvidia_uvm kernel module or reboot the node; check dmesg for Xid errors",
        related_checks=("driver.userspace_match",),
        host_driver=True,
    ),
    KnownCudaError(
        "initialization",
        ("initialization error", r"\berror\W{0,3}3\b"),
        "CUDA could not initialise (commonly a forked process that inherited a CUDA context, "
        "or mismatched driver user-space libraries in the container)",
        "use the 'spawn' start method for workers that use CUDA; make sure the container's "
        "libcuda comes from the host driver (NVIDIA container toolkit)",
        related_checks=("driver.userspace_match",),
        host_driver=True,
    ),
    KnownCudaError(
        "nccl-shm",
        ("error while creating shared memory segment", "unhandled system error", r"/dev/shm"),
        "NCCL could not create its shared-memory segments: /dev/shm is too small "
        "(Docker's default is 64 MB)",
        "give the container a larger /dev/shm: docker run --shm-size=16g (or --ipc=host); on "
        "Kubernetes mount an emptyDir with medium: Memory at /dev/shm",
        "NCCL troubleshooting, shared memory: https://docs.nvidia.com/deeplearning/nccl/user-guide/docs/troubleshooting.html",
        related_checks=("system.shm",),
    ),
    KnownCudaError(
        "undefined-symbol",
        ("undefined symbol",),
        "a system CUDA library on LD_LIBRARY_PATH shadows the one the torch wheel ships "
        "(e.g. undefined symbol __nvJitLinkComplete_12_4)",
        "remove CUDA toolkit directories from LD_LIBRARY_PATH; the wheel brings its own libraries",
        "the dynamic loader's message; the shadowing rule of libs.shadowing",
        related_checks=("libs.shadowing",),
    ),
)

_FOUND_VERSION = re.compile(r"found version (\d{4,6})")


def explain(message: str) -> KnownCudaError | None:
    """The known failure whose pattern occurs in `message`, if any."""
    for known in KNOWN_ERRORS:
        if any(re.search(p, message, re.IGNORECASE) for p in known.patterns):
            return known
    return None


def describe_cause(known: KnownCudaError, message: str) -> str:
    """The cause, with what the message itself says decoded (torch's 'found version 12090'
    is the CUDA version the driver supports: 12.9)."""
    match = _FOUND_VERSION.search(message)
    if match is not None and known.key == "torch-driver-too-old":
        value = int(match.group(1))
        return f"{known.cause} (the driver supports CUDA {value // 1000}.{value % 1000 // 10})"
    return known.cause
