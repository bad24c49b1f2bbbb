"""Pipelines: a model whose `config.toml` is a list of steps, served as one model.

This is Triton's ensemble in torchrig's repository layout. `repo/video/config.toml`:

    [pipeline]
    outputs = ["scores"]             # optional: default, every output of the last step

    [[pipeline.step]]
    model = "decoder"                # a model of the same repository
    input_map = { frames = "jpeg" }  # the member's tensor -> the pipeline's tensor
    output_map = { pixels = "images" }

    [[pipeline.step]]
    model = "resnet"
    input_map = { x = "images" }
    output_map = { logits = "scores" }

Each member keeps its own batcher: a request goes through the steps in order, queued at
each member with the requests of every other pipeline and direct client using it, so
each step batches on its own. The pipeline's signature is derived from its members'
(an input is a tensor no earlier step produced; a tensor passed between steps must agree
in datatype and fixed dimensions), its metadata and statistics are the pipeline's own
(platform "ensemble"), and it is ready exactly when every member is: a missing or failed
member leaves it not ready with a reason naming that member. Members are resolved per
request, so a member's hot reload is followed by the next request.

Built-in steps (`step = "KIND"`, with `options`) come from a `StepFactory` given to the
registry (the hook for `torchrig.runtime.steps`); a step is anything with the `Stage`
interface below.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Protocol

from torchrig import __version__
from torchrig.errors import ModelNotReady, TorchrigError
from torchrig.packaging.manifest import Manifest, TensorSpec
from torchrig.repository.config import ModelConfig, PipelineConfig, PipelineStep
from torchrig.runtime.batcher import BatchObserver, BatchRecord
from torchrig.runtime.validation import validate_inputs

if TYPE_CHECKING:
    from torchrig.runtime.loader import ServedVersion

log = logging.getLogger("torchrig.runtime.registry")

Tensors = dict[str, Any]
PIPELINE_VERSION = 1  # a pipeline has no versions of its own; it serves as version 1


class Stage(Protocol):
    """One step as the pipeline drives it: its signature in its own tensor names, and one
    call per request (which may queue and batch with other requests)."""

    @property
    def label(self) -> str: ...
    @property
    def inputs(self) -> list[TensorSpec]: ...
    @property
    def outputs(self) -> list[TensorSpec]: ...
    @property
    def batching(self) -> bool: ...
    @property
    def max_batch_size(self) -> int | None: ...

    def submit(self, inputs: Tensors, *, timeout_s: float | None) -> Awaitable[Tensors]: ...


# (kind, options) -> a built-in step; raises TorchrigError for an unknown kind or bad options
StepFactory = Callable[[str, Mapping[str, Any]], Stage]
# what resolves a member model: (name, version or None) -> its ready served version
Resolver = Callable[[str, int | None], "ServedVersion"]
# what queues a request on a served version (the registry's submit)
Submitter = Callable[["ServedVersion", Tensors, float | None], Awaitable[Tensors]]


@dataclass
class _MemberStage:
    """A member model as a stage: its ready version's signature and batcher."""

    label: str
    served: ServedVersion
    submitter: Submitter

    @property
    def inputs(self) -> list[TensorSpec]:
        interface = self.served.interface  # with built-in steps: their inputs (BYTES)
        return interface.inputs if interface is not None else []

    @property
    def outputs(self) -> list[TensorSpec]:
        interface = self.served.interface
        return interface.outputs if interface is not None else []

    @property
    def batching(self) -> bool:
        return bool(self.served.interface and self.served.interface.batching)

    @property
    def max_batch_size(self) -> int | None:
        batcher = self.served.batcher
        return batcher.max_batch_size if batcher is not None else None

    def submit(self, inputs: Tensors, *, timeout_s: float | None) -> Awaitable[Tensors]:
        return self.submitter(self.served, inputs, timeout_s)


