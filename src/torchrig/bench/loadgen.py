"""One process's share of a load level, on one event loop.

Closed loop (`concurrency` N): N workers, each with its own keep-alive connection and one
request in flight; latency runs from send to the end of the response.
Open loop (`rate` R): arrivals at R per second (Poisson, or evenly spaced), handed to
workers that each own a connection; more workers (connections) are opened when every
one is busy, up to `max_connections`. Latency runs from the *scheduled* arrival time, so
a server that stalls is charged for the requests it kept from being sent (no coordinated
omission); sends that left late and arrivals never sent are counted.

Only completions inside the measuring window (after the warm-up) count. The request
bytes were built beforehand: the hot loop only writes them and parses status lines.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

from torchrig.bench.client import Connection, ConnectionFailed, Endpoint, RequestTimeout
from torchrig.bench.histogram import Histogram
from torchrig.bench.results import Level, ProcessResult

LATE_S = 0.005  # an open-loop send this far behind its schedule counts as late
TICK_S = 0.2  # how often progress is reported
CONNECT_RETRY_S = 0.05  # pause before reconnecting after a refused connection


@dataclass(frozen=True)
class LoadPlan:
    """Everything a process needs to make load: where, what (encoded requests), how long."""

    endpoint: Endpoint
    requests: list[bytes]
    warmup_s: float
    duration_s: float
    timeout_s: float = 30.0
    max_connections: int = 1024  # open loop only


class _Window:
    """The measuring window and what was seen in it."""

    def __init__(self, plan: LoadPlan, start: float) -> None:
        self.plan = plan
        self.begin = start + plan.warmup_s
        self.end = self.begin + plan.duration_s
        self.histogram = Histogram()
        self.result = ProcessResult(errors_by_status={}, error_samples={})
        self.completed = 0  # every completion, warm-up included (for progress)

    def error(self, key: str, message: str, done: float) -> None:
        self.completed += 1
        if not self.begin <= done <= self.end:
            return
        errors = self.result.errors_by_status
        errors[key] = errors.get(key, 0) + 1
        if key not in self.result.error_samples:
            self.result.error_samples[key] = message

    def finish(self) -> ProcessResult:
        result, histogram = self.result, self.histogram
        result.latency_buckets = histogram.to_sparse()
        result.latency_sum_s = histogram.sum_s
        result.latency_min_s = histogram.min_s
        result.latency_max_s = histogram.max_s
        return result


async def _exchange(
    window: _Window, connection: Connection | None, raw: bytes, started: float
) -> tuple[Connection | None, float]:
    """Send one request (connecting first if needed) and record its outcome.

    Returns the connection to reuse (None when it broke) and the completion time.
    Latency is measured from `started` (the send, or the scheduled arrival).
    """
    plan = window.plan
    clock = time.monotonic
    try:
        if connection is None or connection.closed:
            connection = await Connection.open(plan.endpoint, plan.timeout_s)
            window.result.connections += 1
        status = await connection.send(raw, plan.timeout_s)
    except ConnectionFailed as exc:
        done = clock()
        window.error("connection", str(exc), done)
        return None, done
    except RequestTimeout as exc:
        done = clock()
        window.error("timeout", str(exc), done)
        return None, done
    done = clock()
    if 200 <= status < 300:
        window.completed += 1
        if window.begin <= done <= window.end:
            window.result.ok += 1
            window.histogram.record(done - started)
    else:
        window.error(str(status), connection.body.decode("utf-8", "replace"), done)
    return connection, done


async def _closed_worker(window: _Window, index: int) -> None:
    requests = window.plan.requests
    clock = time.monotonic
    connection: Connection | None = None
    position = index % len(requests)
    try:
        while clock() < window.end:
            sent = clock()
            connection, _ = await _exchange(window, connection, requests[position], sent)
            position = (position + 1) % len(requests)
            if connection is None:
                await asyncio.sleep(CONNECT_RETRY_S)
    finally:
        if connection is not None:
            connection.close()


class _Arrivals:
    """The open loop's queue of scheduled arrival times and its workers."""

    def __init__(self, window: _Window) -> None:
        self.window = window
        self.queue: asyncio.Queue[float] = asyncio.Queue()
        self.idle = 0
        self.workers: list[asyncio.Task[None]] = []

    def add(self, scheduled: float) -> None:
        self.queue.put_nowait(scheduled)
        if self.queue.qsize() > self.idle and len(self.workers) < self.window.plan.max_connections:
            self.workers.append(asyncio.ensure_future(self._worker(len(self.workers))))

    async def _worker(self, index: int) -> None:
        window = self.window
        requests = window.plan.requests
        clock = time.monotonic
        connection: Connection | None = None
        position = index % len(requests)
        try:
            while True:
                self.idle += 1
                try:
                    scheduled = await self.queue.get()
                finally:
                    self.idle -= 1
                if scheduled >= window.begin and clock() - scheduled > LATE_S:
                    window.result.late += 1
                connection, _ = await _exchange(window, connection, requests[position], scheduled)
                position = (position + 1) % len(requests)
        finally:
            if connection is not None:
                connection.close()


async def _open_loop(window: _Window, level: Level, start: float) -> None:
    rate = level.rate or 0.0
    rng = random.Random(level.seed)
    arrivals = _Arrivals(window)
    clock = time.monotonic

    def gap() -> float:
        return rng.expovariate(rate) if level.arrival == "poisson" else 1.0 / rate

    scheduled = start + level.phase_s
    behind = 0
    try:
        while scheduled < window.end:
            wait = scheduled - clock()
            if wait > 0:
                await asyncio.sleep(wait)
            else:
                behind += 1
                if behind % 16 == 0:
                    await asyncio.sleep(0)  # let the workers run while catching up
            arrivals.add(scheduled)
            if scheduled >= window.begin:
                window.result.scheduled += 1
            scheduled += gap()
        await asyncio.sleep(max(0.0, window.end - clock()))
        window.result.dropped = arrivals.queue.qsize()
    finally:
        for task in arrivals.workers:
            task.cancel()
        await asyncio.gather(*arrivals.workers, return_exceptions=True)


async def run_share(
    plan: LoadPlan,
    level: Level,
    *,
    start: float,
    on_progress: Callable[[int], None] | None = None,
) -> ProcessResult:
    """Make this process's share of `level` from the monotonic time `start` on."""
    await asyncio.sleep(max(0.0, start - time.monotonic()))
    window = _Window(plan, start)
    ticker = asyncio.ensure_future(_tick(window, on_progress)) if on_progress else None
    try:
        if level.rate is not None:
            await _open_loop(window, level, start)
        else:
            workers = [
                asyncio.ensure_future(_closed_worker(window, i))
                for i in range(level.concurrency or 1)
            ]
            # Stop at the window's end: requests still in flight then would only be
            # thrown away, and a stalled server must not hold the run up.
            _, pending = await asyncio.wait(
                workers, timeout=max(0.0, window.end - time.monotonic())
            )
            for task in pending:
                task.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
    finally:
        if ticker is not None:
            ticker.cancel()
    if on_progress is not None:
        on_progress(window.completed)
    return window.finish()


async def _tick(window: _Window, on_progress: Callable[[int], None] | None) -> None:
    while on_progress is not None:
        on_progress(window.completed)
        await asyncio.sleep(TICK_S)


def event_loop_runner() -> Callable[..., object]:
    """`uvloop.run` where uvloop is installed (much faster for this), else `asyncio.run`."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency off Windows
        return asyncio.run
    return uvloop.run
