"""The dynamic batcher: requests gather into batches that fill the device.

Each request owns an asyncio future. Worker threads (one per model instance) take every
request waiting (up to `max_batch_size` rows) as soon as they are free: a request that
finds the model idle runs at once, and those that arrive while a batch runs form the next
one. A batch holds requests of one shape only (their sizes past the batch dimension, which
differ for a model with a dynamic sequence length): it takes the oldest request's shape,
and requests of other shapes keep their place for the next batches, so none starves. A
model that ignores padding (`padding`, torchrig.runtime.padding) has each request padded to
a shape bucket as it queues, so the bucket is its shape, and its answer cut back after.
`max_queue_delay_ms` (0 by default) lets the first request of a batch wait up to that
long for company, an opt-in trade of latency for fuller batches. The inputs are
concatenated once, the executor runs, the outputs are split back by rows and each future
is resolved on its event loop. A full queue refuses at once (503 upstream); a request
whose deadline passed or whose caller went away is dropped before it takes device time.

A model whose largest batch takes under `inline_max_ms` on the CPU runs `inline`: with no
worker thread, its batches run on the event loop that queued them. A request that finds
the model idle (nothing queued or running, no batch yet in this loop iteration, no queue
delay) while requests come one at a time (the last batch had one request) runs at once,
inside its own `submit`: its future is resolved before its handler awaits it, so it costs
no loop round trip. Every other request queues, and its batch runs in a `call_soon`
callback, so that every request parsed in the same loop iteration joins it: under
concurrency, one batch per loop iteration. For such a model the hand-offs between
threads (and the GIL they contend for) cost more than the batch; the rules above (batch
sizes, delays, deadlines, isolation, statistics) hold alike. A batch that takes more than
`INLINE_DEMOTE_FACTOR` times `inline_max_ms` of CPU time moves the model to a worker thread
for good (logged). Other models' work never runs on the event loop.

One request never fails another. A batch that raises is split in halves by requests and
each half retried, down to single requests, so every request the model can answer is
answered. A single request that still fails is the caller's fault (`InputRejected`, 400)
when the model answered another request of the batch or its own known-good example (the
`probe`, e.g. the warm-up inputs); otherwise the model is at fault (`InferenceFailed`,
500, logged and counted). Out of memory is never the requests' fault: a single request's
rows are split in turn, and only a request of which one row does not fit fails
(`InsufficientMemory`, 507). An error that poisons the CUDA context is not retried: it
fails its batch and is reported to `on_device_fault`, so the replica can declare itself
unhealthy.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import math
import threading
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from torchrig.errors import (
    DeadlineExceeded,
    DeviceUnhealthy,
    InferenceFailed,
    InputRejected,
    InsufficientMemory,
    QueueFull,
    RepositoryError,
    TorchrigError,
)
from torchrig.repository.config import BatchingConfig
from torchrig.runtime.batch_requests import (
    BatcherStats,
    BatchExecutor,
    BatchObserver,
    BatchRecord,
    ClientGone,
    DeviceFaultHandler,
    Outcome,
    QueuedRequest,
    Tensors,
    client_gone,
    half_by_rows,
    listened,
    listened_stage,
    listening,
    mark_batch,
    resolve,
    resolve_all,
    shape_key,
)
from torchrig.runtime.faults import free_cached_memory, is_out_of_memory, poisons_device
from torchrig.runtime.rows import concat_rows, describe_inputs
from torchrig.runtime.threads import use_intra_op_threads

if TYPE_CHECKING:
    from torchrig.runtime.padding import Padding

__all__ = [
    "BatchExecutor",
    "BatchObserver",
    "BatchRecord",
    "Batcher",
    "BatcherStats",
    "DeviceFaultHandler",
    "Tensors",
    "concat_rows",
]

log = logging.getLogger(__name__)

# an inline batch that takes this many times `inline_max_ms` moves its model to a thread
INLINE_DEMOTE_FACTOR = 20.0


class Batcher:
    """Wraps an executor (`Batcher(executor, config)`); `await infer(inputs)` per request."""

    def __init__(
        self,
        executor: BatchExecutor,
        config: BatchingConfig,
        *,
        instances: int = 1,
        batching: bool = True,
        name: str = "model",
        threads: int | None = None,
        pin_batches: bool = False,
        observer: BatchObserver | None = None,
        on_device_fault: DeviceFaultHandler | None = None,
        probe: Mapping[str, Any] | None = None,
        inline: bool = False,
        padding: Padding | None = None,
        varying_shapes: bool = True,
    ) -> None:
        self.executor = executor
        self.inline = inline  # batches on the event loop, no worker thread (module doc)
        # known-good inputs (the warm-up example): when a lone request fails, the model
        # running these tells a bad request from a broken model
        self.probe = probe
        # a model that ignores padding (`[padding]`): requests padded to shape buckets, so
        # that different lengths in one bucket share a batch
        self.padding = padding
        # False: every request has the same sizes past the batch (a signature without
        # variable ones, checked before queueing), so shapes need not be compared
        self.varying_shapes = varying_shapes
        self.observer = observer
        self.on_device_fault = on_device_fault
        self.max_batch_size = config.max_batch_size if batching else 1
        self.max_delay_s = config.max_queue_delay_ms / 1000.0 if batching else 0.0
        self.max_queue_size = config.max_queue_size
        self.batching = batching
        self.name = name
        self.threads = threads  # torch intra-op threads per worker (None: as inherited)
        # join a batch's requests in pinned host memory (for a CUDA executor, which then
        # copies it to the device without staging it again)
        self.pin_batches = pin_batches
        self._queue: collections.deque[QueuedRequest] = collections.deque()
        self._queued_rows = 0
        # the queue's lock, entered directly on the request path (a Condition's own
        # __enter__ is a Python call); the condition wakes workers and close()
        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        self._stopping = False
        self._stats = BatcherStats()
        self._batch_time_s = 0.0  # moving average, for Retry-After
        # inline: the next batch's callback on the loop, that loop, and whether it waits
        # for a queue delay; whether a batch is running (close() waits for it)
        self._scheduled: asyncio.Handle | None = None
        self._scheduled_loop: asyncio.AbstractEventLoop | None = None
        self._delayed = False
        self._running_inline = False
        # inline: a batch ran at once in this loop iteration (the callback after it clears
        # this), so the requests that follow it in the iteration queue for the next batch
        self._ran_at_once = False
        self._lone = True  # inline: the last batch had one request (requests come singly)
        self._inline_limit_s = INLINE_DEMOTE_FACTOR * config.inline_max_ms / 1000.0
        self._threads = [
            threading.Thread(target=self._work, name=f"torchrig-{name}-{i}", daemon=True)
            for i in range(0 if inline else max(1, instances))
        ]
        try:
            for thread in self._threads:
                thread.start()
        except RuntimeError as exc:  # the process is out of threads: fail this model only
            wanted = len(self._threads)
            self._stop_started()
            raise RepositoryError(
                f"model {name}: could not start its {wanted} worker threads "
                f"({exc}); lower instances in its config.toml"
            ) from None

    def _stop_started(self) -> None:
        """Stop and join the worker threads that did start (a failed construction)."""
        with self._lock:
            self._stopping = True
            self._cond.notify_all()
        for thread in self._threads:
            if thread.ident is not None:
                thread.join()
        self._threads = []

    # ---- the event-loop side -------------------------------------------------------------

    async def infer(
        self, inputs: Mapping[str, Any], *, rows: int, timeout_s: float | None = None
    ) -> Tensors:
        """Queue one request of `rows` rows; resolves with its own rows of the outputs."""
        return await self.submit(inputs, rows=rows, timeout_s=timeout_s)

    def submit(
        self, inputs: Mapping[str, Any], *, rows: int, timeout_s: float | None = None
    ) -> asyncio.Future[Tensors]:
        """Queue one request now (on the event loop) and return its future; cancelling the
        future (or a task awaiting it) drops the request if its batch has not started."""
        loop = asyncio.get_running_loop()
        crop = None
        if self.padding is not None and self.batching:
            inputs, crop = self.padding.apply(inputs)
        now = time.monotonic()
        request = QueuedRequest(
            inputs,
            rows,
            loop.create_future(),
            loop,
            now,
            None if timeout_s is None else now + timeout_s,
            shape_key(inputs) if self.batching and self.varying_shapes else (),
            crop,
            None if listening.get() is None else listened_stage(self.name, now),
            client_gone.get(),
        )
        alone: list[QueuedRequest] | None = None
        with self._lock:
            if self._stopping:
                raise QueueFull(f"model {self.name} is shutting down", retry_after_s=1.0)
            if len(self._queue) >= self.max_queue_size:
                self._stats.rejected += 1
                raise QueueFull(
                    f"model {self.name}: queue full ({self.max_queue_size} requests waiting)",
                    retry_after_s=self._retry_after(),
                )
            if (
                self.inline  # no worker thread waits
                and self._lone
                and not self._queue
                and self._scheduled is None
                and not self._running_inline
                and not self._ran_at_once
                and self.max_delay_s <= 0
            ):
                # the model is idle: this request's batch runs now, without queueing
                if self._skip(request):  # e.g. its deadline already passed: answered
                    return request.future
                self._ran_at_once = self._running_inline = True
                alone = [request]
            else:
                self._queue.append(request)
                self._queued_rows += rows
                if self.inline:
                    self._schedule(loop)
                # wake a worker only when it has something to do: an idle worker (the queue
                # was empty) or a gathering one whose batch is now full; the delay wakes it
                # otherwise
                elif len(self._queue) == 1 or self._queued_rows >= self.max_batch_size:
                    self._cond.notify()
        if alone is not None:  # (module doc)
            self._run_on_loop(alone, loop)
        return request.future

    def drop_abandoned(self) -> int:
        """Drop now, not when a batch would gather them, the queued requests `_skip` drops
        (the caller left: future cancelled or `client_gone`'s check true; the deadline
        passed): their queue slots free up and their callers get their answer. Returns
        how many (the server sweeps every `torchrig.server.runner.ABANDONED_SWEEP_S`)."""
        with self._lock:
            if not self._queue:
                return 0
            kept: collections.deque[QueuedRequest] = collections.deque()
            for request in self._queue:
                if self._skip(request):
                    self._queued_rows -= request.rows
                else:
                    kept.append(request)
            dropped = len(self._queue) - len(kept)
            if dropped:
                self._queue = kept
            return dropped

    def _retry_after(self) -> float:
        waiting_batches = math.ceil(len(self._queue) / max(1, self.max_batch_size))
        estimate = waiting_batches * max(self._batch_time_s, 0.001) / max(1, len(self._threads))
        return max(1.0, math.ceil(estimate))

    @property
    def accepting(self) -> bool:
        """False once `close()` began: new requests are refused, queued ones still run."""
        return not self._stopping

    def stats(self) -> BatcherStats:
        with self._lock:
            copy = BatcherStats(**vars(self._stats))
            copy.batch_sizes = collections.Counter(self._stats.batch_sizes)
            copy.queue_depth = len(self._queue)
            return copy

    def close(self, *, timeout_s: float = 30.0) -> None:
        """Stop accepting, let the workers drain what is queued, then join them."""
        with self._lock:
            self._stopping = True
            self._cond.notify_all()
        deadline = time.monotonic() + timeout_s
        for thread in list(self._threads):
            thread.join(max(0.0, deadline - time.monotonic()))
        if self.inline:
            self._drain_inline(deadline)
        with self._lock:
            leftover = list(self._queue)
            self._queue.clear()
            self._queued_rows = 0
        for request in leftover:
            resolve(request, error=QueueFull(f"model {self.name} was unloaded"))

    # ---- inline: batches on the event loop -------------------------------------------------

    def _schedule(self, loop: asyncio.AbstractEventLoop) -> None:
        """Have `loop` run the next batch in its next iteration, so that the requests queued
        in this one join it; with a queue delay, once the oldest request has waited it or
        the batch is full (lock held)."""
        if self._scheduled is not None:
            owner = self._scheduled_loop
            if owner is not loop and owner is not None and owner.is_running():
                return  # another running loop has the next batch: it takes this one too
            if owner is loop and not (self._delayed and self._queued_rows >= self.max_batch_size):
                return  # due in the next iteration, or a delay with room left in the batch
            self._scheduled.cancel()  # a delay cut short by a full batch, or a dead loop
        wait = 0.0
        if self.max_delay_s > 0 and self._queue and self._queued_rows < self.max_batch_size:
            wait = self._queue[0].enqueued + self.max_delay_s - time.monotonic()
        self._delayed = wait > 0
        self._scheduled_loop = loop
        if wait > 0:
            self._scheduled = loop.call_later(wait, self._run_inline, loop)
        else:
            self._scheduled = loop.call_soon(self._run_inline, loop)

    def _run_inline(self, loop: asyncio.AbstractEventLoop) -> None:
        """On the event loop: run one batch of what is queued; schedule the next if more
        waits (a later iteration, so the loop serves its sockets in between)."""
        with self._lock:
            self._scheduled = None
            batch: list[QueuedRequest] = []
            self._gather(batch, 0)
            self._running_inline = True
            self._lone = len(batch) <= 1
        self._run_on_loop(batch, loop)

    def _run_on_loop(self, batch: list[QueuedRequest], loop: asyncio.AbstractEventLoop) -> None:
        """Run a batch taken for the event loop (the caller set `_running_inline`), then
        schedule the next batch if requests wait."""
        try:
            if batch:
                # CPU time of this thread: what the batch cost the loop, not what other
                # processes took from it meanwhile (on a busy machine, wall time would
                # move a fast model off the loop)
                started = time.thread_time()
                self._run(batch, loop)
                if (spent := time.thread_time() - started) > self._inline_limit_s:
                    self._leave_loop(spent)
        except Exception as exc:  # a loop callback: its requests must still be answered
            log.exception("model %s: an inline batch failed", self.name)
            error = InferenceFailed(f"model {self.name}: {type(exc).__name__}: {exc}")
            resolve_all([(r, None, error) for r in batch])
        finally:
            with self._lock:
                self._running_inline = False
                if self._queue and self.inline:
                    self._schedule(loop)
                if self._stopping:  # close() may wait for the queue to drain
                    self._cond.notify_all()

    def _leave_loop(self, elapsed_s: float) -> None:
        """A batch blocked the event loop far longer than measured at load: from now on
        this model's batches run on a worker thread."""
        log.warning(
            "model %s: a batch took %.1f ms of CPU on the event loop (over %g x inline_max_ms); "
            "its batches run on a worker thread from now on",
            self.name,
            elapsed_s * 1000,
            INLINE_DEMOTE_FACTOR,
        )
        with self._lock:
            self.inline = False
            if self._scheduled is not None:
                self._scheduled.cancel()
                self._scheduled = None
            worker = threading.Thread(target=self._work, name=f"torchrig-{self.name}-0")
            worker.daemon = True
            self._threads.append(worker)
            worker.start()
            self._cond.notify()

    def _drain_inline(self, deadline: float) -> None:
        """close(): let the loop run what is queued, or run it here when this thread is
        that loop's, or that loop no longer runs."""
        try:
            here: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            here = None
        with self._lock:
            while self._queue or self._running_inline:
                loop = self._scheduled_loop
                if loop is None or loop is here or not loop.is_running():
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return
                self._cond.wait(min(remaining, 0.1))  # re-check that the loop still runs
            if self._scheduled is not None:
                self._scheduled.cancel()
                self._scheduled = None
        while time.monotonic() < deadline:
            with self._lock:
                batch: list[QueuedRequest] = []
                self._gather(batch, 0)
                if not batch and not self._queue:
                    return
            if batch:
                self._run(batch)

    # ---- the worker side -----------------------------------------------------------------

    def _take_batch(self) -> list[QueuedRequest] | None:
        """Block until a batch is ready; None when stopping with nothing queued."""
        with self._lock:
            while not self._queue:
                if self._stopping:
                    return None
                self._cond.wait()
            batch: list[QueuedRequest] = []
            rows = 0
            first = self._queue[0].enqueued
            while True:
                rows, full = self._gather(batch, rows)
                remaining = first + self.max_delay_s - time.monotonic()
                if full or remaining <= 0 or self._stopping:
                    break
                self._cond.wait(remaining)
            return batch

    def _gather(self, batch: list[QueuedRequest], rows: int) -> tuple[int, bool]:
        """Move queued requests of the batch's shape into it while they fit (lock held);
        return its rows and whether it is full. The batch takes the shape of its first
        request, the oldest waiting; requests of other shapes keep their place in the queue,
        so each shape's oldest request leads a batch in turn and no shape starves."""
        key = batch[0].shape_key if batch else None
        others: list[QueuedRequest] = []  # other shapes, in arrival order
        full = False
        while self._queue:
            head = self._queue.popleft()
            if key is not None and head.shape_key != key:
                others.append(head)
                continue
            if batch and rows + head.rows > self.max_batch_size:
                others.append(head)
                full = True
                break
            self._queued_rows -= head.rows
            if self._skip(head):
                continue
            batch.append(head)
            rows += head.rows
            key = head.shape_key
            if rows >= self.max_batch_size:
                full = True
                break
        self._queue.extendleft(reversed(others))
        return rows, full

    def _skip(self, request: QueuedRequest) -> bool:
        """Drop a request whose caller left (its future cancelled, or `client_gone`'s check
        true) or whose deadline passed (lock held)."""
        if request.future.cancelled():
            self._stats.cancelled += 1
            return True
        if request.gone is not None and request.gone():
            self._stats.cancelled += 1
            resolve(request, error=ClientGone(f"model {self.name}: the client went away"))
            return True
        if request.deadline is not None and time.monotonic() > request.deadline:
            self._stats.expired += 1
            resolve(
                request,
                error=DeadlineExceeded(
                    f"model {self.name}: the request's deadline passed while it waited in the queue"
                ),
            )
            return True
        return False

    def _work(self) -> None:
        if self.threads is not None:
            use_intra_op_threads(self.threads)
        while True:
            batch = self._take_batch()
            if batch is None:
                return
            if batch:
                self._run(batch)

    def _run(
        self, batch: list[QueuedRequest], loop: asyncio.AbstractEventLoop | None = None
    ) -> None:
        """Run a batch and answer its requests. Given the event loop the batch runs on
        (inline), the observer runs in a callback after them: the handlers this batch
        resumes send their answers first (the observer's metrics cost a small batch as much
        as the rest of its bookkeeping), and nothing reads the metrics in between."""
        started = time.monotonic()
        rows = batch[0].rows if len(batch) == 1 else sum(r.rows for r in batch)
        outcomes = self._execute(batch)
        # for the requests someone listens to (spans, access log): the batch's times
        times = mark_batch(batch, rows, started, time.monotonic()) if listened(batch) else None
        failed = False
        for outcome in outcomes:
            if outcome[2] is not None:
                failed = True
                outcomes = self._judge(outcomes)
                break
        if self.padding is not None:  # padded requests get their own sizes back
            outcomes = [
                (request, request.crop(result) if request.crop and result else result, error)
                for request, result, error in outcomes
            ]
        elapsed = self._count(rows, len(batch), started, failed=failed)
        if times is not None:
            times.ended_ns, times.failed = times.started_ns + int(elapsed * 1e9), failed
        resolve_all(outcomes, loop)
        if loop is not None:
            loop.call_soon(self._after_inline, batch, rows, started, elapsed, failed)
        else:
            self._observe(batch, rows, started, elapsed, failed)

    def _after_inline(
        self, batch: list[QueuedRequest], rows: int, started: float, elapsed: float, failed: bool
    ) -> None:
        """After an inline batch, once the loop ran what was ready meanwhile (the handlers
        it resumed; the requests parsed in the same iteration, which queued): a request may
        run at once again, and the observer sees the batch."""
        self._ran_at_once = False
        self._observe(batch, rows, started, elapsed, failed)

    def _execute(self, batch: list[QueuedRequest]) -> list[Outcome]:
        """Run a batch; a failure splits it by requests (never raises). A single request
        that fails keeps its raw exception, which `_judge` then names."""
        if len(batch) == 1:
            request = batch[0]
            try:
                return [(request, self._infer_rows(request.inputs, request.rows), None)]
            except Exception as exc:
                return self._failed(batch, exc)
        try:
            outputs = self.executor.infer(
                concat_rows([r.inputs for r in batch], pin=self.pin_batches)
            )
        except Exception as exc:
            if poisons_device(exc):  # the context is gone: retrying would only fail again
                return self._failed(batch, exc)
            if is_out_of_memory(exc):
                self._out_of_memory(sum(r.rows for r in batch), len(batch))
            else:
                with self._lock:
                    self._stats.isolation_splits += 1
            cut = half_by_rows(batch)
            return self._execute(batch[:cut]) + self._execute(batch[cut:])
        outcomes: list[Outcome] = []
        offset = 0
        for request in batch:
            end = offset + request.rows
            outcomes.append((request, {k: v[offset:end] for k, v in outputs.items()}, None))
            offset = end
        return outcomes

    def _judge(self, outcomes: list[Outcome]) -> list[Outcome]:
        """Name the raw failures of single requests: the caller's inputs (400) when the
        model answered another request or its probe, else the model's fault (500)."""
        suspects = [
            i
            for i, (_, _, error) in enumerate(outcomes)
            if error is not None and not isinstance(error, TorchrigError)
        ]
        if not suspects:
            return outcomes
        model_works = any(error is None for _, _, error in outcomes) or self._probe_passes()
        judged = list(outcomes)
        for index in suspects:
            request, _, error = outcomes[index]
            what = f"{type(error).__name__}: {error}"
            verdict: TorchrigError
            if model_works:
                verdict = InputRejected(
                    f"model {self.name} failed on this request's inputs "
                    f"({describe_inputs(request.inputs)}) while it answered others: {what}. "
                    "Check the values against what the model accepts (e.g. index ranges)."
                )
            else:
                verdict = InferenceFailed(
                    f"model {self.name} fails on every input it is given"
                    + (", its own warm-up example included" if self.probe is not None else "")
                    + f": {what}"
                )
            judged[index] = (request, None, verdict)
        with self._lock:
            if model_works:
                self._stats.rejected_inputs += len(suspects)
            else:
                self._stats.model_faults += len(suspects)
        if not model_works:
            log.error("model %s: the model failed on every input: %s", self.name, what)
        return judged

    def _probe_passes(self) -> bool:
        """Whether the model answers its known-good example (False when it has none)."""
        if self.probe is None:
            return False
        try:
            self.executor.infer(self.probe)
        except Exception:
            return False
        return True

    def _infer_rows(self, inputs: Mapping[str, Any], rows: int) -> Tensors:
        """One request's inputs; out of memory splits its rows in halves (raises the OOM
        of a single row, or of a model without a batch dimension)."""
        try:
            return self.executor.infer(inputs)
        except Exception as exc:
            if not is_out_of_memory(exc) or rows < 2 or not self.batching:
                raise
        self._out_of_memory(rows, 1)
        half = rows // 2
        first = self._infer_rows({k: v[:half] for k, v in inputs.items()}, half)
        second = self._infer_rows({k: v[half:] for k, v in inputs.items()}, rows - half)
        return concat_rows([first, second])

    def _out_of_memory(self, rows: int, requests: int) -> None:
        free_cached_memory()
        with self._lock:
            self._stats.oom_splits += 1
        log.warning(
            "model %s: out of device memory on %d rows (%d requests); retrying in halves",
            self.name,
            rows,
            requests,
        )

    def _failed(self, batch: list[QueuedRequest], exc: Exception) -> list[Outcome]:
        """Every request of a failed batch gets the error: named here for out of memory
        and a poisoned device, raw otherwise (for `_judge`)."""
        rows = sum(r.rows for r in batch)
        error: Exception = exc
        if is_out_of_memory(exc):
            with self._lock:
                self._stats.oom_failures += len(batch)
            error = InsufficientMemory(
                f"model {self.name}: out of device memory even for a single row of a request "
                f"of {rows} row{'' if rows == 1 else 's'}. Lower batching.max_batch_size or "
                "instances in the model's "
                "config.toml, serve fewer models on this device, or use one with more memory."
            )
        elif poisons_device(exc):
            with self._lock:
                self._stats.device_faults += 1
            error = DeviceUnhealthy(
                f"model {self.name}: the device failed ({type(exc).__name__}: {exc}); it is "
                "out of service until the server restarts (other GPUs, if any, keep "
                "serving); retry the request."
            )
            if self.on_device_fault is not None:
                try:
                    self.on_device_fault(exc)
                except Exception:  # reporting must never take a worker down
                    log.exception("model %s: the device fault handler failed", self.name)
        return [(r, None, error) for r in batch]

    def _observe(
        self, batch: list[QueuedRequest], rows: int, started: float, elapsed: float, failed: bool
    ) -> None:
        """Tell the observer, after the callers were answered; its faults are only logged."""
        if self.observer is None:
            return
        if len(batch) == 1:
            waits = [started - batch[0].enqueued]
        else:
            waits = [started - r.enqueued for r in batch]
        record = BatchRecord(rows, len(batch), waits, elapsed, failed)
        try:
            self.observer(record)
        except Exception:  # metrics must never take a worker down
            log.exception("model %s: the batch observer failed", self.name)

    def _count(self, rows: int, requests: int, started: float, *, failed: bool) -> float:
        elapsed = time.monotonic() - started
        with self._lock:
            stats = self._stats
            stats.batches += 1
            stats.rows += rows
            stats.requests += requests
            stats.batch_sizes[rows] += 1
            if failed:
                stats.failed_batches += 1
            self._batch_time_s = (
                elapsed if not self._batch_time_s else (0.9 * self._batch_time_s + 0.1 * elapsed)
            )
        return elapsed
