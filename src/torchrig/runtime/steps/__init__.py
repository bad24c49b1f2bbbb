"""Built-in pre- and post-processing steps around a program, run per batch.

A model's config.toml declares them (`[[preprocess]]`, `[[postprocess]]`, see
`torchrig.repository.steps`). When a version loads, `bind_steps` checks them against the
program's signature and the version's files and returns `Steps`: the public signature
(the BYTES inputs the steps take, the outputs they give) and the work. `WithSteps` wraps
the executor for the batcher, so the steps run in the batcher's worker thread on a whole
batch (decoding batched, off the event loop), on the model's device for the tensor work,
and a request whose image or text is bad fails alone (the batcher isolates it).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import msgspec

from torchrig.errors import ArtifactError
from torchrig.packaging.manifest import Manifest, TensorSpec
from torchrig.repository.config import ModelConfig
from torchrig.repository.steps import ImageStep, PostStep, PreStep, SoftmaxStep
from torchrig.runtime.bytes_tensor import BytesTensor
from torchrig.runtime.steps.image import ImageTransform
from torchrig.runtime.steps.outputs import Softmax, TopK, softmax, top_k
from torchrig.runtime.steps.text import TextTransform

__all__ = ["Steps", "WithSteps", "bind_steps", "load_steps"]

Prepare = ImageTransform | TextTransform
Finish = Softmax | TopK


class ProgramExecutor(Protocol):
    """What `WithSteps` wraps: the executor's batch call and its example inputs."""

    def infer(self, inputs: Mapping[str, Any]) -> dict[str, Any]: ...

    def example(self, rows: int) -> dict[str, Any]: ...


