"""The CUDA execution path: per-instance lanes with static buffers and CUDA graphs.

A lane belongs to one worker at a time (the executor hands lanes out from a pool, one
per instance), so its static buffers and graphs are never used by two threads at once.
A lane owns a compute stream and a copy stream. A batch is staged through pinned host
memory, copied on the copy stream (overlapping another lane's compute) into the static
input buffers of the smallest captured batch size that holds it, and the graph for that
size is replayed; rows past the batch are padding whose outputs are dropped. Outputs
come back into pinned host memory. Batches larger than every captured size, or a model
whose capture failed, run eagerly on the lane's stream.

A model with dynamic dimensions past the batch gets graphs per captured shape (the
warm-up buckets of those dimensions): a batch uses a graph only when its shape past the
batch equals a captured one exactly; any other shape runs eagerly, never in a graph
captured for another shape.
"""

from __future__ import annotations

import bisect
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from torchrig.dtypes import torch_dtype
from torchrig.packaging.manifest import DynamicDim, TensorSpec

log = logging.getLogger(__name__)

Forward = Callable[[Mapping[str, Any]], dict[str, Any]]
# each input's sizes past the batch dimension, in the lane's input order
InnerShape = tuple[tuple[int, ...], ...]


def graphable(specs: Sequence[TensorSpec], dynamic: Sequence[DynamicDim] = ()) -> bool:
    """True when every input is [batch, dims...] whose variable dims past the batch are
    declared (so each captured bucket has a known shape for its static buffers)."""
    declared = {(d.input, d.dim) for d in dynamic}
    return all(
        spec.shape
        and all(
            size != -1 or (spec.name, dim) in declared
            for dim, size in enumerate(spec.shape)
            if dim > 0
        )
        for spec in specs
    )


def bucket_for(rows: int, buckets: Sequence[int]) -> int | None:
    """The smallest bucket holding `rows` rows (buckets sorted ascending), or None."""
    at = bisect.bisect_left(buckets, rows)
    return buckets[at] if at < len(buckets) else None


@dataclass
class InputLayout:
    """How one input sits on the device: its dtype there and whether channels_last.
    Only batched inputs whose other dimensions are fixed can have static buffers."""

    spec: TensorSpec
    dtype: torch.dtype
    channels_last: bool

    def empty(
        self, rows: int, device: torch.device, inner: Sequence[int] | None = None
    ) -> torch.Tensor:
        """Zeros of `rows` rows; `inner` gives the sizes past the batch (default: the
        signature's, which then has no variable dimension there)."""
        dims = [rows, *(self.spec.shape[1:] if inner is None else inner)]
        tensor = torch.zeros(dims, dtype=self.dtype, device=device)
        if self.channels_last:
            tensor = tensor.contiguous(memory_format=torch.channels_last)
        return tensor


@dataclass
class _Captured:
    graph: torch.cuda.CUDAGraph
    inputs: dict[str, torch.Tensor]
    outputs: dict[str, torch.Tensor]


