"""What the installed torch build is, and what it says about CUDA on this machine.

torch is imported inside `read_torch`, never at module import, so that importing
torchrig stays fast and a broken torch install becomes a recorded fact. The quick
snapshot launches no kernel and allocates nothing on a GPU.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from typing import Any, TypeVar

from torchrig.facts.model import GpuFacts, TorchFacts

_T = TypeVar("_T")

# Keys of the "Build settings" line of torch.__config__.show() worth keeping; compiler
# flags and paths are noise for a diagnosis and differ between identical builds.
BUILD_FLAG_KEYS: frozenset[str] = frozenset(
    {
        "BUILD_TYPE",
        "CUDA_VERSION",
        "CUDNN_VERSION",
        "TORCH_CUDA_ARCH_LIST",
        "TORCH_VERSION",
        "USE_CUDA",
        "USE_CUDNN",
        "USE_CUSPARSELT",
        "USE_NCCL",
        "USE_FLASH_ATTENTION",
        "USE_MEM_EFF_ATTENTION",
        "USE_ROCM",
        "USE_GLOO",
        "USE_MPI",
        "USE_MKLDNN",
        "USE_OPENMP",
    }
)

_SETTING = re.compile(r"([A-Z][A-Z0-9_]*)=(.*?)(?=, [A-Z][A-Z0-9_]*=|,?\s*$)")


def read_torch() -> tuple[TorchFacts | None, str | None]:
    """Import torch and describe its build; `(None, reason)` when it cannot be imported."""
    try:
        import torch
    except ImportError as exc:
        if exc.name == "torch":
            return None, "torch is not installed"
        return None, f"importing torch failed: {exc}"
    except Exception as exc:  # a broken install can raise anything (OSError, RuntimeError)
        return None, f"importing torch failed: {type(exc).__name__}: {exc}"

    is_gpu_build = bool(torch.version.cuda or torch.version.hip)
    cuda_init_error: str | None = None
    if is_gpu_build:
        try:
            torch.cuda.init()
        except Exception as exc:  # the message is the fact: driver missing, error 804, ...
            cuda_init_error = str(exc) or type(exc).__name__
    cudnn_version, cudnn_error = _cudnn_runtime_version(torch)
    return (
        TorchFacts(
            version=str(torch.__version__),
            location=os.path.dirname(torch.__file__),
            cuda=torch.version.cuda,
            hip=torch.version.hip,
            git_version=_attempt(lambda: str(torch.version.git_version)),
            debug=bool(_attempt(lambda: torch.version.debug)),
            cxx11_abi=_attempt(lambda: bool(torch._C._GLIBCXX_USE_CXX11_ABI)),
            arch_list=_attempt(lambda: list(torch.cuda.get_arch_list())) or [],
            release_arch_table=_attempt(lambda: release_arch_table(torch)) or {},
            cudnn_version=cudnn_version,
            cudnn_compile_version=_attempt(lambda: _cudnn_compile_version(torch)),
            cudnn_error=cudnn_error,
            nccl_version=_attempt(lambda: _nccl_version(torch)) if is_gpu_build else None,
            build_flags=_attempt(lambda: parse_build_flags(torch.__config__.show())) or {},
            flash_attention_available=_attempt(
                lambda: bool(torch.backends.cuda.is_flash_attention_available())
            ),
            cuda_available=_attempt(lambda: bool(torch.cuda.is_available())),
            device_count=_attempt(lambda: int(torch.cuda.device_count())),
            cuda_init_error=cuda_init_error,
            num_threads=_attempt(lambda: int(torch.get_num_threads())),
        ),
        None,
    )


def torch_gpus() -> list[GpuFacts]:
    """GPUs as torch sees them: the fallback when NVML cannot be used.

    Only if torch is already importable and CUDA is available; otherwise an empty list.
    """
    try:
        import torch

        if not torch.cuda.is_available():
            return []
        count = int(torch.cuda.device_count())
    except Exception:  # no usable torch: there is simply nothing to report
        return []
    gpus = []
    for index in range(count):
        try:
            props = torch.cuda.get_device_properties(index)
        except Exception:  # this device is unusable; the others may still be described
            continue
        uuid = getattr(props, "uuid", None)
        gpus.append(
            GpuFacts(
                index=index,
                name=str(props.name),
                uuid=f"GPU-{uuid}" if uuid is not None else None,
                compute_capability=f"{props.major}.{props.minor}",
                memory_total_bytes=int(props.total_memory),
                pci_bus_id=_pci_bus_id(props),
                source="torch",
            )
        )
    return gpus


def parse_build_flags(config: str) -> dict[str, str]:
    """The `BUILD_FLAG_KEYS` of the "Build settings:" line of `torch.__config__.show()`."""
    for line in config.splitlines():
        _, sep, settings = line.partition("Build settings:")
        if sep:
            return {
                key: value.strip()
                for key, value in _SETTING.findall(settings.strip())
                if key in BUILD_FLAG_KEYS
            }
    return {}


def release_arch_table(torch: Any) -> dict[str, dict[str, list[int]]]:
    """torch's own `PYTORCH_RELEASES_CODE_CC` as plain sorted lists; {} on releases without it."""
    table = getattr(torch.cuda, "PYTORCH_RELEASES_CODE_CC", None)
    if not isinstance(table, dict):
        return {}
    return {
        str(cuda): {str(host): sorted(int(cc) for cc in codes) for host, codes in by_host.items()}
        for cuda, by_host in table.items()
    }


