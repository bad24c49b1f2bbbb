"""Server logging: JSON lines that Fluent Bit and Loki read, text for people, one handler."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
from collections.abc import Iterator
from typing import Any

import pytest

from torchrig.server.logs import LOGGERS, bind_request, configure_logging

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