class CudaLane:
    """One instance's streams, static buffers and graphs on one GPU."""

    def __init__(
        self,
        forward: Forward,
        layouts: Sequence[InputLayout],
        outputs: Sequence[TensorSpec],
        device: torch.device,
    ) -> None:
        self.forward = forward
        self.layouts = list(layouts)
        self.output_specs = list(outputs)
        self.device = device
        self.stream = torch.cuda.Stream(device)
        self.copy_stream = torch.cuda.Stream(device)
        # captured graphs by shape past the batch, then by batch size
        self.shapes: dict[InnerShape, dict[int, _Captured]] = {}
        self._pool: Any = None

    @property
    def graphs(self) -> dict[int, _Captured]:
        """The graphs of the first captured shape by batch size (a model without dynamic
        dimensions has that shape only)."""
        return next(iter(self.shapes.values()), {})

    def release(self) -> None:
        """Drop every graph and static buffer (after a failed capture: run eagerly)."""
        self.shapes.clear()
        self._pool = None

    def capture(
        self, buckets: Sequence[int], inner: Mapping[str, Sequence[int]] | None = None
    ) -> None:
        """Capture one graph per bucket, largest first, for inputs whose sizes past the
        batch are `inner` (by input name; default: the signature's fixed ones). All of a
        lane's graphs share one private memory pool: they never run at the same time.
        Raises what capture raised."""
        if self._pool is None:
            self._pool = torch.cuda.graph_pool_handle()
        pool = self._pool
        sizes = {
            lay.spec.name: list(inner[lay.spec.name] if inner else lay.spec.shape[1:])
            for lay in self.layouts
        }
        key = tuple(tuple(sizes[lay.spec.name]) for lay in self.layouts)
        captured = self.shapes.setdefault(key, {})
        with torch.cuda.device(self.device):
            for rows in sorted(set(buckets), reverse=True):
                inputs = {
                    lay.spec.name: lay.empty(rows, self.device, sizes[lay.spec.name])
                    for lay in self.layouts
                }
                self.stream.wait_stream(torch.cuda.current_stream(self.device))
                with torch.cuda.stream(self.stream), torch.inference_mode():
                    for _ in range(2):  # lazy initialisation must happen outside capture
                        self.forward(inputs)
                self.stream.synchronize()
                graph = torch.cuda.CUDAGraph()
                with (
                    torch.inference_mode(),
                    torch.cuda.graph(
                        graph, pool=pool, stream=self.stream, capture_error_mode="thread_local"
                    ),
                ):
                    outputs = self.forward(inputs)
                captured[rows] = _Captured(graph, inputs, outputs)

    def run(self, inputs: Mapping[str, torch.Tensor], rows: int) -> dict[str, torch.Tensor]:
        """Run one batch of `rows` rows; returns outputs in pinned host memory. A graph
        serves it only if one was captured for exactly its shape past the batch."""
        key = tuple(tuple(inputs[lay.spec.name].shape[1:]) for lay in self.layouts)
        graphs = self.shapes.get(key, {})
        bucket = bucket_for(rows, sorted(graphs))
        captured = graphs[bucket] if bucket is not None else None
        with torch.cuda.device(self.device):
            with torch.cuda.stream(self.copy_stream):
                staged = self._stage(inputs, rows, captured)
                copied = torch.cuda.Event()
                copied.record(self.copy_stream)
            self.stream.wait_event(copied)
            with torch.cuda.stream(self.stream), torch.inference_mode():
                if captured is not None:
                    captured.graph.replay()
                    device_outputs = {k: v[:rows] for k, v in captured.outputs.items()}
                else:
                    device_outputs = self.forward(staged)
                    for tensor in staged.values():  # allocated on the copy stream
                        tensor.record_stream(self.stream)
                host = {s.name: _to_host(device_outputs[s.name], s) for s in self.output_specs}
            self.stream.synchronize()
        return host

    def _stage(
        self, inputs: Mapping[str, torch.Tensor], rows: int, captured: _Captured | None
    ) -> dict[str, torch.Tensor]:
        staged: dict[str, torch.Tensor] = {}
        for layout in self.layouts:
            name = layout.spec.name
            given = inputs[name]
            # built-in steps hand over tensors already on the device (decoded there)
            source = given if given.is_cuda or given.is_pinned() else given.pin_memory()
            if captured is not None:
                captured.inputs[name][:rows].copy_(source, non_blocking=True)
                continue
            tensor = source.to(self.device, non_blocking=True)
            if tensor.dtype != layout.dtype:
                tensor = tensor.to(layout.dtype)
            if layout.channels_last:
                tensor = tensor.contiguous(memory_format=torch.channels_last)
            staged[name] = tensor
        return staged


def _to_host(tensor: torch.Tensor, spec: TensorSpec) -> torch.Tensor:
    want = torch_dtype(spec.datatype)
    if tensor.dtype != want:
        tensor = tensor.to(want)
    host = torch.empty(tensor.shape, dtype=want, pin_memory=True)
    host.copy_(tensor, non_blocking=True)
    return host
