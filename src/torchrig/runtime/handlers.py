"""Serving a Python handler version, only where the server was told to run code.

A handler version (`torchrig pack --handler FILE`, contract in
`torchrig.packaging.handler`) is executed like a program: the same `Batcher` in front of
it (batches, queue, deadlines, isolation: a handler that raises on one request's rows
fails that request alone), one handler object per configured instance, its inputs on the
model's device and its outputs checked against the signature before they are split.

Loading a handler is executing code. A server started without `--allow-python-handlers`
refuses it (the version is failed with that reason, the others serve); one started with
it still runs only the bytes whose sha256 the manifest records.
"""

from __future__ import annotations

import queue
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torchrig.dtypes import torch_dtype
from torchrig.envlock.model import EnvLock
from torchrig.errors import ArtifactError
from torchrig.packaging.handler import (
    forget_handler,
    import_handler,
    new_handler,
    verified_source,
)
from torchrig.packaging.manifest import Manifest
from torchrig.repository.config import ModelConfig
from torchrig.runtime.executor import Executor, check_environment, resolve_device

REFUSED = (
    "it is a Python handler, and loading code is executing code; start serve with "
    "--allow-python-handlers to run it"
)


class HandlerExecutor(Executor):
    """A handler version on a device: `load()`, `infer(batch) -> outputs`, `unload()`."""

    def __init__(
        self,
        version_dir: Path,
        manifest: Manifest,
        config: ModelConfig,
        *,
        allowed: bool,
        device: str | None = None,
        environment: EnvLock | None = None,
    ) -> None:
        super().__init__(version_dir, manifest, config, device=device, environment=environment)
        self.allowed = allowed
        self._handler_class: type[Any] | None = None
        self._handlers: queue.SimpleQueue[Any] | None = None  # one per instance
        self._made: list[Any] = []

    def load(self) -> None:
        import torch

        where = f"{self.manifest.name} version {self.manifest.version}"
        if not self.allowed:
            raise ArtifactError(f"{where} is not loaded: {REFUSED}.")
        source = verified_source(self.version_dir, self.manifest)  # refuses a changed file
        spec = self.manifest.handler
        if spec is None:  # pragma: no cover - verified_source refused it
            raise ArtifactError(f"{where} has no handler entry in manifest.json")
        self.warnings = check_environment(self.manifest, self.environment)
        self.device = resolve_device(self.requested_device)
        handler_class = import_handler(
            source,
            filename=str(self.version_dir / spec.file),
            class_name=spec.class_name,
            label=f"{self.manifest.name}_{self.manifest.version}",
        )
        self._handler_class = handler_class
        try:
            device = torch.device(self.device)
            self._made = [
                new_handler(handler_class, self.version_dir, device)
                for _ in range(max(1, self.config.instances))
            ]
            self._handlers = queue.SimpleQueue()
            for handler in self._made:
                self._handlers.put(handler)
            self._program = handler_class  # `loaded` from here on
            if self.config.warmup:
                self.warm_up()
        except BaseException:
            self.unload()
            raise

    def unload(self) -> None:
        made, self._made, self._handlers = self._made, [], None
        for handler in made:
            unload = getattr(handler, "unload", None)
            if callable(unload):
                unload()
        if self._handler_class is not None:
            forget_handler(self._handler_class)
            self._handler_class = None
        super().unload()

    @property
    def runs_inline(self) -> bool:
        """Never on the event loop: a handler's code may block (files, locks, the network),
        which would stall every request of the server, not only its own batch."""
        return False

    def infer(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        import torch

        handlers = self._handlers
        if handlers is None:
            raise ArtifactError(f"{self.manifest.name} is not loaded")
        device = torch.device(self.device)
        staged = {name: tensor.to(device, non_blocking=True) for name, tensor in inputs.items()}
        rows = _rows(inputs)
        handler = handlers.get()
        try:
            with torch.inference_mode():
                outputs = handler.infer(staged)
        finally:
            handlers.put(handler)
        return self._checked(outputs, rows)

    def _checked(self, outputs: Any, rows: int) -> dict[str, Any]:
        """The declared outputs, on the host, in their declared dtype, `rows` rows each."""
        import torch

        where = f"handler {self.manifest.name} version {self.manifest.version}"
        if not isinstance(outputs, Mapping):
            raise ArtifactError(
                f"{where}: infer returned a {type(outputs).__name__}; it must return a dict "
                "output name -> tensor"
            )
        result: dict[str, Any] = {}
        for spec in self.manifest.outputs:
            tensor = outputs.get(spec.name)
            if not isinstance(tensor, torch.Tensor):
                raise ArtifactError(
                    f"{where}: infer returned no tensor {spec.name!r} (it returned "
                    f"{', '.join(map(str, outputs)) or 'nothing'})"
                )
            if self.manifest.batching and (tensor.dim() == 0 or tensor.shape[0] != rows):
                raise ArtifactError(
                    f"{where}: output {spec.name} has shape {list(tensor.shape)} for a batch of "
                    f"{rows} rows; dimension 0 must be the batch"
                )
            want = torch_dtype(spec.datatype)
            result[spec.name] = tensor.detach().to("cpu", want)
        return result


def _rows(inputs: Mapping[str, Any]) -> int:
    first = next(iter(inputs.values()))
    return int(first.shape[0]) if first.dim() else 1