@dataclass(frozen=True)
class Signature:
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    batching: bool
    max_batch_size: int | None
    input_ranges: dict[str, list[int]]


class Pipeline:
    """The steps of one pipeline model, run in order per request."""

    def __init__(
        self,
        name: str,
        config: PipelineConfig,
        *,
        resolve: Resolver,
        submit: Submitter,
        steps: StepFactory | None = None,
        observer: BatchObserver | None = None,
    ) -> None:
        self.name = name
        self.config = config
        self._resolve = resolve
        self._submit = submit
        self._steps = steps
        self._builtin: dict[int, Stage] = {}  # built-in steps, made once
        self.observer = observer

    @property
    def members(self) -> list[str]:
        return [step.model for step in self.config.step if step.model]

    # ---- signature and readiness -------------------------------------------------------

    def stages(self) -> list[Stage]:
        """Every step as a stage, members resolved now; ModelNotReady names the first
        member that is missing or not ready (and why)."""
        stages: list[Stage] = []
        for number, step in enumerate(self.config.step, 1):
            label = f"pipeline {self.name}, step {number}"
            if step.model:
                stages.append(self._member(step, label))
            else:
                stages.append(self._builtin_stage(number, step, label))
        return stages

    def _member(self, step: PipelineStep, label: str) -> Stage:
        if step.model == self.name:
            raise ModelNotReady(f"{label}: a pipeline cannot run itself; name another model")
        try:
            served = self._resolve(step.model, step.version)
        except TorchrigError as exc:
            raise ModelNotReady(
                f"{label}: member {step.model} is not ready ({exc.message})"
            ) from None
        if served.pipeline is not None:
            raise ModelNotReady(
                f"{label}: member {step.model} is a pipeline itself; pipelines do not nest, "
                "list its steps here instead"
            )
        return _MemberStage(label=f"{label} ({step.model})", served=served, submitter=self._submit)

    def _builtin_stage(self, number: int, step: PipelineStep, label: str) -> Stage:
        made = self._builtin.get(number)
        if made is not None:
            return made
        if self._steps is None:
            raise ModelNotReady(
                f"{label}: built-in step {step.step!r} is not available in this server; use "
                'model = "NAME" for a model step'
            )
        try:
            made = self._steps(step.step, step.options)
        except TorchrigError as exc:
            raise ModelNotReady(f"{label}: step {step.step!r}: {exc.message}") from None
        self._builtin[number] = made
        return made

    def signature(self, stages: list[Stage] | None = None) -> Signature:
        """The pipeline's inputs and outputs, derived from its steps' (see the module doc)."""
        stages = self.stages() if stages is None else stages
        produced: dict[str, tuple[TensorSpec, str]] = {}  # pipeline tensor -> spec, producer
        inputs: dict[str, TensorSpec] = {}
        ranges: dict[str, list[int]] = {}
        for step, stage in zip(self.config.step, stages, strict=True):
            own_ranges = _ranges(stage)
            for spec in stage.inputs:
                tensor = step.input_map.get(spec.name, spec.name)
                if tensor in produced:
                    source, producer = produced[tensor]
                    _check_compatible(stage.label, spec, source, producer, tensor)
                elif tensor in inputs:
                    _check_compatible(stage.label, spec, inputs[tensor], "an earlier step", tensor)
                else:
                    inputs[tensor] = _renamed(spec, tensor)
                    if spec.name in own_ranges:
                        ranges[tensor] = own_ranges[spec.name]
            unknown = sorted(set(step.input_map) - {s.name for s in stage.inputs})
            unknown_out = sorted(set(step.output_map) - {s.name for s in stage.outputs})
            if unknown or unknown_out:
                raise ModelNotReady(
                    f"{stage.label}: input_map/output_map name tensors it does not have "
                    f"({', '.join(unknown + unknown_out)}); its inputs are "
                    f"{_names(stage.inputs)} and its outputs {_names(stage.outputs)}"
                )
            for spec in stage.outputs:
                tensor = step.output_map.get(spec.name, spec.name)
                produced[tensor] = (_renamed(spec, tensor), stage.label)
        wanted = self.config.outputs or [
            self.config.step[-1].output_map.get(s.name, s.name) for s in stages[-1].outputs
        ]
        missing = [name for name in wanted if name not in produced]
        if missing:
            raise ModelNotReady(
                f"pipeline {self.name}: outputs {', '.join(missing)} are produced by no step "
                f"(the steps produce {', '.join(sorted(produced))})"
            )
        sizes = [s.max_batch_size for s in stages if s.max_batch_size is not None]
        return Signature(
            inputs=list(inputs.values()),
            outputs=[produced[name][0] for name in wanted],
            batching=all(stage.batching for stage in stages),
            max_batch_size=min(sizes) if sizes else None,
            input_ranges=ranges,
        )

    def manifest(self, signature: Signature) -> Manifest:
        """What the server describes the pipeline with (metadata, decoding, responses)."""
        return Manifest(
            name=self.name,
            version=PIPELINE_VERSION,
            format="pipeline",
            program="config.toml",
            inputs=signature.inputs,
            outputs=signature.outputs,
            batching=signature.batching,
            max_batch_size=signature.max_batch_size,
            input_ranges=signature.input_ranges,
            files=[],
            created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            torchrig_version=__version__,
            description="pipeline of " + ", ".join(s.model or s.step for s in self.config.step),
        )

    def triton_steps(self) -> list[dict[str, Any]]:
        """The steps in Triton's `ensemble_scheduling` shape (every tensor of a ready
        member mapped; only the declared mappings of one that is not)."""
        try:
            stages: list[Stage | None] = list(self.stages())
        except TorchrigError:
            stages = [None] * len(self.config.step)
        steps = []
        for step, stage in zip(self.config.step, stages, strict=True):
            ins = [s.name for s in stage.inputs] if stage else list(step.input_map)
            outs = [s.name for s in stage.outputs] if stage else list(step.output_map)
            steps.append(
                {
                    "model_name": step.model or f"torchrig.step.{step.step}",
                    "model_version": step.version or -1,
                    "input_map": {name: step.input_map.get(name, name) for name in ins},
                    "output_map": {name: step.output_map.get(name, name) for name in outs},
                }
            )
        return steps

    # ---- running -----------------------------------------------------------------------

    def submit(
        self, manifest: Manifest, inputs: Tensors, *, timeout_s: float | None
    ) -> asyncio.Future[Tensors]:
        """Check the request against the pipeline's signature now, then run it."""
        rows = validate_inputs(
            f"{self.name}/{PIPELINE_VERSION}",
            manifest.inputs,
            inputs,
            batching=manifest.batching,
            max_batch_size=manifest.max_batch_size or 2**31,
            ranges=manifest.input_ranges,
        )
        return asyncio.ensure_future(self.run(inputs, rows=rows, timeout_s=timeout_s))

    async def run(self, inputs: Tensors, *, rows: int, timeout_s: float | None) -> Tensors:
        """Each step in turn on the tensors so far; the pipeline's outputs at the end."""
        started = time.monotonic()
        deadline = None if timeout_s is None else started + timeout_s
        tensors: Tensors = dict(inputs)
        failed = True
        try:
            stages = self.stages()
            for step, stage in zip(self.config.step, stages, strict=True):
                given = {s.name: tensors[step.input_map.get(s.name, s.name)] for s in stage.inputs}
                left = None if deadline is None else max(0.0, deadline - time.monotonic())
                try:
                    outputs = await stage.submit(given, timeout_s=left)
                except TorchrigError as exc:  # the member's reason, with where it happened
                    raise _located(exc, stage.label) from None
                for name, tensor in outputs.items():
                    tensors[step.output_map.get(name, name)] = tensor
            wanted = self.config.outputs or [
                self.config.step[-1].output_map.get(s.name, s.name) for s in stages[-1].outputs
            ]
            result = {name: tensors[name] for name in wanted}
            failed = False
            return result
        except KeyError as exc:  # a member changed its signature under a running request
            raise ModelNotReady(
                f"pipeline {self.name}: tensor {exc.args[0]} is missing between steps (a member "
                "was reloaded with another signature just now); retry"
            ) from None
        finally:
            if self.observer is not None:
                self.observer(
                    BatchRecord(
                        rows=rows,
                        requests=1,
                        queue_waits_s=[0.0],
                        compute_s=time.monotonic() - started,
                        failed=failed,
                    )
                )


