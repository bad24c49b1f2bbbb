"""The executor: one model version loaded onto one device, run a batch at a time.

`load()` verifies the files, compares the exporting environment with this one (breaking
differences refuse the load, risky ones become warnings), loads the program onto the
device with the configured dtype and memory format, and warms it up over the batch sizes
it will see. `infer()` runs under `torch.inference_mode()` and returns CPU tensors.

On CUDA each instance gets a lane (`cuda_lanes`): its own streams, static buffers and a
CUDA graph per warm-up batch size. A model with dynamic dimensions past the batch warms
up (and captures graphs for) each bucket of them too: min, max and a few sizes between.
`compile` in the model's config runs the program through `torch.compile` first. Either
falling over costs a warning, never the load.
"""

from __future__ import annotations

import logging
import math
import queue
from collections.abc import Mapping
from functools import partial
from pathlib import Path
from typing import Any

from torchrig.dtypes import FLOAT_DATATYPES, torch_dtype
from torchrig.envlock.model import EnvLock
from torchrig.errors import ArtifactError, EnvironmentMismatch
from torchrig.packaging.manifest import Manifest, TensorSpec
from torchrig.repository.config import ModelConfig

log = logging.getLogger(__name__)

DTYPES = {"fp32": "FP32", "fp16": "FP16", "bf16": "BF16"}
DimSizes = dict[tuple[str, int], int]  # (input, dim) -> size of a dynamic dimension


def resolve_device(requested: str) -> str:
    """One device: "auto" -> cuda:0 when CUDA works, else cpu; "cuda" -> cuda:0; anything
    else is checked (CUDA usable, index exists) by the packaging layer's resolver. (A
    version's replicas get one device each from `runtime/placement.py`, which spreads
    "auto" over every visible GPU.)"""
    import torch

    from torchrig.packaging.program import resolve_device as usable_device

    if requested == "auto":
        return "cuda:0" if torch.cuda.is_available() else "cpu"
    try:
        device = usable_device(requested)
    except ArtifactError as exc:
        raise ArtifactError(
            f'{exc.message} Or set device = "cpu" (or "auto") in the model\'s config.toml.'
        ) from None
    return f"cuda:{device.index or 0}" if device.type == "cuda" else "cpu"


def check_environment(manifest: Manifest, running: EnvLock | None) -> list[str]:
    """Refuse breaking differences with the exporting environment; return risky ones."""
    if manifest.environment is None or running is None:
        return []
    from torchrig.envlock import diff_for_load

    report = diff_for_load(manifest.environment, running, device_specific=manifest.format == "aoti")
    where = f"{manifest.name} version {manifest.version}"
    if report.breaking:
        reasons = "; ".join(d.message for d in report.differences if d.severity == "breaking")
        raise EnvironmentMismatch(
            f"{where} was exported with {report.a_summary}; this server runs "
            f"{report.b_summary}: {reasons}. Re-export it in this environment, or serve it "
            "from an image that matches (torchrig env diff tells the full story)."
        )
    return [d.message for d in report.differences if d.severity == "risky"]


