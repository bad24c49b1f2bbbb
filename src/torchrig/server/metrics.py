"""Prometheus metrics of the server, on a `CollectorRegistry` the app factory passes in.

| name | type | labels | what |
| --- | --- | --- | --- |
| `torchrig_request_success_total` | counter | model, version | requests answered |
| `torchrig_request_failure_total` | counter | model, version, reason | failed requests (1) |
| `torchrig_request_duration_seconds` | histogram | model, version | successful requests |
| `torchrig_queue_duration_seconds` | histogram | model, version | per request: wait in queue |
| `torchrig_compute_duration_seconds` | histogram | model, version | per batch: time in the model |
| `torchrig_batch_size` | histogram | model, version | rows per batch |
| `torchrig_batch_failure_total` | counter | model, version | batches whose forward raised |
| `torchrig_queue_depth` | gauge | model, version | requests waiting in the batcher |
| `torchrig_inflight_requests` | gauge | model | requests being handled now |
| `torchrig_model_ready` | gauge | model, version | 1 serving; 0 loading/failed/unloaded (2) |
| `torchrig_replica_batches` | gauge | model, version, replica, device, gpu | batches run (3) |
| `torchrig_replica_rows` | gauge | model, version, replica, device, gpu | rows run (3) |
| `torchrig_replica_inflight_batches` | gauge | model, version, replica, device, gpu | running now |
| `torchrig_replica_serving` | gauge | model, version, replica, device, gpu | 0 once poisoned |
| `torchrig_gpu_utilization_ratio` | gauge | gpu, uuid | NVML utilisation, 0..1 |
| `torchrig_gpu_memory_used_bytes` | gauge | gpu, uuid | NVML memory in use (all processes) |
| `torchrig_gpu_memory_total_bytes` | gauge | gpu, uuid | NVML memory installed |
| `torchrig_gpu_power_watts` | gauge | gpu, uuid | NVML board power draw |
| `torchrig_gpu_temperature_celsius` | gauge | gpu, uuid | NVML die temperature |
| `torchrig_torch_allocated_bytes` | gauge | device | torch allocator: bytes in live tensors |
| `torchrig_torch_reserved_bytes` | gauge | device | torch allocator: bytes reserved |

(1) reason: `bad_request` (4xx), `not_found` (404), `unavailable` (503: not ready, queue
full, shutting down), `timeout`, `error` (5xx).
(2) a model with no loadable version at all (bad config.toml, no complete version)
reports `version=""` 0.
(3) since the version loaded, one series per replica (a replica per GPU with `device =
"auto"`; see torchrig.server.replica_metrics for the labels): how batches spread.

Durations are in seconds, with buckets from 0.5 ms to 10 s. Queue depth, readiness, GPU
and allocator series are read at scrape time. Request and batch counts and durations are
kept as plain numbers where they happen (`PendingHistogram`: no lock and no label lookup
per request) and moved into their prometheus_client series by `flush`, which every
scrape runs first: a scrape sees every request answered before it. Counters and
histograms also expose prometheus_client's `_created` series. The GPU series exist only
where NVML answers; the allocator series only once this process has initialised CUDA.
Model and version labels of failures come from the request path, so names the model
registry does not know are reported as `model=""` / `version=""`: a client probing random
names cannot grow the number of series without bound.

With several server processes (`serve --workers N`) a scrape reaches one of them, so the
metrics use prometheus_client's multiprocess mode (`multiprocess_dir`): counters and
histograms live in per-process files that a scrape sums, and the scrape-time series
(in-flight, queue depth, readiness, allocator bytes) are copied into multiprocess gauges:
in-flight on every change, the others every 0.5 s and at each scrape; each worker also
moves its counts into its files every 0.5 s and when it stops. Across workers,
in-flight, queue depth and allocator bytes are sums and readiness is the minimum (1 only
when every worker serves the version); the NVML series describe the GPU itself and come
from the worker that answers the scrape. In that mode there are no `_created` series, and
a series once reported stays (at 0) after its model version is gone.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from torchrig.runtime.batcher import BatchRecord
from torchrig.runtime.registry import ModelRegistry, ServedVersion
from torchrig.server.gpu_metrics import NvmlCollector, TorchAllocatorCollector
from torchrig.server.replica_metrics import ReplicaCollector, replica_families
from torchrig.server.shared_metrics import GaugeMirror, check_multiprocess, scrape_registry

# serving is ms-scale: 0.5 ms .. 10 s, about three buckets per decade
DURATION_BUCKETS_S = (
    0.0005,
    0.001,
    0.002,
    0.005,
    0.01,
    0.02,
    0.05,
    0.1,
    0.2,
    0.5,
    1.0,
    2.0,
    5.0,
    10.0,
)
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)

OUTCOMES = frozenset({"success", "bad_request", "not_found", "unavailable", "timeout", "error"})
UNKNOWN = ""  # the label value for a model or version the registry does not know


class ServerMetrics:
    """Request, batching, model and GPU metrics, registered on `registry`.

    `model_registry` feeds the scrape-time series (queue depth, model readiness) and
    bounds the model/version label values; `gpu=False` leaves NVML alone.
    `multiprocess_dir` turns on multiprocess mode (one of several worker processes): it
    must be the PROMETHEUS_MULTIPROC_DIR this process had before importing prometheus_client.
    """

    def __init__(
        self,
        registry: CollectorRegistry,
        *,
        model_registry: ModelRegistry | None = None,
        gpu: bool = True,
        multiprocess_dir: Path | None = None,
    ) -> None:
        self.registry = registry
        self._models = model_registry
        self._multiprocess_dir = multiprocess_dir
        if multiprocess_dir is not None:
            check_multiprocess(multiprocess_dir)
        labels = ["model", "version"]
        self._success = Counter(
            "torchrig_request_success",
            "Inference requests answered successfully.",
            labels,
            registry=registry,
        )
        self._failure = Counter(
            "torchrig_request_failure",
            "Failed inference requests, by reason "
            "(bad_request, not_found, unavailable, timeout, error).",
            [*labels, "reason"],
            registry=registry,
        )
        self._request_duration = Histogram(
            "torchrig_request_duration_seconds",
            "End-to-end time of successful inference requests.",
            labels,
            buckets=DURATION_BUCKETS_S,
            registry=registry,
        )
        self._queue_duration = Histogram(
            "torchrig_queue_duration_seconds",
            "Per request: time waiting in the batcher before its batch started.",
            labels,
            buckets=DURATION_BUCKETS_S,
            registry=registry,
        )
        self._compute_duration = Histogram(
            "torchrig_compute_duration_seconds",
            "Per batch: time in the model (concatenation and forward).",
            labels,
            buckets=DURATION_BUCKETS_S,
            registry=registry,
        )
        self._batch_size = Histogram(
            "torchrig_batch_size",
            "Rows per batch.",
            labels,
            buckets=BATCH_SIZE_BUCKETS,
            registry=registry,
        )
        self._batch_failure = Counter(
            "torchrig_batch_failure",
            "Batches whose forward raised; each of their requests failed.",
            labels,
            registry=registry,
        )
        # (model, version) -> its successes and their durations, counted on the request
        # path and moved into the success counter and duration histogram by `flush`
        self._success_series: dict[tuple[str, str], PendingHistogram] = {}
        self._pending: list[PendingHistogram] = []  # every series `flush` moves
        # (model, version) -> its batch observer: a version loaded again (a reload) shares
        # its series and their lock, so `_pending` grows with the versions, not the loads
        self._batch_observers: dict[tuple[str, str], Callable[[BatchRecord], None]] = {}
        self._flush_lock = threading.Lock()
        self._runtime = _RuntimeCollector(model_registry)
        self._replicas = ReplicaCollector(
            lambda: [] if model_registry is None else _versions(model_registry)
        )
        self._nvml = NvmlCollector.open() if gpu else None
        self._torch = TorchAllocatorCollector() if gpu else None
        self._mirror: GaugeMirror | None = None
        self._known_models: frozenset[str] = frozenset()  # models the last publish() saw
        if multiprocess_dir is not None:  # the scrape reads the files; see render()
            described = [
                *_runtime_families(),
                *TorchAllocatorCollector().describe(),
                *replica_families(),
            ]
            self._mirror = GaugeMirror(registry, described)
            return
        registry.register(self._runtime)
        registry.register(self._replicas)
        if self._nvml is not None:
            registry.register(self._nvml)
        if self._torch is not None:
            registry.register(self._torch)

    # ---- the request path ------------------------------------------------------------------

    def request_started(self, model: str) -> None:
        """An inference request for `model` arrived (in-flight +1)."""
        self._runtime.inflight_add(model, 1)
        if self._mirror is not None:
            self._publish_inflight(self._mirror, model)

    def request_finished(
        self, model: str, version: str | None, *, outcome: str, duration_s: float
    ) -> None:
        """The request `request_started` counted has its answer (in-flight -1).

        `outcome` is "success" or the failure class: "bad_request" (4xx), "not_found",
        "unavailable" (503), "timeout" or "error" (5xx). Durations are observed for
        successes only; failures are counted by reason.
        """
        self._runtime.inflight_add(model, -1)
        if self._mirror is not None:
            self._publish_inflight(self._mirror, model)
        if outcome == "success":
            labels = (model, version or UNKNOWN)
            series = self._success_series.get(labels)
            if series is None:
                series = self._track(
                    PendingHistogram(
                        self._request_duration.labels(*labels),
                        counter=self._success.labels(*labels),
                    )
                )
                self._success_series[labels] = series
            series.observe(duration_s)
            return
        if outcome not in OUTCOMES:
            raise ValueError(
                f"unknown request outcome {outcome!r}: use one of {', '.join(sorted(OUTCOMES))}"
            )
        model_label, version_label = self._known(model, version)
        self._failure.labels(model_label, version_label, outcome).inc()

    def batch_observer(self, model: str, version: str) -> Callable[[BatchRecord], None]:
        """The observer to give `Batcher(..., observer=...)` for this model version. A
        version's batches may be observed on several worker threads (and, during a reload,
        by two batchers): one lock per batch."""
        known = self._batch_observers.get((model, version))
        if known is not None:
            return known
        queue = self._track(PendingHistogram(self._queue_duration.labels(model, version)))
        compute = self._track(PendingHistogram(self._compute_duration.labels(model, version)))
        size = self._track(
            PendingHistogram(
                self._batch_size.labels(model, version),
                failures=self._batch_failure.labels(model, version),
            )
        )
        lock = threading.Lock()

        def observe(record: BatchRecord) -> None:
            with lock:
                queue.observe_each(record.queue_waits_s)
                compute.observe(record.compute_s)
                size.observe(record.rows)
                if record.failed:
                    size.failed += 1

        self._batch_observers[(model, version)] = observe
        return observe

    def flush(self) -> None:
        """Move what the request path and the batches counted since the last flush into
        their prometheus_client series (a scrape and, with several workers, `publish`
        run it first)."""
        with self._flush_lock:
            for series in self._pending:
                series.flush()

    def _track(self, series: PendingHistogram) -> PendingHistogram:
        self._pending.append(series)
        return series

    # ---- the scrape ------------------------------------------------------------------------

    def render(self, accept: str | None = None) -> tuple[bytes, str]:
        """The exposition and its content type (OpenMetrics when `accept` asks for it)."""
        encode, content_type = choose_encoder(accept or "")
        if self._multiprocess_dir is None:
            self.flush()
            return encode(self.registry), content_type
        self.publish()  # this worker's values are current; the others' at most 0.5 s old
        scrape = scrape_registry(self._multiprocess_dir)
        if self._nvml is not None:  # the GPU itself: once, from whichever worker answers
            scrape.register(self._nvml)
        return encode(scrape), content_type

    @property
    def multiprocess(self) -> bool:
        """True in one of several worker processes (see `publish`)."""
        return self._mirror is not None

    def publish(self) -> None:
        """Multiprocess mode: copy this process's scrape-time series (in-flight, queue
        depth, readiness, allocator bytes) into the shared files; a no-op otherwise."""
        if self._mirror is None:
            return
        self.flush()  # this worker's counts and histograms too, into its own files
        families: list[Metric] = [*self._runtime.collect(), *self._replicas.collect()]
        if self._torch is not None:
            families.extend(self._torch.collect())
        self._known_models = self._runtime.known_models()
        self._mirror.publish(families)

    def _publish_inflight(self, mirror: GaugeMirror, model: str) -> None:
        """Multiprocess mode: this process's in-flight count under `model`'s label, at
        each change (cheap: the known models are those of the last full `publish`)."""
        label = model if model in self._known_models or self._models is None else UNKNOWN
        count = self._runtime.inflight_under(label, self._known_models)
        mirror.set("torchrig_inflight_requests", (label,), float(count))

    def close(self) -> None:
        """Release NVML (its initialisation is counted); call when the server stops.
        What was counted since the last scrape goes into the series (with several
        workers: into this worker's files, which outlive it)."""
        self.flush()
        if self._nvml is not None:
            self._nvml.close()

    def _known(self, model: str, version: str | None) -> tuple[str, str]:
        """Label values for a failure: names the registry does not know become ""."""
        if self._models is None:
            return model, version or UNKNOWN
        versions = {str(v.version) for v in _versions(self._models) if v.model == model}
        if not versions and model not in self._models.model_errors():
            return UNKNOWN, UNKNOWN
        return model, version if version in versions else UNKNOWN


class PendingHistogram:
    """One histogram series (and the counters that go with it) counted as plain numbers
    where the observations happen, and moved into the prometheus_client series by
    `flush`: per request, a bisect and two additions instead of prometheus_client's
    `observe` (a Python loop over the buckets and a lock per increment).

    `counter`: a counter series that counts the same observations (successes, whose
    durations the histogram holds). `failed`: a count the owner adds to, moved into
    `failures`. One writer at a time (the event loop, or a caller's lock); `flush` only
    reads what the writer adds to, so it may run on another thread: a count it misses is
    moved by the next flush.
    """

    __slots__ = ("_bounds", "_buckets", "_counter", "_failures", "_moved", "_sum", "counts",
                 "failed", "total")  # fmt: skip

    def __init__(
        self, histogram: Histogram, *, counter: Counter | None = None,
        failures: Counter | None = None,
    ) -> None:  # fmt: skip
        bounds = getattr(histogram, "_upper_bounds", None)
        buckets = getattr(histogram, "_buckets", None)
        total = getattr(histogram, "_sum", None)
        if bounds is None or buckets is None or total is None:
            raise RuntimeError(
                "this prometheus_client lays out histograms differently from the 0.20-0.26 "
                "releases torchrig knows; install one of those (pip install "
                "'prometheus-client>=0.20,<1')"
            )
        self._bounds: list[float] = list(bounds)  # the last one is +Inf
        self._buckets = buckets
        self._sum = total
        self._counter = counter
        self._failures = failures
        self.counts = [0] * len(self._bounds)  # observations per bucket (not cumulative)
        self.total = 0.0
        self.failed = 0
        # what earlier flushes moved: (counts, total, failed)
        self._moved: tuple[list[int], float, int] = ([0] * len(self._bounds), 0.0, 0)

    def observe(self, value: float) -> None:
        """As `Histogram.observe(value)`: the first bucket whose bound is >= the value."""
        self.counts[bisect.bisect_left(self._bounds, value)] += 1
        self.total += value

    def observe_each(self, values: list[float]) -> None:
        counts, bounds = self.counts, self._bounds
        for value in values:
            counts[bisect.bisect_left(bounds, value)] += 1
        self.total += sum(values)

    def flush(self) -> None:
        """Add what was counted since the last flush to the prometheus_client series (the
        caller runs one flush at a time)."""
        counts, total, failed = self.counts[:], self.total, self.failed
        moved_counts, moved_total, moved_failed = self._moved
        added = 0
        for index, (now, before) in enumerate(zip(counts, moved_counts, strict=True)):
            if now != before:
                self._buckets[index].inc(now - before)
                added += now - before
        if total != moved_total:
            self._sum.inc(total - moved_total)
        if added and self._counter is not None:
            self._counter.inc(added)
        if failed != moved_failed and self._failures is not None:
            self._failures.inc(failed - moved_failed)
        self._moved = (counts, total, failed)


class _RuntimeCollector(Collector):
    """Series read at scrape time: in-flight requests, queue depth, model readiness."""

    def __init__(self, models: ModelRegistry | None) -> None:
        self._models = models
        self._inflight: dict[str, int] = {}

    def inflight_add(self, model: str, delta: int) -> None:
        """On the event loop's thread, the only one that changes the counts (readers copy
        the dict, one step under the GIL)."""
        inflight = self._inflight
        count = inflight.get(model, 0) + delta
        if count or self._models is None:
            inflight[model] = count
        else:  # the registry's models are reported at 0 anyway; unknown names go
            inflight.pop(model, None)

    def known_models(self, versions: list[ServedVersion] | None = None) -> frozenset[str]:
        """The models the registry knows (with versions, or with an error)."""
        if self._models is None:
            return frozenset()
        if versions is None:
            versions = _versions(self._models)
        return frozenset({v.model for v in versions} | set(self._models.model_errors()))

    def inflight_under(self, label: str, known: frozenset[str]) -> int:
        """Requests in flight whose model folds into `label` ("" for names not `known`)."""
        counts = list(self._inflight.items())
        if self._models is None:
            return sum(n for model, n in counts if model == label)
        return sum(n for model, n in counts if (model if model in known else UNKNOWN) == label)

    def describe(self) -> Iterable[GaugeMetricFamily]:
        return list(_runtime_families())

    def collect(self) -> Iterator[GaugeMetricFamily]:
        _, depth, ready = _runtime_families()
        versions = [] if self._models is None else _versions(self._models)
        yield self.inflight_family(versions)
        if self._models is not None:  # a model with no loadable version at all
            with_versions = {v.model for v in versions}
            for model in sorted(set(self._models.model_errors()) - with_versions):
                ready.add_metric([model, UNKNOWN], 0.0)
        for served in versions:
            labels = [served.model, str(served.version)]
            ready.add_metric(labels, 1.0 if served.state == "ready" else 0.0)
            batcher = served.batcher
            if served.state == "ready" and batcher is not None:
                depth.add_metric(labels, float(batcher.stats().queue_depth))
        yield depth
        yield ready

    def inflight_family(self, versions: list[ServedVersion] | None = None) -> GaugeMetricFamily:
        """In-flight requests per model: the registry's models (0 when idle) and ""."""
        inflight = _runtime_families()[0]
        if versions is None:
            versions = [] if self._models is None else _versions(self._models)
        counts = dict(self._inflight)
        if self._models is not None:  # fold names the registry does not know into ""
            known = self.known_models(versions)
            folded: dict[str, int] = dict.fromkeys(known, 0)
            for model, count in counts.items():
                label = model if model in known else UNKNOWN
                folded[label] = folded.get(label, 0) + count
            counts = folded
        for model, count in sorted(counts.items()):
            inflight.add_metric([model], float(count))
        return inflight


def _runtime_families() -> tuple[GaugeMetricFamily, GaugeMetricFamily, GaugeMetricFamily]:
    return (
        GaugeMetricFamily(
            "torchrig_inflight_requests",
            "Inference requests being handled now.",
            labels=["model"],
        ),
        GaugeMetricFamily(
            "torchrig_queue_depth",
            "Requests waiting in the batcher.",
            labels=["model", "version"],
        ),
        GaugeMetricFamily(
            "torchrig_model_ready",
            "1 when the model version serves, 0 while loading, failed or unloaded.",
            labels=["model", "version"],
        ),
    )


def _versions(models: ModelRegistry) -> list[ServedVersion]:
    """The registry's versions; it may change under a scrape run off the event loop."""
    for _ in range(3):
        try:
            return models.versions()
        except RuntimeError:  # "dictionary changed size during iteration": read again
            continue
    return []
