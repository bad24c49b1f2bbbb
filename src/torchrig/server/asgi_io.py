"""The ASGI side of the REST server: message types, strict header numbers, the V2 error
and health bodies, sending a response, and dropping a queued request whose client left."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable, MutableMapping
from functools import partial
from typing import Any

from torchrig.errors import InvalidInput
from torchrig.runtime.batch_requests import ClientGone

log = logging.getLogger("torchrig.server")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

WATCH_AFTER_S = 0.005  # a request still queued after this starts watching for disconnects
JSON = "application/json"
_DECIMAL = re.compile(r"[0-9]{1,19}")


def header_length(headers: dict[str, str]) -> int | None:
    """Inference-Header-Content-Length when it is a usable integer (the decoder reports a
    bad one; here it only places the body buffer)."""
    length = headers.get("inference-header-content-length")
    if length is None or not _DECIMAL.fullmatch(length):
        return None
    return int(length)


def strict_decimal(value: str, header: str) -> int:
    """A header's non-negative integer, strictly: ASCII digits only (int() would also take
    " 1", "+1", "1_0" and superscript or other Unicode digits)."""
    if not _DECIMAL.fullmatch(value):
        raise InvalidInput(f"{header} {value!r} is not a non-negative integer in ASCII digits")
    return int(value)


def disconnect_probe(receive: Receive) -> Callable[[], bool] | None:
    """A check that costs nothing per request for "has this request's client gone away",
    where the server offers one: uvicorn's request cycle (the owner of `receive`) sets its
    `disconnected` flag when the connection closes. None for other ASGI servers, whose
    requests `unless_disconnected` watches with a task instead."""
    cycle = getattr(receive, "__self__", None)
    if cycle is None or not isinstance(getattr(cycle, "disconnected", None), bool):
        return None
    return partial(getattr, cycle, "disconnected")


async def unless_disconnected(
    task: asyncio.Future[dict[str, Any]],
    receive: Receive,
    gone: Callable[[], bool] | None = None,
) -> dict[str, Any] | None:
    """Await a queued request's future, or None if the client disconnected first (the body
    was read: the next ASGI message can only be http.disconnect).

    With `gone` (`disconnect_probe`, which the server hands the batcher through
    `client_gone`), the batcher drops a request whose client left, when a batch gathers
    it or when the server's sweep finds it (`torchrig.server.runner.drop_abandoned`), and
    its future fails with `ClientGone`: nothing per request here. Otherwise a disconnect
    watcher (a task reading the next ASGI message, which cancels the future when it comes)
    starts if this request is still waiting after `WATCH_AFTER_S` (most are answered
    within milliseconds, and a task per request costs more than the rest of the event
    loop's share of a small request)."""
    if gone is not None:
        try:
            return await task
        except ClientGone:
            log.debug("client went away: its request is dropped")
            return None
    loop = asyncio.get_running_loop()
    left = False
    watcher: asyncio.Future[Any] | None = None

    def on_message(message: asyncio.Future[Any]) -> None:
        nonlocal left
        if message.cancelled() or message.exception() is not None:
            return
        if message.result().get("type") == "http.disconnect" and not task.done():
            left = True
            task.cancel()

    def watch() -> None:
        nonlocal watcher
        if not task.done():
            watcher = asyncio.ensure_future(receive())
            watcher.add_done_callback(on_message)

    timer = loop.call_later(WATCH_AFTER_S, watch)
    try:
        return await task
    except asyncio.CancelledError:
        if not left:
            raise  # this handler itself was cancelled: the future went with it
        log.debug("client went away: its request is dropped")
        return None
    finally:
        timer.cancel()
        if watcher is not None:
            watcher.cancel()


def naming_worker(send: Send, pid: bytes) -> Send:
    """`send` that adds the header `torchrig-worker: <pid>` to the response start."""

    async def tagged(message: Message) -> None:
        if message["type"] == "http.response.start":
            message["headers"] = [*message["headers"], (b"torchrig-worker", pid)]
        await send(message)

    return tagged


def outcome_label(status: int) -> str:
    if status == 404:
        return "not_found"
    if status == 503:
        return "unavailable"
    if status == 504:
        return "timeout"
    if 400 <= status < 500:
        return "bad_request"
    return "error"


def health_body(key: str, error: str | None, name: str | None = None) -> bytes:
    """A health body every V2 client reads: `{"live"|"ready": bool}` (KServe's clients read
    the flag, Triton's the status), the model's name on model ready, the reason when false."""
    import msgspec

    body: dict[str, Any] = {} if name is None else {"name": name}
    body[key] = error is None
    if error is not None:
        body["error"] = error
    return msgspec.json.encode(body)


def error_body(message: str) -> bytes:
    import msgspec

    return msgspec.json.encode({"error": message})


async def respond(
    send: Send,
    status: int,
    body: bytes,
    headers: dict[str, str] | None = None,
    *,
    content_type: str | None = JSON,
) -> None:
    """Send a whole response. `headers` are named in lowercase; content-length is always
    the body's own, and `content_type` is added unless `headers` name one."""
    fields = {k: v for k, v in headers.items() if k != "content-length"} if headers else {}
    if content_type is not None:
        fields.setdefault("content-type", content_type)
    await send_response(send, status, body, fields)


async def send_response(send: Send, status: int, body: bytes, headers: dict[str, str]) -> None:
    """Send a whole response: `headers`, named in lowercase, with its content-type and
    without its content-length (added here, the body's own)."""
    raw = [(b"content-length", b"%d" % len(body))]
    raw += [(name.encode("latin-1"), value.encode("latin-1")) for name, value in headers.items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})
