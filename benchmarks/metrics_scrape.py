"""How long one /metrics scrape takes to render (target: well under 25 ms).

Renders torchrig's metrics after traffic on 5 models x 2 versions (every outcome, one
batch each: histograms with all their buckets), with the GPU collectors on as `torchrig
serve` has them, and, as the baseline in the same run, prometheus_client's own exposition
of a bare registry with the same number of series (the text format's floor). Prints the
median of many renders of each and their ratio.
Run: `python benchmarks/metrics_scrape.py [--renders 200]`.
"""

from __future__ import annotations

import argparse
import statistics
import time

from prometheus_client import CollectorRegistry, Counter, generate_latest

from torchrig.runtime.batcher import BatchRecord
from torchrig.server.metrics import ServerMetrics

OUTCOMES = ("success", "timeout", "bad_request", "unavailable")


def busy_metrics() -> ServerMetrics:
    metrics = ServerMetrics(CollectorRegistry())
    for m in range(5):
        for version in ("1", "2"):
            observe = metrics.batch_observer(f"model{m}", version)
            for outcome in OUTCOMES:
                metrics.request_started(f"model{m}")
                metrics.request_finished(f"model{m}", version, outcome=outcome, duration_s=0.002)
            observe(
                BatchRecord(
                    rows=4, requests=2, queue_waits_s=[0.001] * 2, compute_s=0.003, failed=False
                )
            )
    return metrics


def bare_registry(series: int) -> CollectorRegistry:
    """A counter with series/2 label sets: each gives two lines (_total and _created)."""
    registry = CollectorRegistry()
    counter = Counter(
        "bare_requests", "One counter with many label sets.", ["n"], registry=registry
    )
    for n in range(series // 2):
        counter.labels(str(n)).inc()
    return registry


def median_ms(render: object, renders: int) -> tuple[float, float]:
    timings = []
    for _ in range(renders):
        started = time.perf_counter()
        render()  # type: ignore[operator]
        timings.append(time.perf_counter() - started)
    return statistics.median(timings) * 1000, max(timings) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--renders", type=int, default=200)
    args = parser.parse_args()
    metrics = busy_metrics()
    try:
        body, _ = metrics.render()
        series = sum(1 for line in body.decode().splitlines() if not line.startswith("#"))
        torchrig_ms, torchrig_max = median_ms(metrics.render, args.renders)
        registry = bare_registry(series)
        bare_ms, bare_max = median_ms(lambda: generate_latest(registry), args.renders)
    finally:
        metrics.close()
    print(f"{args.renders} renders each; {series} series, {len(body):,} bytes per scrape")
    print(f"{'what':<40}{'median ms':>10}{'max ms':>10}")
    print(f"{'torchrig ServerMetrics.render()':<40}{torchrig_ms:>10.2f}{torchrig_max:>10.2f}")
    print(f"{'bare registry, same series (baseline)':<40}{bare_ms:>10.2f}{bare_max:>10.2f}")
    verdict = "met" if torchrig_ms < 25 else "MISSED"
    print(f"torchrig / baseline: {torchrig_ms / bare_ms:.2f}x; target < 25 ms: {verdict}")


if __name__ == "__main__":
    main()
