"""Post-processing steps: softmax, and top-k classes with labels.

Top-k answers as the classification extension does (`protocol.classification`, shared):
a BYTES tensor [rows, k] of "score:index" or "score:index:label" strings, labels from
the version's manifest (`pack --labels`).
"""

from __future__ import annotations

from typing import Any

from torchrig.errors import ArtifactError
from torchrig.packaging.manifest import TensorSpec
from torchrig.repository.steps import SoftmaxStep, TopKStep
from torchrig.runtime.classes import classify

NUMERIC = ("FP16", "BF16", "FP32", "FP64", "INT8", "INT16", "INT32", "INT64", "UINT8")


def _source(spec: TensorSpec | None, name: str, where: str, outputs: list[str]) -> TensorSpec:
    if spec is None:
        raise ArtifactError(
            f"{where}.output: the model has no output {name!r}; its outputs are "
            + ", ".join(outputs)
        )
    if spec.datatype not in NUMERIC or len(spec.shape) < 2:
        raise ArtifactError(
            f"{where}.output: {name} is {spec.datatype}{spec.shape}; scores are a numeric "
            "[batch, classes] output"
        )
    return spec


class Softmax:
    """Probabilities over the last dimension of one output, in FP32."""

    def __init__(self, spec: TensorSpec | None, name: str, where: str, outputs: list[str]):
        source = _source(spec, name, where, outputs)
        self.output = source.name
        self.into = source.name
        self.spec = TensorSpec(name=source.name, datatype="FP32", shape=list(source.shape))

    def __call__(self, tensor: Any) -> Any:
        import torch

        return torch.softmax(tensor.to(torch.float32), dim=-1)


class TopK:
    """The top k classes of each row of one output, best first, with their labels."""

    def __init__(
        self,
        step: TopKStep,
        spec: TensorSpec | None,
        *,
        name: str,
        labels: list[str] | None,
        where: str,
        outputs: list[str],
    ):
        source = _source(spec, name, where, outputs)
        self.output = source.name
        self.into = step.into or source.name
        self.k = step.k
        self.labels = labels
        self.datatype = source.datatype
        classes = 1
        for dim in source.shape[1:]:
            classes = -1 if dim == -1 or classes == -1 else classes * dim
        count = step.k if classes == -1 else min(step.k, classes)
        self.spec = TensorSpec(name=self.into, datatype="BYTES", shape=[source.shape[0], count])

    def __call__(self, tensor: Any) -> Any:
        return classify(self.output, "FP32", tensor, self.k, self.labels, batching=True)


def softmax(step: SoftmaxStep, specs: dict[str, TensorSpec], where: str) -> Softmax:
    name = _default_output(step.output, specs, where)
    return Softmax(specs.get(name), name, where, list(specs))


def top_k(
    step: TopKStep, specs: dict[str, TensorSpec], labels: dict[str, list[str]], where: str
) -> TopK:
    name = _default_output(step.output, specs, where)
    return TopK(
        step,
        specs.get(name),
        name=name,
        labels=labels.get(name),
        where=where,
        outputs=list(specs),
    )


def _default_output(given: str | None, specs: dict[str, TensorSpec], where: str) -> str:
    if given is not None:
        return given
    if len(specs) != 1:
        raise ArtifactError(
            f"{where}: the model has outputs {', '.join(specs)}; name the one this step "
            'reads with output = "NAME"'
        )
    return next(iter(specs))
