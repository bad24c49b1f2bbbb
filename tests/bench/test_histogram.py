"""Latency histograms: percentiles within half a bucket, and merging that is exact."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from torchrig.bench.histogram import GROWTH, Histogram
from torchrig.bench.results import Level, ProcessResult, merge, split_level

HALF_BUCKET = math.sqrt(GROWTH) - 1  # the largest relative error of a bucket's middle


def _exact(samples: list[float], q: float) -> float:
    """Nearest-rank percentile, the definition the histogram follows."""
    ordered = sorted(samples)
    return ordered[max(1, math.ceil(q / 100 * len(ordered))) - 1]


def test_percentiles_are_within_half_a_bucket() -> None:
    rng = random.Random(1)
    samples = [rng.lognormvariate(-6, 1) for _ in range(20_000)]  # around 2.5 ms
    histogram = Histogram.of(samples)
    for q in (1, 50, 90, 99, 99.9):
        assert histogram.percentile(q) == pytest.approx(_exact(samples, q), rel=HALF_BUCKET)
    assert histogram.percentile(100) == max(samples)
    assert histogram.min_s == min(samples)
    assert histogram.summary().mean == pytest.approx(1e3 * sum(samples) / len(samples), abs=1e-3)


def test_merging_equals_recording_everything_in_one() -> None:
    rng = random.Random(2)
    fast = [rng.uniform(0.001, 0.002) for _ in range(9_000)]  # one process: 1-2 ms
    slow = [rng.uniform(0.050, 0.100) for _ in range(1_000)]  # the other: 50-100 ms
    merged = Histogram.of(fast)
    merged.merge(Histogram.of(slow))
    together = Histogram.of(fast + slow)
    assert merged.counts == together.counts
    assert merged.count == 10_000
    for q in (50, 90, 95, 99):
        assert merged.percentile(q) == pytest.approx(_exact(fast + slow, q), rel=HALF_BUCKET)
    # what averaging the two processes' p99s would have claimed: far from the truth
    averaged = (_exact(fast, 99) + _exact(slow, 99)) / 2
    assert abs(averaged - merged.percentile(99)) > 0.2 * merged.percentile(99)


def test_process_results_merge_through_their_sparse_form() -> None:
    rng = np.random.default_rng(3)
    parts, everything = [], []
    for _ in range(3):
        samples = list(rng.exponential(0.01, 500) + 1e-4)
        everything += samples
        histogram = Histogram.of(samples)
        parts.append(
            ProcessResult(
                ok=len(samples),
                errors_by_status={"503": 2},
                error_samples={"503": '{"error": "queue full"}'},
                latency_buckets=histogram.to_sparse(),
                latency_sum_s=histogram.sum_s,
                latency_min_s=histogram.min_s,
                latency_max_s=histogram.max_s,
                connections=4,
            )
        )
    level = Level(concurrency=12)
    result = merge(level, parts, duration_s=2.0, rows_per_request=8)
    assert result.ok == 1500
    assert result.errors == 6
    assert result.requests == 1506
    assert result.errors_by_status == {"503": 6}
    assert result.error_samples == {"503": "queue full"}
    assert result.requests_per_s == 750
    assert result.rows_per_s == 6000
    assert result.connections == 12
    assert result.latency_ms.p99 == pytest.approx(
        1e3 * _exact(everything, 99), rel=HALF_BUCKET, abs=1e-3
    )
    assert result.latency_ms.max == pytest.approx(1e3 * max(everything), abs=1e-3)


def test_an_empty_histogram_reports_zeros() -> None:
    summary = Histogram().summary()
    assert (summary.p50, summary.p99, summary.max) == (0.0, 0.0, 0.0)
    empty = Histogram.from_sparse({}, sum_s=0.0, min_s=math.inf, max_s=0.0)
    assert empty.count == 0
    assert empty.percentile(50) == 0.0


def test_levels_split_over_processes() -> None:
    shares = split_level(Level(concurrency=5), 2)
    assert [s.concurrency for s in shares] == [3, 2]
    assert [s.concurrency for s in split_level(Level(concurrency=1), 4)] == [1]
    rates = split_level(Level(rate=100.0, arrival="constant"), 4)
    assert [r.rate for r in rates] == [25.0] * 4
    assert [r.phase_s for r in rates] == [0.0, 0.01, 0.02, 0.03]
    assert len({r.seed for r in rates}) == 4  # independent Poisson streams
