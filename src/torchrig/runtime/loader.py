"""Loading one model version beside the others, and releasing it once drained.

`load_version` copies a remote version to the local cache, loads and warms an executor
per placed device (`torchrig.runtime.placement`: with `device = "auto"`, one replica per
visible GPU) in a worker thread (the event loop keeps serving), measures each replica's
memory against the model's `memory_budget`, and wraps the replicas (`ReplicaSet`) in the
version's own `Batcher`, with `instances` worker threads per replica. Any failure leaves the
version `failed` with the reason and frees what it took; it never raises, so one broken
version cannot take down the others. `release_version` stops the version's batcher from
accepting, lets it finish what it already accepted, then frees the executor.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import msgspec

from torchrig.envlock.model import EnvLock
from torchrig.errors import TorchrigError
from torchrig.packaging.manifest import Manifest
from torchrig.repository import ModelConfig, Repository, VersionInfo, VersionPolicy
from torchrig.runtime.batcher import Batcher, BatchObserver, DeviceFaultHandler
from torchrig.runtime.executor import Executor
from torchrig.runtime.faults import poisons_device
from torchrig.runtime.memory import check_budget, host_bytes, measured_load
from torchrig.runtime.padding import padding_for
from torchrig.runtime.placement import Placement, describe, place, visible_cuda_count
from torchrig.runtime.replicas import FaultHandler, ReplicaSet, handled
from torchrig.runtime.steps import Steps, WithSteps, load_steps
from torchrig.runtime.threads import in_own_thread

if TYPE_CHECKING:
    from torchrig.runtime.pipeline import Pipeline

log = logging.getLogger("torchrig.runtime.registry")

State = Literal["loading", "ready", "failed", "unloading", "unloaded"]
# what a loaded version was made from: its manifest and its config (less the version
# policy, which says which versions serve, not how): a change of either reloads it
Fingerprint = tuple[Manifest | None, ModelConfig]


def fingerprint(manifest: Manifest | None, config: ModelConfig) -> Fingerprint:
    return manifest, msgspec.structs.replace(config, version_policy=VersionPolicy())


@dataclass
class ServedVersion:
    model: str
    version: int
    state: State
    config: ModelConfig
    manifest: Manifest | None = None
    reason: str | None = None  # why it failed
    warnings: list[str] = field(default_factory=list)
    executor: Executor | None = None  # the first replica's (signature, device, timings)
    replicas: ReplicaSet | None = None  # every replica, the first included
    batcher: Batcher | None = None
    memory_bytes: int | None = None  # measured at load, per replica (torchrig.runtime.memory)
    steps: Steps | None = None  # the config's built-in steps, bound to the program
    local_dir: Path | None = None  # where its files were loaded from
    pipeline: Pipeline | None = None  # a pipeline model (its steps run other models)

    def __post_init__(self) -> None:
        # made once, read per request: "model/version" names it in errors, "version"
        # answers name it
        self.label = f"{self.model}/{self.version}"
        self.version_label = str(self.version)

    @property
    def fingerprint(self) -> Fingerprint:
        return fingerprint(self.manifest, self.config)

    @property
    def serving(self) -> bool:
        """Ready, with a replica left in rotation (a poisoned GPU takes its replicas out)."""
        return self.state == "ready" and (self.replicas is None or self.replicas.healthy > 0)

    @property
    def interface(self) -> Manifest | None:
        """The signature clients see: with built-in steps, the BYTES inputs they take and
        the outputs they give (`Steps.public`); otherwise the program's manifest."""
        return self.steps.public if self.steps is not None else self.manifest


@dataclass(frozen=True)
class LoadContext:
    """What every load needs from the registry."""

    repository: Repository
    device: str | None
    environment: EnvLock | None
    observer: Callable[[str, str], BatchObserver] | None
    on_device_fault: DeviceFaultHandler
    allow_python_handlers: bool = False  # `serve --allow-python-handlers`
    on_replica_fault: FaultHandler | None = None  # a replica's GPU was poisoned


