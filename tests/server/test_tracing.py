"""W3C trace context and the access log, on a real server with a real client: the
caller's trace is continued in `traceparent`, and a request's access line carries its
request id and trace id, sizes, status and duration, as JSON."""

from __future__ import annotations

import json
import logging
import random
import re
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from tritonclient import grpc as tgrpc

from doubles import until
from faults import body, pack_faulty
from pipeline_models import build_repo as build_pipeline_repo
from serving import running
from torchrig.repository import BatchingConfig, ModelConfig
from torchrig.server.logs import JsonFormatter
from torchrig.server.tracing import AccessLog, TraceContext
from torchrig.settings import ServeSettings

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"
TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")


class Collected(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def access_lines() -> Iterator[Collected]:
    handler = Collected()
    logger = logging.getLogger("torchrig.access")
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


@pytest.fixture
def server_url(tmp_path: Path) -> Iterator[str]:
    repo = tmp_path / "models"
    pack_faulty(repo, "m", 1)
    settings = ServeSettings(port=0, log_format="text", access_log_sample=1.0)
    with running(repo, settings) as (url, _state):
        yield url


def test_the_callers_trace_is_continued(server_url: str) -> None:
    with httpx.Client(base_url=server_url, timeout=30) as client:
        headers = {"traceparent": f"00-{TRACE}-{PARENT}-01", "tracestate": "acme=7"}
        reply = client.post("/v2/models/m/infer", json=body([1.0]), headers=headers)
        assert reply.status_code == 200
        match = TRACEPARENT.match(reply.headers["traceparent"])
        assert match is not None
        assert match.group(1) == TRACE  # the same trace
        assert match.group(2) != PARENT  # the server's own span
        assert match.group(3) == "01"
        assert reply.headers["tracestate"] == "acme=7"
        # none given, or a malformed one: a new trace, never an error
        for given in ({}, {"traceparent": f"00-{'0' * 32}-{PARENT}-01"}, {"traceparent": "x"}):
            fresh = client.post("/v2/models/m/infer", json=body([1.0]), headers=given)
            assert fresh.status_code == 200
            started = TRACEPARENT.match(fresh.headers["traceparent"])
            assert started is not None
            assert started.group(1) not in (TRACE, "0" * 32)


def test_a_unary_grpc_call_gets_its_trace_context_in_the_trailers(tmp_path: Path) -> None:
    """As REST answers carry `traceparent` in their headers, ModelInfer answers carry it in
    their trailing metadata: the caller's trace continued in the server's span (with the
    caller's `tracestate`), or a new trace; errors too, beside their own trailers."""
    import grpc

    from torchrig.server.grpc.generated import grpc_service_pb2 as pb
    from torchrig.server.grpc.generated import grpc_service_pb2_grpc as pb_grpc

    pack_faulty(tmp_path / "models", "m", 1)
    with (
        running(tmp_path / "models", ServeSettings(port=0, log_format="text")) as (_, state),
        grpc.insecure_channel(state.grpc_address) as channel,
    ):
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        request = pb.ModelInferRequest(model_name="m")
        tensor = request.inputs.add(name="x", datatype="FP32", shape=[1, 2])
        tensor.contents.fp32_contents.extend([1.0, 0.0])
        given = (("traceparent", f"00-{TRACE}-{PARENT}-01"), ("tracestate", "acme=7"))
        _, call = stub.ModelInfer.with_call(request, metadata=given, timeout=30)
        trailers = dict(call.trailing_metadata())
        match = TRACEPARENT.match(trailers["traceparent"])
        assert match is not None
        assert (match.group(1), match.group(3)) == (TRACE, "01")
        assert match.group(2) != PARENT
        assert trailers["tracestate"] == "acme=7"
        _, fresh = stub.ModelInfer.with_call(request, timeout=30)
        started = TRACEPARENT.match(dict(fresh.trailing_metadata())["traceparent"])
        assert started is not None
        assert started.group(1) != TRACE
        missing = pb.ModelInferRequest(model_name="nosuch")
        with pytest.raises(grpc.RpcError) as failed:
            stub.ModelInfer(missing, metadata=given, timeout=30)
        assert failed.value.code() == grpc.StatusCode.NOT_FOUND
        error_trailers = dict(failed.value.trailing_metadata())
        assert TRACE in error_trailers["traceparent"]


def test_an_access_line_per_request_joins_request_and_trace(
    server_url: str, access_lines: Collected
) -> None:
    payload = httpx.Request("POST", "/", json=body([1.0, 2.0])).content
    headers = {
        "traceparent": f"00-{TRACE}-{PARENT}-01",
        "content-type": "application/json",
        "x-request-id": "req-42",
    }
    with httpx.Client(base_url=server_url, timeout=30) as client:
        reply = client.post("/v2/models/m/infer", content=payload, headers=headers)
        missing = client.post("/v2/models/nope/infer", content=payload, headers=headers)
    assert (reply.status_code, missing.status_code) == (200, 404)
    ok, not_found = access_lines.records
    line: dict[str, Any] = ok.__dict__
    assert line["request_id"] == "req-42" == reply.headers["x-request-id"]
    assert line["trace_id"] == TRACE
    assert line["span_id"] == reply.headers["traceparent"].split("-")[2]
    assert (line["model"], line["version"], line["status"]) == ("m", "1", 200)
    assert line["request_bytes"] == len(payload)
    assert line["response_bytes"] == len(reply.content)
    assert line["duration_ms"] > 0
    assert not_found.__dict__["status"] == 404
    as_json = json.loads(JsonFormatter().format(ok))  # what Fluent Bit / Loki read
    assert as_json["logger"] == "torchrig.access"
    assert {"request_id", "trace_id", "model", "status", "duration_ms"} <= set(as_json)


def test_sampling_keeps_a_share_and_every_server_error() -> None:
    sampled = AccessLog(0.01, rng=random.Random(7))
    kept = sum(sampled.wanted(200) for _ in range(20_000))
    assert 120 <= kept <= 280  # 1 % of 20 000, give or take
    assert all(sampled.wanted(503) for _ in range(100))
    assert not any(AccessLog(0.0).wanted(200) for _ in range(100))
    assert all(AccessLog(1.0).wanted(200) for _ in range(100))


@pytest.mark.parametrize(
    "value",
    [
        f"ff-{TRACE}-{PARENT}-01",  # version ff is invalid
        f"00-{TRACE}-{'0' * 16}-01",  # all-zero parent
        f"00-{TRACE}-{PARENT}-01-extra",  # version 00 has four fields
        f"00-{TRACE[:-1]}-{PARENT}-01",
    ],
)
def test_malformed_traceparent_starts_a_trace(value: str) -> None:
    context = TraceContext.from_headers({"traceparent": value})
    assert context.parent_id is None
    assert context.trace_id != TRACE


def test_new_trace_and_span_ids_are_well_formed_and_distinct() -> None:
    contexts = [TraceContext.from_headers({}) for _ in range(200)]
    for context in contexts:
        assert re.fullmatch(r"[0-9a-f]{32}", context.trace_id)
        assert re.fullmatch(r"[0-9a-f]{16}", context.span_id)
        assert context.parent_id is None
        # a caller continuing this server's span is read back exactly
        again = TraceContext.from_headers({"traceparent": context.traceparent()})
        assert (again.trace_id, again.parent_id) == (context.trace_id, context.span_id)
    assert len({c.trace_id for c in contexts}) == len(contexts)
    assert len({c.span_id for c in contexts}) == len(contexts)


def test_a_future_version_is_read_for_what_it_shares() -> None:
    context = TraceContext.from_headers({"traceparent": f"01-{TRACE}-{PARENT}-00-more"})
    assert (context.trace_id, context.parent_id, context.flags) == (TRACE, PARENT, 0)
    assert context.traceparent().startswith(f"00-{TRACE}-")


class OtlpReceiver:
    """An OTLP/HTTP trace receiver on loopback (port 0): the spans of every export."""

    def __init__(self) -> None:
        from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

        received: list[Any] = []
        self.spans = received
        self.resources: list[dict[str, Any]] = []
        resources = self.resources

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers["content-length"])
                request = trace_service_pb2.ExportTraceServiceRequest()
                request.ParseFromString(self.rfile.read(length))
                for resource_spans in request.resource_spans:
                    resources.append(
                        {a.key: a.value.string_value for a in resource_spans.resource.attributes}
                    )
                    for scope_spans in resource_spans.scope_spans:
                        received.extend(scope_spans.spans)
                answer = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1/traces"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def otlp(monkeypatch: pytest.MonkeyPatch) -> Iterator[OtlpReceiver]:
    pytest.importorskip("opentelemetry.sdk", reason="the otel extra: pip install 'torchrig[otel]'")
    receiver = OtlpReceiver()
    for name in ("OTEL_SDK_DISABLED", "OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", receiver.url)
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "20")  # ms: export soon after the request
    monkeypatch.setenv("OTEL_SERVICE_NAME", "ranking-svc")
    try:
        yield receiver
    finally:
        receiver.close()


