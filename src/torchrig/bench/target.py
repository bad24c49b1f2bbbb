"""Before any load: is URL a V2 server, does it serve the model, what does a request hold.

Each failure here is a UsageError that names the fix (exit 2): an unreachable URL, a
server that does not speak V2, an unknown model or version, shapes the metadata leaves
open, BF16 over JSON.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from urllib.parse import quote

import msgspec

from torchrig.bench.client import ConnectionFailed, Endpoint, fetch, parse_url
from torchrig.bench.payload import (
    ModelMetadata,
    RequestShapes,
    build_pool,
    infer_path,
    parse_metadata,
    resolve_shapes,
)
from torchrig.bench.results import error_text
from torchrig.errors import UsageError

BINARY_EXTENSION = "binary_tensor_data"


@dataclass(frozen=True)
class Target:
    """A model on a V2 server, ready to be loaded: its metadata and the encoded requests."""

    endpoint: Endpoint
    model: str
    version: str | None
    server_name: str
    server_version: str
    metadata: ModelMetadata
    binary: bool
    shapes: RequestShapes
    requests: list[bytes]


class _ServerMetadata(msgspec.Struct):
    name: str
    version: str = ""
    extensions: list[str] = []


class _Index(msgspec.Struct):
    name: str


def prepare(
    url: str,
    model: str,
    *,
    version: str | None,
    batch: int | None,
    shapes: dict[str, list[int]],
    binary: bool | None,
    timeout_s: float = 10.0,
) -> Target:
    """Check the server and model, resolve shapes, and encode the request pool.

    `binary` None picks the binary extension when the server lists it, JSON otherwise.
    """
    endpoint = parse_url(url)
    server, metadata = asyncio.run(_discover(endpoint, model, version, timeout_s))
    resolved = resolve_shapes(metadata, batch, shapes)
    if binary is None:
        binary = BINARY_EXTENSION in server.extensions
    requests = build_pool(endpoint, infer_path(model, version), resolved, binary=binary)
    return Target(
        endpoint=endpoint,
        model=model,
        version=version,
        server_name=server.name,
        server_version=server.version,
        metadata=metadata,
        binary=binary,
        shapes=resolved,
        requests=requests,
    )


async def _discover(
    endpoint: Endpoint, model: str, version: str | None, timeout_s: float
) -> tuple[_ServerMetadata, ModelMetadata]:
    try:
        answer = await fetch(endpoint, "GET", "/v2", timeout_s=timeout_s)
    except ConnectionFailed as exc:
        raise UsageError(
            f"{exc}; check the URL and that the server is running "
            "(`torchrig serve --demo` starts one on http://127.0.0.1:8000)"
        ) from None
    try:
        if answer.status != 200:
            raise msgspec.DecodeError(f"status {answer.status}")
        server = msgspec.json.decode(answer.body, type=_ServerMetadata)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise UsageError(
            f"{endpoint.url} is not a V2 inference server: GET /v2 did not answer with server "
            f"metadata ({exc}); give the base URL of a KServe V2 / Triton / MLServer / "
            "torchrig server"
        ) from None
    path = f"/v2/models/{quote(model, safe='')}"
    if version is not None:
        path += f"/versions/{quote(version, safe='')}"
    try:
        answer = await fetch(endpoint, "GET", path, timeout_s=timeout_s)
    except ConnectionFailed as exc:
        raise UsageError(f"{exc} (while reading the metadata of model {model!r})") from None
    if answer.status == 404:
        known = await _model_names(endpoint, timeout_s)
        what = f"model {model!r}" + (f" version {version}" if version is not None else "")
        listing = f" (models: {', '.join(known)})" if known else ""
        raise UsageError(
            f"{what} is not served at {endpoint.url}{listing}; check --model and --version"
        )
    if answer.status != 200:
        raise UsageError(
            f"GET {path} answered {answer.status}: "
            f"{error_text(answer.body[:300].decode('utf-8', 'replace'))}; "
            "wait until the model is ready, or check --model and --version"
        )
    return server, parse_metadata(answer.body, f"GET {endpoint.url}{path}")


async def _model_names(endpoint: Endpoint, timeout_s: float) -> list[str]:
    """The repository index's model names where the server has one (Triton, torchrig)."""
    try:
        answer = await fetch(
            endpoint, "POST", "/v2/repository/index", body=b"{}", timeout_s=timeout_s
        )
        entries = msgspec.json.decode(answer.body, type=list[_Index])
    except (ConnectionFailed, msgspec.DecodeError, msgspec.ValidationError):
        return []
    return sorted({entry.name for entry in entries})
