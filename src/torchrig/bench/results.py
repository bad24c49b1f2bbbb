"""Results of a load level: what one process measured, and the merged report of all of them.

A process sends its latency histogram (sparse buckets), never its percentiles; the merged
report adds the buckets and reads percentiles from the sum.
"""

from __future__ import annotations

import math

import msgspec

from torchrig.bench.histogram import Histogram, LatencySummary

SAMPLE_CHARS = 300  # of an error message kept in the report


class Level(msgspec.Struct, frozen=True, kw_only=True):
    """One load level: closed loop (`concurrency` requests in flight) or open loop (`rate`
    arrivals per second, Poisson or evenly spaced, starting `phase_s` after the start)."""

    concurrency: int | None = None
    rate: float | None = None
    arrival: str = "poisson"
    phase_s: float = 0.0
    seed: int = 0


class ProcessResult(msgspec.Struct, kw_only=True):
    """What one process measured in the window (completions between its start and end)."""

    ok: int = 0
    errors_by_status: dict[str, int] = {}
    error_samples: dict[str, str] = {}
    latency_buckets: dict[int, int] = {}
    latency_sum_s: float = 0.0
    latency_min_s: float = math.inf
    latency_max_s: float = 0.0
    scheduled: int = 0  # open loop: arrivals scheduled in the window
    late: int = 0  # open loop: sent more than LATE_S after their scheduled time
    dropped: int = 0  # open loop: never sent (no connection free before the window ended)
    connections: int = 0  # connections opened

    def histogram(self) -> Histogram:
        return Histogram.from_sparse(
            self.latency_buckets,
            sum_s=self.latency_sum_s,
            min_s=self.latency_min_s,
            max_s=self.latency_max_s,
        )


class LevelResult(msgspec.Struct, frozen=True, kw_only=True):
    """The report of one level, merged over every process that ran it."""

    concurrency: int | None
    rate: float | None
    arrival: str | None
    processes: int
    duration_s: float
    requests: int  # completed in the window: ok + errors
    ok: int
    errors: int
    errors_by_status: dict[str, int]
    error_samples: dict[str, str]
    requests_per_s: float  # successful requests per second
    rows_per_s: float
    latency_ms: LatencySummary  # of successful requests; open loop: from the scheduled time
    scheduled: int | None
    late: int | None
    dropped: int | None
    connections: int


def merge(
    level: Level, parts: list[ProcessResult], *, duration_s: float, rows_per_request: int
) -> LevelResult:
    """Add the processes' counts and histograms into one report."""
    histogram = Histogram()
    errors: dict[str, int] = {}
    samples: dict[str, str] = {}
    for part in parts:
        histogram.merge(part.histogram())
        for key, n in part.errors_by_status.items():
            errors[key] = errors.get(key, 0) + n
        for key, text in part.error_samples.items():
            samples.setdefault(key, error_text(text)[:SAMPLE_CHARS])
    ok = sum(p.ok for p in parts)
    n_errors = sum(errors.values())
    open_loop = level.rate is not None
    return LevelResult(
        concurrency=level.concurrency,
        rate=level.rate,
        arrival=level.arrival if open_loop else None,
        processes=len(parts),
        duration_s=duration_s,
        requests=ok + n_errors,
        ok=ok,
        errors=n_errors,
        errors_by_status=dict(sorted(errors.items())),
        error_samples=dict(sorted(samples.items())),
        requests_per_s=round(ok / duration_s, 2),
        rows_per_s=round(ok * rows_per_request / duration_s, 2),
        latency_ms=histogram.summary(),
        scheduled=sum(p.scheduled for p in parts) if open_loop else None,
        late=sum(p.late for p in parts) if open_loop else None,
        dropped=sum(p.dropped for p in parts) if open_loop else None,
        connections=sum(p.connections for p in parts),
    )


def error_text(body: str) -> str:
    """The message of a V2 error body (`{"error": "..."}`), else the body itself."""
    try:
        decoded = msgspec.json.decode(body)
    except msgspec.DecodeError:
        return body or "(empty body)"
    if isinstance(decoded, dict) and isinstance(decoded.get("error"), str):
        return str(decoded["error"])
    return body


def split_level(level: Level, processes: int) -> list[Level]:
    """The share of each process: concurrency spread as evenly as it goes (a process with
    nothing to do gets none), a rate divided evenly, with evenly spaced phases so fixed
    interval arrivals of all processes interleave."""
    if level.concurrency is not None:
        base, extra = divmod(level.concurrency, processes)
        shares = [base + (1 if i < extra else 0) for i in range(processes)]
        return [
            Level(concurrency=n, seed=level.seed * 1000 + i) for i, n in enumerate(shares) if n > 0
        ]
    if level.rate is None:
        raise ValueError("a level has a concurrency or a rate")
    return [
        Level(
            rate=level.rate / processes,
            arrival=level.arrival,
            phase_s=i / level.rate,
            seed=level.seed * 1000 + i,
        )
        for i in range(processes)
    ]
