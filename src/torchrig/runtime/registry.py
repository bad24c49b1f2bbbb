"""The model registry: which versions are loading, ready or failed, and routing to them.

Discovery (`torchrig.repository`) says what exists; the registry loads the versions each
model's policy selects, each in a worker thread so the event loop stays responsive. A
version that fails to load is marked failed with the reason and never affects the others.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import msgspec

from torchrig.envlock.model import EnvLock
from torchrig.errors import ModelNotFound, ModelNotReady, TorchrigError
from torchrig.packaging.manifest import Manifest, TensorSpec
from torchrig.repository import ModelConfig, Repository, VersionInfo, selected_versions
from torchrig.runtime.batcher import Batcher, BatchRecord
from torchrig.runtime.executor import Executor
from torchrig.runtime.validation import validate_inputs

log = logging.getLogger(__name__)

State = Literal["loading", "ready", "failed", "unloading", "unloaded"]
PLATFORM = {
    "torch.export": "pytorch_torchexport",
    "torchscript": "pytorch_libtorch",
    "aoti": "pytorch_aoti",
}


@dataclass
class ServedVersion:
    model: str
    version: int
    state: State
    config: ModelConfig
    manifest: Manifest | None = None
    reason: str | None = None  # why it failed
    warnings: list[str] = field(default_factory=list)
    executor: Executor | None = None
    batcher: Batcher | None = None


class ModelMetadata(msgspec.Struct, frozen=True, kw_only=True):
    """What the V2 model metadata endpoint answers."""

    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]


class ModelRegistry:
    def __init__(
        self,
        repository: Repository,
        *,
        device: str | None = None,
        environment: EnvLock | None = None,
    ) -> None:
        self.repository = repository
        self.device = device
        self.environment = environment
        self._versions: dict[tuple[str, int], ServedVersion] = {}
        self._model_errors: dict[str, str] = {}
        self._lock = asyncio.Lock()
        # (model, version) -> per-batch observer for the version's Batcher (metrics)
        self.batch_observer: Callable[[str, str], Callable[[BatchRecord], None]] | None = None

    # ---- lifecycle -----------------------------------------------------------------------

    async def load_all(self) -> None:
        """Load what every model's version policy selects; failures are recorded, not raised."""
        index = await asyncio.to_thread(self.repository.index)
        for model in index.models:
            await self._load_model(model.name)

    async def load(self, name: str, version: int | None = None) -> None:
        """Load one model (its policy's versions, or one `version`)."""
        await self._load_model(name, only=version)

    async def _load_model(self, name: str, only: int | None = None) -> None:
        info = await asyncio.to_thread(self.repository.model, name)
        if info.config is None:
            self._model_errors[name] = info.config_error or "invalid config.toml"
            log.error("model %s not loaded: %s", name, self._model_errors[name])
            return
        self._model_errors.pop(name, None)
        if only is not None:
            chosen = [v for v in info.versions if v.version == only]
            if not chosen:
                raise ModelNotFound(f"model {name} has no version {only}")
        else:
            chosen = selected_versions(info)
            if not chosen:
                problems = "; ".join(
                    f"version {v.version}: {v.problem}" for v in info.versions if v.problem
                )
                self._model_errors[name] = "no complete version" + (
                    f" ({problems})" if problems else ""
                )
                return
        for version in chosen:
            await self._load_version(version, info.config)

    async def _load_version(self, version: VersionInfo, config: ModelConfig) -> None:
        key = (version.model, version.version)
        async with self._lock:
            current = self._versions.get(key)
            if current is not None and current.state in ("loading", "ready"):
                return
            served = ServedVersion(
                model=version.model,
                version=version.version,
                state="loading",
                config=config,
                manifest=version.manifest,
            )
            self._versions[key] = served
        if not version.complete or version.manifest is None:
            served.state, served.reason = "failed", version.problem or "incomplete version"
            return
        try:
            local = await asyncio.to_thread(self.repository.local_version_dir, version)
            executor = Executor(
                Path(local),
                version.manifest,
                config,
                device=self.device,
                environment=self.environment,
            )
            await asyncio.to_thread(executor.load)
        except TorchrigError as exc:
            served.state, served.reason = "failed", exc.message
            log.error(
                "%s version %s failed to load: %s", version.model, version.version, exc.message
            )
            return
        except Exception as exc:  # a broken artifact must not take the server down
            served.state = "failed"
            served.reason = f"{type(exc).__name__}: {exc}"
            log.exception("%s version %s failed to load", version.model, version.version)
            return
        served.executor = executor
        served.warnings = executor.warnings
        observer = None
        if self.batch_observer is not None:
            observer = self.batch_observer(version.model, str(version.version))
        served.batcher = Batcher(
            executor,
            config.batching,
            instances=config.instances,
            batching=version.manifest.batching,
            name=f"{version.model}/{version.version}",
            observer=observer,
        )
        served.state = "ready"
        for warning in executor.warnings:
            log.warning("%s version %s: %s", version.model, version.version, warning)

    async def unload(self, name: str, version: int | None = None) -> None:
        targets = [
            v
            for (m, n), v in self._versions.items()
            if m == name and (version is None or n == version)
        ]
        if not targets:
            raise ModelNotFound(f"model {name} has no loaded version to unload")
        for served in targets:
            await self._release(served)

    async def _release(self, served: ServedVersion) -> None:
        served.state = "unloading"
        if served.batcher is not None:
            await asyncio.to_thread(served.batcher.close)
        if served.executor is not None:
            await asyncio.to_thread(served.executor.unload)
        served.state, served.batcher, served.executor = "unloaded", None, None

    async def close(self) -> None:
        for served in list(self._versions.values()):
            if served.state == "ready":
                await self._release(served)

    # ---- queries -------------------------------------------------------------------------

    def versions(self) -> list[ServedVersion]:
        return sorted(self._versions.values(), key=lambda v: (v.model, v.version))

    def model_errors(self) -> dict[str, str]:
        return dict(self._model_errors)

    def ready(self) -> bool:
        """Every model's selected versions are loaded, and no model failed to load."""
        states = [v.state for v in self._versions.values() if v.state != "unloaded"]
        return not self._model_errors and bool(states) and all(s == "ready" for s in states)

    def resolve(self, name: str, version: int | str | None = None) -> ServedVersion:
        """The ready version to serve: the one asked for, else the highest ready one."""
        mine = [v for (m, _), v in self._versions.items() if m == name]
        if not mine:
            reason = self._model_errors.get(name)
            if reason:
                raise ModelNotReady(f"model {name} is not available: {reason}")
            raise ModelNotFound(f"model {name} is not served here")
        if version is not None:
            try:
                number = int(version)
            except ValueError:
                raise ModelNotFound(f"model {name} has no version {version!r}") from None
            served = next((v for v in mine if v.version == number), None)
            if served is None:
                raise ModelNotFound(f"model {name} has no version {number} loaded")
            if served.state != "ready":
                detail = f": {served.reason}" if served.reason else ""
                raise ModelNotReady(f"model {name} version {number} is {served.state}{detail}")
            return served
        ready = [v for v in mine if v.state == "ready"]
        if not ready:
            states = ", ".join(
                f"{v.version} {v.state}" for v in sorted(mine, key=lambda v: v.version)
            )
            raise ModelNotReady(f"model {name} has no ready version ({states})")
        return max(ready, key=lambda v: v.version)

    def metadata(self, name: str, version: int | str | None = None) -> ModelMetadata:
        served = self.resolve(name, version)
        manifest = served.manifest
        if manifest is None:  # pragma: no cover - a ready version always has one
            raise ModelNotReady(f"model {name} has no manifest")
        versions = [
            str(v.version) for v in self.versions() if v.model == name and v.state == "ready"
        ]
        return ModelMetadata(
            name=name,
            versions=versions,
            platform=PLATFORM.get(manifest.format, "pytorch"),
            inputs=manifest.inputs,
            outputs=manifest.outputs,
        )

    async def infer(
        self,
        name: str,
        inputs: dict[str, Any],
        *,
        version: int | str | None = None,
        timeout_s: float | None = None,
    ) -> tuple[ServedVersion, dict[str, Any]]:
        """Validate, queue, and return (the version that served, its outputs)."""
        served = self.resolve(name, version)
        return served, await self.infer_on(served, inputs, timeout_s=timeout_s)

    async def infer_on(
        self, served: ServedVersion, inputs: dict[str, Any], *, timeout_s: float | None = None
    ) -> dict[str, Any]:
        """Validate and queue on a version already resolved (the server resolves it once to
        decode the request against its signature)."""
        manifest, batcher = served.manifest, served.batcher
        if manifest is None or batcher is None:
            raise ModelNotReady(f"model {served.model} version {served.version} is not ready")
        rows = validate_inputs(
            f"{served.model}/{served.version}",
            manifest.inputs,
            inputs,
            batching=manifest.batching,
            max_batch_size=batcher.max_batch_size,
        )
        return await batcher.infer(inputs, rows=rows, timeout_s=timeout_s)
