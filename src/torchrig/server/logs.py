"""Logging for the server: one JSON object per line (Fluent Bit, Loki) or text for people.

`configure_logging("json")` puts one handler on the "torchrig" logger and on uvicorn's
"uvicorn" and "uvicorn.error" loggers (the access log stays off: the server does not
enable it). A JSON line carries `time` (RFC 3339, UTC, ms), `level`, `logger`, `message`
and, when known, `model`, `version`, `request_id`, `trace_id`, `span_id`, `duration_ms`,
`status`, `request_bytes`, `response_bytes`, `url`, the access line's `transport` and
time split (`decode_ms`, `queue_ms`, `compute_ms`, `encode_ms`, `batch_size`, `batch_id`)
and `exc` (the traceback). Request fields come from `extra=` or from `bind_request(...)`, which
binds them to the current task or thread for every log call inside it.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal, TextIO

import msgspec

LOGGERS = ("torchrig", "uvicorn", "uvicorn.error")
FIELDS = (
    "model",
    "version",
    "request_id",
    "trace_id",
    "span_id",
    "duration_ms",
    "status",
    "request_bytes",
    "response_bytes",
    "url",
    # the access line's transport and time split (server/request_trace.py)
    "transport",
    "decode_ms",
    "queue_ms",
    "compute_ms",
    "encode_ms",
    "batch_size",
    "batch_id",
)


@dataclass(frozen=True)
class RequestContext:
    request_id: str
    model: str | None = None
    version: str | None = None


request_context: contextvars.ContextVar[RequestContext | None] = contextvars.ContextVar(
    "torchrig_request_context", default=None
)


@contextlib.contextmanager
def bind_request(
    request_id: str, model: str | None = None, version: str | None = None
) -> Iterator[RequestContext]:
    """Within the block, every log record carries this request id (and model, version)."""
    context = RequestContext(request_id=request_id, model=model, version=version)
    token = request_context.set(context)
    try:
        yield context
    finally:
        request_context.reset(token)


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    """The request fields of a record: `extra=` wins over the bound request context."""
    found: dict[str, Any] = {}
    context = request_context.get()
    if context is not None:
        found["request_id"] = context.request_id
        if context.model is not None:
            found["model"] = context.model
        if context.version is not None:
            found["version"] = context.version
    attributes = record.__dict__
    for name in FIELDS:
        value = attributes.get(name)
        if value is not None:
            found[name] = value
    return found


def _timestamp(record: logging.LogRecord) -> str:
    seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
    return f"{seconds}.{int(record.msecs):03d}Z"


class JsonFormatter(logging.Formatter):
    """One compact JSON object per record, encoded by msgspec."""

    def __init__(self) -> None:
        super().__init__()
        # an unexpected value in `extra=` is written as its str(), never an error
        self._encoder = msgspec.json.Encoder(enc_hook=str)

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": _timestamp(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        line.update(_fields(record))
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exc"] = record.exc_text
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return self._encoder.encode(line).decode()


class TextFormatter(logging.Formatter):
    """`time LEVEL logger: message key=value ...`, then the traceback, for people."""

    def format(self, record: logging.LogRecord) -> str:
        text = f"{_timestamp(record)} {record.levelname:<7} {record.name}: {record.getMessage()}"
        fields = _fields(record)
        if fields:
            text += " " + " ".join(f"{k}={v}" for k, v in fields.items())
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        elif record.exc_text:
            text += "\n" + record.exc_text
        if record.stack_info:
            text += "\n" + self.formatStack(record.stack_info)
        return text


class _Handler(logging.StreamHandler):  # type: ignore[type-arg]
    """Marks the handler `configure_logging` installed, so that a second call replaces it."""


def _not_misleading(record: logging.LogRecord) -> bool:
    """Drops uvicorn's advice to install a WebSocket library, which it logs on every
    upgrade request (with no WebSocket endpoint, torchrig turns uvicorn's WebSockets off
    and answers such a request as plain HTTP): true of no torchrig server, and a line a
    client could have written at will. uvicorn's "Unsupported upgrade request." stays."""
    return not (
        record.name.startswith("uvicorn")
        and str(record.msg).startswith("No supported WebSocket library")
    )


def configure_logging(
    fmt: Literal["json", "text"], level: str = "INFO", stream: TextIO | None = None
) -> None:
    """Send torchrig's and uvicorn's logs to `stream` (stdout) as JSON lines or text.

    Calling it again replaces the handler it installed; the loggers stop propagating to
    the root logger so that no line is written twice.
    """
    if fmt not in ("json", "text"):
        raise ValueError(f'unknown log format {fmt!r}: use "json" or "text"')
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        raise ValueError(
            f"unknown log level {level!r}: use DEBUG, INFO, WARNING, ERROR or CRITICAL"
        )
    handler = _Handler(sys.stdout if stream is None else stream)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(_not_misleading)
    for name in LOGGERS:
        logger = logging.getLogger(name)
        # ours from an earlier call; on uvicorn's loggers also its own, if it configured any
        for old in list(logger.handlers):
            if isinstance(old, _Handler) or name.startswith("uvicorn"):
                logger.removeHandler(old)
                old.close()
        logger.addHandler(handler)
        logger.setLevel(numeric)
        logger.propagate = False
