"""Server metrics on a real CollectorRegistry, read back through the Prometheus text parser."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import torch
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.parser import text_string_to_metric_families

from doubles import Doubler, rows, until_async
from torchrig.errors import InferenceFailed
from torchrig.facts.nvml import read_nvml
from torchrig.packaging import pack
from torchrig.repository import BatchingConfig, ModelConfig, Repository
from torchrig.runtime import ModelRegistry
from torchrig.runtime.batcher import Batcher, BatchRecord
from torchrig.server.metrics import DURATION_BUCKETS_S, PendingHistogram, ServerMetrics

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


class Tripler(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 3


def scrape(metrics: ServerMetrics) -> tuple[Samples, set[str]]:
    """Every sample by (name, labels), and the names of the families that have samples."""
    body, content_type = metrics.render()
    assert content_type.startswith("text/plain")
    samples: Samples = {}
    families: set[str] = set()
    for family in text_string_to_metric_families(body.decode()):
        if family.samples:
            families.add(family.name)
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples, families


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


def test_requests_are_counted_by_outcome() -> None:
    metrics = ServerMetrics(CollectorRegistry(), gpu=False)
    for outcome, duration in [("success", 0.003), ("success", 0.7), ("timeout", 2.0)]:
        metrics.request_started("ranker")
        metrics.request_finished("ranker", "2", outcome=outcome, duration_s=duration)
    metrics.request_started("ranker")
    metrics.request_finished("ranker", None, outcome="bad_request", duration_s=0.0001)
    metrics.request_started("ranker")  # still in flight at the scrape

    samples, _ = scrape(metrics)
    assert value(samples, "torchrig_request_success_total", model="ranker", version="2") == 2
    failures = {
        dict(labels)["reason"]: (dict(labels)["version"], v)
        for (name, labels), v in samples.items()
        if name == "torchrig_request_failure_total"
    }
    assert failures == {"timeout": ("2", 1.0), "bad_request": ("", 1.0)}
    served = {"model": "ranker", "version": "2"}
    assert value(samples, "torchrig_request_duration_seconds_count", **served) == 2
    assert value(samples, "torchrig_request_duration_seconds_sum", **served) == pytest.approx(0.703)
    assert value(samples, "torchrig_request_duration_seconds_bucket", le="0.005", **served) == 1
    assert value(samples, "torchrig_request_duration_seconds_bucket", le="0.0005", **served) == 0
    assert value(samples, "torchrig_request_duration_seconds_bucket", le="10.0", **served) == 2
    assert value(samples, "torchrig_inflight_requests", model="ranker") == 1


def test_an_unknown_outcome_is_refused_with_the_valid_ones() -> None:
    metrics = ServerMetrics(CollectorRegistry(), gpu=False)
    metrics.request_started("m")
    with pytest.raises(ValueError, match="bad_request, error, not_found"):
        metrics.request_finished("m", "1", outcome="oops", duration_s=0.1)
    samples, _ = scrape(metrics)
    assert value(samples, "torchrig_inflight_requests", model="m") == 0


def test_batches_of_a_real_batcher_are_observed() -> None:
    metrics = ServerMetrics(CollectorRegistry(), gpu=False)
    model = Doubler()
    model.poison = -1.0
    batcher = Batcher(
        model,
        BatchingConfig(max_batch_size=8, max_queue_delay_ms=5),
        observer=metrics.batch_observer("doubler", "3"),
    )

    async def main() -> None:
        async def caller(i: int) -> None:
            count = 1 + i % 3
            out = await batcher.infer(rows(i * 10, count), rows=count)
            assert torch.equal(out["y"], rows(i * 10, count)["x"] * 2)

        await asyncio.gather(*(caller(i) for i in range(60)))
        with pytest.raises(InferenceFailed):
            await batcher.infer({"x": torch.tensor([[-1.0]])}, rows=1)

    try:
        asyncio.run(main())
    finally:
        batcher.close()  # joins the workers: every batch has been observed
    stats = batcher.stats()
    samples, _ = scrape(metrics)
    labels = {"model": "doubler", "version": "3"}
    assert stats.batches < stats.requests  # batching happened
    assert value(samples, "torchrig_batch_size_count", **labels) == stats.batches
    assert value(samples, "torchrig_batch_size_sum", **labels) == stats.rows
    for size in (1, 2, 4, 8):
        expected = sum(n for rows_, n in stats.batch_sizes.items() if rows_ <= size)
        assert value(samples, "torchrig_batch_size_bucket", le=f"{size}.0", **labels) == expected
    assert value(samples, "torchrig_queue_duration_seconds_count", **labels) == stats.requests
    assert value(samples, "torchrig_queue_duration_seconds_sum", **labels) > 0
    assert value(samples, "torchrig_compute_duration_seconds_count", **labels) == stats.batches
    assert value(samples, "torchrig_batch_failure_total", **labels) == 1


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("metrics-repo")
    config = ModelConfig(batching=BatchingConfig(max_batch_size=8, max_queue_delay_ms=1))
    example = (torch.ones(2, 3),)
    pack(Tripler(), example, name="tripler", repository=root, version=1, config=config)
    broken = pack(Tripler(), example, name="broken", repository=root, version=1)
    (broken.path / broken.manifest.program).write_bytes(b"not a program")
    return root


def test_queue_depth_readiness_and_labels_come_from_the_model_registry(repo: Path) -> None:
    async def main() -> None:
        registry = ModelRegistry(Repository(repo))
        await registry.load_all()
        metrics = ServerMetrics(CollectorRegistry(), model_registry=registry, gpu=False)
        served = registry.resolve("tripler")
        original = served.batcher
        model = Doubler()
        model.gate.clear()
        gated = Batcher(model, BatchingConfig(max_batch_size=1, max_queue_delay_ms=0))
        served.batcher = gated  # a version whose worker we can hold, to see a queue
        try:
            running = asyncio.ensure_future(gated.infer(rows(0, 1), rows=1))
            await asyncio.to_thread(model.entered.wait, 10)
            queued = [asyncio.ensure_future(gated.infer(rows(i, 1), rows=1)) for i in (1, 2)]
            await until_async(lambda: gated.stats().queue_depth == 2)
            metrics.request_started("tripler")
            metrics.request_started("no-such-model")
            metrics.request_finished("no-such-model", "7", outcome="not_found", duration_s=0.001)
            metrics.request_finished("tripler", "99", outcome="not_found", duration_s=0.001)
            metrics.request_started("tripler")
            metrics.request_started("probe-1")
            metrics.request_started("probe-2")

            samples, _ = scrape(metrics)
            model.gate.set()
            await asyncio.gather(running, *queued)
        finally:
            model.gate.set()
            served.batcher = original
            gated.close()
        await registry.unload("tripler")
        after_unload, _ = scrape(metrics)
        await registry.close()

        assert value(samples, "torchrig_model_ready", model="tripler", version="1") == 1
        assert value(after_unload, "torchrig_model_ready", model="tripler", version="1") == 0
        assert value(samples, "torchrig_model_ready", model="broken", version="") == 0
        assert not [k for k in after_unload if k[0] == "torchrig_queue_depth"]
        assert value(samples, "torchrig_queue_depth", model="tripler", version="1") == 2
        depths = [dict(labels) for name, labels in samples if name == "torchrig_queue_depth"]
        assert depths == [{"model": "tripler", "version": "1"}]  # ready versions only
        # names the registry does not know fold into "": they cannot grow the series
        assert value(samples, "torchrig_inflight_requests", model="tripler") == 1
        assert value(samples, "torchrig_inflight_requests", model="broken") == 0
        assert value(samples, "torchrig_inflight_requests", model="") == 2
        failures = {
            (dict(labels)["model"], dict(labels)["version"]): v
            for (name, labels), v in samples.items()
            if name == "torchrig_request_failure_total"
        }
        assert failures == {("", ""): 1, ("tripler", ""): 1}

    asyncio.run(main())


def test_gpu_series_follow_nvml_and_a_scrape_never_starts_cuda() -> None:
    cuda_was_initialised = torch.cuda.is_initialized()
    metrics = ServerMetrics(CollectorRegistry())  # gpu=True: NVML when there is one
    try:
        samples, families = scrape(metrics)
    finally:
        metrics.close()
    gpu_families = {name for name in families if name.startswith("torchrig_gpu_")}
    reading = read_nvml()
    if reading.error is not None:  # this CPU machine: no series, and no error either
        assert gpu_families == set(), families
    else:
        assert "torchrig_gpu_memory_total_bytes" in gpu_families
        for gpu in reading.gpus:
            labels = {"gpu": str(gpu.index), "uuid": gpu.uuid or ""}
            total = value(samples, "torchrig_gpu_memory_total_bytes", **labels)
            assert total == gpu.memory_total_bytes
    assert torch.cuda.is_initialized() == cuda_was_initialised
    if not cuda_was_initialised:
        assert not {n for n in families if n.startswith("torchrig_torch_")}


@pytest.mark.gpu
def test_torch_allocator_series_once_cuda_is_in_use() -> None:
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    held = torch.empty(8 << 20, dtype=torch.uint8, device="cuda:0")
    metrics = ServerMetrics(CollectorRegistry())
    try:
        samples, families = scrape(metrics)
    finally:
        metrics.close()
    assert value(samples, "torchrig_torch_allocated_bytes", device="cuda:0") >= held.numel()
    assert value(samples, "torchrig_torch_reserved_bytes", device="cuda:0") >= held.numel()
    assert {
        "torchrig_gpu_utilization_ratio",
        "torchrig_gpu_memory_used_bytes",
        "torchrig_gpu_memory_total_bytes",
        "torchrig_gpu_temperature_celsius",
    } <= families


def test_each_server_has_its_own_registry() -> None:
    first, second = CollectorRegistry(), CollectorRegistry()
    a = ServerMetrics(first, gpu=False)
    b = ServerMetrics(second, gpu=False)
    a.request_started("m")
    a.request_finished("m", "1", outcome="success", duration_s=0.01)
    assert value(scrape(a)[0], "torchrig_request_success_total", model="m", version="1") == 1
    assert (
        "torchrig_request_success_total",
        frozenset({("model", "m"), ("version", "1")}),
    ) not in (scrape(b)[0])
    with pytest.raises(ValueError, match="Duplicated"):
        ServerMetrics(first, gpu=False)


def test_openmetrics_when_the_scraper_asks_for_it() -> None:
    metrics = ServerMetrics(CollectorRegistry(), gpu=False)
    body, content_type = metrics.render("application/openmetrics-text; version=1.0.0")
    assert content_type.startswith("application/openmetrics-text")
    assert body.endswith(b"# EOF\n")
    assert metrics.render()[1] == "text/plain; version=0.0.4; charset=utf-8"


def test_pending_counts_flushed_twice_equal_observing_each_value() -> None:
    """A PendingHistogram (the request path's and batches' counts) leaves its series
    exactly as one observe() per value would, across flushes: bounds are inclusive, values
    past the last finite bound land in +Inf, and its counter and failure count follow."""
    first = [0.0, 0.0005, 0.0004, 0.001, 0.0011]
    then = [0.5, 0.5, 7.0, 12.0, 1e-9]
    one, each = CollectorRegistry(), CollectorRegistry()
    pending = PendingHistogram(
        Histogram("waits", "w", buckets=DURATION_BUCKETS_S, registry=one),
        counter=Counter("done", "d", registry=one),
        failures=Counter("failed", "f", registry=one),
    )
    single = Histogram("waits", "w", buckets=DURATION_BUCKETS_S, registry=each)
    done = Counter("done", "d", registry=each)
    failed = Counter("failed", "f", registry=each)

    def samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[Any, ...]], float]:
        return {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for metric in registry.collect()
            for sample in metric.samples
            if not sample.name.endswith("_created")
        }

    pending.observe(first[0])
    pending.observe_each(first[1:])
    pending.failed += 1
    assert samples(one)[("waits_count", ())] == 0  # nothing moves before a flush
    pending.flush()
    pending.observe_each(then)
    pending.failed += 2
    pending.flush()
    pending.flush()  # nothing new: nothing added twice
    for value in first + then:
        single.observe(value)
        done.inc()
    failed.inc(3)
    assert samples(one) == pytest.approx(samples(each))
    assert samples(one)[("waits_bucket", (("le", "0.0005"),))] == 4
    assert samples(one)[("waits_count", ())] == len(first + then)
    assert samples(one)[("done_total", ())] == len(first + then)
    assert samples(one)[("failed_total", ())] == 3


def test_a_version_observed_again_shares_its_series() -> None:
    """A version loaded again (a reload) gets the same batch observer: its batches count in
    the same series, and the series to flush grow with the versions, not with the loads."""
    metrics = ServerMetrics(CollectorRegistry(), gpu=False)
    first = metrics.batch_observer("m", "1")
    pending = len(metrics._pending)
    again = metrics.batch_observer("m", "1")
    assert again is first
    assert len(metrics._pending) == pending
    assert metrics.batch_observer("m", "2") is not first
    record = BatchRecord(rows=2, requests=1, queue_waits_s=[0.001], compute_s=0.002, failed=False)
    first(record)
    again(record)
    samples, _ = scrape(metrics)
    assert value(samples, "torchrig_batch_size_count", model="m", version="1") == 2
