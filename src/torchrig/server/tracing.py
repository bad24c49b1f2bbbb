"""W3C trace context and the access log: what joins a request's lines across services.

`TraceContext.from_headers` reads `traceparent` / `tracestate` (W3C Trace Context, level 1);
the server answers with a `traceparent` of its own span in the caller's trace (a new trace
when none came or it was malformed), so a proxy or client can join its spans to the
server's. The trace id goes into every log line about the request with its request id.

The access log is one JSON line per request on the "torchrig.access" logger: model,
version, status, transport, request and response bytes, the duration and its split
(decode, queue, compute, encode; the batch's size and id), sampled at `access_log_sample`
(server errors always), for Fluent Bit / Loki.
"""

from __future__ import annotations

import logging
import random
import re
from collections.abc import Mapping
from typing import NamedTuple

access_log = logging.getLogger("torchrig.access")

_TRACEPARENT = re.compile(
    r"^(?P<version>[0-9a-f]{2})-(?P<trace>[0-9a-f]{32})-(?P<parent>[0-9a-f]{16})"
    r"-(?P<flags>[0-9a-f]{2})(?P<rest>-.*)?$"
)
SAMPLED = 0x01


class TraceContext(NamedTuple):
    """This request's place in a trace: the trace, this server's span, the caller's span
    (immutable; a named tuple, made once per request at a fraction of a frozen dataclass's
    cost)."""

    trace_id: str
    span_id: str
    parent_id: str | None = None  # the caller's span; None: this server started the trace
    flags: int = SAMPLED
    tracestate: str | None = None

    @classmethod
    def from_headers(cls, headers: Mapping[str, str], *, root_ratio: float = 1.0) -> TraceContext:
        """Continue the caller's trace (and its sampling decision), or start one, sampled
        at `root_ratio` by its trace id (a malformed header is ignored, as the
        specification asks)."""
        given = headers.get("traceparent")
        parsed = None if given is None else _parse(given)
        if parsed is None:
            trace_id, span_id = _random_ids()
            # OpenTelemetry's TraceIdRatioBased: the low 64 bits below ratio * 2**64 (always
            # true at 1, never at 0)
            if root_ratio <= 0.0:
                sampled = False
            elif root_ratio >= 1.0:
                sampled = True
            else:
                sampled = int(trace_id[16:], 16) < root_ratio * (1 << 64)
            return cls(trace_id, span_id, None, SAMPLED if sampled else 0, None)
        trace_id, parent_id, flags = parsed
        state = headers.get("tracestate") or None
        return cls(trace_id, _random_hex(64), parent_id, flags, state)

    def traceparent(self) -> str:
        """This server's span as a `traceparent` value (version 00)."""
        return f"00-{self.trace_id}-{self.span_id}-{self.flags:02x}"


def _random_hex(bits: int) -> str:
    """A random, non-zero id of `bits` bits in lowercase hex, as OpenTelemetry's SDK makes
    them (random.getrandbits). Not secrets.token_hex: os.urandom releases the GIL, and on
    the event loop of a busy server each release let another thread keep it for up to the
    5 ms switch interval (measured: 190 us per id with a batcher thread running)."""
    return f"{random.getrandbits(bits) or 1:0{bits // 4}x}"


_ZERO_TRACE, _ZERO_SPAN = "0" * 32, "0" * 16


def _random_ids() -> tuple[str, str]:
    """A new trace id and span id (as `_random_hex(128)` and `_random_hex(64)`), from one
    draw of random bits: a request that starts a trace pays for one."""
    ids = f"{random.getrandbits(192):048x}"  # one draw and one formatting for both
    trace, span = ids[:32], ids[32:]
    if trace == _ZERO_TRACE or span == _ZERO_SPAN:  # invalid ids (2**-64): as OTel, never 0
        bits = int(ids, 16)
        return f"{bits >> 64 or 1:032x}", f"{bits & 0xFFFF_FFFF_FFFF_FFFF or 1:016x}"
    return trace, span


def _parse(value: str) -> tuple[str, str, int] | None:
    match = _TRACEPARENT.match(value.strip().lower())
    if match is None or match["version"] == "ff":
        return None
    if match["version"] == "00" and match["rest"]:  # version 00 has exactly four fields
        return None
    if set(match["trace"]) == {"0"} or set(match["parent"]) == {"0"}:
        return None
    return match["trace"], match["parent"], int(match["flags"], 16)


class AccessLog:
    """Decides which requests get an access-log line, and writes it.

    The decision is taken when a request starts (`pick`), so that only the picked
    requests have their time split recorded by the batcher; a server error gets its line
    whatever the pick (then with the split only when it was recorded)."""

    def __init__(self, sample: float, *, rng: random.Random | None = None) -> None:
        self.sample = min(max(sample, 0.0), 1.0)
        self._rng = rng or random.Random()

    def pick(self) -> bool:
        """Whether this request's line is wanted, server errors aside (sampled)."""
        sample = self.sample
        return sample >= 1.0 or (sample > 0.0 and self._rng.random() < sample)

    def wanted(self, status: int) -> bool:
        return status >= 500 or self.pick()

    def write(
        self,
        *,
        request_id: str,
        trace: TraceContext,
        model: str,
        version: str | None,
        status: int,
        request_bytes: int,
        response_bytes: int,
        duration_s: float,
        picked: bool | None = None,
        split: Mapping[str, float | int] | None = None,
        transport: str = "http",
    ) -> None:
        """The line, when `picked` (None: decide now) or a server error. `split` adds the
        time split (decode_ms, queue_ms, compute_ms, encode_ms, batch_size, batch_id)."""
        if status < 500 and not (self.pick() if picked is None else picked):
            return
        fields: dict[str, object] = {
            "request_id": request_id,
            "trace_id": trace.trace_id,
            "span_id": trace.span_id,
            "model": model,
            "version": version,
            "status": status,
            "transport": transport,
            "request_bytes": request_bytes,
            "response_bytes": response_bytes,
            "duration_ms": round(duration_s * 1000, 3),
        }
        if split:
            fields.update(split)
        access_log.info("%s %s %d", model, version or "-", status, extra=fields)
