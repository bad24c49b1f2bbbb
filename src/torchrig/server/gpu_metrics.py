"""GPU series read at scrape time: NVML per GPU, and torch's caching allocator per device.

NVML is initialised once (by `NvmlCollector.open`), not per scrape, and never at import.
Every NVML call is guarded on its own: a MIG instance answers NotSupported for
utilisation, a consumer board for power; that series is then left out for that GPU, the
others still come. Without a driver or without nvidia-ml-py there are simply no GPU
series. The allocator series appear only once torch has initialised CUDA in this process:
a scrape never imports torch and never creates a CUDA context.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

_TEMPERATURE_GPU = 0  # NVML_TEMPERATURE_GPU: the die sensor

GPU_LABELS = ["gpu", "uuid"]


@dataclass(frozen=True)
class _Gpu:
    index: str
    uuid: str
    handle: Any


def _gpu_families() -> dict[str, GaugeMetricFamily]:
    return {
        "util": GaugeMetricFamily(
            "torchrig_gpu_utilization_ratio",
            "Fraction of the last sample period in which a kernel ran on the GPU (NVML), 0..1.",
            labels=GPU_LABELS,
        ),
        "used": GaugeMetricFamily(
            "torchrig_gpu_memory_used_bytes",
            "GPU memory in use by all processes (NVML).",
            labels=GPU_LABELS,
        ),
        "total": GaugeMetricFamily(
            "torchrig_gpu_memory_total_bytes",
            "GPU memory installed (NVML).",
            labels=GPU_LABELS,
        ),
        "power": GaugeMetricFamily(
            "torchrig_gpu_power_watts",
            "GPU board power draw (NVML).",
            labels=GPU_LABELS,
        ),
        "temp": GaugeMetricFamily(
            "torchrig_gpu_temperature_celsius",
            "GPU die temperature (NVML).",
            labels=GPU_LABELS,
        ),
    }


class NvmlCollector(Collector):
    """Per-GPU utilisation, memory, power and temperature; nothing when NVML is absent."""

    def __init__(self, pynvml: Any, gpus: list[_Gpu]) -> None:
        self._nvml = pynvml
        self._gpus = gpus
        self._open = True

    @classmethod
    def open(cls) -> NvmlCollector | None:
        """Initialise NVML and list the GPUs; None (and a debug log) when there is no NVML."""
        try:
            import pynvml
        except ImportError:
            log.debug("no GPU metrics: nvidia-ml-py (pynvml) is not importable")
            return None
        try:
            pynvml.nvmlInit()
        except pynvml.NVMLError as exc:
            log.debug("no GPU metrics: NVML could not be initialised: %s", exc)
            return None
        try:
            count = int(pynvml.nvmlDeviceGetCount())
        except pynvml.NVMLError as exc:
            log.warning("no GPU metrics: NVML cannot count GPUs: %s", exc)
            _query(pynvml, "nvmlShutdown")
            return None
        gpus = []
        for index in range(count):
            handle = _query(pynvml, "nvmlDeviceGetHandleByIndex", index)
            if handle is None:  # fell off the bus: nothing to report for it
                continue
            uuid = _query(pynvml, "nvmlDeviceGetUUID", handle)
            gpus.append(_Gpu(index=str(index), uuid=_text(uuid or ""), handle=handle))
        return cls(pynvml, gpus)

    def close(self) -> None:
        """Shut NVML down (it counts its initialisations); the collector then yields nothing."""
        if self._open:
            self._open = False
            _query(self._nvml, "nvmlShutdown")

    @property
    def gpu_count(self) -> int:
        return len(self._gpus)

    def describe(self) -> Iterable[GaugeMetricFamily]:
        return list(_gpu_families().values())

    def collect(self) -> Iterator[GaugeMetricFamily]:
        if not self._open or not self._gpus:
            return
        nvml = self._nvml
        families = _gpu_families()
        for gpu in self._gpus:
            labels = [gpu.index, gpu.uuid]
            h = gpu.handle
            rates = _query(nvml, "nvmlDeviceGetUtilizationRates", h)
            if rates is not None:
                families["util"].add_metric(labels, float(rates.gpu) / 100.0)
            memory = _query(nvml, "nvmlDeviceGetMemoryInfo", h)
            if memory is not None:
                families["used"].add_metric(labels, float(memory.used))
                families["total"].add_metric(labels, float(memory.total))
            milliwatts = _query(nvml, "nvmlDeviceGetPowerUsage", h)
            if milliwatts is not None:
                families["power"].add_metric(labels, float(milliwatts) / 1000.0)
            celsius = _query(nvml, "nvmlDeviceGetTemperature", h, _TEMPERATURE_GPU)
            if celsius is not None:
                families["temp"].add_metric(labels, float(celsius))
        for family in families.values():
            if family.samples:
                yield family


class TorchAllocatorCollector(Collector):
    """Bytes held by torch's CUDA caching allocator, per device, once CUDA is initialised.

    `cuda` answers as `torch.cuda` does (is_initialized, device_count, memory_allocated,
    memory_reserved); by default it is `torch.cuda`, looked up at each scrape and only if
    torch is already imported.
    """

    def __init__(self, cuda: Any = None) -> None:
        self._cuda = cuda

    def describe(self) -> Iterable[GaugeMetricFamily]:
        return list(_torch_families())

    def collect(self) -> Iterator[GaugeMetricFamily]:
        cuda = self._cuda
        if cuda is None:
            torch = sys.modules.get("torch")  # importing torch from a scrape takes seconds
            if torch is None:
                return
            cuda = torch.cuda
        try:
            if not cuda.is_initialized():  # never create a CUDA context from a scrape
                return
            allocated, reserved = _torch_families()
            for index in range(cuda.device_count()):
                device = f"cuda:{index}"
                allocated.add_metric([device], float(cuda.memory_allocated(index)))
                reserved.add_metric([device], float(cuda.memory_reserved(index)))
        except Exception:  # a scrape boundary: a failing allocator query must not fail /metrics
            log.exception("torch allocator metrics failed")
            return
        yield allocated
        yield reserved


def _torch_families() -> tuple[GaugeMetricFamily, GaugeMetricFamily]:
    return (
        GaugeMetricFamily(
            "torchrig_torch_allocated_bytes",
            "Bytes of device memory held by live tensors (torch caching allocator).",
            labels=["device"],
        ),
        GaugeMetricFamily(
            "torchrig_torch_reserved_bytes",
            "Bytes of device memory reserved by the torch caching allocator.",
            labels=["device"],
        ),
    )


def _query(pynvml: Any, function: str, *args: Any) -> Any:
    """`pynvml.<function>(*args)`, or None when NVML refuses (NotSupported, GPU lost, ...)
    or the installed nvidia-ml-py lacks the function."""
    try:
        return getattr(pynvml, function)(*args)
    except (pynvml.NVMLError, AttributeError):
        return None


def _text(value: str | bytes) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value