def traced(value: str, parent: str = PARENT) -> dict[str, str]:
    return {"traceparent": f"00-{value}-{parent}-01"}


def request_tree(received: list[Any], trace_id: str) -> dict[str, Any]:
    """The spans of one trace by name (each request makes one of each)."""
    found = {span.name: span for span in received if span.trace_id.hex() == trace_id}
    assert len(found) == sum(span.trace_id.hex() == trace_id for span in received), found
    return found


def attributes_of(span: Any) -> dict[str, Any]:
    return {a.key: getattr(a.value, a.value.WhichOneof("value")) for a in span.attributes}


def check_request_tree(tree: dict[str, Any], *, trace_id: str, answered_span: str | None) -> Any:
    """A request's span tree: the server span continues the caller's (PARENT) and holds
    decode, queue_wait, batch (with compute inside) and encode, in this order; returns
    the batch span."""
    assert set(tree) == {"infer m", "decode", "queue_wait", "batch", "compute", "encode"}
    server = tree["infer m"]
    assert server.parent_span_id.hex() == PARENT  # the caller's span
    if answered_span is not None:  # the id the answer's traceparent named
        assert server.span_id.hex() == answered_span
    assert server.kind == server.SPAN_KIND_SERVER
    assert attributes_of(server)["torchrig.model"] == "m"
    assert attributes_of(server)["http.response.status_code"] == 200
    previous_end = server.start_time_unix_nano
    for name in ("decode", "queue_wait", "batch", "encode"):  # in order, in the server span
        stage = tree[name]
        assert stage.trace_id.hex() == trace_id
        assert stage.parent_span_id == server.span_id, name
        assert previous_end <= stage.start_time_unix_nano <= stage.end_time_unix_nano, name
        previous_end = stage.end_time_unix_nano
    assert previous_end <= server.end_time_unix_nano
    batch, compute = tree["batch"], tree["compute"]
    assert compute.parent_span_id == batch.span_id
    assert batch.start_time_unix_nano <= compute.start_time_unix_nano
    assert compute.end_time_unix_nano <= batch.end_time_unix_nano
    assert attributes_of(batch)["torchrig.batcher"] == "m/1"
    assert len(batch.links) == 1  # to the batch's own span
    return batch


