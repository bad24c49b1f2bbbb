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
from torchrig.jsondoc import from_json, read_file, to_json

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
    return to_json(lock)


def lock_from_json(data: bytes | str, *, origin: str = "lock") -> EnvLock:
    """Parse and validate a lock; every defect is a `SnapshotError` that names the fix."""
    return from_json(
        data,
        EnvLock,
        origin=origin,
        what="environment lock",
        schema="lock",
        schema_version=LOCK_SCHEMA_VERSION,
        error=SnapshotError,
        fix="Take it again with `torchrig env snapshot -o FILE`.",
        kind=LOCK_KIND,
    )


def load_lock(path: Path) -> EnvLock:
    return lock_from_json(read_file(path, "lock file", SnapshotError), origin=str(path))


def write_lock(lock: EnvLock, path: Path) -> None:
    try:
        path.write_bytes(lock_to_json(lock))
    except OSError as exc:
        raise SnapshotError(f"cannot write lock to {path}: {exc.strerror}.") from None


def load_any_snapshot(path: Path) -> Snapshot:
    """The snapshot of a snapshot file or of a lock file, whichever `path` holds."""
    from torchrig.facts.model import snapshot_from_json

    data = read_file(path, "snapshot file", SnapshotError)
    try:
        head = msgspec.json.decode(data)
    except msgspec.DecodeError:
        head = None  # snapshot_from_json reports it
    if isinstance(head, dict) and head.get("kind") == LOCK_KIND:
        return lock_from_json(data, origin=str(path)).snapshot
    return snapshot_from_json(data, origin=str(path))
