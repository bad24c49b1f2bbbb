"""The model management API (V2 repository extension) and the guard on model paths.

`POST /v2/repository/models/{m}/load|unload` change what is served; they answer only in
`--control-mode explicit` with a bearer token configured (from the file named by
`--management-token-file` or the TORCHRIG_SERVE_MANAGEMENT_TOKEN variable, never a flag:
flags show in `ps`), compared in constant time; otherwise they are off (403).
`POST /v2/repository/index` only reads, and stays open like the health endpoints: it
tells no more than /v2/health/ready does when a model fails.

Every path that names a model is checked on the raw (still percent-encoded) path, so
`..`, an absolute path, `%2e%2e%2f`, `%2F`, backslashes and NUL are refused with 400
before any routing or lookup happens.
"""

from __future__ import annotations

import asyncio
import hmac
import os
import re
from collections.abc import Mapping, MutableMapping
from pathlib import Path
from typing import Any

import msgspec

from torchrig.errors import (
    ConfigError,
    InvalidInput,
    ManagementDisabled,
    ModelNotFound,
    Unauthorized,
)
from torchrig.repository.discovery import MODEL_NAME
from torchrig.runtime import ModelRegistry

CONTROL_MODES = ("none", "poll", "explicit")
TOKEN_ENV = "TORCHRIG_SERVE_MANAGEMENT_TOKEN"
MODEL_PREFIXES = ("/v2/models/", "/v2/repository/models/")
NAME_RULE = "model names are letters, digits, '_', '.' and '-', starting with a letter or digit"


def read_management_token(token_file: str, environ: Mapping[str, str] | None = None) -> str | None:
    """The management token from `token_file` or TORCHRIG_SERVE_MANAGEMENT_TOKEN (None: off)."""
    env = os.environ if environ is None else environ
    from_env = env.get(TOKEN_ENV, "")
    if token_file and from_env:
        raise ConfigError(
            f"both --management-token-file and {TOKEN_ENV} are set; keep one of them."
        )
    if token_file:
        try:
            token = Path(token_file).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(
                f"cannot read the management token file {token_file}: {exc}."
            ) from None
        if not token:
            raise ConfigError(f"the management token file {token_file} is empty.")
        return token
    return from_env.strip() or None


def _segment_problem(segment: str) -> str | None:
    if segment == "":
        return "is empty (an absolute path or a doubled '/')"
    if "%" in segment:
        return "is percent-encoded (%2e, %2f, %5c, %00 and the like are refused)"
    if "\\" in segment:
        return "contains a backslash"
    if "\x00" in segment:
        return "contains NUL"
    if segment in (".", ".."):
        return "is a relative path segment"
    return None


# a model path of plain segments only (a name, then letters, digits, '_' and '-'): nothing
# in it can traverse, so the segment-by-segment check below is skipped (every request)
_PLAIN_MODEL_PATH = re.compile(
    r"/v2/(?:repository/)?models/[A-Za-z0-9][A-Za-z0-9_.-]*(?:/[A-Za-z0-9_-]+)*"
)


def check_model_path(scope: MutableMapping[str, Any]) -> None:
    """Refuse a path whose model name (or a later segment) could traverse (InvalidInput)."""
    path: str = scope["path"]
    raw_bytes = scope.get("raw_path")
    raw = raw_bytes.decode("latin-1") if raw_bytes else path
    if raw == path and _PLAIN_MODEL_PATH.fullmatch(path):
        return
    prefix = next((p for p in MODEL_PREFIXES if path.startswith(p) or raw.startswith(p)), None)
    if prefix is None:
        return
    if not raw.startswith(prefix):
        raise InvalidInput(f"the path {raw!r} percent-encodes part of {prefix!r}; send it plain")
    segments = raw[len(prefix) :].split("/")
    name = segments[0]
    problem = _segment_problem(name)
    if problem is None and not MODEL_NAME.match(name):
        problem = "has other characters"
    if problem is not None:
        raise InvalidInput(f"model name {name!r} in the path {problem}; {NAME_RULE}")
    for segment in segments[1:]:
        problem = _segment_problem(segment)
        if problem is not None:
            raise InvalidInput(
                f"path segment {segment!r} after model {name} {problem}; send a plain path"
            )


class Management:
    """The load/unload/index handlers; `token=None` turns load and unload off."""

    def __init__(self, registry: ModelRegistry, *, control_mode: str, token: str | None) -> None:
        self.registry = registry
        self.control_mode = control_mode
        self._token = token.encode() if token else None

    def authorize(self, headers: Mapping[str, str]) -> None:
        if self._token is None:
            raise ManagementDisabled(
                f"the management API is off; set {TOKEN_ENV} or --management-token-file "
                "(and --control-mode explicit) to turn it on"
            )
        if self.control_mode != "explicit":
            raise ManagementDisabled(
                f"the management API is off in --control-mode {self.control_mode}: models "
                "follow the repository there; serve with --control-mode explicit to load and "
                "unload through the API"
            )
        scheme, _, given = headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            given.strip().encode(), self._token
        ):
            raise Unauthorized(
                "the management API needs the header 'Authorization: Bearer <token>' with "
                "the server's token"
            )

    async def load(self, name: str) -> None:
        """Load `name` as its policy says; raises with the reasons when nothing serves."""
        names = await asyncio.to_thread(self.registry.repository.model_names)
        if name not in names:
            raise ModelNotFound(
                f"model {name!r} is not in repository {self.registry.repository.location}"
            )
        await self.registry.load(name)
        self.registry.resolve(name)  # 503 with every version's state and reason

    async def unload(self, name: str) -> None:
        await self.registry.unload(name)

    async def index(self, body: bytes) -> bytes:
        """Every version with its state and reason; `{"ready": true}` keeps the ready ones."""
        only_ready = False
        if body.strip():
            try:
                request = msgspec.json.decode(body)
            except (msgspec.DecodeError, RecursionError):  # deep nesting: RecursionError
                raise InvalidInput(
                    'the index request body is not JSON of modest depth, e.g. {"ready": true}'
                ) from None
            only_ready = isinstance(request, dict) and request.get("ready") is True
        rows: list[dict[str, Any]] = [
            {
                "name": v.model,
                "version": str(v.version),
                "state": v.state.upper(),
                "reason": v.reason or "",
            }
            for v in self.registry.versions()
        ]
        rows += [
            {"name": name, "state": "UNAVAILABLE", "reason": reason}
            for name, reason in self.registry.model_errors().items()
        ]
        if self.control_mode == "explicit":  # what could be loaded too
            known = {row["name"] for row in rows}
            names = await asyncio.to_thread(self.registry.repository.model_names)
            rows += [
                {"name": name, "state": "UNAVAILABLE", "reason": "not loaded"}
                for name in names
                if name not in known
            ]
        if only_ready:
            rows = [row for row in rows if row["state"] == "READY"]
        return msgspec.json.encode(rows)
