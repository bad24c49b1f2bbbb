"""The Open Inference Protocol (KServe V2, REST) on the wire <-> torch tensors.

Requests: JSON, or JSON followed by Triton's binary tensor data (the JSON's length in the
Inference-Header-Content-Length header), optionally gzip/deflate-compressed. Responses:
JSON, or JSON + binary outputs, per output or request-wide. BF16 travels only in binary;
BYTES tensors, which torch cannot hold, are `BytesTensor`s (a flat `list[bytes]` with a
`shape`). The codecs know nothing about HTTP beyond the header values passed in.
"""

from torchrig.protocol.metadata import model_metadata, server_metadata
from torchrig.protocol.request import decode_infer_request
from torchrig.protocol.response import encode_error, encode_infer_response
from torchrig.protocol.types import BytesTensor, DecodedRequest, RequestedOutput

__all__ = [
    "BytesTensor",
    "DecodedRequest",
    "RequestedOutput",
    "decode_infer_request",
    "encode_error",
    "encode_infer_response",
    "model_metadata",
    "server_metadata",
]
