"""Per-replica series, read from each version's `ReplicaSet` at scrape time.

A version placed on several GPUs (`device = "auto"`, runtime/placement.py) has a replica
per GPU; these series show how its batches spread and which replica left the rotation.
Labels: model, version, replica (its index: two replicas may share a device), device (as
this process names it, "cuda:K" or "cpu") and gpu (the node's name for it: the
CUDA_VISIBLE_DEVICES entry, i.e. NVML's index or a UUID, so the series join the
`torchrig_gpu_*` ones and tell each `serve --workers` process's cuda:0 apart).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from torchrig.runtime.loader import ServedVersion

REPLICA_LABELS = ("model", "version", "replica", "device", "gpu")


def replica_families() -> tuple[GaugeMetricFamily, ...]:
    labels = list(REPLICA_LABELS)
    return (
        GaugeMetricFamily(
            "torchrig_replica_batches",
            "Batches a replica ran since its version loaded.",
            labels=labels,
        ),
        GaugeMetricFamily(
            "torchrig_replica_rows",
            "Rows a replica ran since its version loaded.",
            labels=labels,
        ),
        GaugeMetricFamily(
            "torchrig_replica_inflight_batches",
            "Batches running on a replica now.",
            labels=labels,
        ),
        GaugeMetricFamily(
            "torchrig_replica_serving",
            "1 while a replica is in rotation, 0 once its device was poisoned.",
            labels=labels,
        ),
    )


class ReplicaCollector(Collector):
    """The per-replica families of every ready version `versions()` returns."""

    def __init__(self, versions: Callable[[], list[ServedVersion]]) -> None:
        self._versions = versions

    def describe(self) -> Iterable[GaugeMetricFamily]:
        return list(replica_families())

    def collect(self) -> Iterator[GaugeMetricFamily]:
        batches, rows, inflight, serving = replica_families()
        for served in self._versions():
            replicas = served.replicas
            if served.state != "ready" or replicas is None:
                continue
            for stat in replicas.stats():
                labels = [
                    served.model,
                    str(served.version),
                    str(stat.index),
                    stat.device,
                    stat.gpu,
                ]
                batches.add_metric(labels, float(stat.batches))
                rows.add_metric(labels, float(stat.rows))
                inflight.add_metric(labels, float(stat.inflight_batches))
                serving.add_metric(labels, 1.0 if stat.state == "serving" else 0.0)
        yield batches
        yield rows
        yield inflight
        yield serving


def model_ready_body(served: ServedVersion) -> bytes:
    """The model ready answer: `{"name", "ready": true}` (what V2 clients read) and each
    replica's device and state, so a probe sees a GPU that left the rotation."""
    import msgspec

    body: dict[str, object] = {"name": served.model, "ready": True}
    if served.replicas is not None:
        body["replicas"] = [
            {
                "replica": stat.index,
                "device": stat.device,
                "gpu": stat.gpu,
                "state": stat.state,
                **({"reason": stat.reason} if stat.reason else {}),
            }
            for stat in served.replicas.stats()
        ]
    return msgspec.json.encode(body)
