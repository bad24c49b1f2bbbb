"""Where a repository lives: a local directory or an fsspec URL (s3://, gs://, memory://).

One small interface so discovery does not care which: list a directory, read a file,
stream a file for hashing, copy a directory to a local cache. Listings are read fresh
after `refresh()` (fsspec caches directory listings, which would hide a new upload from
a poll), and each entry carries a `stamp` (mtime, or the object's ETag) so that a file
already verified need not be hashed again while it is unchanged.
"""

from __future__ import annotations

import hashlib
import secrets
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from torchrig.errors import RepositoryError

CHUNK = 1 << 20


@dataclass(frozen=True)
class Entry:
    name: str
    is_dir: bool
    size: int
    stamp: str = ""  # changes when the file does: mtime_ns locally, ETag/mtime remotely


class Store(Protocol):
    location: str  # as the user gave it: a path or a URL
    root: str  # the repository's root in the store's own path syntax

    def join(self, *parts: str) -> str: ...
    def refresh(self) -> None: ...
    def list(self, path: str) -> list[Entry]: ...
    def read_bytes(self, path: str) -> bytes: ...
    def chunks(self, path: str) -> Iterator[bytes]: ...
    def local_dir(self, path: str, cache: Path) -> Path: ...


class LocalStore:
    def __init__(self, root: Path) -> None:
        self.root = str(root)
        self.location = str(root)

    def join(self, *parts: str) -> str:
        return str(Path(*parts))

    def refresh(self) -> None:
        """Local listings are never cached."""

    def list(self, path: str) -> list[Entry]:
        entries = []
        for child in sorted(Path(path).iterdir()):
            try:
                info = child.stat()
            except OSError:
                continue  # vanished while listing (an upload in progress)
            is_dir = stat.S_ISDIR(info.st_mode)
            size = 0 if is_dir else info.st_size
            entries.append(Entry(child.name, is_dir, size, str(info.st_mtime_ns)))
        return entries

    def read_bytes(self, path: str) -> bytes:
        return Path(path).read_bytes()

    def chunks(self, path: str) -> Iterator[bytes]:
        with open(path, "rb") as handle:
            while block := handle.read(CHUNK):
                yield block

    def local_dir(self, path: str, cache: Path) -> Path:
        return Path(path)


class FsspecStore:
    """A repository behind an fsspec URL; versions are copied to a local cache to load."""

    def __init__(self, url: str) -> None:
        try:
            import fsspec
        except ImportError:  # pragma: no cover - fsspec comes with torch
            raise RepositoryError(
                f"repository {url} needs fsspec: pip install fsspec (and s3fs for s3://)."
            ) from None
        try:
            fs, root = fsspec.core.url_to_fs(url)
        except (ImportError, ValueError) as exc:
            raise RepositoryError(
                f"cannot open repository {url}: {exc}. For s3:// install s3fs, for gs:// gcsfs."
            ) from None
        self.fs: Any = fs
        self.root = root.rstrip("/")
        self.location = url

    def join(self, *parts: str) -> str:
        return "/".join(p.rstrip("/") for p in parts)

    def refresh(self) -> None:
        """Forget cached listings, so that the next `list` sees new and removed objects."""
        self.fs.invalidate_cache()

    def list(self, path: str) -> list[Entry]:
        entries = []
        for info in self.fs.ls(path, detail=True):
            name = str(info["name"]).rstrip("/").rsplit("/", 1)[-1]
            stamp = info.get("ETag") or info.get("LastModified") or info.get("mtime") or ""
            entries.append(
                Entry(
                    name,
                    info.get("type") == "directory",
                    int(info.get("size") or 0),
                    str(stamp),
                )
            )
        return sorted(entries, key=lambda e: e.name)

    def read_bytes(self, path: str) -> bytes:
        data: bytes = self.fs.cat_file(path)
        return data

    def chunks(self, path: str) -> Iterator[bytes]:
        with self.fs.open(path, "rb") as handle:
            while block := handle.read(CHUNK):
                yield block

    def local_dir(self, path: str, cache: Path) -> Path:
        """A fresh copy per call: a version reloaded beside its running self (new config)
        must not pull the files from under it; the caller deletes it when released."""
        digest = hashlib.sha256(f"{self.location}|{path}".encode()).hexdigest()[:16]
        target = cache / f"{digest}-{secrets.token_hex(4)}"
        target.mkdir(parents=True)
        self.fs.get(path.rstrip("/") + "/", str(target), recursive=True)
        return target


def open_store(location: str | Path) -> Store:
    """A local directory, or an fsspec URL (anything with `://` other than file://)."""
    text = str(location)
    if "://" in text and not text.startswith("file://"):
        return FsspecStore(text)
    root = Path(text.removeprefix("file://")).expanduser()
    if not root.is_dir():
        raise RepositoryError(
            f"model repository {root} is not a directory; create it with `torchrig pack` or "
            "point to an existing repository."
        )
    return LocalStore(root.resolve())


def sha256_of(store: Store, path: str) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    for block in store.chunks(path):
        digest.update(block)
        size += len(block)
    return digest.hexdigest(), size