class Steps:
    """Steps bound to one program: the public signature and the work of a batch."""

    def __init__(self, manifest: Manifest, pre: list[Prepare], post: list[Finish]) -> None:
        self.pre = pre
        self.post = post
        self.manifest = manifest
        self.public = _public_manifest(manifest, pre, post)

    def before(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        """Public inputs of a batch (BYTES for the steps) -> the program's inputs."""
        taken = {step.input for step in self.pre}
        program = {name: value for name, value in inputs.items() if name not in taken}
        for step in self.pre:
            program.update(step(inputs[step.input]))
        return program

    def after(self, outputs: Mapping[str, Any]) -> dict[str, Any]:
        """The program's outputs of a batch -> the public outputs."""
        current = dict(outputs)
        for step in self.post:
            value = step(current[step.output])
            if step.into == step.output:
                current[step.output] = value
            else:
                current[step.into] = value
        return {spec.name: current[spec.name] for spec in self.public.outputs}

    def example(self, program_example: Mapping[str, Any], rows: int) -> dict[str, Any]:
        """Valid public inputs of `rows` rows (a generated image or a short string for the
        BYTES inputs, the program's own example for the others)."""
        by_step = {step.input: step for step in self.pre}
        result: dict[str, Any] = {}
        for spec in self.public.inputs:
            step = by_step.get(spec.name)
            if step is None:
                result[spec.name] = program_example[spec.name]
            else:
                result[spec.name] = BytesTensor([step.example()] * rows, (rows,))
        return result


class WithSteps:
    """An executor with its steps around it, as the batcher drives it (`infer(batch)`)."""

    def __init__(self, executor: ProgramExecutor, steps: Steps) -> None:
        self.executor = executor
        self.steps = steps

    def infer(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        return self.steps.after(self.executor.infer(self.steps.before(inputs)))

    def example(self, rows: int) -> dict[str, Any]:
        return self.steps.example(self.executor.example(rows), rows)


def load_steps(
    config: ModelConfig, manifest: Manifest, version_dir: Path, executor: Any
) -> Steps | None:
    """Bind the config's steps to a loaded executor and run them once on a generated
    example batch, so that steps that cannot work fail the load, not the first request."""
    steps = bind_steps(config, manifest, version_dir, executor.device)
    if steps is None:
        return None
    engine = WithSteps(executor, steps)
    try:
        engine.infer(engine.example(min(2, manifest.max_batch_size or 2)))
    except Exception as exc:
        raise ArtifactError(
            f"{manifest.name} version {manifest.version}: its config.toml steps fail on a "
            f"generated example ({type(exc).__name__}: {exc}); check them against the model"
        ) from None
    return steps


def bind_steps(
    config: ModelConfig, manifest: Manifest, version_dir: Path, device: str
) -> Steps | None:
    """The config's steps checked against the program and its files (None: no steps);
    an `ArtifactError` names the step, the key and the fix."""
    if not config.preprocess and not config.postprocess:
        return None
    if not manifest.batching:
        raise ArtifactError(
            f"{manifest.name}: built-in steps work on batches; pack the model with a batch "
            "dimension (without --no-dynamic-batch) or remove [[preprocess]] / [[postprocess]]"
        )
    inputs = {spec.name: spec for spec in manifest.inputs}
    fed: dict[str, str] = {}  # program input -> the step that fills it
    pre: list[Prepare] = []
    for index, step in enumerate(config.preprocess):
        where = f"config.toml preprocess[{index}]"
        bound = _bind_pre(step, manifest, version_dir, device, where)
        for name in bound.feeds:
            if name in fed:
                raise ArtifactError(f"{where}: the model's input {name} is filled by {fed[name]}")
            fed[name] = where
        if bound.input in inputs and bound.input not in fed:
            raise ArtifactError(
                f"{where}.input {bound.input!r} is also a tensor input of the model; name the "
                "BYTES input differently"
            )
        pre.append(bound)
    outputs = {spec.name: spec for spec in manifest.outputs}
    post: list[Finish] = []
    for index, post_step in enumerate(config.postprocess):
        where = f"config.toml postprocess[{index}]"
        finish = _bind_post(post_step, outputs, manifest.labels, where)
        if finish.into != finish.output and finish.into in outputs:
            raise ArtifactError(f"{where}.into {finish.into!r} is taken by another output")
        outputs[finish.into] = finish.spec
        post.append(finish)
    return Steps(manifest, pre, post)


def _bind_pre(
    step: PreStep, manifest: Manifest, version_dir: Path, device: str, where: str
) -> Prepare:
    inputs = {spec.name: spec for spec in manifest.inputs}
    if isinstance(step, ImageStep):
        into = step.into
        if into is None:
            if len(inputs) != 1:
                raise ArtifactError(
                    f"{where}: the model has inputs {', '.join(inputs)}; name the one the "
                    'image fills with into = "NAME"'
                )
            into = next(iter(inputs))
        spec = inputs.get(into)
        if spec is None:
            raise ArtifactError(
                f"{where}.into: the model has no input {into!r}; its inputs are "
                + ", ".join(inputs)
            )
        return ImageTransform(step, spec, device, where)
    return TextTransform(step, inputs, version_dir, device, where, dynamic=manifest.dynamic_dims)


def _bind_post(
    step: PostStep, outputs: dict[str, TensorSpec], labels: dict[str, list[str]], where: str
) -> Finish:
    if isinstance(step, SoftmaxStep):
        return softmax(step, outputs, where)
    return top_k(step, outputs, labels, where)


def _public_manifest(manifest: Manifest, pre: list[Prepare], post: list[Finish]) -> Manifest:
    """The manifest as clients see it: each step's BYTES input in place of the inputs it
    fills, each post step's output in place of (or after) the one it reads."""
    fills: dict[str, Prepare] = {}
    for step in pre:
        for name in step.feeds:
            fills[name] = step
    inputs: list[TensorSpec] = []
    for spec in manifest.inputs:
        filler = fills.get(spec.name)
        if filler is None:
            inputs.append(spec)
        elif all(s.name != filler.input for s in inputs):
            inputs.append(TensorSpec(name=filler.input, datatype="BYTES", shape=[-1]))
    outputs = list(manifest.outputs)
    for finish in post:
        at = next(i for i, spec in enumerate(outputs) if spec.name == finish.output)
        if finish.into == finish.output:
            outputs[at] = finish.spec
        else:
            outputs.insert(at + 1, finish.spec)
    public_inputs = {spec.name for spec in inputs}
    public_outputs = {spec.name: spec for spec in outputs}
    return msgspec.structs.replace(
        manifest,
        inputs=inputs,
        outputs=outputs,
        input_ranges={k: v for k, v in manifest.input_ranges.items() if k in public_inputs},
        dynamic_dims=[d for d in manifest.dynamic_dims if d.input in public_inputs],
        labels={
            k: v
            for k, v in manifest.labels.items()
            if k in public_outputs and public_outputs[k].datatype != "BYTES"
        },
    )
