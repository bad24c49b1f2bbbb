"""A mergeable latency histogram with logarithmic buckets (1 % wide).

Percentiles of a load test spread over several processes cannot be averaged: the p99
of two halves is not the mean of their p99s. Each process records into a histogram
whose buckets are the same everywhere, so merging is adding counts, and a percentile of
the merged histogram is the percentile of all samples to within half a bucket (0.5 %).
Memory stays fixed however many requests a run makes.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import msgspec

GROWTH = 1.01  # each bucket is 1 % wider than the one before
_LOG_GROWTH = math.log(GROWTH)
_FLOOR_US = 1.0  # everything below 1 µs lands in bucket 0
BUCKETS = 2200  # 1 µs * 1.01**2200 is about 3.2e9 µs (53 minutes): the last bucket is open


class LatencySummary(msgspec.Struct, frozen=True, kw_only=True):
    """Latency percentiles in milliseconds, as a report shows them."""

    p50: float
    p90: float
    p99: float
    mean: float
    min: float
    max: float


class Histogram:
    """Latency samples (seconds in, milliseconds out) in fixed logarithmic buckets."""

    __slots__ = ("count", "counts", "max_s", "min_s", "sum_s")

    def __init__(self) -> None:
        self.counts = [0] * BUCKETS
        self.count = 0
        self.sum_s = 0.0
        self.min_s = math.inf
        self.max_s = 0.0

    def record(self, seconds: float) -> None:
        """Add one sample; the hot path of the load generator, so kept to a few operations."""
        us = seconds * 1e6
        index = int(math.log(us) / _LOG_GROWTH) if us > _FLOOR_US else 0
        self.counts[index if index < BUCKETS else BUCKETS - 1] += 1
        self.count += 1
        self.sum_s += seconds
        self.min_s = min(self.min_s, seconds)
        self.max_s = max(self.max_s, seconds)

    def merge(self, other: Histogram) -> None:
        """Add `other`'s samples to this histogram (exact: the buckets are the same)."""
        self.counts = [a + b for a, b in zip(self.counts, other.counts, strict=True)]
        self.count += other.count
        self.sum_s += other.sum_s
        self.min_s = min(self.min_s, other.min_s)
        self.max_s = max(self.max_s, other.max_s)

    def percentile(self, q: float) -> float:
        """The q-th percentile (0 < q <= 100) in seconds, by nearest rank; 0.0 when empty.

        The value is the bucket's geometric middle, clamped to the exact min and max
        (p100 is the exact max).
        """
        if not self.count:
            return 0.0
        rank = max(1, math.ceil(q / 100.0 * self.count))
        if rank >= self.count:
            return self.max_s  # the largest sample is known exactly
        seen = 0
        for index, n in enumerate(self.counts):
            seen += n
            if seen >= rank:
                if index == 0:
                    return self.min_s
                middle_us: float = GROWTH ** (index + 0.5)
                return min(max(middle_us / 1e6, self.min_s), self.max_s)
        return self.max_s  # pragma: no cover - the counts add up to count

    def summary(self) -> LatencySummary:
        """p50/p90/p99, mean, min and max in milliseconds (zeros when empty)."""
        if not self.count:
            return LatencySummary(p50=0.0, p90=0.0, p99=0.0, mean=0.0, min=0.0, max=0.0)
        return LatencySummary(
            p50=_ms(self.percentile(50)),
            p90=_ms(self.percentile(90)),
            p99=_ms(self.percentile(99)),
            mean=_ms(self.sum_s / self.count),
            min=_ms(self.min_s),
            max=_ms(self.max_s),
        )

    # ---- transport between processes: only the buckets that hold samples -----------------

    def to_sparse(self) -> dict[int, int]:
        return {index: n for index, n in enumerate(self.counts) if n}

    @classmethod
    def from_sparse(
        cls, counts: dict[int, int], *, sum_s: float, min_s: float, max_s: float
    ) -> Histogram:
        histogram = cls()
        for index, n in counts.items():
            histogram.counts[index] += n
            histogram.count += n
        histogram.sum_s = sum_s
        histogram.min_s = min_s if histogram.count else math.inf
        histogram.max_s = max_s
        return histogram

    @classmethod
    def of(cls, samples: Iterable[float]) -> Histogram:
        """A histogram of `samples` (seconds)."""
        histogram = cls()
        for sample in samples:
            histogram.record(sample)
        return histogram


def _ms(seconds: float) -> float:
    return round(seconds * 1e3, 3)