def _located(exc: TorchrigError, label: str) -> TorchrigError:
    """A copy of a member's error (the same class, so the same status) that names the
    step; the member's own instance may be shared by other requests of its batch."""
    located = copy.copy(exc)
    located.message = f"{label}: {exc.message}"
    located.args = (located.message,)
    return located


def _renamed(spec: TensorSpec, name: str) -> TensorSpec:
    return TensorSpec(name=name, datatype=spec.datatype, shape=list(spec.shape))


def _names(specs: list[TensorSpec]) -> str:
    return ", ".join(s.name for s in specs) or "none"


def _ranges(stage: Stage) -> dict[str, list[int]]:
    served = getattr(stage, "served", None)
    manifest = getattr(served, "interface", None)
    return dict(manifest.input_ranges) if manifest is not None else {}


def _check_compatible(
    label: str, wanted: TensorSpec, given: TensorSpec, producer: str, tensor: str
) -> None:
    """A tensor handed to a step must have its datatype, rank and fixed dimensions."""
    same_rank = len(wanted.shape) == len(given.shape)
    dims_agree = same_rank and all(
        -1 in (w, g) or w == g for w, g in zip(wanted.shape, given.shape, strict=True)
    )
    if wanted.datatype != given.datatype or not dims_agree:
        raise ModelNotReady(
            f"{label}: input {wanted.name} takes {wanted.datatype}{wanted.shape}, but the "
            f"pipeline tensor {tensor} from {producer} is {given.datatype}{given.shape}; map "
            "another tensor to it or change a member's signature"
        )


