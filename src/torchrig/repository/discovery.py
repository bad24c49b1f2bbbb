"""Finding models and versions in a repository, and deciding which versions are complete.

A version counts only when its manifest.json parses, names this model and version, and
every file it lists is present with the recorded size and sha256 — so a half-copied
upload is reported as incomplete, never loaded. Discovery only reads; loading,
readiness and versions in service belong to `torchrig.runtime`.
"""

from __future__ import annotations

import re
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


def _check_version(
    store: Store, model: str, version: int, path: str, verify_checksums: bool
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

    entries = {e.name: e for e in store.list(path)}
    if MANIFEST_FILE not in entries:
        return incomplete("no manifest.json (half-written or not packed with torchrig pack)")
    try:
        manifest = manifest_from_json(
            store.read_bytes(store.join(path, MANIFEST_FILE)),
            origin=store.join(path, MANIFEST_FILE),
        )
    except ArtifactError as exc:
        return incomplete(exc.message)
    if manifest.name != model or manifest.version != version:
        return incomplete(
            f"manifest.json describes {manifest.name} version {manifest.version}, but lies in "
            f"{model}/{version}; move it or re-pack it",
            manifest,
        )
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
            return incomplete(
                f"{item.path} does not match its checksum in manifest.json (corrupted or still "
                "being copied); copy the version again",
                manifest,
            )
    return VersionInfo(
        model=model, version=version, location=path, complete=True, manifest=manifest
    )


def _model(store: Store, name: str, path: str, verify_checksums: bool) -> ModelInfo:
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
        _check_version(store, name, int(e.name), store.join(path, e.name), verify_checksums)
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

    def index(self, *, verify_checksums: bool = True) -> RepositoryIndex:
        """Every model (a directory with a valid name) and its versions, complete or not."""
        models = []
        for entry in self.store.list(self.store.root):
            if not entry.is_dir or entry.name.startswith(".") or not MODEL_NAME.match(entry.name):
                continue
            path = self._model_path(entry.name)
            models.append(_model(self.store, entry.name, path, verify_checksums))
        return RepositoryIndex(location=self.location, models=models)

    def _model_path(self, name: str) -> str:
        return self.store.join(self.store.root, name)

    def model(self, name: str, *, verify_checksums: bool = True) -> ModelInfo:
        if not MODEL_NAME.match(name):
            raise ModelNotFound(f"{name!r} is not a valid model name")
        path = self._model_path(name)
        try:
            names = {e.name for e in self.store.list(self.store.root) if e.is_dir}
        except OSError as exc:
            raise RepositoryError(f"cannot list repository {self.location}: {exc}") from None
        if name not in names:
            raise ModelNotFound(
                f"model {name!r} is not in repository {self.location} "
                f"(models: {', '.join(sorted(n for n in names if MODEL_NAME.match(n))) or 'none'})"
            )
        return _model(self.store, name, path, verify_checksums)

    def local_version_dir(self, version: VersionInfo) -> Path:
        """A local directory holding the version's files (remote versions are copied)."""
        if _is_local(self.store):
            return Path(version.location)
        if self.cache_dir is None:
            raise RepositoryError(
                f"repository {self.location} is remote: give a cache directory to copy versions to"
            )
        return self.store.local_dir(version.location, self.cache_dir)


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