class Executor:
    """A model version on a device: `load()`, `infer(batch) -> outputs`, `unload()`."""

    def __init__(
        self,
        version_dir: Path,
        manifest: Manifest,
        config: ModelConfig,
        *,
        device: str | None = None,
        environment: EnvLock | None = None,
    ) -> None:
        self.version_dir = version_dir
        self.manifest = manifest
        self.config = config
        self.requested_device = device or config.device
        self.environment = environment
        self.device = "cpu"
        self.warnings: list[str] = []
        self._program: Any = None
        self._dtype: Any = None
        self._inference: Any = None  # makes the inference-mode guard (see `load`)
        self._outputs_as: list[tuple[str, Any]] | None = None  # see _output_dtypes
        self._channels_last = False
        self._eager_module: Any = None
        self._lanes: queue.SimpleQueue[Any] | None = None  # CudaLane, one per instance
        self.graph_sizes: list[int] = []  # batch sizes with a captured CUDA graph
        # a warmed-up batch of the largest size, timed at load (None: not measured)
        self.batch_time_s: float | None = None

    # ---- lifecycle -----------------------------------------------------------------------

    def load(self) -> None:
        import torch

        from torchrig.packaging import load_program
        from torchrig.packaging.export import torch_deprecations_ignored

        self.warnings = check_environment(self.manifest, self.environment)
        # torch.inference_mode() is a Python context manager around this C++ guard: the
        # guard itself is the same mode, for a fraction of the calls per batch
        guard = getattr(torch._C, "_InferenceMode", None)
        self._inference = partial(guard, True) if guard is not None else torch.inference_mode
        self.device = resolve_device(self.requested_device)
        # the batcher validates every request against the manifest (rows 1..max_batch_size)
        max_rows = self.config.batching.max_batch_size if self.manifest.batching else None
        program = load_program(
            self.version_dir, self.manifest, device=self.device, max_rows=max_rows
        )
        if self.config.dtype is not None and DTYPES[self.config.dtype] != "FP32":
            module = getattr(program, "module", None)
            if not isinstance(module, torch.nn.Module):
                raise ArtifactError(
                    f"dtype = {self.config.dtype!r} needs a program whose weights can be cast; "
                    f"re-export {self.manifest.name} in {self.config.dtype} instead"
                )
            self._dtype = torch_dtype(DTYPES[self.config.dtype])
            module.to(self._dtype)
        four_d = any(
            s.datatype in FLOAT_DATATYPES and len(s.shape) == 4 for s in self.manifest.inputs
        )
        wanted = self.config.channels_last  # None: for 4-D float inputs; True: always
        self._channels_last = self.device.startswith("cuda") and (
            wanted is True or (four_d and wanted is None)
        )
        if self._channels_last:
            module = getattr(program, "module", None)
            if isinstance(module, torch.nn.Module):
                module.to(memory_format=torch.channels_last)
        self._program = program
        lanes = []
        if self.device.startswith("cuda"):
            self._lanes = queue.SimpleQueue()
            lanes = self._new_lanes(max(1, self.config.instances))
            for lane in lanes:
                self._lanes.put(lane)
        with torch_deprecations_ignored():  # torch.compile's imports warn; users can't act
            self._compile(program)
            if self.config.warmup:
                self.warm_up()
                self._trace(program)
                self.batch_time_s = self._time_largest_batch()
        if lanes and self.config.warmup:  # capturing runs every size: a warm-up too
            self._capture(lanes)

    def _compile(self, program: Any) -> None:
        mode = self.config.compile
        if mode == "off":
            return
        if self.manifest.format == "aoti":
            self.warnings.append("compile is ignored: an AOTInductor package is compiled already")
            return
        import torch

        self._eager_module = program.module
        program.module = torch.compile(program.module, mode=mode)

    def _trace(self, program: Any) -> None:
        """Swap in a TorchScript trace of a CPU program's graph when it gives exactly the
        program's outputs at every warm-up shape and golden example (`Program.trace`)."""
        if self.config.trace == "off" or self._eager_module is not None:
            return
        from torchrig.packaging.traced import golden_inputs

        examples = [
            self.example(rows, sizes)
            for sizes, sizes_rows in self.warmup_shapes()
            for rows in sizes_rows
        ]
        examples += golden_inputs(self.version_dir, self.manifest)
        cast = self._dtype
        if cast is not None:
            examples = [
                {k: v.to(cast) if v.is_floating_point() else v for k, v in e.items()}
                for e in examples
            ]
        why = program.trace(examples)
        name, version = self.manifest.name, self.manifest.version
        if program.traced:
            log.info("%s version %s: runs as a TorchScript trace of its graph", name, version)
        else:
            log.info("%s version %s: runs the exported module (no trace: %s)", name, version, why)

    @property
    def _compiled(self) -> bool:
        """True while the program runs through torch.compile (no fallback taken yet)."""
        return self._eager_module is not None and self._program.module is not self._eager_module

    def _fall_back(self, what: str, exc: BaseException) -> None:
        """A compile or capture failure costs a warning (logged and kept), never the load."""
        first = str(exc).splitlines()[0][:200] if str(exc) else ""
        message = f"{what} failed ({type(exc).__name__}: {first}); running eagerly"
        log.warning("%s version %s: %s", self.manifest.name, self.manifest.version, message)
        self.warnings.append(message)

    def _new_lanes(self, count: int) -> list[Any]:
        import torch

        from torchrig.runtime.cuda_lanes import CudaLane, InputLayout

        layouts = [
            InputLayout(
                spec=spec,
                dtype=(
                    self._dtype
                    if self._dtype is not None and spec.datatype in FLOAT_DATATYPES
                    else torch_dtype(spec.datatype)
                ),
                channels_last=(
                    self._channels_last
                    and spec.datatype in FLOAT_DATATYPES
                    and len(spec.shape) == 4
                ),
            )
            for spec in self.manifest.inputs
        ]
        device = torch.device(self.device)
        return [
            CudaLane(self._forward, layouts, self.manifest.outputs, device) for _ in range(count)
        ]

    def _forward(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        return self._program(inputs)  # type: ignore[no-any-return]

    def _capture(self, lanes: list[Any]) -> None:
        from torchrig.runtime.cuda_lanes import graphable

        if not (self.config.cuda_graphs and self.manifest.batching):
            return
        if not graphable(self.manifest.inputs, self.manifest.dynamic_dims):
            self.warnings.append(
                "cuda_graphs: skipped, an input has an undeclared variable dimension past "
                "the batch one"
            )
            return
        shapes = self.warmup_shapes()
        try:
            for lane in lanes:
                for sizes, batch_sizes in shapes:
                    lane.capture(batch_sizes, self._inner(sizes))
        except Exception as exc:  # any capture failure: every lane runs eagerly
            for lane in lanes:
                lane.release()
            self._fall_back("CUDA graph capture", exc)
            return
        self.graph_sizes = sorted(shapes[0][1])

    def unload(self) -> None:
        self._program = None
        self._eager_module = None
        self._lanes = None  # the lanes' graphs and static buffers go with them
        self.graph_sizes = []
        if self.device.startswith("cuda"):
            import torch

            torch.cuda.empty_cache()

    @property
    def intra_op_threads(self) -> int:
        """CPU threads for each batch: the config's `threads`, else 1 on CUDA (the host
        only joins and copies batches) and the process's torch thread count on CPU."""
        if self.config.threads is not None:
            return self.config.threads
        if self.device.startswith("cuda"):
            return 1
        from torchrig.runtime.threads import process_intra_op_threads

        return process_intra_op_threads()

    @property
    def runs_inline(self) -> bool:
        """Whether the batcher should run this model's batches on the event loop rather
        than in a worker thread: a CPU torch.export model of PyTorch's own operators only
        (a custom operator may block), whose largest warmed-up batch took under
        `batching.inline_max_ms`, with one instance, the process's torch thread count,
        and no variable dimension past the batch one (whose size, and time, has no bound).
        For such a model the thread hand-offs and the GIL they contend for cost more than
        the batch itself."""
        from torchrig.runtime.threads import process_intra_op_threads

        limit_s = self.config.batching.inline_max_ms / 1000.0
        return (
            self.batch_time_s is not None
            and self.batch_time_s < limit_s
            and self.device == "cpu"
            and self._lanes is None
            and getattr(self._program, "builtin_ops_only", False)
            and self.config.instances == 1
            and self.intra_op_threads == process_intra_op_threads()
            and all(-1 not in spec.shape[1:] for spec in self.manifest.inputs)
        )

    def _time_largest_batch(self) -> float:
        """The best of five runs of the largest batch size (after the warm-up), in this
        thread's CPU time: what the batch costs the thread that runs it, whatever other
        processes on the machine take meanwhile (wall time on a busy machine is not)."""
        import time

        example = self.example(*self.heaviest_warmup_shape())
        best = float("inf")
        for _ in range(5):
            started = time.thread_time()
            self.infer(example)
            best = min(best, time.thread_time() - started)
        return best

    @property
    def wants_pinned_batches(self) -> bool:
        """True on CUDA: a batch joined in pinned host memory goes to the device without
        being staged again, one host copy of every byte instead of two."""
        return self._lanes is not None

    @property
    def program(self) -> Any:
        """The loaded program (None before `load()` and after `unload()`)."""
        return self._program

    @property
    def loaded(self) -> bool:
        return self._program is not None

    # ---- running -------------------------------------------------------------------------

    def warmup_sizes(self) -> list[int]:
        if not self.manifest.batching:
            return [1]
        batching = self.config.batching
        if batching.preferred_batch_sizes:
            return sorted(set(batching.preferred_batch_sizes))
        sizes, size = [], 1
        while size < batching.max_batch_size:
            sizes.append(size)
            size *= 2
        return [*sizes, batching.max_batch_size]

    def warmup_shapes(self) -> list[tuple[DimSizes, list[int]]]:
        """(sizes of the dynamic dims past the batch, batch sizes) to warm up and capture.
        Without dynamic dims: the warm-up batch sizes. With them: every batch size at
        their minimum, then each further bucket (`size_levels`) at the batch sizes whose
        elements stay within what the largest batch at the minimum holds (always 1): a
        long sequence in a large batch is compute-bound, where a graph gains nothing."""
        from torchrig.packaging.dynamic import size_levels

        sizes = self.warmup_sizes()
        if not self.manifest.dynamic_dims:
            return [({}, sizes)]
        padding = self.config.padding  # its buckets, when configured, are the ones to warm
        levels = size_levels(self.manifest.dynamic_dims, padding.buckets if padding else ())
        budget = max(sizes) * math.prod(levels[0].values())
        shapes = [(levels[0], sizes)]
        for level in levels[1:]:
            volume = math.prod(level.values())
            shapes.append((level, [r for r in sizes if r == 1 or r * volume <= budget]))
        return shapes

    def heaviest_warmup_shape(self) -> tuple[int, DimSizes]:
        """(rows, dynamic sizes) of the warm-up shape with the most elements: the largest
        batch, or with dynamic dims possibly a long sequence at batch 1."""
        return max(
            ((r, level) for level, batch_sizes in self.warmup_shapes() for r in batch_sizes),
            key=lambda shape: shape[0] * math.prod(shape[1].values()),
        )

    def warm_up(self) -> None:
        """Run every warm-up shape once so the first real requests do not pay for it."""
        for sizes, batch_sizes in self.warmup_shapes():
            for rows in batch_sizes:
                try:
                    self._warm(rows, sizes)
                except Exception as exc:
                    at = "".join(f", {name} dim {dim} = {n}" for (name, dim), n in sizes.items())
                    raise ArtifactError(
                        f"{self.manifest.name} version {self.manifest.version} failed its "
                        f"warm-up at batch size {rows}{at}: {type(exc).__name__}: {exc}"
                    ) from None

    def _warm(self, rows: int, sizes: DimSizes) -> None:
        """One warm-up call; a compile failure (which surfaces here) falls back to eager."""
        try:
            self.infer(self.example(rows, sizes))
        except Exception as exc:
            if not self._compiled:
                raise
            self._fall_back("torch.compile", exc)
            self._program.module = self._eager_module
            self.infer(self.example(rows, sizes))

    def _inner(self, sizes: DimSizes) -> dict[str, list[int]]:
        """Each input's sizes past the batch: `sizes` for dynamic dims (their minimum when
        not given), 1 for any other variable one."""
        minimum = {(d.input, d.dim): d.min for d in self.manifest.dynamic_dims}
        return {
            spec.name: [
                size
                if size != -1
                else sizes.get((spec.name, dim), minimum.get((spec.name, dim), 1))
                for dim, size in enumerate(spec.shape)
                if dim > 0
            ]
            for spec in self.manifest.inputs
        }

    def example(self, rows: int, sizes: DimSizes | None = None) -> dict[str, Any]:
        """Zero-filled inputs of `rows` rows (zeros are valid embedding indices too), with
        dynamic dims at `sizes` (default: their minimum)."""
        import torch

        inner = self._inner(sizes or {})

        def shape(spec: TensorSpec) -> list[int]:
            if not spec.shape:
                return []
            first = spec.shape[0]
            dims = [1 if first == -1 else first, *inner[spec.name]]
            if self.manifest.batching:
                dims[0] = rows
            return dims

        return {
            s.name: torch.zeros(shape(s), dtype=torch_dtype(s.datatype))
            for s in self.manifest.inputs
        }

    def infer(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        program = self._program
        if program is None:
            raise ArtifactError(f"{self.manifest.name} is not loaded")
        lanes = self._lanes
        if lanes is not None:
            lane = lanes.get()
            try:
                return lane.run(inputs, _rows(inputs))  # type: ignore[no-any-return]
            finally:
                lanes.put(lane)
        # the CPU path: channels_last is a CUDA-only choice, so only the dtype changes
        cast = self._dtype
        staged = inputs
        if cast is not None:
            staged = {
                name: tensor.to(cast) if tensor.is_floating_point() else tensor
                for name, tensor in inputs.items()
            }
        with self._inference():
            outputs: dict[str, Any] = program(staged)
        # each output in the dtype its signature promises (the program's own dict, named
        # as the manifest's outputs, when every dtype already is)
        result = outputs
        for name, want in self._outputs_as or self._output_dtypes():
            tensor = outputs[name]
            if tensor.dtype != want:
                if result is outputs:
                    result = dict(outputs)
                result[name] = tensor.to(want)
        return result

    def _output_dtypes(self) -> list[tuple[str, Any]]:
        """Each output's name and the torch dtype its signature promises (made once)."""
        if self._outputs_as is None:
            self._outputs_as = [
                (spec.name, torch_dtype(spec.datatype)) for spec in self.manifest.outputs
            ]
        return self._outputs_as


def _rows(inputs: Mapping[str, Any]) -> int:
    first = next(iter(inputs.values()))
    return int(first.shape[0]) if first.dim() else 1