def pipeline_version(name: str, config: ModelConfig, pipeline: Pipeline) -> ServedVersion:
    """The served version a pipeline model is: "loading" until `refresh_states` finds
    every member ready."""
    from torchrig.runtime.loader import ServedVersion

    return ServedVersion(
        model=name, version=PIPELINE_VERSION, state="loading", config=config, pipeline=pipeline
    )


def refresh_states(versions: list[ServedVersion]) -> None:
    """Make every pipeline's state follow its members: "ready" (with the signature derived
    now) when each is ready and they fit together, else "failed" with the reason."""
    for served in versions:
        pipeline = served.pipeline
        if pipeline is None or served.state in ("unloading", "unloaded"):
            continue
        try:
            signature = pipeline.signature()
        except TorchrigError as exc:
            if served.state == "ready":  # it served: say why it stopped
                log.warning("pipeline %s is no longer ready: %s", served.model, exc.message)
            elif served.reason != exc.message:  # e.g. at startup, before its members load
                log.info("pipeline %s is not ready yet: %s", served.model, exc.message)
            served.state, served.reason = "failed", exc.message
            continue
        manifest = served.manifest
        if (
            manifest is None
            or manifest.inputs != signature.inputs
            or manifest.outputs != signature.outputs
            or manifest.batching != signature.batching
            or manifest.max_batch_size != signature.max_batch_size
            or manifest.input_ranges != signature.input_ranges
        ):
            served.manifest = pipeline.manifest(signature)
        if served.state != "ready":
            log.info("pipeline %s ready (members: %s)", served.model, ", ".join(pipeline.members))
        served.state, served.reason = "ready", None
