"""What the dynamic batcher queues and reports: the queued request, a batch's record and
the batcher's counters, and settling each request's future on its own event loop."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import contextvars
import itertools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

Tensors = dict[str, Any]  # name -> torch.Tensor (torch is typed as Any here)


class BatchExecutor(Protocol):
    """What the batcher drives: one call per batch, inputs and outputs by name."""

    def infer(self, inputs: Mapping[str, Any]) -> Tensors: ...


@dataclass(slots=True)
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
    stage: StageTimes | None = None  # filled in for a listener (tracing, the access log)
    gone: Callable[[], bool] | None = None  # True once the caller left (see `client_gone`)


class ClientGone(Exception):
    """A queued request was dropped because its caller went away (`client_gone` said so
    before its batch started); the server catches it and answers nobody."""


class StageTimes:
    """One pass of a listened-to request through a batcher (a pipeline makes several):
    when it queued and the batch it rode in (monotonic ns)."""

    __slots__ = ("batch", "model", "owner", "queued_ns")

    def __init__(self, owner: RequestTimes, model: str, queued_ns: int) -> None:
        self.owner = owner
        self.model = model
        self.queued_ns = queued_ns
        self.batch: BatchTimes | None = None  # set before the request's future resolves


class RequestTimes:
    """What a listener (the server's spans and access log) hands the batcher for one
    request, through `listening`; the batcher appends a `StageTimes` per pass. `tag` is
    the listener's own (the server's trace context), for the batch to name its members."""

    __slots__ = ("stages", "tag")

    def __init__(self, tag: object = None) -> None:
        self.tag = tag
        self.stages: list[StageTimes] = []


class BatchTimes:
    """One batch in which a listened-to request rode (made only then): a process-unique
    id, its rows and requests, the executor call (concatenation included) and when its
    answers were handed back (monotonic ns), and the listened-to members."""

    __slots__ = (
        "_claims",
        "batch_id",
        "compute_end_ns",
        "ended_ns",
        "failed",
        "members",
        "requests",
        "rows",
        "started_ns",
    )

    def __init__(self, rows: int, requests: int, started_ns: int, compute_end_ns: int) -> None:
        self.batch_id = next(_batch_ids)
        self.rows = rows
        self.requests = requests
        self.started_ns = started_ns
        self.compute_end_ns = compute_end_ns
        self.ended_ns = compute_end_ns
        self.failed = False
        self.members: list[RequestTimes] = []
        self._claims = [True]

    def claim(self) -> bool:
        """True for the first caller only (list.pop is atomic): the one member that
        reports the batch itself, e.g. its shared span."""
        try:
            return self._claims.pop()
        except IndexError:
            return False


# the request being queued now wants its times (set by the server around submit; unset,
# the batcher records nothing but reads this once per request)
listening: contextvars.ContextVar[RequestTimes | None] = contextvars.ContextVar(
    "torchrig_listening", default=None
)
# set by the server around submit: a cheap check that the request's client went away (for
# HTTP, its connection closed), made when a batch gathers the request, so that a request
# nobody waits for never takes device time; unset, only a cancelled future drops one
client_gone: contextvars.ContextVar[Callable[[], bool] | None] = contextvars.ContextVar(
    "torchrig_client_gone", default=None
)
_batch_ids = itertools.count(1)  # next() is atomic: ids unique in the process


def listened_stage(model: str, enqueued: float) -> StageTimes | None:
    """On submit: the request's new stage when someone listens, else None."""
    times = listening.get()
    if times is None:
        return None
    stage = StageTimes(times, model, int(enqueued * 1e9))  # time.monotonic() in ns
    times.stages.append(stage)
    return stage


def listened(batch: list[QueuedRequest]) -> bool:
    """Whether someone listens to a request of the batch (a loop, no allocation)."""
    for request in batch:  # noqa: SIM110 - any() would make a generator per batch
        if request.stage is not None:
            return True
    return False


def mark_batch(
    batch: list[QueuedRequest], rows: int, started: float, computed: float
) -> BatchTimes | None:
    """After the executor ran: the batch's times, given to its listened-to requests (None,
    and nothing made, when none listens)."""
    times: BatchTimes | None = None
    for request in batch:
        stage = request.stage
        if stage is None:
            continue
        if times is None:
            times = BatchTimes(rows, len(batch), int(started * 1e9), int(computed * 1e9))
        stage.batch = times
        if stage.owner.tag is not None:  # the traced ones, for the batch's own span
            times.members.append(stage.owner)
    return times


# a request and what it gets: its outputs, or the error of its batch
Outcome = tuple[QueuedRequest, "Tensors | None", "BaseException | None"]


class BatchRecord(NamedTuple):
    """What one batch did, handed to the batcher's observer (metrics) after it ran
    (immutable; a named tuple: made per batch at a fraction of a frozen dataclass's cost)."""

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


def resolve_all(outcomes: list[Outcome], here: asyncio.AbstractEventLoop | None = None) -> None:
    """Hand a batch's outcomes to their loops: one wake-up per loop, not one per request.
    `here`: the event loop this runs on, if the caller knows it (an inline batch)."""
    if here is None:
        try:
            here = asyncio.get_running_loop()
        except RuntimeError:  # a worker thread
            here = None
    if len(outcomes) == 1 and outcomes[0][0].loop is here:
        settle(outcomes)  # a lone request of this loop: settled now
        return
    by_loop: dict[asyncio.AbstractEventLoop, list[Outcome]] = {}
    for outcome in outcomes:
        by_loop.setdefault(outcome[0].loop, []).append(outcome)
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