def placements(manifest: Manifest, config: ModelConfig, ctx: LoadContext) -> list[Placement]:
    """Where the version's replicas go: `serve --device`, else config.toml's `devices`
    or `device` (see torchrig.runtime.placement). A Python handler gets one replica, on
    the first device: its code manages its own state and is not replicated."""
    requested: str | list[str] = ctx.device or config.devices or config.device
    wanted = place(requested, visible_cuda_count(), config.instances)
    return wanted[:1] if manifest.format == "handler" else wanted


def _executor(
    local: Path, manifest: Manifest, config: ModelConfig, ctx: LoadContext, device: str
) -> Executor:
    """A program's executor, or a Python handler's (which refuses to load unless allowed)."""
    if manifest.format == "handler":
        from torchrig.runtime.handlers import HandlerExecutor

        return HandlerExecutor(
            local,
            manifest,
            config,
            allowed=ctx.allow_python_handlers,
            device=device,
            environment=ctx.environment,
        )
    return Executor(local, manifest, config, device=device, environment=ctx.environment)


def _load_replica(
    served: ServedVersion, local: Path, manifest: Manifest, ctx: LoadContext, device: str
) -> Executor:
    """Load, warm up and measure one replica on `device` (unloaded again if over budget)."""
    executor = _executor(local, manifest, served.config, ctx, device)
    with measured_load(device) as measure:
        executor.load()
    try:
        used, how = measure.used_bytes, measure.how
        if not how:
            files = sum(item.size for item in manifest.files)
            used, how = host_bytes(executor.program, files)
        served.memory_bytes = max(used, served.memory_bytes or 0)
        check_budget(
            f"{manifest.name} version {manifest.version}",
            served.config.memory_budget,
            used,
            how,
            executor.device,
        )
    except BaseException:
        executor.unload()
        raise
    return executor


def _load_blocking(served: ServedVersion, version: VersionInfo, ctx: LoadContext) -> None:
    """In a worker thread: copy, then load every replica; the replicas are set on success."""
    manifest = version.manifest
    if manifest is None:  # pragma: no cover - only complete versions are loaded
        raise TorchrigError(f"{version.model} version {version.version} has no manifest")
    local = Path(ctx.repository.local_version_dir(version))
    served.local_dir = local
    wanted = placements(manifest, served.config, ctx)
    loaded: list[Executor] = []
    try:
        for placement in wanted:
            loaded.append(_load_replica(served, local, manifest, ctx, placement.device))
        replicas = ReplicaSet(loaded, on_fault=ctx.on_replica_fault)
        served.steps = load_steps(served.config, manifest, local, replicas)
    except BaseException:
        for executor in loaded:
            executor.unload()
        raise
    if len(wanted) > 1:
        log.info("%s version %s on %s", version.model, version.version, describe(wanted))
    served.executor, served.replicas = loaded[0], replicas


async def load_version(served: ServedVersion, version: VersionInfo, ctx: LoadContext) -> None:
    """Load `version` into `served` (state "loading"): it ends "ready" or "failed"."""
    where = f"{version.model} version {version.version}"
    try:
        await in_own_thread(lambda: _load_blocking(served, version, ctx))
    except Exception as exc:  # a broken artifact must not take the server down
        served.state = "failed"
        if isinstance(exc, TorchrigError):
            served.reason = exc.message
            log.error("%s failed to load: %s", where, exc.message)
        else:
            served.reason = f"{type(exc).__name__}: {exc}"
            log.exception("%s failed to load", where)
        if poisons_device(exc):
            ctx.on_device_fault(exc)
        if served.local_dir is not None:
            ctx.repository.release_local_dir(served.local_dir)
        return
    executor, replicas = served.executor, served.replicas
    if executor is None or replicas is None:  # pragma: no cover - set by _load_blocking
        served.state, served.reason = "failed", "the executor did not load"
        return
    served.warnings = list(executor.warnings)
    engine = replicas if served.steps is None else WithSteps(replicas, served.steps)
    try:
        served.batcher = _batcher(
            served, version, ctx, executor=executor, replicas=replicas, engine=engine
        )
    except TorchrigError as exc:  # e.g. no threads left for its workers: this version only
        served.state, served.reason = "failed", exc.message
        log.error("%s failed to load: %s", where, exc.message)
        await asyncio.to_thread(replicas.unload)
        served.executor = served.replicas = None
        if served.local_dir is not None:
            ctx.repository.release_local_dir(served.local_dir)
        return
    if served.batcher.inline:
        log.info(
            "%s runs its batches on the event loop: its largest batch took %.3f ms "
            "(batching.inline_max_ms %.3g)",
            where,
            (executor.batch_time_s or 0.0) * 1000,
            served.config.batching.inline_max_ms,
        )
    served.state = "ready"
    for warning in served.warnings:
        log.warning("%s: %s", where, warning)


