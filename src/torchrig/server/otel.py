"""OpenTelemetry spans of inference requests, when the OTEL_* variables ask for them.

Optional: with `opentelemetry-sdk` and its OTLP/HTTP exporter installed (the `otel`
extra) and an OTLP endpoint set (`OTEL_EXPORTER_OTLP_ENDPOINT` or
`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, and `OTEL_TRACES_EXPORTER` not "none"), each request
becomes a server span -- with the id the answer's `traceparent` names, so the caller's
trace continues into it -- with child spans `decode`, then per pass through a batcher
(one; a pipeline makes one per member) `queue_wait` and `batch` (attributes
`torchrig.batch.size` in rows, `.requests`, `.id`, and `torchrig.batcher`: model/version)
with its child `compute` (the executor call, concatenation included), then `encode`.
Spans are built after the request from monotonic timestamps taken on the way, and handed
to the SDK's batch processor, which exports them off the request path. Without the extra
or the variables nothing is imported and nothing is recorded.

A batch serves several requests, each in its own trace, and a span has one parent: so the
batch is a span of its own, `batch <model>`, the root of a trace of its own, reported
once (by the first of its traced requests to finish). Each request's `batch` span links
to it, and it links back to the server span of each traced request that rode in it (up
to `MAX_LINKS`). Jaeger and Grafana Tempo show a span's links in its details, with a
click through to the linked trace: from a slow request one gets to its batch (size,
compute time, the other requests), and from the batch to every request -- the fan-in
that the OpenTelemetry specification gives as the use of links.
"""

from __future__ import annotations

import atexit
import logging
import os
import random
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from torchrig.server.tracing import SAMPLED, TraceContext

if TYPE_CHECKING:
    from torchrig.runtime.batch_requests import BatchTimes
    from torchrig.server.request_trace import RequestTrace

log = logging.getLogger("torchrig.server")

MAX_LINKS = 128  # the SDK's default span link limit (OTEL_SPAN_LINK_COUNT_LIMIT)


def wanted(environ: Mapping[str, str]) -> bool:
    endpoint = environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or environ.get(
        "OTEL_EXPORTER_OTLP_ENDPOINT"
    )
    exporter = environ.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower()
    disabled = environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true"
    return bool(endpoint) and exporter != "none" and not disabled


def root_ratio(environ: Mapping[str, str]) -> float:
    """The share of new traces to sample, from OTEL_TRACES_SAMPLER(_ARG): the ratio of
    (parentbased_)traceidratio, 0 for (parentbased_)always_off, else 1. A caller's
    decision (its traceparent's sampled flag) is always followed."""
    sampler = environ.get("OTEL_TRACES_SAMPLER", "parentbased_always_on").strip().lower()
    if sampler.endswith("always_off"):
        return 0.0
    if sampler.endswith("traceidratio"):
        try:
            return min(max(float(environ.get("OTEL_TRACES_SAMPLER_ARG", "1")), 0.0), 1.0)
        except ValueError:
            log.warning("OTEL_TRACES_SAMPLER_ARG is not a number: sampling every trace")
    return 1.0


