"""Request bodies before JSON: Content-Encoding and the size limit after decompression."""

from __future__ import annotations

import zlib

from torchrig.errors import InvalidInput, PayloadTooLarge

Buffer = bytes | bytearray | memoryview


def _looks_like_zlib(body: Buffer) -> bool:
    # RFC 1950 header: CM = 8 (deflate) and the 16-bit header is a multiple of 31.
    return len(body) >= 2 and body[0] & 0x0F == 8 and (body[0] << 8 | body[1]) % 31 == 0


def decompress_body(body: Buffer, content_encoding: str | None, max_body_bytes: int) -> Buffer:
    """The body with its Content-Encoding (gzip, deflate, identity) undone.

    Decompression stops one byte past `max_body_bytes`, so a small compressed body that
    expands without bound (a decompression bomb) costs at most the limit in memory.
    """
    encoding = (content_encoding or "identity").strip().lower()
    if encoding in ("", "identity"):
        if len(body) > max_body_bytes:
            raise PayloadTooLarge(
                f"the request body has {len(body)} bytes; the limit is {max_body_bytes}"
            )
        return body
    if encoding in ("gzip", "x-gzip"):
        wbits = 16 + zlib.MAX_WBITS
    elif encoding == "deflate":
        # HTTP "deflate" is zlib-wrapped, but some clients send a raw deflate stream.
        wbits = zlib.MAX_WBITS if _looks_like_zlib(body) else -zlib.MAX_WBITS
    else:
        raise InvalidInput(
            f"Content-Encoding {content_encoding!r} is not supported; "
            "send the body as gzip, deflate or uncompressed"
        )
    decompressor = zlib.decompressobj(wbits)
    try:
        data = decompressor.decompress(body, max_body_bytes + 1)
    except zlib.error as exc:
        raise InvalidInput(f"the request body is not valid {encoding} data ({exc})") from None
    if len(data) > max_body_bytes:
        raise PayloadTooLarge(
            f"the {encoding}-compressed request body expands beyond the limit of "
            f"{max_body_bytes} bytes"
        )
    if not decompressor.eof:
        raise InvalidInput(f"the {encoding} request body is truncated (the stream does not end)")
    if decompressor.unused_data:
        raise InvalidInput(
            f"the {encoding} request body has {len(decompressor.unused_data)} bytes after "
            "the end of the compressed stream"
        )
    return data
