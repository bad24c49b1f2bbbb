"""The driver and the GPUs as NVML sees them, with a /proc fallback for the driver.

NVML answers without creating a CUDA context, so it works even when the CUDA
runtime cannot start (driver too old, error 804) — exactly when a diagnosis is
needed. Every per-GPU query is guarded on its own: consumer boards and MIG
instances answer NotSupported for ECC or row remapping, and that is recorded as
None, not as a failure of the whole reading.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from torchrig.facts._files import read_text
from torchrig.facts.model import DriverFacts, GpuFacts

_T = TypeVar("_T")

PROC_DRIVER_VERSION = Path("/proc/driver/nvidia/version")

# "NVRM version: NVIDIA UNIX x86_64 Kernel Module  570.86.15  Thu Jan ..." and, for the
# open kernel modules, "NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  570.86.15 ..."
_NVRM_VERSION = re.compile(r"^NVRM version:.*?\s(\d+\.\d+(?:\.\d+)?)(?=\s|$)", re.MULTILINE)


@dataclass(frozen=True)
class NvmlReading:
    """What one NVML session gave: the driver, the GPUs, or why there is nothing."""

    driver: DriverFacts | None = None
    gpus: list[GpuFacts] = field(default_factory=list)
    error: str | None = None


def read_nvml() -> NvmlReading:
    """Initialise NVML, read the driver and every GPU, always shut NVML down again."""
    try:
        import pynvml
    except ImportError as exc:
        return NvmlReading(error=f"nvidia-ml-py (pynvml) is not importable: {exc}")
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        return NvmlReading(error=f"NVML could not be initialised: {_nvml_message(exc)}")
    try:
        return _read_initialised(pynvml)
    finally:
        _guarded(pynvml, pynvml.nvmlShutdown)


def read_proc_driver(path: Path = PROC_DRIVER_VERSION) -> DriverFacts | None:
    """The kernel module's version from /proc/driver/nvidia/version; None without one."""
    text = read_text(path)
    return None if text is None else parse_proc_driver_version(text)


def parse_proc_driver_version(text: str) -> DriverFacts | None:
    match = _NVRM_VERSION.search(text)
    if match is None:
        return None
    return DriverFacts(version=match.group(1), source="proc")


def format_cuda_driver_version(value: int) -> str:
    """NVML's integer CUDA version as "major.minor": 12080 -> "12.8", 13000 -> "13.0"."""
    return f"{value // 1000}.{value % 1000 // 10}"


def _read_initialised(pynvml: Any) -> NvmlReading:
    cuda = _guarded(pynvml, pynvml.nvmlSystemGetCudaDriverVersion_v2)
    driver = DriverFacts(
        version=_guarded(pynvml, lambda: _text(pynvml.nvmlSystemGetDriverVersion())),
        cuda_version=format_cuda_driver_version(cuda) if cuda is not None else None,
        nvml_version=_guarded(pynvml, lambda: _text(pynvml.nvmlSystemGetNVMLVersion())),
        source="nvml",
    )
    try:
        count = int(pynvml.nvmlDeviceGetCount())
    except pynvml.NVMLError as exc:
        return NvmlReading(driver=driver, error=f"NVML cannot count GPUs: {_nvml_message(exc)}")
    gpus = []
    for index in range(count):
        try:
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        except pynvml.NVMLError as exc:
            # A GPU that fell off the bus still counts; its name says what happened.
            gpus.append(GpuFacts(index=index, name=f"unreachable: {_nvml_message(exc)}"))
            continue
        gpus.append(_read_gpu(pynvml, index, handle))
    return NvmlReading(driver=driver, gpus=gpus)


def _read_gpu(pynvml: Any, index: int, handle: Any) -> GpuFacts:
    def get(read: Callable[[], _T]) -> _T | None:
        return _guarded(pynvml, read)

    cc = get(lambda: pynvml.nvmlDeviceGetCudaComputeCapability(handle))
    memory = get(lambda: pynvml.nvmlDeviceGetMemoryInfo(handle))
    mig = get(lambda: pynvml.nvmlDeviceGetMigMode(handle))
    mig_enabled = None if mig is None else mig[0] == pynvml.NVML_DEVICE_MIG_ENABLE
    ecc = get(lambda: pynvml.nvmlDeviceGetEccMode(handle))
    remapped = get(lambda: pynvml.nvmlDeviceGetRemappedRows(handle))
    persistence = get(lambda: pynvml.nvmlDeviceGetPersistenceMode(handle))
    retired = get(lambda: pynvml.nvmlDeviceGetRetiredPagesPendingStatus(handle))
    return GpuFacts(
        index=index,
        name=get(lambda: _text(pynvml.nvmlDeviceGetName(handle))) or "unknown",
        uuid=get(lambda: _text(pynvml.nvmlDeviceGetUUID(handle))),
        compute_capability=None if cc is None else f"{cc[0]}.{cc[1]}",
        memory_total_bytes=None if memory is None else int(memory.total),
        memory_used_bytes=None if memory is None else int(memory.used),
        pci_bus_id=get(lambda: _text(pynvml.nvmlDeviceGetPciInfo(handle).busId)),
        mig_enabled=mig_enabled,
        mig_devices=_count_mig_devices(pynvml, handle) if mig_enabled else None,
        persistence_mode=None if persistence is None else persistence == 1,
        ecc_enabled=None if ecc is None else ecc[0] == pynvml.NVML_FEATURE_ENABLED,
        ecc_uncorrected_volatile=get(
            lambda: int(
                pynvml.nvmlDeviceGetTotalEccErrors(
                    handle, pynvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED, pynvml.NVML_VOLATILE_ECC
                )
            )
        ),
        retired_pages_pending=None if retired is None else retired == 1,
        remapped_rows_pending=None if remapped is None else bool(remapped[2]),
        remapped_rows_failure=None if remapped is None else bool(remapped[3]),
        source="nvml",
    )


def _count_mig_devices(pynvml: Any, handle: Any) -> int | None:
    slots = _guarded(pynvml, lambda: int(pynvml.nvmlDeviceGetMaxMigDeviceCount(handle)))
    if slots is None:
        return None
    created = 0
    for slot in range(slots):
        try:
            pynvml.nvmlDeviceGetMigDeviceHandleByIndex(handle, slot)
        except pynvml.NVMLError:  # an empty slot answers NotFound
            continue
        created += 1
    return created


def _guarded(pynvml: Any, read: Callable[[], _T]) -> _T | None:
    """`read()`, or None when NVML refuses (NotSupported, NoPermission, ...) or the
    installed nvidia-ml-py lacks the function (an older binding)."""
    try:
        return read()
    except (pynvml.NVMLError, AttributeError):
        return None


def _nvml_message(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


def _text(value: str | bytes) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value
