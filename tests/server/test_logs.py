"""Server logging: JSON lines that Fluent Bit and Loki read, text for people, one handler."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from tritonclient import grpc as tgrpc
from tritonclient.utils import InferenceServerException

from faults import HUGE, body, pack_faulty
from serving import running
from torchrig.server.logs import LOGGERS, bind_request, configure_logging
from torchrig.settings import ServeSettings

RFC3339_MS_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


@pytest.fixture(autouse=True)
def restore_loggers() -> Iterator[None]:
    """configure_logging changes process-wide loggers: put them back for the other tests."""
    saved = {}
    for name in LOGGERS:
        logger = logging.getLogger(name)
        saved[name] = (list(logger.handlers), logger.level, logger.propagate)
    yield
    for name, (handlers, level, propagate) in saved.items():
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
        for handler in handlers:
            logger.addHandler(handler)
        logger.setLevel(level)
        logger.propagate = propagate


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_json_lines_carry_the_request_fields() -> None:
    out = io.StringIO()
    configure_logging("json", stream=out)
    log = logging.getLogger("torchrig.server.app")
    log.info("served %d rows", 3, extra={"model": "ranker", "version": "2", "status": 200})
    with bind_request("req-1", model="ranker", version="2"):
        log.warning("slow", extra={"duration_ms": 12.5})
        log.info("override", extra={"model": "other"})  # extra= wins over the bound context
    log.info("outside")

    first, slow, override, outside = lines(out)
    assert RFC3339_MS_UTC.match(first["time"]), first["time"]
    assert first == {
        "time": first["time"],
        "level": "INFO",
        "logger": "torchrig.server.app",
        "message": "served 3 rows",
        "model": "ranker",
        "version": "2",
        "status": 200,
    }
    assert slow["level"] == "WARNING"
    assert (slow["request_id"], slow["model"], slow["version"]) == ("req-1", "ranker", "2")
    assert slow["duration_ms"] == 12.5
    assert (override["model"], override["request_id"]) == ("other", "req-1")
    assert set(outside) == {"time", "level", "logger", "message"}


def test_an_exception_is_one_line_with_its_traceback() -> None:
    out = io.StringIO()
    configure_logging("json", stream=out)
    try:
        raise ValueError("bad\nthing")
    except ValueError:
        logging.getLogger("torchrig").exception("internal error", extra={"request_id": "r9"})
    (line,) = lines(out)  # the newlines are escaped inside the JSON string
    assert line["message"] == "internal error"
    assert line["request_id"] == "r9"
    assert "Traceback" in line["exc"]
    assert "ValueError: bad\nthing" in line["exc"]


def test_an_unexpected_extra_value_is_written_as_text() -> None:
    out = io.StringIO()
    configure_logging("json", stream=out)

    class Version:
        def __str__(self) -> str:
            return "v7"

    logging.getLogger("torchrig").info("x", extra={"version": Version()})
    assert lines(out)[0]["version"] == "v7"


def test_the_bound_request_follows_its_task_only() -> None:
    out = io.StringIO()
    configure_logging("json", stream=out)
    log = logging.getLogger("torchrig")

    async def handle(request_id: str) -> None:
        with bind_request(request_id, model="m"):
            await asyncio.sleep(0)  # let the other request's task run in between
            log.info("done")

    async def main() -> None:
        await asyncio.gather(handle("a"), handle("b"))

    asyncio.run(main())
    assert sorted(line["request_id"] for line in lines(out)) == ["a", "b"]


def test_uvicorn_logs_go_through_the_same_handler_once() -> None:
    out = io.StringIO()
    configure_logging("json", stream=out)
    logging.getLogger("uvicorn.error").info("Started server process")
    logging.getLogger("uvicorn").warning("from the parent")
    found = lines(out)
    assert [(line["logger"], line["message"]) for line in found] == [
        ("uvicorn.error", "Started server process"),
        ("uvicorn", "from the parent"),
    ]


def test_uvicorns_advice_to_install_a_websocket_library_is_dropped() -> None:
    """torchrig turns uvicorn's WebSockets off (no such endpoint); uvicorn's h11 protocol
    still advises installing a WebSocket library on each upgrade offer, which would be
    false and at a client's will. Its own warning stays."""
    out = io.StringIO()
    configure_logging("text", stream=out)
    uvicorn = logging.getLogger("uvicorn.error")
    uvicorn.warning("Unsupported upgrade request.")
    uvicorn.warning("No supported WebSocket library detected. Please use ...")
    logging.getLogger("torchrig").warning("No supported WebSocket library, says torchrig")
    text = out.getvalue()
    assert "Unsupported upgrade request." in text
    assert "No supported WebSocket library detected" not in text
    assert "says torchrig" in text


def test_text_format_is_for_people() -> None:
    out = io.StringIO()
    configure_logging("text", stream=out)
    log = logging.getLogger("torchrig.runtime")
    with bind_request("req-7", model="ranker", version="1"):
        log.info("loaded", extra={"duration_ms": 3.5})
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        log.error("failed", exc_info=True)
    text = out.getvalue()
    first = text.splitlines()[0]
    assert re.match(
        r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z INFO +torchrig\.runtime: loaded "
        r"request_id=req-7 model=ranker version=1 duration_ms=3\.5$",
        first,
    ), first
    assert "ERROR   torchrig.runtime: failed\nTraceback" in text
    assert text.rstrip().endswith("RuntimeError: boom")
    with pytest.raises(json.JSONDecodeError):
        json.loads(first)


def test_configuring_twice_replaces_the_handler() -> None:
    first, second = io.StringIO(), io.StringIO()
    configure_logging("text", stream=first)
    configure_logging("json", level="debug", stream=second)
    for name in LOGGERS:
        assert len(logging.getLogger(name).handlers) == 1, name
    logging.getLogger("torchrig.x").debug("once")
    assert first.getvalue() == ""
    assert [line["message"] for line in lines(second)] == ["once"]


