"""Files of a version directory: checksums, the manifest on disk, atomic publication."""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath

from torchrig.errors import ArtifactError, PackError
from torchrig.packaging.manifest import (
    MANIFEST_FILE,
    FileEntry,
    Manifest,
    manifest_from_json,
    manifest_to_json,
)

CHUNK = 1 << 20


def sha256_of(path: Path) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def file_entry(directory: Path, relative: str) -> FileEntry:
    path = directory / relative
    return FileEntry(path=relative, sha256=sha256_of(path), size=path.stat().st_size)


def read_manifest(version_dir: Path) -> Manifest:
    """Read and validate `<version_dir>/manifest.json`; ArtifactError naming the file if bad."""
    path = Path(version_dir) / MANIFEST_FILE
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ArtifactError(
            f"{path} is missing: the version is incomplete (half-copied or still being "
            "written). Copy the whole version again, or re-pack it with `torchrig pack`."
        ) from None
    except OSError as exc:
        raise ArtifactError(f"cannot read {path}: {exc}.") from None
    return manifest_from_json(data, origin=str(path))


def _resolve(version_dir: Path, relative: str) -> Path:
    parts = PurePosixPath(relative).parts
    if not parts or PurePosixPath(relative).is_absolute() or ".." in parts:
        raise ArtifactError(
            f"{version_dir / MANIFEST_FILE} lists the file {relative!r} outside the version "
            "directory; re-pack the version with `torchrig pack`."
        )
    return version_dir.joinpath(*parts)


def verify_files(version_dir: Path, manifest: Manifest) -> None:
    """Check every file the manifest lists: present, right size, right SHA-256."""
    version_dir = Path(version_dir)
    listed = {entry.path for entry in manifest.files}
    if manifest.program not in listed:
        raise ArtifactError(
            f"{version_dir / MANIFEST_FILE} does not list its program {manifest.program!r} "
            "among its files; re-pack the version with `torchrig pack`."
        )
    fix = "copy the version again from its source, or re-pack it with `torchrig pack`"
    for entry in manifest.files:
        path = _resolve(version_dir, entry.path)
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            raise ArtifactError(f"{path} is missing (listed in the manifest); {fix}.") from None
        if size != entry.size:
            raise ArtifactError(
                f"{path} has {size} bytes, the manifest says {entry.size}: the file is "
                f"truncated or was replaced; {fix}."
            )
        actual = sha256_of(path)
        if actual != entry.sha256:
            raise ArtifactError(
                f"{path} is corrupted (checksum mismatch): its sha256 is {actual[:16]}..., the "
                f"manifest says {entry.sha256[:16]}...; {fix}."
            )


def numeric_versions(model_dir: Path) -> list[int]:
    """The numeric version directory names under a model directory, sorted."""
    if not model_dir.is_dir():
        return []
    return sorted(int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit())


def next_version(model_dir: Path) -> int:
    versions = numeric_versions(model_dir)
    return versions[-1] + 1 if versions else 1


@contextmanager
def staging_directory(model_dir: Path, version: int) -> Iterator[Path]:
    """A hidden temporary directory beside the final one; removed unless published."""
    model_dir.mkdir(parents=True, exist_ok=True)
    staging = model_dir / f".tmp-{version}-{secrets.token_hex(4)}"
    staging.mkdir()
    try:
        yield staging
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def publish(staging: Path, manifest: Manifest, final: Path) -> None:
    """Write manifest.json last, then rename the staging directory to its numeric name."""
    target = staging / MANIFEST_FILE
    with target.open("wb") as handle:
        handle.write(manifest_to_json(manifest))
        handle.flush()
        os.fsync(handle.fileno())
    if final.exists():
        raise PackError(
            f"{final} already exists; versions are immutable. Pack a new version "
            "(leave out --version to take the next free number)."
        )
    try:
        os.rename(staging, final)
    except OSError as exc:
        raise PackError(
            f"cannot publish {final}: {exc.strerror} (another pack may have created it "
            "meanwhile); pack again with another version."
        ) from None


def copy_files(staging: Path, sources: list[Path], *, taken: set[str]) -> list[FileEntry]:
    """Copy files packed beside the program (a tokenizer, a vocabulary) into the version,
    each under its own name, and return their checksummed entries for the manifest."""
    entries: list[FileEntry] = []
    names = set(taken) | {MANIFEST_FILE}
    for source in sources:
        if not source.is_file():
            raise PackError(f"--file {source}: no such file (give the path of a regular file).")
        if source.name in names:
            raise PackError(
                f"--file {source}: the version already has a file named {source.name}; rename it."
            )
        names.add(source.name)
        shutil.copyfile(source, staging / source.name)
        entries.append(file_entry(staging, source.name))
    return entries
