"""Metrics shared by several worker processes (`serve --workers N`): prometheus_client's
multiprocess mode, where every process writes its values to files in one directory and a
scrape of any process reads them all.

Counters and histograms need nothing more than the mode. The series `ServerMetrics`
computes at scrape time (in-flight, queue depth, readiness, allocator bytes) exist only
in the process that computes them, so `GaugeMirror` copies them into multiprocess gauges,
each with the mode that gives its meaning across workers (MULTIPROCESS_GAUGES).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Literal

from prometheus_client import CollectorRegistry, Gauge
from prometheus_client.core import Metric

from torchrig.server.replica_metrics import REPLICA_LABELS

# each mirrored gauge's labels and how it combines across worker processes (sums; the
# minimum for readiness: 1 only when every worker serves the version; "live": the values
# of a dead worker are dropped)
MULTIPROCESS_GAUGES: Mapping[str, tuple[Literal["livesum", "livemin"], tuple[str, ...]]] = {
    "torchrig_inflight_requests": ("livesum", ("model",)),
    "torchrig_queue_depth": ("livesum", ("model", "version")),
    "torchrig_model_ready": ("livemin", ("model", "version")),
    "torchrig_torch_allocated_bytes": ("livesum", ("device",)),
    "torchrig_torch_reserved_bytes": ("livesum", ("device",)),
    # per replica: the gpu label tells the workers' GPUs apart (each sees its own cuda:0)
    "torchrig_replica_batches": ("livesum", REPLICA_LABELS),
    "torchrig_replica_rows": ("livesum", REPLICA_LABELS),
    "torchrig_replica_inflight_batches": ("livesum", REPLICA_LABELS),
    "torchrig_replica_serving": ("livemin", REPLICA_LABELS),
}


class GaugeMirror:
    """Multiprocess mode: scrape-time gauge families copied into multiprocess `Gauge`s
    (MULTIPROCESS_GAUGES), so that a scrape of any worker sees every worker's values."""

    def __init__(self, registry: CollectorRegistry, described: Iterable[Metric]) -> None:
        self._gauges: dict[str, Gauge] = {}
        for family in described:
            mode, labels = MULTIPROCESS_GAUGES[family.name]
            self._gauges[family.name] = Gauge(
                family.name,
                family.documentation,
                labels,
                registry=registry,
                multiprocess_mode=mode,
            )
        self._children: dict[tuple[str, tuple[str, ...]], Gauge] = {}
        self._values: dict[tuple[str, tuple[str, ...]], float] = {}  # as last written
        self._reported: dict[str, set[tuple[str, ...]]] = {}  # label values per family
        self._lock = threading.Lock()

    def publish(self, families: Iterable[Metric]) -> None:
        """Every sample's value; a series reported before and absent now goes to 0."""
        with self._lock:
            for family in families:
                seen = {tuple(sample.labels.values()) for sample in family.samples}
                for sample in family.samples:
                    self._set(family.name, tuple(sample.labels.values()), sample.value)
                for gone in self._reported.get(family.name, set()) - seen:
                    self._set(family.name, gone, 0.0)
                self._reported[family.name] = seen

    def set(self, name: str, labels: tuple[str, ...], value: float) -> None:
        """One series' value (kept in mind, so that a later `publish` may zero it)."""
        with self._lock:
            self._reported.setdefault(name, set()).add(labels)
            self._set(name, labels, value)

    def _set(self, name: str, labels: tuple[str, ...], value: float) -> None:
        key = (name, labels)
        if self._values.get(key) == value:  # a file write saved
            return
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self._gauges[name].labels(*labels)
        child.set(value)
        self._values[key] = value


def check_multiprocess(directory: Path) -> None:
    """Refuse multiprocess mode unless prometheus_client writes to `directory`'s files."""
    from prometheus_client import values

    if not getattr(values.ValueClass, "_multiprocess", False) or os.environ.get(
        "PROMETHEUS_MULTIPROC_DIR"
    ) != str(directory):
        raise RuntimeError(
            f"multiprocess metrics need PROMETHEUS_MULTIPROC_DIR={directory} set before "
            "prometheus_client is imported (torchrig.server.workers starts workers so)"
        )


def scrape_registry(directory: Path) -> CollectorRegistry:
    """A fresh registry that reads every worker's files in `directory` (one per scrape:
    the files change between scrapes)."""
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(directory))  # type: ignore[no-untyped-call]
    return registry
