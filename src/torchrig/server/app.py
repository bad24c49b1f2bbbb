"""The V2 (Open Inference Protocol) REST server as a plain ASGI callable.

Endpoints decode into tensors (`torchrig.protocol`), hand them to the data plane
(`ModelRegistry.infer`: validation, batcher, executor) and encode the answer; the hot
path knows nothing about HTTP beyond this module. Every failure is a V2 error body
`{"error": ...}` with its status; only real internal faults are 500, logged with the
request id. A client that goes away while its request waits (`http.disconnect`) has its
request cancelled, so the batcher drops it before it takes device time. The management
endpoints and the check of model names in paths live in `torchrig.server.management`.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import re
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any

from torchrig import __version__
from torchrig.errors import (
    InvalidInput,
    ModelNotFound,
    PayloadTooLarge,
    QueueFull,
    TorchrigError,
    Unauthorized,
)
from torchrig.protocol import decode_infer_request, encode_infer_response
from torchrig.protocol.body import BodyBuffer, check_length
from torchrig.protocol.shared_memory import ShmReader
from torchrig.runtime import ModelRegistry
from torchrig.runtime.batch_requests import client_gone
from torchrig.runtime.validation import DeclaredChecks
from torchrig.server.asgi_io import (
    Receive,
    Scope,
    Send,
    disconnect_probe,
    error_body,
    header_length,
    health_body,
    naming_worker,
    outcome_label,
    respond,
    send_response,
    strict_decimal,
    unless_disconnected,
)
from torchrig.server.management import Management, check_model_path
from torchrig.server.metrics import ServerMetrics
from torchrig.server.otel import SpanRecorder
from torchrig.server.request_trace import RequestTrace, RequestTracing
from torchrig.server.shm import (
    CUDA_SHM_UNSUPPORTED,
    CudaSharedMemoryUnsupported,
    PeerAccess,
    SharedMemory,
    http_peer_uid,
    register_json,
)
from torchrig.server.tracing import AccessLog, TraceContext
from torchrig.server.triton import Statistics, model_config
from torchrig.server.triton_settings import (
    LogSettings,
    TraceSettings,
    update_log_json,
    update_trace_json,
)
from torchrig.settings import ServeSettings

if TYPE_CHECKING:
    from torchrig.protocol.body import Buffer

log = logging.getLogger("torchrig.server")


EXTENSIONS = [
    "binary_tensor_data",
    "model_repository",
    "model_configuration",
    "statistics",
    "system_shared_memory",
    "classification",
    "trace",
    "logging",
]
OFF_LOOP_BYTES = 256 * 1024  # JSON parts from this size on are decoded in a thread
SMALL_BODY = 64 * 1024  # bodies up to this size do not count against --max-body-buffer-mb
LARGE_DECODES = 2  # at once per process: bounds the memory of their Python objects
MODEL = r"(?P<model>[^/]+)(?:/versions/(?P<version>[^/]+))?"
REGION = r"(?P<region>[^/]+)"
ROUTES: list[tuple[str, re.Pattern[str], str]] = [
    ("POST", re.compile(rf"^/v2/models/{MODEL}/infer$"), "infer"),
    ("GET", re.compile(r"^/v2/health/live$"), "live"),
    ("GET", re.compile(r"^/v2/health/ready$"), "ready"),
    ("GET", re.compile(rf"^/v2/models/{MODEL}/ready$"), "model_ready"),
    ("GET", re.compile(rf"^/v2/models/{MODEL}/config$"), "model_config"),
    ("GET", re.compile(r"^/v2/models/stats$"), "model_stats"),
    ("GET", re.compile(rf"^/v2/models/{MODEL}/stats$"), "model_stats"),
    ("GET", re.compile(rf"^/v2/models/{MODEL}$"), "model_metadata"),
    ("GET", re.compile(r"^/v2/?$"), "server_metadata"),
    ("POST", re.compile(r"^/v2/repository/index$"), "repository_index"),
    ("POST", re.compile(r"^/v2/repository/models/(?P<model>[^/]+)/load$"), "load"),
    ("POST", re.compile(r"^/v2/repository/models/(?P<model>[^/]+)/unload$"), "unload"),
    ("POST", re.compile(rf"^/v2/systemsharedmemory/region/{REGION}/register$"), "shm_register"),
    ("POST", re.compile(rf"^/v2/systemsharedmemory/region/{REGION}/unregister$"), "shm_unregister"),
    ("POST", re.compile(r"^/v2/systemsharedmemory/unregister$"), "shm_unregister"),
    ("GET", re.compile(rf"^/v2/systemsharedmemory/region/{REGION}/status$"), "shm_status"),
    ("GET", re.compile(r"^/v2/systemsharedmemory/status$"), "shm_status"),
    ("GET", re.compile(r"^/v2/trace/setting$"), "trace_setting"),
    ("POST", re.compile(r"^/v2/trace/setting$"), "trace_update"),
    ("GET", re.compile(r"^/v2/models/(?P<model>[^/]+)/trace/setting$"), "trace_setting"),
    ("POST", re.compile(r"^/v2/models/(?P<model>[^/]+)/trace/setting$"), "trace_update"),
    ("GET", re.compile(r"^/v2/logging$"), "log_setting"),
    ("GET", re.compile(r"^/v2/cudasharedmemory(?:/.*)?$"), "cuda_shm"),
    ("POST", re.compile(r"^/v2/cudasharedmemory(?:/.*)?$"), "cuda_shm"),
    ("POST", re.compile(r"^/v2/logging$"), "log_update"),
    ("GET", re.compile(r"^/metrics$"), "metrics"),
]


@dataclass
class ServerState:
    """What the endpoints share: the models, the metrics, the settings, the lifecycle."""

    registry: ModelRegistry
    metrics: ServerMetrics
    settings: ServeSettings
    doctor_ok: bool = False
    doctor_summary: str = "the startup doctor has not run yet"
    started: bool = False
    shutting_down: bool = False
    lifespan_hooks: dict[str, Callable[[], Awaitable[None]]] = field(default_factory=dict)
    management_token: str | None = field(default=None, repr=False)  # None: API off
    grpc_address: str = ""  # host:port the gRPC service listens on ("" while it does not)
    statistics: Statistics = field(init=False, repr=False)  # Triton's statistics extension
    shared_memory: SharedMemory = field(default_factory=SharedMemory, repr=False)
    # each served version's declared-input check, for both transports
    declared_checks: DeclaredChecks = field(default_factory=DeclaredChecks, repr=False)
    # the access log and span recorder of both transports (V2App makes it)
    tracing: RequestTracing | None = field(default=None, repr=False)
    trace_settings: TraceSettings = field(init=False, repr=False)  # Triton's trace extension
    log_settings: LogSettings = field(init=False, repr=False)  # and its logging extension

    def __post_init__(self) -> None:
        self.statistics = Statistics(self.registry)
        self.trace_settings = TraceSettings(AccessLog(self.settings.access_log_sample))
        self.log_settings = LogSettings(
            log_format=self.settings.log_format, level=self.settings.log_level
        )

    def check_model(self, model: str) -> None:
        """ModelNotFound unless `model` is one the registry knows (loaded or failed)."""
        if model not in self.registry.model_errors() and not any(
            v.model == model for v in self.registry.versions()
        ):
            raise ModelNotFound(f"model {model!r} is not served here; see GET /v2/models/stats")

    def ready(self) -> bool:
        return self.started and self.doctor_ok and not self.shutting_down and self.registry.ready()

    def request_ended(
        self,
        model: str,
        version: str | None,
        outcome: str,
        duration_s: float,
        timeline: RequestTrace,
    ) -> None:
        """Count an ended inference request, on either transport: its metrics and Triton's
        statistics (decoding and encoding as compute_input and compute_output)."""
        self.metrics.request_finished(model, version, outcome=outcome, duration_s=duration_s)
        self.statistics.request(
            model,
            version,
            ok=outcome == "success",
            duration_s=duration_s,
            input_ns=timeline.decoded_ns - timeline.start_ns,
            output_ns=timeline.encoded_ns - timeline.resumed_ns,
        )


def _headers(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}


FRAMING_FIELDS = (b"inference-header-content-length", b"content-encoding")


def _refuse_repeated_framing(raw: list[tuple[bytes, bytes]]) -> None:
    """A field that says how to read the body, given twice (a proxy may have read the
    first, `_headers` keeps the last): InvalidInput, as HTTP parsers do for
    Content-Length. Called only when some field name repeats."""
    names = [name.lower() for name, _ in raw]
    for framing in FRAMING_FIELDS:
        if names.count(framing) > 1:
            raise InvalidInput(
                f"the request has {names.count(framing)} {framing.decode()} header fields; "
                "send it once"
            )


class V2App:
    """ASGI application: `V2App(state)`; lifespan startup/shutdown run `state.lifespan_hooks`."""

    def __init__(self, state: ServerState) -> None:
        self.state = state
        self.max_body = int(state.settings.max_body_mb * 1024 * 1024)
        # bytes of request bodies being received now, and their bound (`_hold_body`)
        self.body_budget = int(state.settings.max_body_buffer_mb * 1024 * 1024)
        self.receiving = 0
        # request ids: a random per-process prefix and a counter (uuid4 per request costs
        # a system call on the hot path)
        self._id_prefix = secrets.token_hex(4)
        self._ids = itertools.count(1)
        # with several worker processes, every answer names its worker (header
        # torchrig-worker: <pid>), so that the spread of requests can be seen
        self._worker = str(os.getpid()).encode() if state.settings.workers > 1 else None
        self._large_decode_slots: asyncio.Semaphore | None = None
        self.access_log = state.trace_settings.access_log  # its sample changes with the settings
        self.spans = SpanRecorder.from_environment()  # None unless OTEL_* ask for spans
        self.tracing = state.tracing = RequestTracing(self.access_log, self.spans)
        if self.spans is not None:
            state.trace_settings.started_with(self.spans.root_ratio)
            state.trace_settings.exporting = True
        self.management = Management(
            state.registry,
            control_mode=state.settings.control_mode,
            token=state.management_token,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            if self._worker is not None:
                send = naming_worker(send, self._worker)
            await self._http(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)

    def _large_decodes(self) -> asyncio.Semaphore:
        """The slots for decoding large bodies off the event loop (made on first use, on
        the serving loop)."""
        if self._large_decode_slots is None:
            self._large_decode_slots = asyncio.Semaphore(LARGE_DECODES)
        return self._large_decode_slots

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            kind = message["type"]
            if kind == "lifespan.startup":
                try:
                    if "startup" in self.state.lifespan_hooks:
                        await self.state.lifespan_hooks["startup"]()
                except Exception as exc:  # process boundary: report, don't serve
                    log.exception("startup failed")
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif kind == "lifespan.shutdown":
                try:
                    if "shutdown" in self.state.lifespan_hooks:
                        await self.state.lifespan_hooks["shutdown"]()
                finally:
                    await send({"type": "lifespan.shutdown.complete"})
                return

    # ---- HTTP --------------------------------------------------------------------------------

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        method: str = scope["method"]
        try:
            check_model_path(scope)
        except InvalidInput as exc:
            await respond(send, exc.status_code, error_body(exc.message))
            return
        handler, params, allowed = None, {}, []
        for verb, pattern, name in ROUTES:
            match = pattern.match(path)
            if match:
                if verb == method or (verb == "GET" and method == "HEAD"):
                    handler, params = name, match.groupdict()
                    break
                allowed.append(verb)
        if handler is None:
            if allowed:
                await respond(
                    send,
                    405,
                    error_body(f"{method} is not allowed on {path}; use {' or '.join(allowed)}"),
                    {"allow": ", ".join(allowed)},
                )
            else:
                await respond(send, 404, error_body(f"no endpoint {path}; see GET /v2"))
            return
        if handler == "infer":
            await self._infer(scope, receive, send, params)
            return
        try:
            status, body, headers = await getattr(self, "_" + handler)(params, scope, receive)
        except TorchrigError as exc:
            status, body, headers = exc.status_code, error_body(exc.message), {}
            if isinstance(exc, Unauthorized):
                headers = {"www-authenticate": 'Bearer realm="torchrig"'}
        except Exception:  # request boundary: a V2 error body, never uvicorn's plain text
            log.exception("internal error on %s %s", method, path)
            status, body, headers = (
                500,
                error_body("internal error; the server log has details"),
                {},
            )
        await respond(send, status, body, headers)

    async def _live(self, *_: Any) -> tuple[int, bytes, dict[str, str]]:
        fault = self.state.registry.device_fault
        if fault is not None:  # only a new process cures a poisoned CUDA context
            return (
                503,
                health_body("live", f"the device context is poisoned ({fault}); restart me"),
                {},
            )
        return 200, b'{"live":true}', {}

    async def _ready(self, *_: Any) -> tuple[int, bytes, dict[str, str]]:
        if self.state.ready():
            return 200, b'{"ready":true}', {}
        return 503, health_body("ready", self._not_ready_reason()), {}

    def _not_ready_reason(self) -> str:
        state = self.state
        if state.shutting_down:
            return "the server is shutting down"
        if not state.started:
            return "the server is starting: models are loading"
        if not state.doctor_ok:
            return f"the startup doctor failed: {state.doctor_summary}"
        if state.registry.device_fault is not None:
            return f"the device context is poisoned ({state.registry.device_fault}); restart me"
        problems = [f"{name}: {reason}" for name, reason in state.registry.model_errors().items()]
        problems += [
            f"{v.model}/{v.version} {v.state}" + (f" ({v.reason})" if v.reason else "")
            for v in state.registry.versions()
            if v.state != "ready"
        ]
        return "not every model is ready: " + ("; ".join(problems) or "no model loaded")

    async def _server_metadata(self, *_: Any) -> tuple[int, bytes, dict[str, str]]:
        from torchrig.protocol import server_metadata

        return 200, server_metadata("torchrig", __version__, EXTENSIONS), {}

    async def _model_metadata(
        self, params: dict[str, str], *_: Any
    ) -> tuple[int, bytes, dict[str, str]]:
        from torchrig.protocol import model_metadata

        meta = self.state.registry.metadata(params["model"], params.get("version"))
        return (
            200,
            model_metadata(meta.name, meta.versions, meta.platform, meta.inputs, meta.outputs),
            {},
        )

    async def _model_ready(
        self, params: dict[str, str], *_: Any
    ) -> tuple[int, bytes, dict[str, str]]:
        if self.state.shutting_down:
            return 503, health_body("ready", "the server is shutting down", params["model"]), {}
        from torchrig.server.replica_metrics import model_ready_body

        served = self.state.registry.resolve(params["model"], params.get("version"))  # 404/503
        return 200, model_ready_body(served), {}

    async def _model_config(
        self, params: dict[str, str], *_: Any
    ) -> tuple[int, bytes, dict[str, str]]:
        import msgspec

        served = self.state.registry.resolve(params["model"], params.get("version"))
        return 200, msgspec.json.encode(model_config(served)), {}

    async def _model_stats(
        self, params: dict[str, str], *_: Any
    ) -> tuple[int, bytes, dict[str, str]]:
        import msgspec

        statistics = self.state.statistics
        versions = statistics.versions(params.get("model"), params.get("version"))
        return 200, msgspec.json.encode(statistics.report(versions)), {}

    async def _repository_index(
        self, params: dict[str, str], scope: Scope, receive: Receive
    ) -> tuple[int, bytes, dict[str, str]]:
        body = await self._read_body(_headers(scope), receive)
        return 200, await self.management.index(bytes(body)), {}

    async def _load(
        self, params: dict[str, str], scope: Scope, receive: Receive
    ) -> tuple[int, bytes, dict[str, str]]:
        self.management.authorize(_headers(scope))
        await self._read_body(_headers(scope), receive)  # parameters are not supported yet
        await self.management.load(params["model"])
        return 200, b"{}", {}

    async def _unload(
        self, params: dict[str, str], scope: Scope, receive: Receive
    ) -> tuple[int, bytes, dict[str, str]]:
        self.management.authorize(_headers(scope))
        await self._read_body(_headers(scope), receive)
        await self.management.unload(params["model"])
        return 200, b"{}", {}

    async def _shm_register(
        self, params: dict[str, str], scope: Scope, receive: Receive
    ) -> tuple[int, bytes, dict[str, str]]:
        body = await self._read_body(_headers(scope), receive)
        register_json(self.state.shared_memory, params["region"], bytes(body), http_peer_uid(scope))
        return 200, b"{}", {}

    async def _shm_unregister(
        self, params: dict[str, str], scope: Scope, receive: Receive
    ) -> tuple[int, bytes, dict[str, str]]:
        await self._read_body(_headers(scope), receive)
        self.state.shared_memory.unregister(params.get("region"), http_peer_uid(scope))
        return 200, b"{}", {}

    async def _shm_status(
        self, params: dict[str, str], scope: Scope, *_: Any
    ) -> tuple[int, bytes, dict[str, str]]:
        import msgspec

        regions = self.state.shared_memory.status(params.get("region"), http_peer_uid(scope))
        return 200, msgspec.json.encode(regions), {}

    async def _trace_setting(
        self, params: dict[str, str], *_: Any
    ) -> tuple[int, bytes, dict[str, str]]:
        import msgspec

        model = params.get("model")
        if model:
            self.state.check_model(model)
        return 200, msgspec.json.encode(self.state.trace_settings.report(model)), {}

    async def _trace_update(
        self, params: dict[str, str], scope: Scope, receive: Receive
    ) -> tuple[int, bytes, dict[str, str]]:
        self.management.authorize(_headers(scope))
        body = await self._read_body(_headers(scope), receive)
        if params.get("model"):
            self.state.check_model(params["model"])
        update_trace_json(self.state.trace_settings, params.get("model"), bytes(body))
        return await self._trace_setting(params)

    async def _log_setting(self, *_: Any) -> tuple[int, bytes, dict[str, str]]:
        import msgspec

        return 200, msgspec.json.encode(self.state.log_settings.report()), {}

    async def _log_update(
        self, params: dict[str, str], scope: Scope, receive: Receive
    ) -> tuple[int, bytes, dict[str, str]]:
        self.management.authorize(_headers(scope))
        body = await self._read_body(_headers(scope), receive)
        update_log_json(self.state.log_settings, bytes(body))
        return await self._log_setting()

    async def _cuda_shm(self, *_: Any) -> tuple[int, bytes, dict[str, str]]:
        raise CudaSharedMemoryUnsupported(CUDA_SHM_UNSUPPORTED)

    async def _metrics(self, *_: Any) -> tuple[int, bytes, dict[str, str]]:
        body, content_type = self.state.metrics.render()
        return 200, body, {"content-type": content_type}

    # ---- infer -------------------------------------------------------------------------------

    async def _infer(  # noqa: PLR0915 - one request's whole path, timed stage by stage
        self, scope: Scope, receive: Receive, send: Send, params: dict[str, str]
    ) -> None:
        state = self.state
        headers = _headers(scope)
        model, version = params["model"], params.get("version")
        request_id = headers.get("x-request-id") or f"{self._id_prefix}-{next(self._ids):x}"
        trace = TraceContext.from_headers(
            headers, root_ratio=state.trace_settings.root_ratio(model)
        )
        started = time.perf_counter()
        timeline = self.tracing.begin(trace)  # stage marks for the access line and spans
        extra_headers = {"x-request-id": request_id, "traceparent": trace.traceparent()}
        if trace.tracestate:
            extra_headers["tracestate"] = trace.tracestate  # passed on unchanged
        status, response_bytes = 500, 0
        served_version: str | None = version
        state.metrics.request_started(model)
        outcome = "error"
        try:
            if state.shutting_down:
                raise QueueFull(
                    "the server is shutting down; retry on another replica", retry_after_s=1.0
                )
            if len(headers) != len(scope["headers"]):  # a field name repeats
                _refuse_repeated_framing(scope["headers"])
            peer = PeerAccess(state.shared_memory, http_peer_uid, scope)
            served, request = await self._decode(model, version, headers, receive, peer.read)
            timeline.decoded_ns = time.monotonic_ns()
            manifest = served.interface  # with built-in steps: their outputs
            timeout = state.settings.request_timeout_s
            if request.timeout_s is not None:
                timeout = min(max(request.timeout_s, 0.0), state.settings.max_request_timeout_s)
            gone = disconnect_probe(receive)
            token = client_gone.set(gone)
            try:
                # declared: check_declared saw each input's name, datatype and shape
                if timeline.times is None:  # nobody listens to this request's times
                    queued = state.registry.submit(
                        served, request.inputs, timeout_s=timeout, declared=True
                    )
                else:
                    queued = timeline.submit(
                        state.registry.submit,
                        served,
                        request.inputs,
                        timeout_s=timeout,
                        declared=True,
                    )
            finally:
                client_gone.reset(token)
            outputs = await unless_disconnected(queued, receive, gone)
            if outputs is None:  # the client went away: nobody to answer
                outcome = "bad_request"  # a client-side end, as nginx's 499
                return
            served_version = served.version_label
            timeline.resumed_ns = time.monotonic_ns()
            payload, response_headers = encode_infer_response(
                model_name=model,
                model_version=served_version,
                request_id=request.id,
                outputs=outputs,
                specs=manifest.outputs,
                requested=request.outputs,
                binary_output_default=request.binary_output_default,
                labels=manifest.labels,
                batching=manifest.batching,
                shm_write=peer.write,
            )
            extra_headers.update(response_headers)
            outcome = "success"
            status, response_bytes = 200, len(payload)
            timeline.encoded_ns = time.monotonic_ns()
            await send_response(send, 200, payload, extra_headers)
        except TorchrigError as exc:
            outcome = outcome_label(exc.status_code)
            if isinstance(exc, QueueFull):
                extra_headers["retry-after"] = str(int(exc.retry_after_s))
            body = error_body(exc.message)
            status, response_bytes = exc.status_code, len(body)
            await respond(send, exc.status_code, body, extra_headers)
            if exc.status_code >= 500:
                log.warning(
                    "request failed: %s",
                    exc.message,
                    extra={
                        "request_id": request_id,
                        "trace_id": trace.trace_id,
                        "model": model,
                        "version": served_version,
                        "status": exc.status_code,
                    },
                )
        except Exception:  # request boundary: a real internal fault
            log.exception(
                "internal error",
                extra={
                    "request_id": request_id,
                    "trace_id": trace.trace_id,
                    "model": model,
                    "version": served_version,
                    "status": 500,
                },
            )
            await respond(
                send,
                500,
                error_body(
                    f"internal error (request id {request_id}); the server log has the details"
                ),
                extra_headers,
            )
        finally:
            duration_s = time.perf_counter() - started
            state.request_ended(model, served_version, outcome, duration_s, timeline)
            tracing = self.tracing
            if tracing.wanted(timeline, status):
                tracing.finish(
                    timeline,
                    request_id=request_id,
                    model=model,
                    version=served_version,
                    # 499 (nginx's): the client went away before an answer
                    status=499 if outcome == "bad_request" and status == 500 else status,
                    request_bytes=int(headers.get("content-length") or 0),
                    response_bytes=response_bytes,
                    duration_s=duration_s,
                    transport="http",
                )

    async def _decode(
        self,
        model: str,
        version: str | None,
        headers: dict[str, str],
        receive: Receive,
        shm_read: ShmReader | None = None,
    ) -> tuple[Any, Any]:
        """Read and decode a request for a ready model version: (served version, request)."""
        body = await self._read_body(headers, receive)
        served = self.state.registry.resolve(model, version)
        signature = served.interface  # with built-in steps: the BYTES inputs they take
        if signature is None:  # pragma: no cover - a ready version has its manifest
            raise InvalidInput(f"model {model} has no signature")
        length = headers.get("inference-header-content-length")
        header_length = None
        if length is not None:
            header_length = strict_decimal(length, "Inference-Header-Content-Length")
        encoding = headers.get("content-encoding")
        accept = self.state.declared_checks.of(served, signature)
        # binary tensors are viewed or copied in one go, but JSON becomes Python objects:
        # a large JSON part (or a compressed body) is parsed in a thread, a few at a time
        json_part = len(body) if header_length is None else header_length
        if json_part < OFF_LOOP_BYTES and encoding is None:
            request = decode_infer_request(
                body,
                header_length=header_length,
                max_body_bytes=self.max_body,
                accept=accept,
                shm_read=shm_read,
            )
        else:
            decode = partial(
                decode_infer_request,
                body,
                header_length=header_length,
                content_encoding=encoding,
                max_body_bytes=self.max_body,
                accept=accept,
                shm_read=shm_read,
            )
            async with self._large_decodes():
                request = await asyncio.to_thread(decode)
        return served, request

    async def _read_body(self, headers: dict[str, str], receive: Receive) -> Buffer:
        """The whole body, bounded by --max-body-mb and exactly its Content-Length. An
        uncompressed body with binary tensors (an Inference-Header-Content-Length) is
        written straight into one aligned, writable buffer that the decoded tensors view
        (`BodyBuffer`); any other body (JSON, converted anyway; compressed, decompressed
        anyway) is joined from its chunks. While it arrives, a body past `SMALL_BODY`
        counts against --max-body-buffer-mb (`_hold_body`)."""
        declared = headers.get("content-length")
        size: int | None = None
        if declared is not None:
            size = strict_decimal(declared, "Content-Length")
            if size > self.max_body:
                raise PayloadTooLarge(
                    f"request body of {size} bytes exceeds the limit of {self.max_body} bytes "
                    "(serve --max-body-mb)"
                )
        held = [self._hold_body(size) if size is not None and size > SMALL_BODY else 0]
        try:
            return await self._receive_body(headers, receive, size, held)
        finally:
            self.receiving -= held[0]

    def _hold_body(self, size: int) -> int:
        """Count `size` more bytes of bodies being received, or refuse the request (503)
        if that would pass --max-body-buffer-mb while others are received: many slow or
        large uploads at once cannot hold unbounded memory. One body alone always may."""
        if self.receiving and self.receiving + size > self.body_budget:
            raise QueueFull(
                f"the server is receiving {self.receiving / 2**20:.1f} MiB of request bodies "
                f"already; {size / 2**20:.1f} MiB more would pass its limit of "
                f"{self.body_budget / 2**20:g} MiB (serve --max-body-buffer-mb): retry",
                retry_after_s=1.0,
            )
        self.receiving += size
        return size

    async def _receive_body(
        self, headers: dict[str, str], receive: Receive, size: int | None, held: list[int]
    ) -> Buffer:
        """`_read_body` once the declared size is checked (and held: `held[0]`, which grows
        as a body without a Content-Length arrives)."""
        into: BodyBuffer | None = None
        if size is not None:
            json_part = header_length(headers)
            # only binary tensors are viewed in place; JSON data (and a compressed body)
            # is converted or decompressed anyway, so its chunks are simply joined
            if json_part is not None and "content-encoding" not in headers:
                into = BodyBuffer(size, json_part)
        message = await receive()
        if into is None and message["type"] == "http.request" and not message.get("more_body"):
            # the whole body in one message (a small request): nothing to join
            whole: bytes = message.get("body", b"")
            if len(whole) > self.max_body:
                raise PayloadTooLarge(
                    f"request body exceeds the limit of {self.max_body} bytes (serve --max-body-mb)"
                )
            if size is None and len(whole) > SMALL_BODY:  # held as it would be in chunks
                held[0] += self._hold_body(len(whole))
            if size is not None:
                check_length(len(whole), size)
            return whole
        chunks: list[bytes] = []
        total = 0
        while True:
            if message["type"] == "http.disconnect":
                raise InvalidInput("the client went away before sending the whole body")
            chunk: bytes = message.get("body", b"")
            total += len(chunk)
            if total > self.max_body:
                raise PayloadTooLarge(
                    f"request body exceeds the limit of {self.max_body} bytes (serve --max-body-mb)"
                )
            if size is None and total > SMALL_BODY:  # no Content-Length: held as it comes
                held[0] += self._hold_body(len(chunk))
            if into is not None:
                into.write(chunk)
            else:
                chunks.append(chunk)
            if not message.get("more_body", False):
                break
            message = await receive()
        if into is not None:
            return into.body()
        if size is not None:
            check_length(total, size)
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)
