"""What the dynamic batcher queues and reports: the queued request, a batch's record and
the batcher's counters, and settling each request's future on its own event loop."""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

Tensors = dict[str, Any]  # name -> torch.Tensor (torch is typed as Any here)


class BatchExecutor(Protocol):
    """What the batcher drives: one call per batch, inputs and outputs by name."""

    def infer(self, inputs: Mapping[str, Any]) -> Tensors: ...


@dataclass
class QueuedRequest:
    """One request waiting for (or in) a batch: its inputs, its future and its loop."""

    inputs: Mapping[str, Any]
    rows: int
    future: asyncio.Future[Tensors]
    loop: asyncio.AbstractEventLoop
    enqueued: float  # time.monotonic()
    deadline: float | None  # time.monotonic() or None
    # the inputs' sizes past the batch dimension: only requests of one shape form a batch
    shape_key: tuple[tuple[str, tuple[int, ...]], ...] = ()
    crop: Callable[[Tensors], Tensors] | None = None  # cuts a padded request's outputs back


# a request and what it gets: its outputs, or the error of its batch
Outcome = tuple[QueuedRequest, "Tensors | None", "BaseException | None"]


@dataclass(frozen=True)
class BatchRecord:
    """What one batch did, handed to the batcher's observer (metrics) after it ran."""

    rows: int
    requests: int
    queue_waits_s: list[float]  # per request: batch start - enqueued (monotonic)
    compute_s: float  # the executor call, concatenation included
    failed: bool


BatchObserver = Callable[[BatchRecord], None]
DeviceFaultHandler = Callable[[BaseException], None]


@dataclass
class BatcherStats:
    """Counters a test or a metrics exporter can read (copied under the lock)."""

    batches: int = 0
    rows: int = 0
    requests: int = 0
    failed_batches: int = 0
    expired: int = 0
    cancelled: int = 0
    rejected: int = 0
    oom_splits: int = 0  # batches (or requests) split in halves after out of memory
    oom_failures: int = 0  # requests failed because one row did not fit
    device_faults: int = 0  # batches that failed with an error poisoning the device
    isolation_splits: int = 0  # failed batches split in halves to find the failing requests
    rejected_inputs: int = 0  # requests the model failed on while it answered others
    model_faults: int = 0  # requests failed because the model failed on everything
    batch_sizes: collections.Counter[int] = field(default_factory=collections.Counter)
    queue_depth: int = 0


def shape_key(inputs: Mapping[str, Any]) -> tuple[tuple[str, tuple[int, ...]], ...]:
    """Each input's sizes past the batch dimension, by name: requests with equal keys can
    be concatenated along the batch (different sequence lengths cannot)."""
    return tuple(
        sorted((name, tuple(getattr(value, "shape", ())[1:])) for name, value in inputs.items())
    )


def half_by_rows(batch: list[QueuedRequest]) -> int:
    """Where to cut a batch of >= 2 requests so that each part has about half the rows."""
    total = sum(r.rows for r in batch)
    seen = 0
    for index, request in enumerate(batch[:-1]):
        seen += request.rows
        if seen * 2 >= total:
            return index + 1
    return len(batch) - 1


def settle(outcomes: list[Outcome]) -> None:
    """On the event loop: settle each future that is still waiting."""
    for request, result, error in outcomes:
        if request.future.done():
            continue
        if error is not None:
            request.future.set_exception(error)
        else:
            request.future.set_result(result or {})


def resolve_all(outcomes: list[Outcome]) -> None:
    """Hand a batch's outcomes to their loops: one wake-up per loop, not one per request."""
    by_loop: dict[asyncio.AbstractEventLoop, list[Outcome]] = {}
    for outcome in outcomes:
        by_loop.setdefault(outcome[0].loop, []).append(outcome)
    try:
        here: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
    except RuntimeError:  # a worker thread
        here = None
    for loop, items in by_loop.items():
        if loop is here:  # an inline batch: settle them now, no wake-up needed
            settle(items)
            continue
        with contextlib.suppress(RuntimeError):  # the caller's loop is closed: nobody waits
            loop.call_soon_threadsafe(settle, items)


def resolve(
    request: QueuedRequest, *, result: Tensors | None = None, error: BaseException | None = None
) -> None:
    resolve_all([(request, result, error)])
