"""The environment lock: a facts snapshot plus the installed Python distributions.

Written as stable, diff-friendly JSON (sorted keys, two-space indent, packages sorted by
name) with a schema version. The same structure is the environment fingerprint that
`torchrig pack` embeds into model artifacts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import msgspec

from torchrig.errors import SnapshotError
from torchrig.facts.model import Snapshot

LOCK_KIND = "torchrig-env-lock"
LOCK_SCHEMA_VERSION = 1


class Distribution(msgspec.Struct, frozen=True, kw_only=True):
    """One installed Python distribution, as its metadata records it."""

    name: str  # canonical (PEP 503) name: "nvidia-cudnn-cu12"
    version: str
    installer: str | None = None  # the INSTALLER file: "pip", "uv", "conda"
    requested: bool | None = None  # installed on purpose (REQUESTED file), not as a dependency
    source: Literal["index", "file", "url", "vcs", "editable"] | None = None
    url: str | None = None  # from direct_url.json, credentials removed
    hash: str | None = None  # "sha256=..." where the installer recorded the archive's hash


class EnvLock(msgspec.Struct, frozen=True, kw_only=True):
    """What an environment is: the machine facts and every Python distribution."""

    kind: str = LOCK_KIND
    schema_version: int = LOCK_SCHEMA_VERSION
    torchrig_version: str
    snapshot: Snapshot
    packages: list[Distribution] = []


def lock_to_json(lock: EnvLock) -> bytes:
    raw = msgspec.json.encode(lock, order="sorted")
    return msgspec.json.format(raw, indent=2) + b"\n"


def lock_from_json(data: bytes | str, *, origin: str = "lock") -> EnvLock:
    """Parse and validate a lock; every defect is a `SnapshotError` that names the fix."""
    retake = "Take it again with `torchrig env snapshot -o FILE`."
    try:
        head = msgspec.json.decode(data)
    except msgspec.DecodeError as exc:
        raise SnapshotError(
            f"{origin} is not valid JSON ({exc}); it may be truncated. {retake}"
        ) from None
    if not isinstance(head, dict) or head.get("kind") != LOCK_KIND:
        raise SnapshotError(
            f'{origin} is not a torchrig environment lock (no "kind": "{LOCK_KIND}"). {retake}'
        )
    version = head.get("schema_version")
    if version != LOCK_SCHEMA_VERSION:
        raise SnapshotError(
            f"{origin} has lock schema_version {version!r}; this torchrig reads schema "
            f"{LOCK_SCHEMA_VERSION}. {retake}"
        )
    try:
        return msgspec.convert(head, type=EnvLock)
    except msgspec.ValidationError as exc:
        raise SnapshotError(f"{origin} does not match the lock schema: {exc}. {retake}") from None


def read_bytes(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise SnapshotError(f"{what} {path} does not exist.") from None
    except IsADirectoryError:
        raise SnapshotError(f"{what} {path} is a directory; give the JSON file.") from None
    except OSError as exc:
        raise SnapshotError(f"cannot read {what} {path}: {exc.strerror}.") from None


def load_lock(path: Path) -> EnvLock:
    return lock_from_json(read_bytes(path, "lock file"), origin=str(path))


def write_lock(lock: EnvLock, path: Path) -> None:
    try:
        path.write_bytes(lock_to_json(lock))
    except OSError as exc:
        raise SnapshotError(f"cannot write lock to {path}: {exc.strerror}.") from None


def load_any_snapshot(path: Path) -> Snapshot:
    """The snapshot of a snapshot file or of a lock file, whichever `path` holds."""
    from torchrig.facts.model import snapshot_from_json

    data = read_bytes(path, "snapshot file")
    try:
        head = msgspec.json.decode(data)
    except msgspec.DecodeError:
        head = None  # snapshot_from_json reports it
    if isinstance(head, dict) and head.get("kind") == LOCK_KIND:
        return lock_from_json(data, origin=str(path)).snapshot
    return snapshot_from_json(data, origin=str(path))
