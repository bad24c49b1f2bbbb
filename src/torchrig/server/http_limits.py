"""Limits a hostile client cannot get past, whatever it sends: uvicorn's HTTP protocol with
bounds on the request head and deadlines on reading it.

uvicorn's httptools protocol accumulates a header of any size (a 128 MiB header costs
seconds of event-loop CPU) and waits forever for a partial head or body. This subclass
counts the bytes fed to the parser while a request's head is incomplete and the header
fields it yields, answering 431 past `max_head_bytes` or `max_headers`; it closes a
connection that does not send a whole head within `header_timeout_s` of its first byte
(or of connecting) with 408, and one whose body does not arrive within `body_timeout_s`
of its head. The size checks are per `data_received`, so the parser never sees more than
the limit plus one read of head bytes; the deadlines are timestamps that one timer per
event loop sweeps every 0.25 s (a timer armed and cancelled per request cost ~20 % of the
server's requests/s). Without httptools, uvicorn's h11 protocol runs with
h11's own bound on the head (`h11_max_incomplete_event_size`).

Two more departures from uvicorn's httptools protocol. A request that offers an upgrade
(`Upgrade: h2c`, which every JDK HttpClient sends on a cleartext URL, or `websocket`) is
served as the HTTP/1.1 request it also is, body included, as RFC 9110 §7.8 allows:
httptools stops at such a head and skips its body, so the head is fed again, without
its Upgrade field, to a fresh parser, followed by the bytes after it (uvicorn gave the
application an empty body: a 400 "0 bytes but its Content-Length is N"). And a request
httptools cannot parse gets a 400 whose JSON error body names the parser's finding,
not a plain-text "Invalid HTTP request received.".
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import Any

from torchrig.settings import ServeSettings


@dataclass(frozen=True)
class HttpLimits:
    """The bounds on reading one request, from `ServeSettings`."""

    max_head_bytes: int
    max_headers: int
    header_timeout_s: float
    body_timeout_s: float

    @classmethod
    def of(cls, settings: ServeSettings) -> HttpLimits:
        return cls(
            max_head_bytes=int(settings.max_header_kb * 1024),
            max_headers=settings.max_headers,
            header_timeout_s=settings.header_timeout_s,
            body_timeout_s=settings.body_timeout_s,
        )


def _reply(status: int, reason: str, message: str) -> bytes:
    body = ('{"error": "' + message.replace('"', "'") + '"}').encode()
    return (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    ).encode() + body


SWEEP_INTERVAL_S = 0.25  # how often the deadlines of open connections are checked


def protocol_class(limits: HttpLimits) -> Any:
    """The uvicorn `http=` protocol class enforcing `limits` (None: uvicorn's own h11)."""
    try:  # httptools is uvicorn's fast parser (uvicorn[standard]); h11 is the fallback
        import httptools
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    except ImportError:  # pragma: no cover - see the module docstring
        return None

    sweeping: set[asyncio.AbstractEventLoop] = set()

    def sweep(loop: asyncio.AbstractEventLoop, connections: set[Any]) -> None:
        """One timer per loop, not one per request: refuse connections past a deadline."""
        now = loop.time()
        for connection in list(connections):
            deadline = getattr(connection, "_deadline_at", None)
            if deadline is not None and now >= deadline:
                connection._expire()
        loop.call_later(SWEEP_INTERVAL_S, sweep, loop, connections)

    head_late = (
        f"the request line and headers took longer than {limits.header_timeout_s:g} s "
        "(serve --header-timeout-s)"
    )
    body_late = (
        f"the request body took longer than {limits.body_timeout_s:g} s to arrive "
        "(serve --body-timeout-s)"
    )

    class LimitedHttpToolsProtocol(HttpToolsProtocol):
        """httptools with a bounded head and read deadlines (see the module docstring)."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._reading_head = True
            self._head_bytes = 0  # fed to the parser since the head began, by reads
            self._refused = False
            self._deadline_at: float | None = None  # loop.time(); checked by `sweep`
            self._late = head_late
            # the head of a request that offered an upgrade, until it is fed again
            self._offered: bytes | None = None

        def _expire(self) -> None:
            self._deadline_at = None
            self._refuse(408, "Request Timeout", self._late)

        def _refuse(self, status: int, reason: str, message: str) -> None:
            """Answer `status` (unless a response started) and close the connection; an
            application waiting for the body sees the client go away."""
            self._refused = True
            self._deadline_at = None
            if self.transport.is_closing():
                return
            cycle = self.cycle
            if cycle is None or cycle.response_complete or not cycle.response_started:
                self.transport.write(_reply(status, reason, message))
            if cycle is not None and not cycle.response_complete:
                cycle.disconnected = True
                cycle.message_event.set()
            self.transport.close()

        def _too_large(self, what: str) -> None:
            self._refuse(431, "Request Header Fields Too Large", what)

        def _feed(self, data: bytes) -> None:
            """uvicorn's `data_received`, but for an upgrade offer and a parse error."""
            self._unset_keepalive_if_required()
            try:
                self.parser.feed_data(data)
            except httptools.HttpParserUpgrade as exc:
                self._decline_upgrade(data[exc.args[0] :])
            except httptools.HttpParserError as exc:
                self.logger.warning("Invalid HTTP request received: %s", exc)
                self._refuse(
                    400,
                    "Bad Request",
                    f"the request is not valid HTTP/1.1 ({exc}); send a request line, "
                    "header fields and a body framed as RFC 9112 says",
                )

        def _plain_head(self) -> bytes:
            """The head just parsed, without its Upgrade field (an upgrade offer)."""
            version = self.parser.get_http_version().encode("ascii")
            lines = [self.parser.get_method(), b" ", self.url, b" HTTP/", version, b"\r\n"]
            for name, value in self.headers:
                if name != b"upgrade":
                    lines += [name, b": ", value, b"\r\n"]
            lines.append(b"\r\n")
            return b"".join(lines)

        def _decline_upgrade(self, rest: bytes) -> None:
            """httptools stopped after a head that offers an upgrade (`rest`: the bytes
            after it): parse that head again without the offer, then what follows."""
            head, self._offered = self._offered, None
            # llhttp's upgrade is an Upgrade field with "upgrade" in Connection, or CONNECT:
            # the head fed again has no Upgrade field, and CONNECT is refused here
            if head is None or head.startswith(b"CONNECT "):
                self._refuse(
                    405,
                    "Method Not Allowed",
                    "CONNECT is not served: torchrig is not a proxy; send the V2 request "
                    "itself (GET or POST)",
                )
                return
            self.parser = httptools.HttpRequestParser(self)
            with contextlib.suppress(AttributeError):  # httptools < 0.6.3 has none
                self.parser.set_dangerous_leniencies(lenient_data_after_close=True)  # as uvicorn
            self._reading_head = True
            self._head_bytes = 0  # the head was counted when it came
            self._feed(head + rest)

        # ---- the protocol ------------------------------------------------------------------

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            if self.loop not in sweeping:
                sweeping.add(self.loop)
                self.loop.call_later(SWEEP_INTERVAL_S, sweep, self.loop, self.connections)
            # an idle new connection counts as a slow head
            self._deadline_at = self.loop.time() + limits.header_timeout_s

        def data_received(self, data: bytes) -> None:
            if self._refused:
                return
            if self._reading_head:
                if self._deadline_at is None:
                    self._deadline_at = self.loop.time() + limits.header_timeout_s
                    self._late = head_late
                self._head_bytes += len(data)
            self._feed(data)
            # a head still incomplete past the limit (it streams in): refused before the
            # parser has buffered more than the limit and one read
            if self._reading_head and self._head_bytes > limits.max_head_bytes:
                self._too_large(
                    f"the request line and headers exceed {limits.max_head_bytes} bytes "
                    "(serve --max-header-kb)"
                )

        def on_headers_complete(self) -> None:
            self._reading_head = False
            fed, self._head_bytes = self._head_bytes, 0
            headers = self.headers
            if len(headers) > limits.max_headers:
                self._too_large(
                    f"the request has {len(headers)} header fields; at most "
                    f"{limits.max_headers} (serve --max-headers)"
                )
                return
            # the head lies within the bytes fed to the parser since it began, so its size
            # is needed only past the limit (a head, or a head and body, in one read) or
            # when nothing was counted (a pipelined head that began inside an earlier read)
            if not 0 < fed <= limits.max_head_bytes and (
                len(self.url) + sum(len(name) + len(value) + 4 for name, value in headers)
                > limits.max_head_bytes
            ):
                self._too_large(
                    f"the request line and headers exceed {limits.max_head_bytes} bytes "
                    "(serve --max-header-kb)"
                )
                return
            if self.parser.should_upgrade():  # served as plain HTTP: `_decline_upgrade`
                self._offered = self._plain_head()
                return
            self._deadline_at = self.loop.time() + limits.body_timeout_s
            self._late = body_late
            super().on_headers_complete()

        def on_body(self, body: bytes) -> None:
            if not self._refused:
                super().on_body(body)

        def on_message_complete(self) -> None:
            if self._refused or self._offered is not None:  # (the body httptools skips)
                return
            # the body is in; between requests uvicorn's keep-alive timeout applies, and
            # the head deadline starts again with the next request's first byte
            self._deadline_at = None
            self._reading_head = True
            super().on_message_complete()

    return LimitedHttpToolsProtocol
