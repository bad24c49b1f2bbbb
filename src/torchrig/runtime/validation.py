"""Requests checked against a model's signature before they reach a batch."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any

from torchrig.dtypes import v2_datatype
from torchrig.errors import InvalidInput
from torchrig.packaging.manifest import DynamicDim, TensorSpec


def _shape(spec: TensorSpec) -> str:
    return "[" + ", ".join(str(d) for d in spec.shape) + "]"


# torch dtype -> its V2 datatype (or its own name when it has none): validation runs on the
# event loop for every request, and str(dtype) costs more than the rest of the check
_DATATYPES: dict[Any, str] = {}


def _datatype(dtype: Any) -> str:
    name = _DATATYPES.get(dtype)
    if name is None:
        try:
            name = v2_datatype(dtype)
        except KeyError:
            name = str(dtype)
        _DATATYPES[dtype] = name
    return name


def _fits(declared: Sequence[int], shape: Sequence[int]) -> bool:
    """Whether `shape` is one of `declared` (-1: any size), without a generator."""
    if len(declared) != len(shape):
        return False
    for want, got in zip(declared, shape, strict=True):  # noqa: SIM110 - no generator
        if want not in (-1, got):
            return False
    return True


SMALL_RANGE_CHECK = 256  # elements: below, Python's min/max on a list beat numpy's reductions


def validate_inputs(
    model: str,
    specs: list[TensorSpec],
    inputs: Mapping[str, Any],
    *,
    batching: bool,
    max_batch_size: int,
    ranges: Mapping[str, list[int]] | None = None,
    dynamic: Sequence[DynamicDim] = (),
    declared: bool = False,
) -> int:
    """Check names, datatypes, shapes, the sizes of declared dynamic dimensions and
    declared integer ranges; return the request's row count (1 unbatched).

    Every error names the input and what was expected. A declared range is checked here,
    per request, so that an out-of-range index never reaches the model (on a GPU it would
    be a device-side assert that poisons the whole replica). `declared`: each tensor was
    made with the datatype and shape its request declared, and `check_declared` checked
    those against `specs`, so only what spans inputs (presence, batch sizes) and values
    (ranges) are checked again.
    """
    # declared: every name was one of the signature's, once (check_declared), so the count
    # alone tells whether one is missing
    if len(inputs) != len(specs) or (not declared and not all(s.name in inputs for s in specs)):
        expected = {s.name for s in specs}
        missing = sorted(expected - set(inputs))
        extra = sorted(set(inputs) - expected)
        parts = []
        if missing:
            parts.append(f"missing input(s) {', '.join(missing)}")
        if extra:
            parts.append(f"unknown input(s) {', '.join(extra)}")
        raise InvalidInput(
            f"model {model}: {'; '.join(parts)}; it takes "
            + ", ".join(f"{s.name} {s.datatype}{_shape(s)}" for s in specs)
        )
    rows: int | None = None
    for spec in specs:
        tensor = inputs[spec.name]
        shape = tensor.shape
        if not declared:
            datatype = _datatype(tensor.dtype)
            if datatype != spec.datatype:
                raise InvalidInput(
                    f"model {model}: input {spec.name} has datatype {datatype}, expected "
                    f"{spec.datatype}"
                )
            if not _fits(spec.shape, shape):
                raise InvalidInput(
                    f"model {model}: input {spec.name} has shape {list(shape)}, expected "
                    f"{_shape(spec)} (-1: any size)"
                )
        if batching:
            if not shape:
                raise InvalidInput(f"model {model}: input {spec.name} has no batch dimension")
            if rows is None:
                rows = shape[0]
            elif shape[0] != rows:
                raise InvalidInput(
                    f"model {model}: inputs disagree on the batch size ({rows} vs {shape[0]} "
                    f"for {spec.name})"
                )
    if dynamic and not declared:
        check_dynamic_sizes(model, inputs, dynamic)
    if ranges:
        check_ranges(model, inputs, ranges)
    if not batching:
        return 1
    if rows is None or rows < 1:
        raise InvalidInput(f"model {model}: a request needs at least one row")
    if rows > max_batch_size:
        raise InvalidInput(
            f"model {model}: a request of {rows} rows exceeds max_batch_size {max_batch_size}; "
            "split it or raise batching.max_batch_size in the model's config.toml"
        )
    return rows


def check_dynamic_sizes(
    model: str, inputs: Mapping[str, Any], dynamic: Sequence[DynamicDim]
) -> None:
    """Refuse a size outside a dynamic dimension's declared [min, max]: the program was
    exported for that range only (its guard would fail inside a batch, for every request)."""
    for declared in dynamic:
        shape = getattr(inputs.get(declared.input), "shape", None)
        if shape is not None and len(shape) > declared.dim:
            _check_size(model, declared, int(shape[declared.dim]))


def _check_size(model: str, declared: DynamicDim, size: int) -> None:
    from torchrig.packaging.dynamic import describe

    if size < declared.min or (declared.max is not None and size > declared.max):
        raise InvalidInput(
            f"model {model}: input {declared.input} has size {size} in dimension "
            f"{declared.dim}, outside its declared range {describe(declared)}; send "
            f"sizes from {declared.min}"
            + (f" to {declared.max}" if declared.max is not None else " up")
            + " there (the range was declared when the model was packed)"
        )


def check_ranges(model: str, inputs: Mapping[str, Any], ranges: Mapping[str, list[int]]) -> None:
    """Refuse integer inputs with values outside their declared inclusive [low, high]."""
    for name, (low, high) in ranges.items():
        tensor = inputs.get(name)
        if tensor is None or tensor.numel() == 0:
            continue
        # this runs on the event loop for every request: numpy's reductions cost a
        # fraction of torch's dispatch, and on the few values of a small request, a list's
        # min and max cost a fraction of numpy's
        if not tensor.is_cpu:
            smallest, largest = int(tensor.min()), int(tensor.max())
        elif tensor.numel() <= SMALL_RANGE_CHECK:
            values = tensor.numpy().ravel().tolist()
            smallest, largest = min(values), max(values)
        else:
            array = tensor.numpy()
            smallest, largest = int(array.min()), int(array.max())
        if smallest < low or largest > high:
            raise InvalidInput(
                f"model {model}: input {name} has values in [{smallest}, {largest}], outside "
                f"its declared range [{low}, {high}]; send values from {low} to {high} "
                "(the range was declared when the model was packed)"
            )


def check_declared(
    model: str,
    specs: list[TensorSpec],
    name: str,
    datatype: str,
    shape: list[int],
    *,
    max_batch_size: int | None = None,
    dynamic: Sequence[DynamicDim] = (),
) -> None:
    """What a request declares of one input (name, datatype, shape, the sizes of dynamic
    dimensions), checked before its data is parsed: a request that cannot be served is
    refused before it costs anything. The decoders build each input as declared, so
    `validate_inputs(declared=True)` then checks only what spans inputs and the values."""
    for spec in specs:
        if spec.name == name:
            break
    else:
        raise InvalidInput(
            f"model {model}: unknown input {name}; it takes "
            + ", ".join(f"{s.name} {s.datatype}{_shape(s)}" for s in specs)
        )
    if datatype != spec.datatype:
        raise InvalidInput(
            f"model {model}: input {name} has datatype {datatype}, expected {spec.datatype}"
        )
    if not _fits(spec.shape, shape):
        raise InvalidInput(
            f"model {model}: input {name} has shape {shape}, expected {_shape(spec)} (-1: any size)"
        )
    if max_batch_size is not None and shape and spec.shape[0] == -1 and shape[0] > max_batch_size:
        raise InvalidInput(
            f"model {model}: a request of {shape[0]} rows exceeds max_batch_size "
            f"{max_batch_size}; split it or raise batching.max_batch_size in the model's "
            "config.toml"
        )
    for declared in dynamic:
        if declared.input == name and len(shape) > declared.dim:
            _check_size(model, declared, shape[declared.dim])


DeclaredCheck = Callable[[str, str, list[int]], None]  # (name, datatype, shape) -> or raise


def declared_check(
    model: str,
    specs: list[TensorSpec],
    *,
    max_batch_size: int | None = None,
    dynamic: Sequence[DynamicDim] = (),
) -> DeclaredCheck:
    """`check_declared` for one signature, made once: what a good request declares passes
    through a table lookup and a few comparisons; anything else (and an input with a
    dynamic dimension) goes through `check_declared` itself, which names the problem."""
    full = partial(check_declared, model, specs, max_batch_size=max_batch_size, dynamic=dynamic)
    # name -> (datatype, rank, the fixed dims as (index, size), the bound on dim 0 or None)
    plain: dict[str, tuple[str, int, tuple[tuple[int, int], ...], int | None]] = {}
    for spec in specs:
        if any(d.input == spec.name for d in dynamic):
            continue
        fixed = tuple((i, size) for i, size in enumerate(spec.shape) if size != -1)
        bound = max_batch_size if spec.shape and spec.shape[0] == -1 else None
        plain[spec.name] = (spec.datatype, len(spec.shape), fixed, bound)

    def check(name: str, datatype: str, shape: list[int]) -> None:
        entry = plain.get(name)
        if entry is not None:
            want, rank, fixed, bound = entry
            if datatype == want and len(shape) == rank and (bound is None or shape[0] <= bound):
                for index, size in fixed:
                    if shape[index] != size:
                        break
                else:
                    return
        full(name, datatype, shape)

    return check


class DeclaredChecks:
    """Each served version's declared-input check (`declared_check`), made once, not per
    request (both transports check every request's declared inputs with it). A version
    reloaded or loaded again is a new served version, and gets a new check."""

    MAX_KEPT = 256  # versions whose check is kept; past that, all are dropped (they come back)

    def __init__(self) -> None:
        # (model, version) -> (the served version, its check)
        self._checks: dict[tuple[str, int], tuple[Any, DeclaredCheck]] = {}

    def of(self, served: Any, signature: Any) -> DeclaredCheck:
        """The check for `served` (a ServedVersion) against `signature` (its interface)."""
        cached = self._checks.get((served.model, served.version))
        if cached is None or cached[0] is not served:
            if len(self._checks) >= self.MAX_KEPT:
                self._checks.clear()
            check = declared_check(
                f"{served.model}/{served.version}",
                signature.inputs,
                max_batch_size=served.batcher.max_batch_size if served.batcher else None,
                dynamic=signature.dynamic_dims,
            )
            cached = (served, check)
            self._checks[(served.model, served.version)] = cached
        return cached[1]
