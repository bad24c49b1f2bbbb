"""One inference request's timeline, for its access line and its spans, on either transport.

A transport (REST `app.py`, gRPC `grpc/service.py`) calls `RequestTracing.begin` when a
request arrives, takes the stage marks `decoded_ns`, `resumed_ns` (its outputs are back on
the event loop) and `encoded_ns` (monotonic ns) on the way, queues through `submit`, and
calls `finish` once it answered. In between, the batcher records the request's passes
(`runtime.batch_requests.RequestTimes`: when it queued, its batch's id, size and times) --
only for a request someone listens to: one whose access line was picked by the sample, or
whose trace is sampled with OpenTelemetry on. Every other request costs the batcher one
context-variable read and a few stores.

The access line's time split: `decode_ms` (body read and decoded), `queue_ms` (queued until
its batch ran), `compute_ms` (the executor call, concatenation included), `encode_ms` (the
answer encoded), `batch_size` (rows of its batch) and `batch_id` (process-unique: the lines
of one batch's requests share it); a pipeline adds up its members' queue and compute times
and names its last member's batch.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from torchrig.runtime.batch_requests import RequestTimes, listening
from torchrig.server.tracing import SAMPLED, AccessLog, TraceContext

if TYPE_CHECKING:
    from torchrig.server.otel import SpanRecorder

T = TypeVar("T")


class RequestTrace:
    """One request's trace context, whether its line is picked, and its marks."""

    __slots__ = ("context", "decoded_ns", "encoded_ns", "picked", "resumed_ns", "start_ns", "times")

    def __init__(self, context: TraceContext, *, picked: bool, traced: bool) -> None:
        self.context = context
        self.picked = picked
        # the batcher's record, only for a request someone listens to
        self.times = RequestTimes(context if traced else None) if picked or traced else None
        self.start_ns = time.monotonic_ns()
        self.decoded_ns = 0
        self.resumed_ns = 0
        self.encoded_ns = 0

    def submit(self, submit: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Queue through `submit` (the registry's), with the batcher told to record this
        request's times when someone listens."""
        times = self.times
        if times is None:
            return submit(*args, **kwargs)
        token = listening.set(times)
        try:
            return submit(*args, **kwargs)
        finally:
            listening.reset(token)

    def split(self) -> dict[str, float | int]:
        """The access line's time split, from what was reached."""
        found: dict[str, float | int] = {}
        if self.decoded_ns:
            found["decode_ms"] = _ms(self.decoded_ns - self.start_ns)
        stages = self.times.stages if self.times is not None else []
        queued = computed = 0
        last = None
        for stage in stages:
            if stage.batch is not None:
                queued += stage.batch.started_ns - stage.queued_ns
                computed += stage.batch.compute_end_ns - stage.batch.started_ns
                last = stage.batch
        if last is not None:
            found["queue_ms"] = _ms(queued)
            found["compute_ms"] = _ms(computed)
            found["batch_size"] = last.rows
            found["batch_id"] = last.batch_id
        if self.encoded_ns and self.resumed_ns:
            found["encode_ms"] = _ms(self.encoded_ns - self.resumed_ns)
        return found


class RequestTracing:
    """The access log and the span recorder (None: OpenTelemetry off) that both
    transports share."""

    def __init__(self, access_log: AccessLog, spans: SpanRecorder | None) -> None:
        self.access_log = access_log
        self.spans = spans

    def begin(self, context: TraceContext) -> RequestTrace:
        traced = self.spans is not None and bool(context.flags & SAMPLED)
        return RequestTrace(context, picked=self.access_log.pick(), traced=traced)

    def wanted(self, request: RequestTrace, status: int) -> bool:
        """Whether `finish` has anything to do for this request: an access line (picked,
        or a server error) or spans. Most requests have neither, and skip its call."""
        return request.picked or status >= 500 or self.spans is not None

    def finish(
        self,
        request: RequestTrace,
        *,
        request_id: str,
        model: str,
        version: str | None,
        status: int,
        request_bytes: int,
        response_bytes: int,
        duration_s: float,
        transport: str,
    ) -> None:
        """The request's access line (picked, or a server error) and its spans."""
        if request.picked or status >= 500:
            self.access_log.write(
                request_id=request_id,
                trace=request.context,
                model=model,
                version=version,
                status=status,
                request_bytes=request_bytes,
                response_bytes=response_bytes,
                duration_s=duration_s,
                picked=True,
                split=request.split(),
                transport=transport,
            )
        if self.spans is not None:
            self.spans.record(
                request, model=model, version=version, status=status, end_ns=time.monotonic_ns()
            )


def _ms(ns: int) -> float:
    return round(ns / 1e6, 3)
