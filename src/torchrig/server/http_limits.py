"""Limits a hostile client cannot get past, whatever it sends: uvicorn's HTTP protocol with
bounds on the request head and deadlines on reading it.

uvicorn's httptools protocol accumulates a header of any size (a 128 MiB header costs
seconds of event-loop CPU) and waits forever for a partial head or body. This subclass
counts the bytes fed to the parser while a request's head is incomplete and the header
fields it yields, answering 431 past `max_head_bytes` or `max_headers`; it closes a
connection that does not send a whole head within `header_timeout_s` of its first byte
(or of connecting) with 408, and one whose body does not arrive within `body_timeout_s`
of its head. The checks are per `data_received`, so the parser never sees more than the
limit plus one read of head bytes. Without httptools, uvicorn's h11 protocol runs with
h11's own bound on the head (`h11_max_incomplete_event_size`).
"""

from __future__ import annotations

import asyncio
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


def protocol_class(limits: HttpLimits) -> Any:
    """The uvicorn `http=` protocol class enforcing `limits` (None: uvicorn's own h11)."""
    try:  # httptools is uvicorn's fast parser (uvicorn[standard]); h11 is the fallback
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    except ImportError:  # pragma: no cover - see the module docstring
        return None

    class LimitedHttpToolsProtocol(HttpToolsProtocol):
        """httptools with a bounded head and read deadlines (see the module docstring)."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._reading_head = True
            self._head_bytes = 0
            self._header_count = 0
            self._head_size = 0  # the parsed request line and fields, in bytes
            self._refused = False
            self._deadline: asyncio.TimerHandle | None = None

        # ---- deadlines ---------------------------------------------------------------------

        def _arm(self, seconds: float, status: int, reason: str, message: str) -> None:
            self._disarm()
            self._deadline = self.loop.call_later(seconds, self._expire, status, reason, message)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _expire(self, status: int, reason: str, message: str) -> None:
            self._deadline = None
            self._refuse(status, reason, message)

        def _arm_head(self) -> None:
            self._arm(
                limits.header_timeout_s,
                408,
                "Request Timeout",
                f"the request line and headers took longer than {limits.header_timeout_s:g} s "
                "(serve --header-timeout-s)",
            )

        def _refuse(self, status: int, reason: str, message: str) -> None:
            """Answer `status` (unless a response started) and close the connection; an
            application waiting for the body sees the client go away."""
            self._refused = True
            self._disarm()
            if self.transport.is_closing():
                return
            cycle = self.cycle
            if cycle is None or cycle.response_complete or not cycle.response_started:
                self.transport.write(_reply(status, reason, message))
            if cycle is not None and not cycle.response_complete:
                cycle.disconnected = True
                cycle.message_event.set()
            self.transport.close()

        # ---- the protocol ------------------------------------------------------------------

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm_head()  # an idle new connection counts as a slow head

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            if self._refused:
                return
            if self._reading_head:
                if self._deadline is None:
                    self._arm_head()
                self._head_bytes += len(data)
            super().data_received(data)
            # a head still incomplete past the limit (it streams in): refused before the
            # parser has buffered more than the limit and one read
            if self._reading_head and self._head_bytes > limits.max_head_bytes:
                self._too_large()

        def on_message_begin(self) -> None:
            self._header_count = 0
            self._head_size = 0
            super().on_message_begin()

        def on_url(self, url: bytes) -> None:
            self._head_size += len(url)
            super().on_url(url)

        def on_header(self, name: bytes, value: bytes) -> None:
            self._header_count += 1
            self._head_size += len(name) + len(value) + 4  # ": " and CRLF
            super().on_header(name, value)

        def _too_large(self) -> None:
            self._refuse(
                431,
                "Request Header Fields Too Large",
                f"the request line and headers exceed {limits.max_head_bytes} bytes "
                "(serve --max-header-kb)",
            )

        def on_headers_complete(self) -> None:
            self._reading_head = False
            self._head_bytes = 0
            if self._head_size > limits.max_head_bytes:  # a whole head in one read
                self._too_large()
                return
            if self._header_count > limits.max_headers:
                self._refuse(
                    431,
                    "Request Header Fields Too Large",
                    f"the request has {self._header_count} header fields; at most "
                    f"{limits.max_headers} (serve --max-headers)",
                )
                return
            self._arm(
                limits.body_timeout_s,
                408,
                "Request Timeout",
                f"the request body took longer than {limits.body_timeout_s:g} s to arrive "
                "(serve --body-timeout-s)",
            )
            super().on_headers_complete()

        def on_body(self, body: bytes) -> None:
            if not self._refused:
                super().on_body(body)

        def on_message_complete(self) -> None:
            if self._refused:
                return
            self._disarm()
            self._reading_head = True  # a pipelined or keep-alive request may follow
            super().on_message_complete()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            # between requests uvicorn's keep-alive timeout applies; the head deadline
            # starts again with the next request's first byte
            self._disarm()

    return LimitedHttpToolsProtocol