def shared_batch(received: list[Any], batch: Any) -> Any:
    """The batch's own span that a request's batch span links to."""
    (link,) = batch.links
    (shared,) = [s for s in received if s.span_id == link.span_id]
    assert shared.trace_id == link.trace_id
    assert shared.name == "batch m/1"
    assert not shared.parent_span_id  # the root of its own trace
    return shared


@pytest.fixture
def faulty_repo(tmp_path: Path) -> Path:
    repo = tmp_path / "models"
    # a batch waits up to 2 s for a second request: concurrent requests share one
    config = ModelConfig(batching=BatchingConfig(max_batch_size=2, max_queue_delay_ms=2000))
    pack_faulty(repo, "m", 1, config=config)
    return repo


def test_spans_over_otlp_continue_the_callers_trace(otlp: OtlpReceiver, tmp_path: Path) -> None:
    repo = tmp_path / "models"
    pack_faulty(repo, "m", 1)
    unsampled_trace = "5" * 32
    with (
        running(repo, ServeSettings(port=0, log_format="text")) as (url, _state),
        httpx.Client(base_url=url, timeout=30) as client,
    ):
        skipped = {"traceparent": f"00-{unsampled_trace}-{PARENT}-00"}
        assert client.post("/v2/models/m/infer", json=body([1.0]), headers=skipped).is_success
        reply = client.post("/v2/models/m/infer", json=body([1.0, 2.0]), headers=traced(TRACE))
        assert reply.status_code == 200
        until(lambda: len(otlp.spans) >= 7, "seven spans exported", timeout_s=30)
    assert not [s for s in otlp.spans if s.trace_id.hex() == unsampled_trace]
    answered = reply.headers["traceparent"].split("-")[2]
    batch = check_request_tree(
        request_tree(otlp.spans, TRACE), trace_id=TRACE, answered_span=answered
    )
    assert attributes_of(batch)["torchrig.batch.size"] == 2  # rows
    shared = shared_batch(otlp.spans, batch)
    assert attributes_of(shared)["torchrig.batch.id"] == attributes_of(batch)["torchrig.batch.id"]
    assert [(link.trace_id.hex(), link.span_id.hex()) for link in shared.links] == [
        (TRACE, answered)
    ]
    assert len(otlp.spans) == 7  # the request's six and its batch's own
    assert otlp.resources[0]["service.name"] == "ranking-svc"


