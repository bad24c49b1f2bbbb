"""OpenTelemetry spans of inference requests, when the OTEL_* variables ask for them.

Optional: with `opentelemetry-sdk` and its OTLP/HTTP exporter installed (the `otel`
extra) and an OTLP endpoint set (`OTEL_EXPORTER_OTLP_ENDPOINT` or
`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, and `OTEL_TRACES_EXPORTER` not "none"), each request
becomes a server span -- with the id the answer's `traceparent` names, so the caller's
trace continues into it -- and child spans for decode, compute (queue wait, batch and
forward: one span until the batcher reports its stages) and encode. Spans are built after
the request from timestamps taken on the way, and handed to the SDK's batch processor,
which exports them off the request path. Without the extra or the variables nothing is
imported and nothing is recorded.
"""

from __future__ import annotations

import atexit
import logging
import os
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from torchrig.server.tracing import SAMPLED, TraceContext

log = logging.getLogger("torchrig.server")

STAGES = ("decode", "compute", "encode")


@dataclass(frozen=True)
class RequestMarks:
    """Wall-clock nanoseconds at the request's stage boundaries (0: not reached)."""

    start: int
    decoded: int = 0
    computed: int = 0
    encoded: int = 0
    end: int = 0

    @classmethod
    def of(cls, taken: list[int]) -> RequestMarks:
        """From the boundaries taken so far (start first); the end is now."""
        start, decoded, computed, encoded = (*taken, 0, 0, 0)[:4]
        return cls(start, decoded, computed, encoded, time.time_ns())


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
        trace: TraceContext,
        marks: RequestMarks,
        *,
        model: str,
        version: str | None,
        status: int,
        batch_size: int | None = None,
    ) -> None:
        """The request's server span and its stage spans, queued for export (none when
        the caller's trace is not sampled)."""
        if not trace.flags & SAMPLED:
            return
        from opentelemetry.sdk.trace import ReadableSpan
        from opentelemetry.trace import SpanContext, SpanKind, TraceFlags
        from opentelemetry.trace.status import Status, StatusCode

        trace_id, flags = int(trace.trace_id, 16), TraceFlags(trace.flags)
        server = SpanContext(trace_id, int(trace.span_id, 16), False, flags)
        parent = None
        if trace.parent_id is not None:
            parent = SpanContext(trace_id, int(trace.parent_id, 16), True, flags)
        attributes: dict[str, Any] = {"torchrig.model": model, "http.response.status_code": status}
        if version is not None:
            attributes["torchrig.model_version"] = version
        failed = Status(StatusCode.ERROR) if status >= 500 else Status(StatusCode.UNSET)
        spans = [
            ReadableSpan(
                f"infer {model}",
                context=server,
                parent=parent,
                resource=self._resource,
                attributes=attributes,
                kind=SpanKind.SERVER,
                status=failed,
                start_time=marks.start,
                end_time=marks.end,
                instrumentation_scope=self._scope,
            )
        ]
        bounds = (marks.start, marks.decoded, marks.computed, marks.encoded)
        for name, begin, finish in zip(STAGES, bounds, bounds[1:], strict=False):
            if not finish:
                break
            stage_attributes: dict[str, Any] = {}
            if name == "compute" and batch_size is not None:
                stage_attributes["torchrig.batch_size"] = batch_size
            spans.append(
                ReadableSpan(
                    name,
                    context=SpanContext(trace_id, int(secrets.token_hex(8), 16), False, flags),
                    parent=server,
                    resource=self._resource,
                    attributes=stage_attributes,
                    start_time=begin,
                    end_time=finish,
                    instrumentation_scope=self._scope,
                )
            )
        for span in spans:
            self._processor.on_end(span)

    def shutdown(self) -> None:
        self._processor.shutdown()
