"""The model registry: which versions are loading, ready or failed, and routing to them.

Discovery (`torchrig.repository`) says what exists; `reconcile(model)` makes the served
versions follow it: the versions the model's policy selects are loaded beside the ones
serving (`torchrig.runtime.loader`), and a version becomes the default only once it is
ready; then the versions no longer selected stop taking requests, finish the ones they
accepted, and are released. A version that fails to load is marked failed with the
reason, is not retried until its files or config change, and never affects the others;
while no selected version is ready, the ones serving keep serving.

Readiness: every model found at startup has a ready version, and no error poisoned the
device. A version placed on several GPUs (runtime/placement.py) has a replica on each; an
error that poisons one GPU takes that GPU's replicas out of rotation (every model's), and
the versions keep serving on the others: only a version left with no replica poisons the
process as a whole (not ready, not live: a restart is the cure). A model added later
that fails is reported (per model 503, the index, logs) but does not take the server
out of service.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable
from typing import Any

import msgspec

from torchrig.envlock.model import EnvLock
from torchrig.errors import DeviceUnhealthy, ModelNotFound, ModelNotReady, RepositoryError
from torchrig.packaging.manifest import TensorSpec
from torchrig.repository import ModelConfig, Repository, VersionInfo, selected_versions
from torchrig.repository.config import PipelineConfig
from torchrig.runtime.batcher import BatchRecord
from torchrig.runtime.loader import (
    Fingerprint,
    LoadContext,
    ServedVersion,
    State,
    fingerprint,
    load_version,
    release_version,
)
from torchrig.runtime.pipeline import (
    PIPELINE_VERSION,
    Pipeline,
    StepFactory,
    pipeline_version,
    refresh_states,
)
from torchrig.runtime.validation import validate_inputs

__all__ = ["PLATFORM", "ModelMetadata", "ModelRegistry", "ServedVersion", "State"]

log = logging.getLogger(__name__)

_VERSION = re.compile(r"[1-9][0-9]{0,17}")
PLATFORM = {
    "torch.export": "pytorch_torchexport",
    "torchscript": "pytorch_libtorch",
    "aoti": "pytorch_aoti",
    "handler": "python",
    "pipeline": "ensemble",
}


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
        drain_timeout_s: float = 30.0,
        allow_python_handlers: bool = False,
        steps: StepFactory | None = None,
    ) -> None:
        self.repository = repository
        self.allow_python_handlers = allow_python_handlers  # run handler versions' code
        self.steps = steps  # pipelines' built-in steps (`step = "KIND"`)
        self.device = device
        self.environment = environment
        self.drain_timeout_s = drain_timeout_s
        self._versions: dict[tuple[str, int], ServedVersion] = {}
        # the same versions by model (kept by `_put` and `_drop`): a request's lookup costs
        # the same with one model or hundreds
        self._by_model: dict[str, dict[int, ServedVersion]] = {}
        self._model_errors: dict[str, str] = {}
        self._expected: set[str] = set()  # models whose readiness gates the replica's
        self._attempted: dict[tuple[str, int], Fingerprint] = {}  # last load tried
        self._locks: dict[str, asyncio.Lock] = {}
        self._releases: set[asyncio.Task[None]] = set()
        self.device_fault: str | None = None  # set once an error poisoned the device
        self.refreshes = 0  # completed `refresh()` calls (a poll's progress, for tests too)
        # (model, version) -> per-batch observer for the version's Batcher (metrics)
        self.batch_observer: Callable[[str, str], Callable[[BatchRecord], None]] | None = None

    # ---- lifecycle -----------------------------------------------------------------------

    async def load_all(self) -> None:
        """Load what every model's version policy selects; failures are recorded, not raised."""
        names = await asyncio.to_thread(self.repository.model_names)
        self._expected |= set(names)
        for name in names:
            await self.reconcile(name)

    async def refresh(self) -> None:
        """Follow the repository: new and changed models reconciled, removed ones unloaded."""
        names = set(await asyncio.to_thread(self.repository.model_names))
        tracked = {m for m, _ in self._versions} | set(self._model_errors)
        for gone in sorted(tracked - names):
            await self.remove_model(gone)
        for name in sorted(names):
            await self.reconcile(name)
        self.refreshes += 1

    async def load(self, name: str, version: int | None = None) -> None:
        """Load one model as its policy says (retrying failed versions), or one `version`."""
        if version is None:
            await self.reconcile(name, force=True)
            return
        async with self._lock(name):
            info = await asyncio.to_thread(self.repository.model, name)
            chosen = [v for v in info.versions if v.version == version]
            if not chosen:
                raise ModelNotFound(f"model {name} has no version {version}")
            if info.config is None:
                raise ModelNotReady(f"model {name} is not available: {info.config_error}")
            current = self._versions.get((name, version))
            if current is None or current.state not in ("loading", "ready"):
                await self._load(chosen[0], info.config, replacing=None)

    async def reconcile(self, name: str, *, force: bool = False) -> None:
        """Make model `name` serve what the repository and its policy select now.

        `force` retries versions that failed with the same files and config.
        """
        async with self._lock(name):
            try:
                info = await asyncio.to_thread(self.repository.model, name)
            except ModelNotFound:
                await self._forget(name)
                return
            except (RepositoryError, OSError) as exc:
                reason = exc.message if isinstance(exc, RepositoryError) else str(exc)
                self._set_error(name, f"cannot read it from the repository: {reason}")
                return
            if info.config is None:
                self._set_error(name, info.config_error or "invalid config.toml")
                return
            if info.config.pipeline is not None:
                self._model_errors.pop(name, None)
                self._follow_pipeline(name, info.config)
                refresh_states(self.versions())
                return
            desired = selected_versions(info)
            if not desired:
                problems = "; ".join(
                    f"version {v.version}: {v.problem}" for v in info.versions if v.problem
                )
                self._set_error(
                    name, "no complete version" + (f" ({problems})" if problems else "")
                )
                return
            self._model_errors.pop(name, None)
            for version in desired:
                await self._follow(version, info.config, force=force)
            self._retire(name, {v.version for v in desired})
            refresh_states(self.versions())  # pipelines follow their members

    def _follow_pipeline(self, name: str, config: ModelConfig) -> None:
        """Serve model `name` as the pipeline its config declares (see runtime.pipeline)."""
        key = (name, PIPELINE_VERSION)
        current = self._versions.get(key)
        if (
            current is not None
            and current.pipeline is not None
            and current.config == config
            and current.state not in ("unloading", "unloaded")
        ):
            return
        for served in [v for (m, _), v in list(self._versions.items()) if m == name]:
            if served.state in ("ready", "loading"):
                self._release_later(served, forget=True)  # it was a model, or another pipeline
            else:
                self._drop(served)
        observer = self.batch_observer(name, str(PIPELINE_VERSION)) if self.batch_observer else None
        pipeline = Pipeline(
            name,
            config.pipeline or PipelineConfig(),
            resolve=self.resolve,
            submit=lambda served, inputs, timeout_s: self.submit(
                served, inputs, timeout_s=timeout_s
            ),
            steps=self.steps,
            observer=observer,
        )
        self._put(pipeline_version(name, config, pipeline))
        log.info(
            "%s: pipeline of %s", name, ", ".join(s.model or s.step for s in pipeline.config.step)
        )

    async def _follow(self, version: VersionInfo, config: ModelConfig, *, force: bool) -> None:
        """Load `version` unless it serves (or failed) with these very files and config."""
        key = (version.model, version.version)
        wanted = fingerprint(version.manifest, config)
        current = self._versions.get(key)
        if current is not None and current.state in ("loading", "ready", "failed"):
            if current.fingerprint == wanted and (current.state != "failed" or not force):
                return
            if current.state == "ready" and self._attempted.get(key) == wanted and not force:
                return  # a reload with these files/config failed already: keep the old one
        replacing = current if current is not None and current.state == "ready" else None
        await self._load(version, config, replacing=replacing)

    async def _load(
        self, version: VersionInfo, config: ModelConfig, *, replacing: ServedVersion | None
    ) -> None:
        key = (version.model, version.version)
        served = ServedVersion(
            model=version.model,
            version=version.version,
            state="loading",
            config=config,
            manifest=version.manifest,
        )
        self._attempted[key] = served.fingerprint
        if replacing is None:
            self._put(served)
        log.info("%s version %s loading", version.model, version.version)
        await load_version(served, version, self._context())
        if replacing is None:
            if served.state == "ready":
                log.info("%s version %s ready", version.model, version.version)
            return
        if served.state != "ready":  # the old one keeps serving
            replacing.warnings.append(f"a reload failed, the previous load serves: {served.reason}")
            return
        self._put(served)  # the reloaded one takes the requests from now on
        log.info("%s version %s reloaded (files or config changed)", served.model, served.version)
        self._release_later(replacing, forget=False)

    def _retire(self, name: str, desired: set[int]) -> None:
        """Once a selected version is ready, release the versions no longer selected."""
        mine = [v for (m, _), v in list(self._versions.items()) if m == name]
        if not any(v.state == "ready" and v.version in desired for v in mine):
            if any(v.state == "ready" for v in mine):
                log.warning(
                    "model %s: no selected version is ready yet; the previous ones keep serving",
                    name,
                )
            return
        for served in mine:
            if served.version in desired:
                continue
            if served.state in ("ready", "loading"):
                self._release_later(served, forget=True)
            elif served.state in ("failed", "unloaded"):
                self._drop(served)

    def _release_later(self, served: ServedVersion, *, forget: bool) -> None:
        """Stop routing to `served` now; drain and free it in the background."""
        served.state = "unloading"

        async def release() -> None:
            try:
                await release_version(served, self.repository, drain_timeout_s=self.drain_timeout_s)
            except Exception:  # process boundary of a background task: log, go on
                log.exception("releasing %s version %s failed", served.model, served.version)
            if forget:
                self._drop(served)

        task = asyncio.ensure_future(release())
        self._releases.add(task)
        task.add_done_callback(self._releases.discard)

    def _put(self, served: ServedVersion) -> None:
        self._versions[(served.model, served.version)] = served
        # a new dict, not changed in place: a reader on another thread iterates either one
        mine = dict(self._by_model.get(served.model, {}))
        mine[served.version] = served
        self._by_model[served.model] = mine

    def _drop(self, served: ServedVersion) -> None:
        key = (served.model, served.version)
        if self._versions.get(key) is served:
            del self._versions[key]
            self._attempted.pop(key, None)
            mine = {
                n: v for n, v in self._by_model.get(served.model, {}).items() if v is not served
            }
            if mine:
                self._by_model[served.model] = mine
            else:
                self._by_model.pop(served.model, None)

    async def remove_model(self, name: str) -> None:
        """The model left the repository: release every version of it."""
        async with self._lock(name):
            await self._forget(name)
        refresh_states(self.versions())

    async def _forget(self, name: str) -> None:
        self._model_errors.pop(name, None)
        self._expected.discard(name)
        for served in [v for (m, _), v in list(self._versions.items()) if m == name]:
            if served.state in ("ready", "loading"):
                self._release_later(served, forget=True)
            elif served.state != "unloading":
                self._drop(served)
        log.info("model %s left the repository: unloading it", name)

    async def unload(self, name: str, version: int | None = None) -> None:
        """Unload a model (every version) or one version; it drains before it is freed."""
        targets = [
            v
            for (m, n), v in self._versions.items()
            if m == name and (version is None or n == version) and v.state != "unloaded"
        ]
        if not targets:
            raise ModelNotFound(f"model {name} has no loaded version to unload")
        if version is None:
            self._expected.discard(name)
            self._model_errors.pop(name, None)
        for served in targets:
            if served.state in ("ready", "loading"):
                await release_version(served, self.repository, drain_timeout_s=self.drain_timeout_s)
            else:
                served.state = "unloaded"
        refresh_states(self.versions())

    async def wait_released(self) -> None:
        """Wait for the versions being drained in the background."""
        while self._releases:
            await asyncio.gather(*list(self._releases), return_exceptions=True)

    async def close(self) -> None:
        await self.wait_released()
        for served in list(self._versions.values()):
            if served.state == "ready":
                await release_version(served, self.repository, drain_timeout_s=self.drain_timeout_s)

    def _lock(self, name: str) -> asyncio.Lock:
        if name not in self._locks:
            self._locks[name] = asyncio.Lock()
        return self._locks[name]

    def _set_error(self, name: str, reason: str) -> None:
        if self._model_errors.get(name) != reason:
            serving = any(v.state == "ready" for (m, _), v in self._versions.items() if m == name)
            suffix = "; the versions loaded before keep serving" if serving else ""
            log.error("model %s: %s%s", name, reason, suffix, extra={"model": name})
        self._model_errors[name] = reason

    def _context(self) -> LoadContext:
        return LoadContext(
            repository=self.repository,
            device=self.device,
            environment=self.environment,
            observer=self.batch_observer,
            on_device_fault=self._device_failed,
            allow_python_handlers=self.allow_python_handlers,
            on_replica_fault=self._replica_failed,
        )

    def _replica_failed(self, device: str, exc: BaseException) -> None:
        """From a worker thread: a replica's device was poisoned. On a GPU, every replica
        there leaves the rotation (the CUDA context is the process's, per device); a ready
        version left with no replica poisons the process (`_device_failed`)."""
        reason = f"{device} poisoned ({type(exc).__name__}: {exc})"
        stranded = []
        for served in self._snapshot():
            replicas = served.replicas
            if replicas is None:
                continue
            if device.startswith("cuda"):
                replicas.take_out(device, reason)
            if served.state == "ready" and replicas.healthy == 0:
                stranded.append(f"{served.model}/{served.version}")
        if stranded:
            self._device_failed(exc)
        else:
            log.error("%s: its replicas left the rotation; the others keep serving", reason)

    def _snapshot(self) -> list[ServedVersion]:
        """The versions, read from any thread (the event loop may change the dict)."""
        for _ in range(5):
            try:
                return list(self._versions.values())
            except RuntimeError:  # changed size during iteration: read again
                continue
        return []

    def _device_failed(self, exc: BaseException) -> None:
        """From a worker thread: an error poisoned the device; the replica must restart."""
        if self.device_fault is None:
            self.device_fault = f"{type(exc).__name__}: {exc}"
            log.critical(
                "the device context is poisoned (%s): this replica reports not ready and not "
                "live so that it is restarted",
                self.device_fault,
            )

    def drop_abandoned(self) -> int:
        """Drop every queued request whose caller left or whose deadline passed, in every
        served version's batcher (see `Batcher.drop_abandoned`); returns how many."""
        return sum(
            served.batcher.drop_abandoned()
            for served in list(self._versions.values())
            if served.batcher is not None
        )

    # ---- queries -------------------------------------------------------------------------

    def versions(self) -> list[ServedVersion]:
        return sorted(self._versions.values(), key=lambda v: (v.model, v.version))

    def model_errors(self) -> dict[str, str]:
        return dict(self._model_errors)

    def ready(self) -> bool:
        """Some version serves, every model found at startup has a ready version, and no
        error poisoned the device."""
        if self.device_fault is not None:
            return False
        serving = {m for (m, _), v in list(self._versions.items()) if v.serving}
        return bool(serving) and self._expected <= serving

    def resolve(self, name: str, version: int | str | None = None) -> ServedVersion:
        """The ready version to serve: the one asked for, else the highest ready one."""
        if self.device_fault is not None:
            raise DeviceUnhealthy(
                f"this replica's device failed ({self.device_fault}); it is restarting, "
                "retry on another replica"
            )
        mine = list(self._by_model.get(name, {}).values())
        if not mine:
            reason = self._model_errors.get(name)
            if reason:
                raise ModelNotReady(f"model {name} is not available: {reason}")
            raise ModelNotFound(f"model {name} is not served here")
        if version is not None:
            # strict: "01", "+1", "1_0" or " 1" name no version (int() would take them)
            if isinstance(version, str) and not _VERSION.fullmatch(version):
                raise ModelNotFound(
                    f"model {name} has no version {version!r}; versions are written as "
                    "positive integers without sign, leading zeros or separators"
                )
            number = int(version)
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
                f"{v.version} {v.state}" + (f" ({v.reason})" if v.reason else "")
                for v in sorted(mine, key=lambda v: v.version)
            )
            raise ModelNotReady(f"model {name} has no ready version: {states}")
        return max(ready, key=lambda v: v.version)

    def metadata(self, name: str, version: int | str | None = None) -> ModelMetadata:
        served = self.resolve(name, version)
        manifest = served.interface  # with built-in steps: their BYTES inputs and outputs
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
        """Validate and queue on a version already resolved."""
        return await self.submit(served, inputs, timeout_s=timeout_s)

    def submit(
        self,
        served: ServedVersion,
        inputs: dict[str, Any],
        *,
        timeout_s: float | None = None,
        declared: bool = False,
    ) -> asyncio.Future[dict[str, Any]]:
        """Validate and queue at once on a version already resolved (the server resolves
        it once to decode the request against its signature). Queueing in the same step
        as resolving matters: a version retired meanwhile stops accepting, so a request
        must be in its queue before control returns to the event loop. `declared`: the
        caller's decoder made each input as the request declared it, after checking that
        declaration against this version's signature (`check_declared`)."""
        if self.device_fault is not None:
            raise DeviceUnhealthy(
                f"this replica's device failed ({self.device_fault}); retry on another replica"
            )
        manifest, batcher = served.interface, served.batcher
        if served.pipeline is not None and manifest is not None:
            return served.pipeline.submit(manifest, inputs, timeout_s=timeout_s)
        if manifest is None or batcher is None:
            raise ModelNotReady(f"model {served.model} version {served.version} is not ready")
        rows = validate_inputs(
            served.label,
            manifest.inputs,
            inputs,
            batching=manifest.batching,
            max_batch_size=batcher.max_batch_size,
            ranges=manifest.input_ranges,
            dynamic=manifest.dynamic_dims,
            declared=declared,
        )
        return batcher.submit(inputs, rows=rows, timeout_s=timeout_s)
