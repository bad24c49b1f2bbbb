"""V2 server and model metadata bodies (`GET /v2`, `GET /v2/models/{m}`)."""

from __future__ import annotations

import msgspec

from torchrig.packaging.manifest import TensorSpec


class _ServerMetadata(msgspec.Struct):
    name: str
    version: str
    extensions: list[str]


class _ModelMetadata(msgspec.Struct):
    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]


def server_metadata(name: str, version: str, extensions: list[str]) -> bytes:
    """`{name, version, extensions}`; list "binary_tensor_data" when binary is served."""
    return msgspec.json.encode(_ServerMetadata(name, version, extensions))


def model_metadata(
    name: str,
    versions: list[str],
    platform: str,
    inputs: list[TensorSpec],
    outputs: list[TensorSpec],
) -> bytes:
    """`{name, versions, platform, inputs, outputs}`, each tensor `{name, datatype, shape}`."""
    return msgspec.json.encode(_ModelMetadata(name, versions, platform, inputs, outputs))
