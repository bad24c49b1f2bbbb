"""torchrig's errors as gRPC status codes, the way Triton's gRPC endpoint reports them."""

from __future__ import annotations

import grpc

from torchrig.errors import QueueFull, TorchrigError

# HTTP status of a TorchrigError -> gRPC code (Triton: bad input INVALID_ARGUMENT, unknown
# model NOT_FOUND, not ready / queue full UNAVAILABLE, a deadline DEADLINE_EXCEEDED)
CODES: dict[int, grpc.StatusCode] = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    408: grpc.StatusCode.DEADLINE_EXCEEDED,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    501: grpc.StatusCode.UNIMPLEMENTED,
    431: grpc.StatusCode.RESOURCE_EXHAUSTED,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
    507: grpc.StatusCode.RESOURCE_EXHAUSTED,
}
RETRY_AFTER = "retry-after"  # trailing metadata of UNAVAILABLE: seconds, as HTTP's header


def code_of(exc: TorchrigError) -> grpc.StatusCode:
    return CODES.get(exc.status_code, grpc.StatusCode.INTERNAL)


def trailers_of(exc: TorchrigError) -> tuple[tuple[str, str], ...]:
    """Trailing metadata for the error: when to retry an UNAVAILABLE (queue full, shutting
    down, not ready yet)."""
    if isinstance(exc, QueueFull):
        return ((RETRY_AFTER, str(max(1, int(exc.retry_after_s)))),)
    if exc.status_code == 503:
        return ((RETRY_AFTER, "1"),)
    return ()


def outcome_of(code: grpc.StatusCode) -> str:
    """The metrics outcome label of a failed call (as the REST server's)."""
    if code == grpc.StatusCode.NOT_FOUND:
        return "not_found"
    if code == grpc.StatusCode.UNAVAILABLE:
        return "unavailable"
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return "timeout"
    if code == grpc.StatusCode.INTERNAL:
        return "error"
    return "bad_request"
