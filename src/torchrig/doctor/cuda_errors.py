"""Known CUDA failure messages, each with its usual cause and fix.

The texts are what the CUDA runtime and PyTorch print; users paste them into search
engines. Patterns are regular expressions, case-insensitive; the first match wins.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class KnownCudaError:
    key: str  # a short id for the failure
    patterns: tuple[str, ...]
    cause: str
    fix: str


KNOWN_ERRORS: tuple[KnownCudaError, ...] = (
    KnownCudaError(
        "driver-insufficient",
        ("driver version is insufficient", r"\berror\W{0,3}35\b", "cudaerrorinsufficientdriver"),
        "the NVIDIA driver is older than the CUDA runtime this torch build ships (error 35)",
        "upgrade the node's driver to the minimum for the build's CUDA major, or install a "
        "torch build for an older CUDA (see driver.cuda)",
    ),
    KnownCudaError(
        "forward-compat-unsupported",
        ("forward compatibility was attempted", r"\berror\W{0,3}804\b"),
        "CUDA forward-compatibility libraries (cuda-compat) are loaded on a GPU or driver "
        "that does not support them (error 804): they work only on datacenter GPUs",
        "remove the cuda-compat directory (e.g. /usr/local/cuda/compat) from LD_LIBRARY_PATH "
        "or the image, or use a torch build whose CUDA the host driver supports natively",
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
    ),
    KnownCudaError(
        "no-kernel-image",
        ("no kernel image is available", r"\berror\W{0,3}209\b"),
        "the torch build has no code for this GPU's architecture",
        "install a torch build whose CUDA variant compiles this architecture (see gpu.arch)",
    ),
    KnownCudaError(
        "invalid-device-function",
        ("invalid device function", r"\berror\W{0,3}98\b"),
        "code built for another GPU architecture was launched (often a custom extension "
        "built with the wrong TORCH_CUDA_ARCH_LIST)",
        "rebuild the extension with TORCH_CUDA_ARCH_LIST including this GPU's compute "
        "capability, or install a matching torch build",
    ),
    KnownCudaError(
        "unknown-error",
        ("unknown error", r"\berror\W{0,3}999\b"),
        "the driver is in a bad state (often after suspend/resume or a driver upgrade "
        "without reboot, or a missing nvidia-uvm module)",
        "reload the nvidia_uvm kernel module or reboot the node; check dmesg for Xid errors",
    ),
    KnownCudaError(
        "initialization",
        ("initialization error", r"\berror\W{0,3}3\b"),
        "CUDA could not initialise (commonly a forked process that inherited a CUDA context, "
        "or mismatched driver user-space libraries in the container)",
        "use the 'spawn' start method for workers that use CUDA; make sure the container's "
        "libcuda comes from the host driver (NVIDIA container toolkit)",
    ),
    KnownCudaError(
        "nccl-shm",
        ("error while creating shared memory segment", "unhandled system error", r"/dev/shm"),
        "NCCL could not create its shared-memory segments: /dev/shm is too small "
        "(Docker's default is 64 MB)",
        "give the container a larger /dev/shm: docker run --shm-size=16g (or --ipc=host); on "
        "Kubernetes mount an emptyDir with medium: Memory at /dev/shm",
    ),
    KnownCudaError(
        "undefined-symbol",
        ("undefined symbol",),
        "a system CUDA library on LD_LIBRARY_PATH shadows the one the torch wheel ships "
        "(e.g. undefined symbol __nvJitLinkComplete_12_4)",
        "remove CUDA toolkit directories from LD_LIBRARY_PATH; the wheel brings its own libraries",
    ),
)


def explain(message: str) -> KnownCudaError | None:
    """The known failure whose pattern occurs in `message`, if any."""
    for known in KNOWN_ERRORS:
        if any(re.search(p, message, re.IGNORECASE) for p in known.patterns):
            return known
    return None
