"""Golden examples: inputs and the outputs the exporting environment produced for them.

Integer inputs (embedding indices, token ids) are drawn uniformly from the range of the
values in the example inputs (min..max), so they stay valid indices; floating-point
inputs are standard normal; booleans are fair coin flips.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from torchrig.dtypes import FLOAT_DATATYPES
from torchrig.packaging.manifest import Tolerance
from torchrig.packaging.signature import NamedTensors, integer_range, random_tensor

GOLDEN_FILE = "golden.pt"
GOLDEN_SEED = 20240601
# batch sizes the golden examples cycle through, capped by the export's upper bound
GOLDEN_BATCHES = (1, 5, 16, 3, 32, 7, 64)

DEFAULT_TOLERANCES: dict[str, Tolerance] = {
    "FP64": Tolerance(atol=1e-7, rtol=1e-6),
    "FP32": Tolerance(atol=1e-5, rtol=1e-4),
    "FP16": Tolerance(atol=1e-3, rtol=1e-2),
    "BF16": Tolerance(atol=1e-2, rtol=5e-2),
}
EXACT = Tolerance(atol=0.0, rtol=0.0)


def tolerance_for(datatype: str, overrides: dict[str, Tolerance] | None = None) -> Tolerance:
    """The tolerance for outputs of a V2 datatype; integers and booleans must match exactly."""
    if overrides and datatype in overrides:
        return overrides[datatype]
    if datatype in FLOAT_DATATYPES:
        return DEFAULT_TOLERANCES[datatype]
    return EXACT


def input_key(example: int, name: str) -> str:
    return f"{example}/inputs/{name}"


def output_key(example: int, name: str) -> str:
    return f"{example}/outputs/{name}"


def make_golden(
    run: Callable[[list[Any]], NamedTensors],
    example: NamedTensors,
    *,
    count: int,
    batching: bool,
    max_batch_size: int,
    sizes: Sequence[Mapping[tuple[str, int], int]] = (),
) -> dict[str, Any]:
    """`count` random input batches like `example`, with `run`'s outputs, all on the CPU.
    Example i takes `sizes[i % len(sizes)]` for the (input, dim)s it names (dynamic
    dimensions: the packer gives the example's own sizes, then their minimum)."""
    generator = torch.Generator().manual_seed(GOLDEN_SEED)
    golden: dict[str, Any] = {}
    for i in range(count):
        batch = min(GOLDEN_BATCHES[i % len(GOLDEN_BATCHES)], max_batch_size)
        resized = sizes[i % len(sizes)] if sizes else {}
        inputs = []
        for name, tensor in zip(example.names, example.tensors, strict=True):
            shape = list(tensor.shape)
            if batching:
                shape[0] = batch
            for (input_name, dim), size in resized.items():
                if input_name == name:
                    shape[dim] = size
            value = random_tensor(tensor.dtype, shape, integer_range(tensor), generator)
            golden[input_key(i, name)] = value
            inputs.append(value.to(tensor.device))
        outputs = run(inputs)
        for name, tensor in zip(outputs.names, outputs.tensors, strict=True):
            golden[output_key(i, name)] = tensor.detach().cpu().contiguous()
    return golden