def encode_cudnn_version(major: int, minor: int, patch: int) -> int:
    """cuDNN's own integer encoding: 9.10.2 -> 91002 (from 9 on), 8.9.7 -> 8907 (before)."""
    if major >= 9:
        return major * 10000 + minor * 100 + patch
    return major * 1000 + minor * 100 + patch


def decode_cudnn_version(version: int) -> tuple[int, int, int]:
    """The inverse of `encode_cudnn_version`: 91002 -> (9, 10, 2), 8907 -> (8, 9, 7)."""
    if version >= 10000:
        return version // 10000, version % 10000 // 100, version % 100
    return version // 1000, version % 1000 // 100, version % 100


def cudnn_text(version: int) -> str:
    """A cuDNN version integer for people: 91002 -> "9.10.2"."""
    return ".".join(str(part) for part in decode_cudnn_version(version))


def format_nccl_version(version: object) -> str | None:
    """`torch.cuda.nccl.version()` as "2.27.5": a tuple, or an int on old torch releases."""
    if isinstance(version, tuple):
        return ".".join(str(part) for part in version)
    if isinstance(version, int):
        # NCCL_VERSION_CODE: major*10000 + minor*100 + patch from 2.9 on, *1000 before.
        if version >= 20900:
            return f"{version // 10000}.{version // 100 % 100}.{version % 100}"
        return f"{version // 1000}.{version // 100 % 10}.{version % 100}"
    return None


def _cudnn_runtime_version(torch: Any) -> tuple[int | None, str | None]:
    """The loaded cuDNN's version, and the error torch raised on checking it, if any.

    `torch.backends.cudnn.version()` refuses a runtime cuDNN whose major (or, for old
    releases, minor) differs from the compiled one; that refusal is the fact the doctor
    needs, and the runtime version is still read directly.
    """
    try:
        version = torch.backends.cudnn.version()
    except Exception as exc:
        runtime = _attempt(lambda: tuple(torch._C._cudnn.getRuntimeVersion()))
        value = encode_cudnn_version(*runtime) if runtime is not None else None
        return value, str(exc) or type(exc).__name__
    return (int(version) if version is not None else None), None


def _cudnn_compile_version(torch: Any) -> int | None:
    cudnn = getattr(torch._C, "_cudnn", None)
    if cudnn is None:
        return None
    major, minor, patch = cudnn.getCompileVersion()
    return encode_cudnn_version(int(major), int(minor), int(patch))


def _nccl_version(torch: Any) -> str | None:
    return format_nccl_version(torch.cuda.nccl.version())


def _pci_bus_id(props: Any) -> str | None:
    bus = getattr(props, "pci_bus_id", None)
    device = getattr(props, "pci_device_id", None)
    domain = getattr(props, "pci_domain_id", None)
    if bus is None or device is None or domain is None:
        return None
    # NVML's format, so that both sources of GpuFacts compare equal.
    return f"{int(domain):08X}:{int(bus):02X}:{int(device):02X}.0"


def _attempt(read: Callable[[], _T]) -> _T | None:
    """`read()`, or None if torch raises: each fact is read on its own, so one failure
    (a missing private attribute in another torch release) costs only that fact."""
    try:
        return read()
    except Exception:
        return None
