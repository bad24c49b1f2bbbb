"""Finding models and versions in a repository, and deciding which versions are complete.

A version counts only when its manifest.json parses, names this model and version, and
every file it lists is present with the recorded size and sha256 — so a half-copied
upload is reported as incomplete, never loaded. Discovery only reads; loading,
readiness and versions in service belong to `torchrig.runtime`.

A repository that is polled is indexed again and again: a version whose manifest and
files (name, size, stamp) are unchanged since it was last verified is not hashed again,
so a poll costs listings, not reads of every weight file (which, on s3://, would mean
downloading every model at every interval).
"""

from __future__ import annotations

import hashlib
import re
import shutil
import threading
from collections import OrderedDict
from pathlib import Path

import msgspec

from torchrig.errors import ArtifactError, ModelNotFound, RepositoryError
from torchrig.packaging.manifest import MANIFEST_FILE, Manifest, manifest_from_json
from torchrig.repository.config import CONFIG_FILE, ModelConfig, parse_config
from torchrig.repository.store import Entry, Store, open_store, sha256_of

MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class VersionInfo(msgspec.Struct, frozen=True, kw_only=True):
    model: str
    version: int
    location: str  # path or URL of the version directory
    complete: bool
    problem: str | None = None  # why it is not complete
    manifest: Manifest | None = None