def test_requests_of_one_batch_over_rest_and_grpc_link_to_its_span(
    otlp: OtlpReceiver, faulty_repo: Path
) -> None:
    """Two concurrent requests, one per transport, ride in one batch: each continues its
    caller's trace, and both batch spans link to the one span of their batch, which links
    back to both requests."""
    rest_trace, grpc_trace = "a" * 32, "b" * 32
    with running(faulty_repo, ServeSettings(port=0, log_format="text")) as (url, state):
        grpc_client = tgrpc.InferenceServerClient(state.grpc_address)
        tensor = tgrpc.InferInput("x", [1, 2], "FP32")
        tensor.set_data_from_numpy(np.array([[3.0, 0.0]], dtype=np.float32))
        with ThreadPoolExecutor(2) as pool:
            rest = pool.submit(
                httpx.post,
                f"{url}/v2/models/m/infer",
                json=body([1.0]),
                headers=traced(rest_trace),
                timeout=30,
            )
            over_grpc = pool.submit(
                grpc_client.infer, "m", [tensor], headers=traced(grpc_trace), request_id="g-1"
            )
            reply, answer = rest.result(), over_grpc.result()
        assert reply.status_code == 200
        assert answer.as_numpy("y").tolist() == [[3.0, 0.0]]
        until(lambda: len(otlp.spans) >= 13, "both requests' spans and the batch's", timeout_s=30)
        grpc_client.close()
    rest_batch = check_request_tree(
        request_tree(otlp.spans, rest_trace),
        trace_id=rest_trace,
        answered_span=reply.headers["traceparent"].split("-")[2],
    )
    grpc_tree = request_tree(otlp.spans, grpc_trace)
    grpc_batch = check_request_tree(grpc_tree, trace_id=grpc_trace, answered_span=None)
    assert rest_batch.links[0].span_id == grpc_batch.links[0].span_id  # one batch
    shared = shared_batch(otlp.spans, rest_batch)
    assert (
        attributes_of(shared)["torchrig.batch.size"],
        attributes_of(shared)["torchrig.batch.requests"],
    ) == (2, 2)
    assert attributes_of(rest_batch)["torchrig.batch.size"] == 2
    linked = {(link.trace_id.hex(), link.span_id) for link in shared.links}
    assert linked == {
        (rest_trace, request_tree(otlp.spans, rest_trace)["infer m"].span_id),
        (grpc_trace, grpc_tree["infer m"].span_id),
    }
    assert len([s for s in otlp.spans if s.name == "batch m/1"]) == 1  # reported once


def test_a_pipeline_request_has_a_batch_per_member(otlp: OtlpReceiver, tmp_path: Path) -> None:
    repo = build_pipeline_repo(tmp_path / "models")
    features = {"name": "features", "shape": [2, 6], "datatype": "FP32", "data": [0.5] * 12}
    with running(repo, ServeSettings(port=0, log_format="text")) as (url, _state):
        reply = httpx.post(
            f"{url}/v2/models/chain/infer",
            json={"inputs": [features]},
            headers=traced(TRACE),
            timeout=30,
        )
        assert reply.status_code == 200, reply.text
        until(
            lambda: len(request_tree_spans(otlp.spans)) >= 9, "the pipeline's spans", timeout_s=30
        )
    spans = request_tree_spans(otlp.spans)
    names = sorted(span.name for span in spans)
    assert names == sorted(
        ["infer chain", "decode", "encode", *["queue_wait", "batch", "compute"] * 2]
    )
    batches = sorted((s for s in spans if s.name == "batch"), key=lambda s: s.start_time_unix_nano)
    members = [attributes_of(batch)["torchrig.batcher"].split("/")[0] for batch in batches]
    assert members == ["encoder", "head"]  # in the pipeline's order, one after the other
    assert batches[0].end_time_unix_nano <= batches[1].start_time_unix_nano
    computes = [s for s in spans if s.name == "compute"]
    assert {c.parent_span_id for c in computes} == {b.span_id for b in batches}


def request_tree_spans(received: list[Any]) -> list[Any]:
    return [span for span in received if span.trace_id.hex() == TRACE]


def test_new_traces_are_sampled_at_the_configured_ratio() -> None:
    from torchrig.server.otel import root_ratio

    def share(ratio: float) -> float:
        flags = [TraceContext.from_headers({}, root_ratio=ratio).flags for _ in range(4000)]
        return sum(flags) / len(flags)

    assert share(1.0) == 1.0
    assert share(0.0) == 0.0
    assert 0.2 <= share(0.25) <= 0.3
    # a caller's decision is followed, whatever the ratio
    caller = TraceContext.from_headers({"traceparent": f"00-{TRACE}-{PARENT}-01"}, root_ratio=0)
    assert caller.flags == 1
    ratio = {"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.1"}
    assert root_ratio(ratio) == 0.1
    assert root_ratio({"OTEL_TRACES_SAMPLER": "always_off"}) == 0.0
    assert root_ratio({}) == 1.0