def test_level_filters_and_bad_settings_name_the_fix() -> None:
    out = io.StringIO()
    configure_logging("json", level="WARNING", stream=out)
    logging.getLogger("torchrig").info("hidden")
    logging.getLogger("torchrig").warning("shown")
    assert [line["message"] for line in lines(out)] == ["shown"]
    with pytest.raises(ValueError, match="use DEBUG, INFO"):
        configure_logging("json", level="LOUD")
    with pytest.raises(ValueError, match='use "json" or "text"'):
        configure_logging("yaml")  # type: ignore[arg-type]


SPLIT = ("decode_ms", "queue_ms", "compute_ms", "encode_ms")


def traceparent(trace_id: str) -> dict[str, str]:
    return {"traceparent": f"00-{trace_id}-00f067aa0ba902b7-01"}


def grpc_infer(client: Any, rows: list[list[float]], request_id: str, trace_id: str) -> Any:
    tensor = tgrpc.InferInput("x", [len(rows), 2], "FP32")
    tensor.set_data_from_numpy(np.array(rows, dtype=np.float32))
    return client.infer("m", [tensor], request_id=request_id, headers=traceparent(trace_id))


def test_access_lines_give_the_split_and_join_each_requests_lines(tmp_path: Path) -> None:
    """Over REST and gRPC: an access line per request with model, version, status, sizes
    and the time split; a request's lines (its error line too) share its request id and
    trace id; sampled out, only a server error still gets its line."""
    repo = tmp_path / "models"
    pack_faulty(repo, "m", 1, budget_rows=4)  # a row with column 1 >= HUGE never fits: 507
    out = io.StringIO()
    settings = ServeSettings(port=0, log_format="json", access_log_sample=1.0)
    with running(repo, settings) as (url, state), httpx.Client(base_url=url, timeout=30) as client:
        configure_logging("json", stream=out)
        ok = client.post(
            "/v2/models/m/infer",
            json=body([1.0, 2.0]),
            headers={"x-request-id": "rest-ok", **traceparent("1" * 32)},
        )
        oom = client.post(
            "/v2/models/m/infer",
            json=body([1.0], second=HUGE),
            headers={"x-request-id": "rest-oom", **traceparent("2" * 32)},
        )
        assert (ok.status_code, oom.status_code) == (200, 507)
        grpc_client = tgrpc.InferenceServerClient(state.grpc_address)
        answer = grpc_infer(grpc_client, [[1.0, 0.0]], "grpc-ok", "3" * 32)
        assert answer.as_numpy("y").tolist() == [[1.0, 0.0]]
        with pytest.raises(InferenceServerException):
            grpc_infer(grpc_client, [[1.0, HUGE]], "grpc-oom", "4" * 32)
        # sampled out: no line for a success, still one for a server error
        assert state.tracing is not None
        state.tracing.access_log.sample = 0.0
        assert client.post(
            "/v2/models/m/infer", json=body([1.0]), headers={"x-request-id": "quiet"}
        ).is_success
        unsampled = client.post(
            "/v2/models/m/infer",
            json=body([1.0], second=HUGE),
            headers={"x-request-id": "loud", **traceparent("5" * 32)},
        )
        assert unsampled.status_code == 507
        grpc_client.close()
    found = [json.loads(line) for line in out.getvalue().splitlines()]
    access = {line["request_id"]: line for line in found if line["logger"] == "torchrig.access"}
    assert set(access) == {"rest-ok", "rest-oom", "grpc-ok", "grpc-oom", "loud"}

    rest = access["rest-ok"]
    assert (rest["model"], rest["version"], rest["status"], rest["transport"]) == (
        "m",
        "1",
        200,
        "http",
    )
    assert rest["trace_id"] == "1" * 32
    assert rest["span_id"] == ok.headers["traceparent"].split("-")[2]
    assert rest["request_bytes"] == len(ok.request.content)
    assert rest["response_bytes"] == len(ok.content)
    assert rest["batch_size"] == 2  # rows
    assert isinstance(rest["batch_id"], int)
    for line in (rest, access["grpc-ok"]):  # the split: parts of the whole, none missing
        assert all(line[name] >= 0 for name in SPLIT), line
        assert sum(line[name] for name in SPLIT) <= line["duration_ms"] + 0.01
    grpc_ok = access["grpc-ok"]
    assert (grpc_ok["status"], grpc_ok["transport"], grpc_ok["trace_id"]) == (200, "grpc", "3" * 32)
    assert grpc_ok["batch_size"] == 1
    assert grpc_ok["request_bytes"] > 0
    assert grpc_ok["response_bytes"] > 0
    assert access["rest-oom"]["status"] == access["grpc-oom"]["status"] == 507
    assert access["rest-oom"]["queue_ms"] >= 0  # picked: the split of the failed batch too
    assert access["loud"]["status"] == 507
    assert "queue_ms" not in access["loud"]  # not picked: no times were recorded

    # every line that names a request names its trace too: the error line and the access
    # line of a failed request join on both ids
    for request_id, trace_id in (
        ("rest-oom", "2" * 32),
        ("grpc-oom", "4" * 32),
        ("loud", "5" * 32),
    ):
        lines = [line for line in found if line.get("request_id") == request_id]
        assert {line["logger"] for line in lines} == {"torchrig.server", "torchrig.access"}, lines
        assert {line["trace_id"] for line in lines} == {trace_id}
        (error,) = [line for line in lines if line["logger"] == "torchrig.server"]
        assert (error["level"], error["status"]) == ("WARNING", 507)
        assert "out of device memory" in error["message"]
