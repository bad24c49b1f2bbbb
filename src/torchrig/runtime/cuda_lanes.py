"""The CUDA execution path: per-instance lanes with static buffers and CUDA graphs.

A lane belongs to one worker at a time (the executor hands lanes out from a pool, one
per instance), so its static buffers and graphs are never used by two threads at once.
A lane owns a compute stream and a copy stream. A batch is staged through pinned host
memory, copied on the copy stream (overlapping another lane's compute) into the static
input buffers of the smallest captured batch size that holds it, and the graph for that
size is replayed; rows past the batch are padding whose outputs are dropped. Outputs
come back into pinned host memory. Batches larger than every captured size, or a model
whose capture failed, run eagerly on the lane's stream.
"""

from __future__ import annotations

import bisect
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from torchrig.dtypes import torch_dtype
from torchrig.packaging.manifest import TensorSpec

log = logging.getLogger(__name__)

Forward = Callable[[Mapping[str, Any]], dict[str, Any]]


def graphable(specs: Sequence[TensorSpec]) -> bool:
    """True when every input is [batch, fixed dims...], so static buffers can hold it."""
    return all(spec.shape and -1 not in spec.shape[1:] for spec in specs)


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

    def empty(self, rows: int, device: torch.device) -> torch.Tensor:
        dims = [rows, *self.spec.shape[1:]]
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
        self.graphs: dict[int, _Captured] = {}
        self.buckets: list[int] = []

    def capture(self, buckets: Sequence[int]) -> None:
        """Capture one graph per bucket, largest first, all in one private memory pool
        (they never run at the same time). Raises what capture raised."""
        pool = torch.cuda.graph_pool_handle()
        with torch.cuda.device(self.device):
            for rows in sorted(set(buckets), reverse=True):
                inputs = {lay.spec.name: lay.empty(rows, self.device) for lay in self.layouts}
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
                self.graphs[rows] = _Captured(graph, inputs, outputs)
        self.buckets = sorted(self.graphs)

    def run(self, inputs: Mapping[str, torch.Tensor], rows: int) -> dict[str, torch.Tensor]:
        """Run one batch of `rows` rows; returns outputs in pinned host memory."""
        bucket = bucket_for(rows, self.buckets)
        captured = self.graphs[bucket] if bucket is not None else None
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
