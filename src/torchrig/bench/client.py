"""A minimal HTTP/1.1 keep-alive client for the load generator: one connection, one request
in flight, pre-encoded request bytes in, the status (and error bodies) out.

Why not httpx or aiohttp: against a trivial server (`python benchmarks/bench_ceiling.py
--clients`) this client, an asyncio `Protocol` on uvloop with httptools parsing the
responses, made about 55,000 requests/s from one process on the 2-core build machine,
aiohttp about 13,000 and httpx.AsyncClient about 150; asyncio streams cost about as much
CPU per request but read neither chunked bodies nor timeouts by themselves. httptools decodes
Content-Length and chunked bodies alike and reads `Connection: close`; a response that is
neither (a body ended by closing the connection) is reported as an error, never guessed.
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httptools

from torchrig.errors import UsageError

ERROR_BODY_LIMIT = 4096  # bytes of an error body kept for the report


class ConnectionFailed(Exception):
    """The connection could not be opened, broke, or the response could not be parsed."""


class RequestTimeout(Exception):
    """No complete response within the request's timeout (the connection is dropped)."""


@dataclass(frozen=True)
class Endpoint:
    """Where the server listens: scheme, host, port and a path prefix ("" or "/prefix")."""

    scheme: str
    host: str
    port: int
    prefix: str

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}{self.prefix}"

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        return host if self.port == default else f"{host}:{self.port}"


def parse_url(url: str) -> Endpoint:
    """`http://HOST[:PORT][/prefix]` -> Endpoint; anything else is a UsageError naming the form."""
    parts = urlsplit(url if "://" in url else f"http://{url}")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(
            f"URL {url!r} is not an http(s) URL; give the server's base URL, "
            "e.g. http://127.0.0.1:8000"
        )
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise UsageError(f"URL {url!r} has an invalid port; e.g. http://127.0.0.1:8000") from None
    if parts.query or parts.fragment:
        raise UsageError(f"URL {url!r} has a query or fragment; give the base URL only")
    prefix = parts.path.rstrip("/")
    if prefix.endswith("/v2"):
        prefix = prefix[: -len("/v2")]  # a URL ending in /v2 means the same server
    return Endpoint(parts.scheme, parts.hostname, port, prefix)


def encode_request(
    endpoint: Endpoint,
    method: str,
    path: str,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
) -> bytes:
    """The full bytes of one HTTP/1.1 request (built once, sent many times)."""
    lines = [f"{method} {endpoint.prefix}{path} HTTP/1.1", f"Host: {endpoint.host_header}"]
    for key, value in (headers or {}).items():
        lines.append(f"{key}: {value}")
    if body or method in ("POST", "PUT"):
        lines.append(f"Content-Length: {len(body)}")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return head + body


class Connection(asyncio.Protocol):
    """One keep-alive connection; `send()` one request at a time and await its status."""

    def __init__(self, *, whole_bodies: bool = False) -> None:
        self._whole_bodies = whole_bodies  # keep every body whole (metadata), not only errors
        self._parser = httptools.HttpResponseParser(self)
        self._transport: asyncio.Transport | None = None
        self._waiter: asyncio.Future[int] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._keep_body = False
        self._body: list[bytes] = []
        self._body_size = 0
        self.closed = False
        self.body = b""  # the last body kept: not 2xx (truncated), or any with whole_bodies

    @classmethod
    async def open(
        cls, endpoint: Endpoint, timeout_s: float, *, whole_bodies: bool = False
    ) -> Connection:
        """Connect (TLS for https); a failure is a ConnectionFailed naming the address."""
        loop = asyncio.get_running_loop()
        context: Any = None
        if endpoint.scheme == "https":
            context = ssl.create_default_context()
        try:
            _, connection = await asyncio.wait_for(
                loop.create_connection(
                    lambda: cls(whole_bodies=whole_bodies),
                    endpoint.host,
                    endpoint.port,
                    ssl=context,
                    server_hostname=endpoint.host if context else None,
                ),
                timeout_s,
            )
        except (OSError, asyncio.TimeoutError) as exc:
            reason = str(exc) or type(exc).__name__
            raise ConnectionFailed(f"cannot connect to {endpoint.url}: {reason}") from None
        return connection

    # ---- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(ConnectionFailed(f"the server's response is not valid HTTP/1.1: {exc}"))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        reason = f": {exc}" if exc else ""
        self._fail(ConnectionFailed(f"the server closed the connection{reason}"))

    # ---- httptools callbacks ---------------------------------------------------------------

    def on_headers_complete(self) -> None:
        self._keep_body = self._whole_bodies or not 200 <= self._parser.get_status_code() < 300
        self._body = []
        self._body_size = 0

    def on_body(self, body: bytes) -> None:
        if self._keep_body and (self._whole_bodies or self._body_size < ERROR_BODY_LIMIT):
            self._body.append(body)
            self._body_size += len(body)

    def on_message_complete(self) -> None:
        status = self._parser.get_status_code()
        if self._keep_body:
            body = b"".join(self._body)
            self.body = body if self._whole_bodies else body[:ERROR_BODY_LIMIT]
        if not self._parser.should_keep_alive():
            self.close()
        waiter, self._waiter = self._waiter, None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if waiter is not None and not waiter.done():
            waiter.set_result(status)

    # ---- use -------------------------------------------------------------------------------

    def send(self, raw: bytes, timeout_s: float) -> asyncio.Future[int]:
        """Write one pre-encoded request; the future holds the response's status code."""
        if self._transport is None or self.closed:
            raise ConnectionFailed("the connection is closed")
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[int] = loop.create_future()
        self._waiter = waiter
        self._timer = loop.call_later(timeout_s, self._expire, timeout_s)
        self._transport.write(raw)
        return waiter

    def _expire(self, timeout_s: float) -> None:
        self._timer = None
        self._fail(RequestTimeout(f"no response within {timeout_s:g} s"))
        self.close()

    def _fail(self, exc: Exception) -> None:
        waiter, self._waiter = self._waiter, None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)

    def close(self) -> None:
        self.closed = True
        if self._transport is None:
            return
        if self._waiter is not None:
            self._transport.abort()  # a request is in flight: its answer is not wanted
        else:
            self._transport.close()


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes


async def fetch(
    endpoint: Endpoint, method: str, path: str, *, body: bytes = b"", timeout_s: float = 10.0
) -> Response:
    """One request on a new connection, with the whole body (for metadata, not for load)."""
    connection = await Connection.open(endpoint, timeout_s, whole_bodies=True)
    headers = {"Connection": "close"}
    if body:
        headers["Content-Type"] = "application/json"
    try:
        raw = encode_request(endpoint, method, path, body, headers)
        status = await connection.send(raw, timeout_s)
    except RequestTimeout:
        raise ConnectionFailed(
            f"{endpoint.url}{path} did not answer within {timeout_s:g} s"
        ) from None
    finally:
        connection.close()
    return Response(status, connection.body)