class SpanRecorder:
    """Builds each request's spans and hands them to a batch span processor."""

    def __init__(self, processor: Any, resource: Any, scope: Any, root_ratio: float = 1.0) -> None:
        self._processor = processor
        self._resource = resource
        self._scope = scope
        self.root_ratio = root_ratio  # the share of new traces (no caller's) sampled
        self._salt = random.getrandbits(128)  # shared batch spans' ids: salt + batch id

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> SpanRecorder | None:
        """A recorder when the OTEL_* variables ask for one and the SDK is installed."""
        environ = os.environ if environ is None else environ
        if not wanted(environ):
            return None
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
            from opentelemetry.sdk.resources import Resource
            from opentelemetry.sdk.trace.export import BatchSpanProcessor
            from opentelemetry.sdk.util.instrumentation import InstrumentationScope
        except ImportError:
            log.warning(
                "OTEL_* variables ask for traces, but the OpenTelemetry SDK is missing: "
                "pip install 'torchrig[otel]'; serving without spans"
            )
            return None
        from torchrig import __version__

        resource = Resource.create({"service.name": environ.get("OTEL_SERVICE_NAME", "torchrig")})
        processor = BatchSpanProcessor(OTLPSpanExporter())  # the exporter reads OTEL_*
        atexit.register(processor.shutdown)  # flush what is queued when the process ends
        scope = InstrumentationScope("torchrig", __version__)
        return cls(processor, resource, scope, root_ratio(environ))

    def record(
        self,
        request: RequestTrace,
        *,
        model: str,
        version: str | None,
        status: int,
        end_ns: int,
    ) -> None:
        """The request's server span and its stage spans (and its batches' shared spans
        not reported yet), queued for export; none when its trace is not sampled."""
        trace = request.context
        if not trace.flags & SAMPLED:
            return
        from opentelemetry.trace import Link, SpanContext, SpanKind, TraceFlags
        from opentelemetry.trace.status import Status, StatusCode

        wall = time.time_ns() - time.monotonic_ns()  # monotonic -> wall-clock ns
        trace_id, flags = int(trace.trace_id, 16), TraceFlags(trace.flags)
        server = SpanContext(trace_id, int(trace.span_id, 16), False, flags)
        parent = None
        if trace.parent_id is not None:
            parent = SpanContext(trace_id, int(trace.parent_id, 16), True, flags)
        attributes: dict[str, Any] = {"torchrig.model": model, "http.response.status_code": status}
        if version is not None:
            attributes["torchrig.model_version"] = version
        failed = Status(StatusCode.ERROR) if status >= 500 else Status(StatusCode.UNSET)
        self._span(f"infer {model}", server, parent, request.start_ns + wall, end_ns + wall,
                   attributes=attributes, kind=SpanKind.SERVER, status=failed)  # fmt: skip

        def child(name: str, begin: int, finish: int, under: Any = server, **extra: Any) -> Any:
            context = SpanContext(trace_id, _span_id(), False, flags)
            self._span(name, context, under, begin + wall, finish + wall, **extra)
            return context

        if request.decoded_ns:
            child("decode", request.start_ns, request.decoded_ns)
        stages = request.times.stages if request.times is not None else []
        for index, stage in enumerate(stages):
            # a stage ends where the next one queued, the last where the request resumed
            after = stages[index + 1].queued_ns if index + 1 < len(stages) else 0
            after = after or request.resumed_ns or end_ns
            batch = stage.batch
            if batch is None:  # dropped in the queue (deadline, cancelled, shutdown)
                where = {"torchrig.batcher": stage.model}
                child("queue_wait", stage.queued_ns, after, attributes=where)
                continue
            child("queue_wait", stage.queued_ns, batch.started_ns)
            shared = self._batch_context(batch)
            context = child(
                "batch",
                batch.started_ns,
                max(after, batch.started_ns),
                attributes=_batch_attributes(batch, stage.model),
                links=[Link(shared)],
                status=Status(StatusCode.ERROR) if batch.failed else Status(StatusCode.UNSET),
            )
            child("compute", batch.started_ns, batch.compute_end_ns, under=context)
            if batch.claim():
                self._report_batch(batch, stage.model, shared, wall)
        if request.encoded_ns and request.resumed_ns:
            child("encode", request.resumed_ns, request.encoded_ns)

    def _batch_context(self, batch: BatchTimes) -> Any:
        """The shared batch span's context: derived from the process-unique batch id, so
        every member names the same span without coordinating."""
        from opentelemetry.trace import SpanContext, TraceFlags

        trace_id = (self._salt + batch.batch_id) % (1 << 128) or 1
        span_id = (self._salt + batch.batch_id) % (1 << 64) or 1
        return SpanContext(trace_id, span_id, False, TraceFlags(SAMPLED))

    def _report_batch(self, batch: BatchTimes, model: str, context: Any, wall: int) -> None:
        from opentelemetry.trace import Link, SpanContext, TraceFlags
        from opentelemetry.trace.status import Status, StatusCode

        links = []
        for member in batch.members:
            traced = member.tag
            if isinstance(traced, TraceContext) and traced.flags & SAMPLED:
                server = SpanContext(
                    int(traced.trace_id, 16), int(traced.span_id, 16), False, TraceFlags(SAMPLED)
                )
                links.append(Link(server))
                if len(links) == MAX_LINKS:
                    break
        batch.members.clear()  # reported: no cycle (batch -> member -> stage -> batch) to keep
        self._span(
            f"batch {model}",
            context,
            None,
            batch.started_ns + wall,
            batch.ended_ns + wall,
            attributes=_batch_attributes(batch, model),
            links=links,
            status=Status(StatusCode.ERROR) if batch.failed else Status(StatusCode.UNSET),
        )

    def _span(
        self,
        name: str,
        context: Any,
        parent: Any,
        start: int,
        end: int,
        *,
        attributes: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> None:
        """One finished span (wall-clock ns), to the processor."""
        from opentelemetry.sdk.trace import ReadableSpan

        span = ReadableSpan(
            name,
            context=context,
            parent=parent,
            resource=self._resource,
            attributes=attributes or {},
            start_time=start,
            end_time=max(end, start),
            instrumentation_scope=self._scope,
            **options,
        )
        self._processor.on_end(span)

    def shutdown(self) -> None:
        self._processor.shutdown()


def _span_id() -> int:
    return random.getrandbits(64) or 1  # as the SDK makes them (see tracing._random_hex)


def _batch_attributes(batch: BatchTimes, batcher: str) -> dict[str, Any]:
    return {
        "torchrig.batcher": batcher,
        "torchrig.batch.id": batch.batch_id,
        "torchrig.batch.size": batch.rows,
        "torchrig.batch.requests": batch.requests,
    }