def _batcher(
    served: ServedVersion,
    version: VersionInfo,
    ctx: LoadContext,
    *,
    executor: Executor,
    replicas: ReplicaSet,
    engine: ReplicaSet | WithSteps,
) -> Batcher:
    """The version's batcher over its loaded replicas (and steps)."""
    manifest = version.manifest
    observer = None
    if ctx.observer is not None:
        observer = ctx.observer(version.model, str(version.version))

    def device_fault(exc: BaseException) -> None:
        # a poisoned replica was taken out (ReplicaSet) and reported; the version still
        # serves unless it was the last one. A fault outside the replicas (a built-in
        # step on the first replica's GPU) is that GPU's, reported here.
        if ctx.on_replica_fault is None:
            ctx.on_device_fault(exc)
            return
        if not handled(exc):
            ctx.on_replica_fault(replicas.device, exc)
        if replicas.healthy == 0:
            ctx.on_device_fault(exc)

    padding = (
        padding_for(manifest, served.config, served.warnings) if served.steps is None else None
    )
    return Batcher(
        engine,
        served.config.batching,
        instances=served.config.instances * len(replicas),
        batching=manifest.batching if manifest is not None else True,
        name=f"{version.model}/{version.version}",
        threads=executor.intra_op_threads,
        pin_batches=executor.wants_pinned_batches,
        observer=observer,
        on_device_fault=device_fault,
        probe=_probe(engine, manifest),
        # a fast CPU model runs its batches on the event loop (steps are not timed at load)
        inline=served.steps is None and len(replicas) == 1 and executor.runs_inline,
        # `[padding]`: requests padded to shape buckets (the program's own inputs only)
        padding=padding,
        # validated requests of a signature without variable sizes past the batch all
        # share one shape, so the batcher need not compare them
        varying_shapes=not (
            manifest is not None
            and served.steps is None
            and padding is None
            and all(-1 not in spec.shape[1:] for spec in manifest.inputs)
        ),
    )


async def release_version(
    served: ServedVersion, repository: Repository, *, drain_timeout_s: float
) -> None:
    """Stop accepting, finish what was accepted (up to the timeout), then free the version."""
    served.state = "unloading"
    batcher, executor, replicas = served.batcher, served.executor, served.replicas
    if batcher is not None:
        await asyncio.to_thread(batcher.close, timeout_s=drain_timeout_s)
    if replicas is not None:
        await asyncio.to_thread(replicas.unload)
    elif executor is not None:
        await asyncio.to_thread(executor.unload)
    if served.local_dir is not None:
        repository.release_local_dir(served.local_dir)
    served.state, served.batcher, served.executor = "unloaded", None, None
    served.replicas = None
    log.info("%s version %s unloaded", served.model, served.version)


def _probe(executor: ReplicaSet | WithSteps, manifest: Manifest | None) -> dict[str, Any] | None:
    """One known-good request for the batcher: the warm-up example (zeros; a generated
    image or string for built-in steps), with integer inputs moved into their declared
    ranges."""
    try:
        inputs = executor.example(1)
    except Exception:  # a version without a usable example: lone failures are 500s
        log.debug("no probe example for %s", manifest.name if manifest else "?", exc_info=True)
        return None
    ranges = manifest.input_ranges if manifest is not None else {}
    for name, (low, high) in ranges.items():
        if name in inputs:
            inputs[name] = inputs[name].clamp(low, high)
    return inputs
