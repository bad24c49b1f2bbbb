"""Padding requests to shape buckets, for models that declare it safe (`[padding]`).

By default a batch holds requests of one shape only (the batcher groups them). A model
that ignores padded positions, typically through a mask input that marks the real ones,
can say so in its `config.toml`:

    [padding]
    values = { tokens = 0, mask = 0 }   # pad value per input (default 0; False for BOOL)
    buckets = [16, 64, 128, 512]        # default: the dynamic dims' warm-up buckets

Each request's dynamic dimensions are then padded up to the smallest bucket that holds
them before it queues, so requests of lengths 5 and 12 share the batch of bucket 16, and
every batch has a shape that was warmed up (and, on a GPU, captured in a CUDA graph). A
size past the last bucket keeps its own size. Each answer is cut back: a variable output
dimension (-1 in the signature, past the batch) as long as a padded one is sliced to the
request's own size.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from torchrig.packaging.dynamic import chosen_buckets
from torchrig.packaging.manifest import DynamicDim, Manifest, TensorSpec
from torchrig.repository.config import ModelConfig

Tensors = dict[str, Any]
Crop = Callable[[Tensors], Tensors]


@dataclass(frozen=True)
class Padding:
    """How one model's requests are padded: its dynamic dims, their buckets, pad values."""

    dims: tuple[DynamicDim, ...]
    buckets: Mapping[tuple[str, int], Sequence[int]]
    values: Mapping[str, float]
    variable_outputs: Mapping[str, frozenset[int]]  # output -> its variable dims past 0

    @classmethod
    def of(
        cls,
        dims: Sequence[DynamicDim],
        outputs: Sequence[TensorSpec],
        buckets: Sequence[int],
        values: Mapping[str, float],
    ) -> Padding:
        """The configured buckets (within each dim's declared range; its warm-up buckets
        when none are configured) and pad values."""
        chosen = {(d.input, d.dim): chosen_buckets(d, buckets) for d in dims}
        variable = {
            spec.name: frozenset(d for d, size in enumerate(spec.shape) if d > 0 and size == -1)
            for spec in outputs
        }
        return cls(tuple(dims), chosen, dict(values), variable)

    def apply(self, inputs: Mapping[str, Any]) -> tuple[Tensors, Crop | None]:
        """The inputs padded to their buckets, and how to cut the answer back (None when
        nothing was padded)."""
        import torch

        grown: dict[tuple[str, int], tuple[int, int]] = {}  # (input, dim) -> (own, padded)
        for declared in self.dims:
            tensor = inputs.get(declared.input)
            shape = getattr(tensor, "shape", None)
            if shape is None or len(shape) <= declared.dim:
                continue
            own = int(shape[declared.dim])
            key = (declared.input, declared.dim)
            buckets = self.buckets[key]
            at = bisect.bisect_left(buckets, own)  # the smallest bucket holding it
            padded = buckets[at] if at < len(buckets) else own
            if padded != own:
                grown[key] = (own, padded)
        if not grown:
            return dict(inputs), None
        result: Tensors = {}
        for name, tensor in inputs.items():
            dims = {dim: sizes for (input_name, dim), sizes in grown.items() if input_name == name}
            if not dims:
                result[name] = tensor
                continue
            shape = list(tensor.shape)
            region = [slice(None)] * len(shape)
            for dim, (own, padded) in dims.items():
                shape[dim] = padded
                region[dim] = slice(0, own)
            value = self.values.get(name, 0)
            out = torch.full(shape, value, dtype=tensor.dtype, device=tensor.device)
            out[tuple(region)] = tensor
            result[name] = out
        return result, self._cropper(list(grown.values()))

    def _cropper(self, grown: list[tuple[int, int]]) -> Crop:
        """Cut each variable output dimension as long as a padded size back to the
        request's own size."""
        back = {padded: own for own, padded in reversed(grown)}  # the first dim wins a tie
        variable = self.variable_outputs

        def crop(outputs: Tensors) -> Tensors:
            cut: Tensors = {}
            for name, tensor in outputs.items():
                shape = getattr(tensor, "shape", ())
                dims = variable.get(name, frozenset())
                region = [
                    slice(0, back[size]) if dim in dims and size in back else slice(None)
                    for dim, size in enumerate(shape)
                ]
                cut[name] = tensor[tuple(region)] if region else tensor
            return cut

        return crop


def padding_for(
    manifest: Manifest | None, config: ModelConfig, warnings: list[str]
) -> Padding | None:
    """The model's padding when its config asks for it and it has dynamic dims; a
    `[padding]` without them is ignored with a warning."""
    if config.padding is None or manifest is None:
        return None
    if not manifest.dynamic_dims:
        warnings.append(
            "[padding] is ignored: the model has no dynamic dimensions past the batch "
            "(pack it with --dynamic NAME:DIM:MIN-MAX)"
        )
        return None
    return Padding.of(
        manifest.dynamic_dims, manifest.outputs, config.padding.buckets, config.padding.values
    )
