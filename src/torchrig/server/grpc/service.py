"""`inference.GRPCInferenceService` over the REST server's data plane.

Each RPC reads the same `ServerState` as the REST endpoints (registry, batcher, metrics,
settings, shutdown flag) and answers what its REST twin answers. A failure becomes a
gRPC status (see `status.py`), never UNKNOWN: bad input INVALID_ARGUMENT, an unknown
model NOT_FOUND, not ready, shutting down or a full queue UNAVAILABLE with a `retry-after`
trailer. A call cancelled by its client, or past its deadline, has its queued request
cancelled with it, so its rows never reach the model.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial
from typing import Any, TypeVar

import grpc
import msgspec
from google.protobuf import json_format

from torchrig import __version__
from torchrig.errors import ModelNotFound, ModelNotReady, QueueFull, TorchrigError
from torchrig.protocol.shared_memory import ShmReader, ShmWriter
from torchrig.server.app import EXTENSIONS, ServerState
from torchrig.server.grpc.codec import decode_request, encode_response
from torchrig.server.grpc.generated import grpc_service_pb2 as pb
from torchrig.server.grpc.generated import grpc_service_pb2_grpc as pb_grpc
from torchrig.server.grpc.generated import model_config_pb2
from torchrig.server.grpc.raw_contents import InferCall, register
from torchrig.server.grpc.settings import log_changes, log_response, trace_changes, trace_response
from torchrig.server.grpc.status import code_of, outcome_of, trailers_of
from torchrig.server.management import Management
from torchrig.server.peers import grpc_peer
from torchrig.server.request_trace import RequestTracing
from torchrig.server.shm import (
    CUDA_SHM_UNSUPPORTED,
    CudaSharedMemoryUnsupported,
    PeerAccess,
    client_uid,
)
from torchrig.server.tracing import TraceContext
from torchrig.server.triton import model_config

log = logging.getLogger("torchrig.server")

Reply = TypeVar("Reply")
Context = Any  # grpc.aio.ServicerContext (grpcio has no type hints)


class InferenceService(pb_grpc.GRPCInferenceServiceServicer):
    """The V2 gRPC service; `add_to(server)` registers it on a grpc.aio server."""

    def __init__(self, state: ServerState) -> None:
        self.state = state
        self.max_body = int(state.settings.max_body_mb * 1024 * 1024)
        self._id_prefix = "g" + secrets.token_hex(4)
        self._ids = itertools.count(1)
        self.management = Management(
            state.registry,
            control_mode=state.settings.control_mode,
            token=state.management_token,
        )
        self.port: int | None = None  # the port it serves on, once bound
        # when no V2App shares its access log and span recorder (state.tracing)
        self._tracing = RequestTracing(state.trace_settings.access_log, None)

    def peer_uid(self, context: Context) -> int:
        """The user of the calling process (shared memory: loopback clients only)."""
        return client_uid(grpc_peer(context.peer() or ""), self.port)

    def add_to(self, server: grpc.aio.Server) -> None:
        # ModelInfer's raw tensor bytes are viewed where gRPC received them (raw_contents.py)
        register(pb_grpc.add_GRPCInferenceServiceServicer_to_server, self, server)

    async def _answer(self, context: Context, work: Callable[[], Awaitable[Reply]]) -> Reply:
        """Run a handler; a TorchrigError ends the call with its status, anything else
        (logged) with INTERNAL."""
        try:
            return await work()
        except TorchrigError as exc:
            # what the call already set (its trace context) goes with the error's own
            trailers = (*(context.trailing_metadata() or ()), *trailers_of(exc))
            await context.abort(code_of(exc), exc.message, trailing_metadata=trailers)
        except Exception:  # request boundary: a status, never a stack trace to the client
            log.exception("internal error in a gRPC call")
            await context.abort(
                grpc.StatusCode.INTERNAL, "internal error; the server log has details"
            )
        raise AssertionError("unreachable: abort raises")  # pragma: no cover

    # ---- health and metadata ----------------------------------------------------------------

    async def ServerLive(
        self, request: pb.ServerLiveRequest, context: Context
    ) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=self.state.registry.device_fault is None)

    async def ServerReady(
        self, request: pb.ServerReadyRequest, context: Context
    ) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self.state.ready())

    async def ModelReady(
        self, request: pb.ModelReadyRequest, context: Context
    ) -> pb.ModelReadyResponse:
        async def work() -> pb.ModelReadyResponse:
            if self.state.shutting_down:
                return pb.ModelReadyResponse(ready=False)
            try:
                self.state.registry.resolve(request.name, request.version or None)
            except (ModelNotFound, ModelNotReady):
                return pb.ModelReadyResponse(ready=False)
            return pb.ModelReadyResponse(ready=True)

        return await self._answer(context, work)

    async def ServerMetadata(
        self, request: pb.ServerMetadataRequest, context: Context
    ) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(
            name="torchrig", version=__version__, extensions=EXTENSIONS
        )

    async def ModelMetadata(
        self, request: pb.ModelMetadataRequest, context: Context
    ) -> pb.ModelMetadataResponse:
        async def work() -> pb.ModelMetadataResponse:
            meta = self.state.registry.metadata(request.name, request.version or None)
            tensor = pb.ModelMetadataResponse.TensorMetadata
            return pb.ModelMetadataResponse(
                name=meta.name,
                versions=meta.versions,
                platform=meta.platform,
                inputs=[
                    tensor(name=s.name, datatype=s.datatype, shape=s.shape) for s in meta.inputs
                ],
                outputs=[
                    tensor(name=s.name, datatype=s.datatype, shape=s.shape) for s in meta.outputs
                ],
            )

        return await self._answer(context, work)

    async def ModelConfig(
        self, request: pb.ModelConfigRequest, context: Context
    ) -> pb.ModelConfigResponse:
        async def work() -> pb.ModelConfigResponse:
            served = self.state.registry.resolve(request.name, request.version or None)
            config = json_format.ParseDict(model_config(served), model_config_pb2.ModelConfig())
            return pb.ModelConfigResponse(config=config)

        return await self._answer(context, work)

    async def ModelStatistics(
        self, request: pb.ModelStatisticsRequest, context: Context
    ) -> pb.ModelStatisticsResponse:
        async def work() -> pb.ModelStatisticsResponse:
            statistics = self.state.statistics
            versions = statistics.versions(request.name or None, request.version or None)
            response = pb.ModelStatisticsResponse()
            json_format.ParseDict(statistics.report(versions), response)
            return response

        return await self._answer(context, work)

    # ---- inference ----------------------------------------------------------------------------

    async def ModelInfer(self, call: InferCall, context: Context) -> pb.ModelInferResponse:
        return await self._answer(
            context,
            partial(self.infer, call.request, context.time_remaining(), context, call),
        )

    async def ModelStreamInfer(
        self, request_iterator: AsyncIterator[pb.ModelInferRequest], context: Context
    ) -> AsyncIterator[pb.ModelStreamInferResponse]:
        """Each request of the stream is served as it arrives (several at once, so that
        they batch); its response, or its error in `error_message`, goes back as soon as it
        is ready. Ending the stream cancels what is still queued."""
        answers: asyncio.Queue[pb.ModelStreamInferResponse | None] = asyncio.Queue()
        pending: set[asyncio.Task[None]] = set()

        async def one(request: pb.ModelInferRequest) -> None:
            try:
                response = await self.infer(request, context.time_remaining(), context)
                answers.put_nowait(pb.ModelStreamInferResponse(infer_response=response))
            except TorchrigError as exc:
                answers.put_nowait(_stream_error(request, exc.message))
            except Exception:  # request boundary: the stream goes on
                log.exception("internal error in a streamed gRPC request")
                answers.put_nowait(_stream_error(request, "internal error; see the server log"))

        async def read() -> None:
            async for request in request_iterator:
                task = asyncio.ensure_future(one(request))
                pending.add(task)
                task.add_done_callback(pending.discard)
            while pending:
                await asyncio.wait(set(pending))
            answers.put_nowait(None)

        reader = asyncio.ensure_future(read())
        try:
            while (answer := await answers.get()) is not None:
                yield answer
            await reader  # its exception, if reading the stream failed
        finally:
            reader.cancel()
            for task in list(pending):
                task.cancel()

    def _shared_memory(self, context: Context) -> tuple[ShmReader, ShmWriter]:
        peer = PeerAccess(self.state.shared_memory, self.peer_uid, context)
        return peer.read, peer.write

    async def infer(  # noqa: PLR0915 - one request's whole path, timed stage by stage
        self,
        request: pb.ModelInferRequest,
        time_remaining: float | None,
        context: Context,
        call: InferCall | None = None,
    ) -> pb.ModelInferResponse:
        """Serve one ModelInferRequest on the shared data plane, with metrics and logs
        (`call`: as ModelInfer deserialized it, its raw contents perhaps split off)."""
        state = self.state
        model, version = request.model_name, request.model_version or None
        request_id = request.id or f"{self._id_prefix}-{next(self._ids):x}"
        served_version: str | None = version
        started = time.perf_counter()
        tracing = state.tracing or self._tracing
        trace = TraceContext.from_headers(
            _metadata(context),
            root_ratio=state.trace_settings.root_ratio(model),
        )
        timeline = tracing.begin(trace)  # stage marks for the access line and spans
        if call is not None:  # a unary call: its trace context goes back in the trailers,
            # as HTTP answers carry it in their headers (a stream's messages have one each)
            context.set_trailing_metadata(trace_trailers(trace))
        state.metrics.request_started(model)
        outcome, status = "error", 500
        response: pb.ModelInferResponse | None = None
        try:
            if state.shutting_down:
                raise QueueFull(
                    "the server is shutting down; retry on another replica", retry_after_s=1.0
                )
            served = state.registry.resolve(model, version)
            manifest = served.interface  # with built-in steps: their BYTES inputs, outputs
            if manifest is None:  # pragma: no cover - a ready version has its manifest
                raise ModelNotReady(f"model {model} has no signature")
            accept = state.declared_checks.of(served, manifest)
            shm_read, shm_write = self._shared_memory(context)
            decoded = decode_request(
                request,
                accept=accept,
                max_body_bytes=self.max_body,
                shm_read=shm_read,
                raw_contents=call.raw if call is not None else None,
            )
            timeline.decoded_ns = time.monotonic_ns()
            timeout = state.settings.request_timeout_s
            if decoded.timeout_s is not None:
                timeout = min(decoded.timeout_s, state.settings.max_request_timeout_s)
            if time_remaining is not None:  # the call's own deadline
                timeout = min(timeout, max(time_remaining, 0.0))
            outputs = await timeline.submit(
                state.registry.submit,
                served,
                decoded.inputs,
                timeout_s=timeout,
                declared=True,  # check_declared saw each input's name, type and shape
            )
            served_version = served.version_label
            timeline.resumed_ns = time.monotonic_ns()
            response = encode_response(
                model_name=model,
                model_version=served_version,
                request_id=request.id or None,
                outputs=outputs,
                specs=manifest.outputs,
                requested=decoded.outputs,
                labels=manifest.labels,
                batching=manifest.batching,
                shm_write=shm_write,
            )
            timeline.encoded_ns = time.monotonic_ns()
            outcome, status = "success", 200
            return response
        except asyncio.CancelledError:
            outcome, status = "bad_request", 499  # the client cancelled or its deadline passed
            raise
        except TorchrigError as exc:
            outcome, status = outcome_of(code_of(exc)), exc.status_code
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
            raise
        finally:
            duration_s = time.perf_counter() - started
            state.request_ended(model, served_version, outcome, duration_s, timeline)
            logged = timeline.picked or status >= 500  # sizes only for a line written
            tracing.finish(
                timeline,
                request_id=request_id,
                model=model,
                version=served_version,
                status=status,
                request_bytes=(
                    request.ByteSize() + (call.raw_bytes() if call is not None else 0)
                    if logged
                    else 0
                ),
                response_bytes=response.ByteSize() if logged and response is not None else 0,
                duration_s=duration_s,
                transport="grpc",
            )

    # ---- system shared memory ---------------------------------------------------------------

    async def SystemSharedMemoryRegister(
        self, request: pb.SystemSharedMemoryRegisterRequest, context: Context
    ) -> pb.SystemSharedMemoryRegisterResponse:
        async def work() -> pb.SystemSharedMemoryRegisterResponse:
            self.state.shared_memory.register(
                request.name, request.key, request.offset, request.byte_size, self.peer_uid(context)
            )
            return pb.SystemSharedMemoryRegisterResponse()

        return await self._answer(context, work)

    async def SystemSharedMemoryUnregister(
        self, request: pb.SystemSharedMemoryUnregisterRequest, context: Context
    ) -> pb.SystemSharedMemoryUnregisterResponse:
        async def work() -> pb.SystemSharedMemoryUnregisterResponse:
            self.state.shared_memory.unregister(request.name or None, self.peer_uid(context))
            return pb.SystemSharedMemoryUnregisterResponse()

        return await self._answer(context, work)

    async def SystemSharedMemoryStatus(
        self, request: pb.SystemSharedMemoryStatusRequest, context: Context
    ) -> pb.SystemSharedMemoryStatusResponse:
        async def work() -> pb.SystemSharedMemoryStatusResponse:
            regions = self.state.shared_memory.status(request.name or None, self.peer_uid(context))
            response = pb.SystemSharedMemoryStatusResponse()
            for region in regions:
                response.regions[region["name"]].CopyFrom(
                    pb.SystemSharedMemoryStatusResponse.RegionStatus(**region)
                )
            return response

        return await self._answer(context, work)

    async def _no_cuda_shared_memory(self, context: Context) -> Any:
        async def work() -> Any:
            raise CudaSharedMemoryUnsupported(CUDA_SHM_UNSUPPORTED)

        return await self._answer(context, work)

    async def CudaSharedMemoryRegister(self, request: Any, context: Context) -> Any:
        return await self._no_cuda_shared_memory(context)

    async def CudaSharedMemoryUnregister(self, request: Any, context: Context) -> Any:
        return await self._no_cuda_shared_memory(context)

    async def CudaSharedMemoryStatus(self, request: Any, context: Context) -> Any:
        return await self._no_cuda_shared_memory(context)

    # ---- trace and log settings ---------------------------------------------------------------

    async def TraceSetting(
        self, request: pb.TraceSettingRequest, context: Context
    ) -> pb.TraceSettingResponse:
        """Read (no settings given) or change the trace settings, server-wide or of
        `model_name`; changes need the management token."""

        async def work() -> pb.TraceSettingResponse:
            model = request.model_name or None
            if request.settings:
                self.management.authorize(_metadata(context))
            if model:
                self.state.check_model(model)
            if request.settings:
                self.state.trace_settings.update(model, trace_changes(request))
            return trace_response(self.state.trace_settings.report(model))

        return await self._answer(context, work)

    async def LogSettings(
        self, request: pb.LogSettingsRequest, context: Context
    ) -> pb.LogSettingsResponse:
        """Read (no settings given) or change the log level; changes need the token."""

        async def work() -> pb.LogSettingsResponse:
            if request.settings:
                self.management.authorize(_metadata(context))
                self.state.log_settings.update(log_changes(request))
            return log_response(self.state.log_settings.report())

        return await self._answer(context, work)

    # ---- model repository ---------------------------------------------------------------------

    async def RepositoryIndex(
        self, request: pb.RepositoryIndexRequest, context: Context
    ) -> pb.RepositoryIndexResponse:
        async def work() -> pb.RepositoryIndexResponse:
            rows = msgspec.json.decode(
                await self.management.index(b'{"ready": true}' if request.ready else b"")
            )
            index = pb.RepositoryIndexResponse.ModelIndex
            return pb.RepositoryIndexResponse(
                models=[
                    index(
                        name=row["name"],
                        version=row.get("version", ""),
                        state=row["state"],
                        reason=row["reason"],
                    )
                    for row in rows
                ]
            )

        return await self._answer(context, work)

    async def RepositoryModelLoad(
        self, request: pb.RepositoryModelLoadRequest, context: Context
    ) -> pb.RepositoryModelLoadResponse:
        async def work() -> pb.RepositoryModelLoadResponse:
            self.management.authorize(_metadata(context))
            await self.management.load(request.model_name)
            return pb.RepositoryModelLoadResponse()

        return await self._answer(context, work)

    async def RepositoryModelUnload(
        self, request: pb.RepositoryModelUnloadRequest, context: Context
    ) -> pb.RepositoryModelUnloadResponse:
        async def work() -> pb.RepositoryModelUnloadResponse:
            self.management.authorize(_metadata(context))
            await self.management.unload(request.model_name)
            return pb.RepositoryModelUnloadResponse()

        return await self._answer(context, work)


def _metadata(context: Context) -> dict[str, str]:
    """The call's metadata as headers (keys are lower-case in gRPC already)."""
    return {
        key: value if isinstance(value, str) else value.decode("latin-1")
        for key, value in (context.invocation_metadata() or ())
    }


def trace_trailers(trace: TraceContext) -> tuple[tuple[str, str], ...]:
    """A unary call's trace context as trailing metadata: `traceparent` (the server's span
    in the caller's trace, or a new trace) and the caller's `tracestate`, unchanged."""
    if trace.tracestate:
        return (("traceparent", trace.traceparent()), ("tracestate", trace.tracestate))
    return (("traceparent", trace.traceparent()),)


def _stream_error(request: pb.ModelInferRequest, message: str) -> pb.ModelStreamInferResponse:
    return pb.ModelStreamInferResponse(
        error_message=message,
        infer_response=pb.ModelInferResponse(
            model_name=request.model_name, model_version=request.model_version, id=request.id
        ),
    )
