"""Example inputs and outputs -> named tensors and V2 signatures; random inputs in range."""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from torchrig.dtypes import FLOAT_DATATYPES, v2_datatype
from torchrig.errors import PackError
from torchrig.packaging.manifest import TensorSpec


@dataclass(frozen=True)
class NamedTensors:
    """Tensors in positional order with their names."""

    names: list[str]
    tensors: list[Any]


def _datatype(name: str, tensor: Any, role: str) -> str:
    if not isinstance(tensor, torch.Tensor):
        raise PackError(
            f"{role} {name!r} is a {type(tensor).__name__}, not a tensor; pack takes "
            "tensors only (a tuple, list or dict of them)."
        )
    try:
        return v2_datatype(tensor.dtype)
    except KeyError:
        raise PackError(
            f"{role} {name!r} has dtype {tensor.dtype}, which the V2 protocol cannot carry; "
            "convert it in the model (e.g. complex -> two real tensors)."
        ) from None


def _parameter_names(module: Any) -> list[str] | None:
    """Positional parameter names of `module.forward` (eager or TorchScript), if knowable."""
    forward = getattr(module, "forward", None)
    schema = getattr(forward, "schema", None)
    if schema is not None:  # a TorchScript method: the schema has `self` first
        return [arg.name for arg in schema.arguments][1:]
    try:
        parameters = inspect.signature(forward).parameters.values()  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return [p.name for p in parameters if p.kind in kinds]


def name_inputs(module: Any, example_inputs: Any, input_names: list[str] | None) -> NamedTensors:
    """Order and name example inputs: a dict follows `forward`'s parameter order."""
    if isinstance(example_inputs, torch.Tensor):
        example_inputs = (example_inputs,)
    params = _parameter_names(module) or []
    if isinstance(example_inputs, Mapping):
        if input_names is not None and list(input_names) != list(example_inputs):
            raise PackError("input_names must be left out when example_inputs is a dict.")
        names = [str(k) for k in example_inputs]
        if set(names) <= set(params):
            names = [p for p in params if p in example_inputs]
        tensors = [example_inputs[n] for n in names]
    elif isinstance(example_inputs, Sequence) and not isinstance(example_inputs, str):
        tensors = list(example_inputs)
        if input_names is not None:
            names = list(input_names)
        elif len(params) == len(tensors):
            names = params
        else:
            names = [f"input_{i}" for i in range(len(tensors))]
    else:
        raise PackError(
            f"example_inputs is a {type(example_inputs).__name__}; give a tuple of tensors "
            "or a dict name -> tensor."
        )
    if not tensors:
        raise PackError("example_inputs is empty; give at least one tensor.")
    if len(names) != len(tensors):
        raise PackError(f"{len(names)} input_names for {len(tensors)} example inputs.")
    if len(set(names)) != len(names) or not all(names):
        raise PackError(f"input names must be unique and non-empty: {names}.")
    for name, tensor in zip(names, tensors, strict=True):
        _datatype(name, tensor, "example input")
    return NamedTensors(names, tensors)


def name_outputs(result: Any, output_names: list[str] | None) -> NamedTensors:
    """Name a module's result: a tensor, a tuple/list of tensors, or a dict of tensors."""
    if isinstance(result, torch.Tensor):
        names, tensors = list(output_names or ["output"]), [result]
    elif isinstance(result, Mapping):
        names = list(output_names) if output_names is not None else [str(k) for k in result]
        if set(names) != {str(k) for k in result}:
            raise PackError(
                f"output_names {names} differ from the keys the module returns {list(result)}."
            )
        tensors = [result[n] for n in names]
    elif isinstance(result, (tuple, list)):
        tensors = list(result)
        names = list(output_names or [f"output_{i}" for i in range(len(tensors))])
    else:
        raise PackError(
            f"the module returned a {type(result).__name__}; pack needs a tensor, a "
            "tuple/list of tensors or a dict name -> tensor."
        )
    if len(names) != len(tensors):
        raise PackError(f"{len(names)} output_names for {len(tensors)} outputs.")
    if len(set(names)) != len(names) or not all(names):
        raise PackError(f"output names must be unique and non-empty: {names}.")
    for name, tensor in zip(names, tensors, strict=True):
        _datatype(name, tensor, "output")
    return NamedTensors(names, tensors)


def check_batch(inputs: NamedTensors, outputs: NamedTensors) -> int:
    """The common batch size (dim 0) of the inputs and outputs, or a PackError saying why not."""
    sizes = {
        n: (t.shape[0] if t.dim() else None)
        for n, t in zip(inputs.names, inputs.tensors, strict=True)
    }
    if None in sizes.values() or len(set(sizes.values())) != 1:
        raise PackError(
            f"with dynamic_batch every input needs the same dim 0 (batch); got {sizes}. "
            "Pack with dynamic_batch=False (--no-dynamic-batch) for a model without a batch."
        )
    batch = int(next(iter(sizes.values())))  # type: ignore[arg-type]
    if batch < 2:
        raise PackError(
            "example inputs have batch size 1; torch.export specialises size-1 dimensions. "
            "Give examples with a batch of 2 or more."
        )
    for name, tensor in zip(outputs.names, outputs.tensors, strict=True):
        if tensor.dim() == 0 or tensor.shape[0] != batch:
            raise PackError(
                f"output {name!r} has shape {list(tensor.shape)}, whose dim 0 is not the batch "
                f"({batch}); pack with dynamic_batch=False (--no-dynamic-batch)."
            )
    return batch


def specs(named: NamedTensors, dynamic: list[set[int]] | None = None) -> list[TensorSpec]:
    """TensorSpecs: `dynamic[i]` holds the dims of tensor i that are variable (-1)."""
    result = []
    for i, (name, tensor) in enumerate(zip(named.names, named.tensors, strict=True)):
        variable = dynamic[i] if dynamic is not None else set()
        shape = [-1 if d in variable else int(s) for d, s in enumerate(tensor.shape)]
        result.append(TensorSpec(name=name, datatype=v2_datatype(tensor.dtype), shape=shape))
    return result


def integer_range(tensor: Any) -> tuple[int, int] | None:
    """(min, max) of an integer tensor's values, which random inputs then stay within."""
    if v2_datatype(tensor.dtype) in FLOAT_DATATYPES or tensor.dtype == torch.bool:
        return None
    if tensor.numel() == 0:
        return (0, 0)
    return (int(tensor.min()), int(tensor.max()))


def random_tensor(
    dtype: Any,
    shape: Sequence[int],
    value_range: tuple[float, float] | None,
    generator: Any,
) -> Any:
    """A random CPU tensor: floats standard normal (or uniform in the range), integers
    uniform in the inclusive range, booleans fair coin flips."""
    if dtype == torch.bool:
        return torch.randint(0, 2, tuple(shape), generator=generator).bool()
    if dtype.is_floating_point:
        if value_range is None:
            return torch.randn(tuple(shape), generator=generator).to(dtype)
        low, high = value_range
        uniform = torch.rand(tuple(shape), generator=generator, dtype=torch.float64)
        return (uniform * (high - low) + low).to(dtype)
    low, high = value_range if value_range is not None else (0, 1)
    return torch.randint(int(low), int(high) + 1, tuple(shape), generator=generator, dtype=dtype)
