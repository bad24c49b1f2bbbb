"""Variable dimensions past the batch: declared at pack time, checked, bucketed.

`pack --dynamic src:1:1-512` (or `pack(dynamic_dims={"src": {1: (1, 512)}})`) exports dim 1
of input `src` as a `torch.export` dimension of that range. The manifest records it
(`DynamicDim`); the server refuses sizes outside the range per request, batches only
requests of one shape together, and warms up the buckets `size_buckets` picks.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from torchrig.errors import PackError
from torchrig.packaging.manifest import DynamicDim

# a declaration as the Python API takes it: input -> {dim: (min, max) or None}
DynamicSpec = Mapping[str, Mapping[int, "tuple[int, int | None] | None"]]
# interior sizes warmed between min and max (powers of two), besides min and max
INTERIOR_BUCKETS = 3


def check_dynamic(
    spec: DynamicSpec | None,
    names: Sequence[str],
    tensors: Sequence[Any],
    *,
    dynamic_batch: bool,
) -> list[DynamicDim]:
    """The declared dims, checked against the example inputs; each error names the fix."""
    checked: list[DynamicDim] = []
    examples = dict(zip(names, tensors, strict=True))
    for name, dims in (spec or {}).items():
        if name not in examples:
            raise PackError(
                f"--dynamic {name}: the model has no input {name!r} (its inputs: "
                f"{', '.join(names)}); use NAME:DIM[:MIN-MAX] with one of them."
            )
        if not isinstance(dims, Mapping):
            raise PackError(
                f"dynamic_dims[{name!r}] must map each dimension to (MIN, MAX), e.g. "
                f"{{{name!r}: {{1: (1, 512)}}}}; got a {type(dims).__name__}."
            )
        shape = list(examples[name].shape)
        for dim, bounds in dims.items():
            what = f"--dynamic {name}:{dim}"
            if isinstance(dim, bool) or not isinstance(dim, int):
                raise PackError(f"{what}: DIM must be an integer dimension index.")
            if dim == 0:
                raise PackError(
                    f"{what}: dim 0 is the batch, which is dynamic already; declare the "
                    "dimensions after it (1 for the length of [batch, length, features])."
                    if dynamic_batch
                    else f"{what}: dim 0 of a model without a batch stays fixed; give the "
                    "model a batch dimension (pack without --no-dynamic-batch) and declare "
                    "the dimensions after it."
                )
            if not 0 <= dim < len(shape):
                raise PackError(
                    f"{what}: input {name!r} has {len(shape)} dimensions (example shape "
                    f"{shape}); DIM must be 1 to {len(shape) - 1}."
                )
            if bounds is not None and not (
                isinstance(bounds, (tuple, list))
                and len(bounds) == 2
                and isinstance(bounds[0], int)
                and (bounds[1] is None or isinstance(bounds[1], int))
            ):
                raise PackError(
                    f"{what}: the range must be (MIN, MAX) integers (MAX may be None), or "
                    f"None for 1 and up; got {bounds!r}."
                )
            low, high = bounds if bounds is not None else (1, None)
            if low < 1:
                raise PackError(f"{what}: MIN {low} must be at least 1.")
            if high is not None and low > high:
                raise PackError(f"{what}: MIN {low} exceeds MAX {high}; write MIN-MAX.")
            size = shape[dim]
            if size < 2:
                raise PackError(
                    f"{what}: the example has size {size} there; torch.export fixes sizes 0 "
                    "and 1, so give an example of size 2 or more in that dimension."
                )
            if size < low or (high is not None and size > high):
                raise PackError(
                    f"{what}: the example has size {size} there, outside "
                    f"{low}-{high if high is not None else 'any'}; fix the range or the example."
                )
            if any(d.input == name and d.dim == dim for d in checked):
                raise PackError(f"{what} is declared twice; declare each dimension once.")
            checked.append(DynamicDim(input=name, dim=dim, min=low, max=high))
    return checked


def export_shapes(
    dynamic: Sequence[DynamicDim], names: Sequence[str], batch: Any | None
) -> tuple[dict[int, Any], ...] | None:
    """`dynamic_shapes` for `torch.export.export`: the shared batch `Dim` on dim 0 of each
    input (when batching) and a `Dim.DYNAMIC` of the declared range on each declared dim.
    `Dim.DYNAMIC` lets the exporter relate dims (a mask as long as its sequence) itself."""
    import torch

    if batch is None and not dynamic:
        return None
    shapes: list[dict[int, Any]] = []
    for name in names:
        dims: dict[int, Any] = {0: batch} if batch is not None else {}
        for declared in dynamic:
            if declared.input == name:
                bounds: dict[str, int] = {"min": declared.min}
                if declared.max is not None:
                    bounds["max"] = declared.max
                dims[declared.dim] = torch.export.Dim.DYNAMIC(**bounds)
        shapes.append(dims)
    return tuple(shapes)


def size_buckets(declared: DynamicDim, *, interior: int = INTERIOR_BUCKETS) -> list[int]:
    """Sizes to warm up for one dimension: its min, its max (or 2 x min up to 512 when
    unbounded) and up to `interior` powers of two evenly spread between them."""
    low = declared.min
    high = declared.max if declared.max is not None else max(low, min(512, 2 * low))
    powers = []
    power = 1
    while power < high:
        if power > low:
            powers.append(power)
        power *= 2
    if len(powers) > interior:
        step = len(powers) / interior
        powers = [powers[int((i + 0.5) * step)] for i in range(interior)]
    return sorted({low, *powers, high})


def chosen_buckets(declared: DynamicDim, configured: Sequence[int] = ()) -> list[int]:
    """The configured buckets (`[padding] buckets`) within the dim's declared range, or
    its default buckets (`size_buckets`) when none are configured or none fit."""
    inside = [
        b for b in configured if b >= declared.min and (declared.max is None or b <= declared.max)
    ]
    return sorted(set(inside)) or size_buckets(declared)


def size_levels(
    dynamic: Sequence[DynamicDim], configured: Sequence[int] = ()
) -> list[dict[tuple[str, int], int]]:
    """Warm-up shapes for all declared dims together: level i takes each dim's i-th bucket
    (its last one when it has fewer), so the count grows with the buckets, not their
    product; level 0 is every dim at its first bucket (its min by default)."""
    buckets = [chosen_buckets(d, configured) for d in dynamic]
    count = max((len(b) for b in buckets), default=1)
    return [
        {(d.input, d.dim): b[min(i, len(b) - 1)] for d, b in zip(dynamic, buckets, strict=True)}
        for i in range(count)
    ]


def describe(declared: DynamicDim) -> str:
    """`MIN-MAX` (or `MIN-any`), as messages write a declared range."""
    return f"{declared.min}-{declared.max if declared.max is not None else 'any'}"


def vary_dims(
    run: Callable[[list[Any]], Any],
    names: Sequence[str],
    tensors: Sequence[Any],
    dynamic: Sequence[DynamicDim],
) -> list[set[int]]:
    """The output dims that follow the declared input dims, found by running the model
    once more with each declared dim one larger (one smaller at its max): for programs
    without symbolic shapes (TorchScript). `run` returns the named outputs."""
    import torch

    before = [list(t.shape) for t in run(list(tensors)).tensors]
    grown = []
    for name, example in zip(names, tensors, strict=True):
        tensor = example
        for declared in dynamic:
            if declared.input != name:
                continue
            size = tensor.shape[declared.dim]
            new = size + 1 if declared.max is None or size < declared.max else size - 1
            index = [slice(None)] * tensor.dim()
            index[declared.dim] = slice(0, min(size, new))
            pad = list(tensor.shape)
            pad[declared.dim] = new
            resized = torch.zeros(pad, dtype=tensor.dtype, device=tensor.device)
            resized[tuple(index)] = tensor[tuple(index)]
            tensor = resized
        grown.append(tensor)
    after = [list(t.shape) for t in run(grown).tensors]
    return [
        {i for i, (a, b) in enumerate(zip(x, y, strict=False)) if a != b}
        for x, y in zip(before, after, strict=True)
    ]