class ModelInfo(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    location: str
    config: ModelConfig | None  # None when config.toml is invalid
    config_error: str | None = None
    versions: list[VersionInfo] = []  # ascending by version


class RepositoryIndex(msgspec.Struct, frozen=True, kw_only=True):
    location: str
    models: list[ModelInfo]


class VerifiedVersions:
    """Outcomes of checksum verification (None: passed, else the problem), keyed by what
    would change with the files (so a corrupt version is not hashed at every poll either)."""

    def __init__(self, capacity: int = 4096) -> None:
        self._outcomes: OrderedDict[tuple[object, ...], str | None] = OrderedDict()
        self._capacity = capacity
        self._lock = threading.Lock()  # indexing runs in worker threads

    def lookup(self, key: tuple[object, ...]) -> tuple[bool, str | None]:
        """(known, problem)."""
        with self._lock:
            if key in self._outcomes:
                self._outcomes.move_to_end(key)
                return True, self._outcomes[key]
            return False, None

    def record(self, key: tuple[object, ...], problem: str | None) -> None:
        with self._lock:
            self._outcomes[key] = problem
            while len(self._outcomes) > self._capacity:
                self._outcomes.popitem(last=False)


def _stamp_key(
    path: str, manifest_bytes: bytes, manifest: Manifest, entries: dict[str, Entry]
) -> tuple[object, ...] | None:
    """What identifies a verified version's files; None when the store gives no stamps."""
    tops = sorted({item.path.split("/", 1)[0] for item in manifest.files})
    stamps = [(n, entries[n].size, entries[n].stamp) for n in tops if n in entries]
    if len(stamps) != len(tops) or any(not stamp for _, _, stamp in stamps):
        return None
    return (path, hashlib.sha256(manifest_bytes).hexdigest(), tuple(stamps))


def _check_version(
    store: Store,
    model: str,
    version: int,
    path: str,
    verify_checksums: bool,
    *,
    verified: VerifiedVersions | None = None,
) -> VersionInfo:
    def incomplete(problem: str, manifest: Manifest | None = None) -> VersionInfo:
        return VersionInfo(
            model=model,
            version=version,
            location=path,
            complete=False,
            problem=problem,
            manifest=manifest,
        )

    try:
        entries = {e.name: e for e in store.list(path)}
    except OSError as exc:  # removed while indexing
        return incomplete(f"cannot be listed: {exc}")
    if MANIFEST_FILE not in entries:
        return incomplete("no manifest.json (half-written or not packed with torchrig pack)")
    try:
        manifest_bytes = store.read_bytes(store.join(path, MANIFEST_FILE))
        manifest = manifest_from_json(manifest_bytes, origin=store.join(path, MANIFEST_FILE))
    except ArtifactError as exc:
        return incomplete(exc.message)
    except OSError as exc:  # removed between the listing and the read
        return incomplete(f"manifest.json cannot be read: {exc}")
    if manifest.name != model or manifest.version != version:
        return incomplete(
            f"manifest.json describes {manifest.name} version {manifest.version}, but lies in "
            f"{model}/{version}; move it or re-pack it",
            manifest,
        )
    key = _stamp_key(path, manifest_bytes, manifest, entries) if verify_checksums else None
    if key is not None and verified is not None:
        known, problem = verified.lookup(key)
        if known and problem is not None:
            return incomplete(problem, manifest)
        verify_checksums = not known  # the same files were hashed before
    for item in manifest.files:
        file_path = store.join(path, *item.path.split("/"))
        top = item.path.split("/", 1)[0]
        if top not in entries:
            return incomplete(f"{item.path} is missing (upload incomplete?)", manifest)
        if not verify_checksums:
            continue
        try:
            digest, size = sha256_of(store, file_path)
        except OSError as exc:
            return incomplete(f"{item.path} cannot be read: {exc}", manifest)
        if size != item.size or digest != item.sha256:
            problem = (
                f"{item.path} does not match its checksum in manifest.json (corrupted or still "
                "being copied); copy the version again"
            )
            if manifest.handler is not None and item.path == manifest.handler.file:
                problem = (
                    f"{item.path} does not match its sha256 in manifest.json: the handler's "
                    "code changed since it was packed, so it is not run; re-pack the handler "
                    "you trust with `torchrig pack --handler FILE`"
                )
            if key is not None and verified is not None:
                verified.record(key, problem)
            return incomplete(problem, manifest)
    if key is not None and verified is not None:
        verified.record(key, None)
    return VersionInfo(
        model=model, version=version, location=path, complete=True, manifest=manifest
    )


def _model(
    store: Store,
    name: str,
    path: str,
    verify_checksums: bool,
    verified: VerifiedVersions | None = None,
) -> ModelInfo:
    entries = store.list(path)
    config: ModelConfig | None = ModelConfig()
    config_error: str | None = None
    if any(e.name == CONFIG_FILE and not e.is_dir for e in entries):
        origin = store.join(path, CONFIG_FILE)
        try:
            config = parse_config(store.read_bytes(origin).decode("utf-8"), origin=origin)
        except (RepositoryError, UnicodeDecodeError) as exc:
            config = None
            config_error = exc.message if isinstance(exc, RepositoryError) else str(exc)
    versions = [
        _check_version(
            store, name, int(e.name), store.join(path, e.name), verify_checksums, verified=verified
        )
        for e in _numeric_dirs(entries)
    ]
    return ModelInfo(
        name=name,
        location=path,
        config=config,
        config_error=config_error,
        versions=sorted(versions, key=lambda v: v.version),
    )


def _numeric_dirs(entries: list[Entry]) -> list[Entry]:
    return [e for e in entries if e.is_dir and e.name.isdigit() and int(e.name) > 0]


class Repository:
    """A model repository on disk or behind an fsspec URL."""

    def __init__(self, location: str | Path, *, cache_dir: Path | None = None) -> None:
        self.store = open_store(location)
        self.location = self.store.location
        self.cache_dir = cache_dir
        self._verified = VerifiedVersions()

    def index(self, *, verify_checksums: bool = True) -> RepositoryIndex:
        """Every model (a directory with a valid name) and its versions, complete or not."""
        models = []
        for name in self.model_names():
            try:
                models.append(
                    _model(
                        self.store, name, self._model_path(name), verify_checksums, self._verified
                    )
                )
            except FileNotFoundError:  # removed since the listing: it is gone
                continue
        return RepositoryIndex(location=self.location, models=models)

    def model_names(self) -> list[str]:
        """The models in the repository (fresh listing), without reading their versions."""
        self.store.refresh()
        try:
            entries = self.store.list(self.store.root)
        except OSError as exc:
            raise RepositoryError(f"cannot list repository {self.location}: {exc}") from None
        return [
            e.name
            for e in entries
            if e.is_dir and not e.name.startswith(".") and MODEL_NAME.match(e.name)
        ]

    def _model_path(self, name: str) -> str:
        return self.store.join(self.store.root, name)

    def model(self, name: str, *, verify_checksums: bool = True) -> ModelInfo:
        if not MODEL_NAME.match(name):
            raise ModelNotFound(f"{name!r} is not a valid model name")
        names = self.model_names()
        if name not in names:
            raise ModelNotFound(
                f"model {name!r} is not in repository {self.location} "
                f"(models: {', '.join(sorted(names)) or 'none'})"
            )
        return _model(self.store, name, self._model_path(name), verify_checksums, self._verified)

    def local_version_dir(self, version: VersionInfo) -> Path:
        """A local directory holding the version's files (remote versions are copied)."""
        if _is_local(self.store):
            return Path(version.location)
        if self.cache_dir is None:
            raise RepositoryError(
                f"repository {self.location} is remote: give a cache directory to copy versions to"
            )
        return self.store.local_dir(version.location, self.cache_dir)

    def release_local_dir(self, local: Path) -> None:
        """Delete a copy `local_dir` made for a remote version (after it was unloaded)."""
        if self.cache_dir is None or _is_local(self.store):
            return
        if local.resolve().is_relative_to(self.cache_dir.resolve()):
            shutil.rmtree(local, ignore_errors=True)


def _is_local(store: Store) -> bool:
    from torchrig.repository.store import LocalStore

    return isinstance(store, LocalStore)


def selected_versions(model: ModelInfo) -> list[VersionInfo]:
    """The complete versions the model's version policy serves, highest first."""
    complete = [v for v in model.versions if v.complete]
    policy = (model.config or ModelConfig()).version_policy
    if policy.policy == "all":
        chosen = complete
    elif policy.policy == "specific":
        wanted = set(policy.versions)
        chosen = [v for v in complete if v.version in wanted]
    else:
        chosen = complete[-policy.latest :]
    return sorted(chosen, key=lambda v: -v.version)
