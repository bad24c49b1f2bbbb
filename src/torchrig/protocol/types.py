"""The decoded form of a V2 inference request, as the server's data plane sees it."""

from __future__ import annotations

from typing import Any

import msgspec

from torchrig.runtime.bytes_tensor import BytesTensor

__all__ = ["BytesTensor", "DecodedRequest", "RequestedOutput"]


class RequestedOutput(msgspec.Struct, frozen=True):
    """One entry of the request's `outputs`: a name and whether it should come back binary.

    `binary` is None when the request did not say; `binary_output_default` decides then.
    """

    name: str
    binary: bool | None = None
    class_count: int = 0  # > 0: the classification extension's top classes instead
    # (region, offset, byte_size): written into a registered shared-memory region instead
    shared_memory: tuple[str, int, int] | None = None


class DecodedRequest(msgspec.Struct, frozen=True):
    """A V2 inference request with its inputs turned into tensors.

    `inputs` maps each input name (in request order) to a `torch.Tensor`, or to a
    `BytesTensor` for BYTES inputs, which torch cannot hold. `outputs` is None when the
    request asks for every output. `timeout_s` comes from the `timeout` parameter
    (Triton: microseconds); 0 or absent means no timeout of the request's own.
    """

    id: str | None
    parameters: dict[str, Any]
    inputs: dict[str, Any]
    outputs: list[RequestedOutput] | None
    binary_output_default: bool
    timeout_s: float | None
