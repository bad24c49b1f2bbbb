"""Load a version's program onto a device and call it with named tensors.

Nothing here unpickles arbitrary objects: torch.export and AOTInductor packages and
TorchScript archives carry code as graphs, never as pickled Python.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from torchrig.errors import ArtifactError, InvalidInput
from torchrig.packaging.export import torch_deprecations_ignored
from torchrig.packaging.files import verify_files
from torchrig.packaging.manifest import Manifest, TensorSpec


class Program:
    """A loaded model version: `program({name: tensor}) -> {name: tensor}`."""

    __slots__ = ("_input_names", "_output_names", "device", "format", "inputs", "module", "outputs")

    def __init__(self, module: Any, manifest: Manifest, device: torch.device) -> None:
        self.module = module  # the underlying callable (GraphModule, ScriptModule, AOTI runner)
        self.inputs: list[TensorSpec] = list(manifest.inputs)
        self.outputs: list[TensorSpec] = list(manifest.outputs)
        self.device = device
        self.format = manifest.format
        self._input_names = [spec.name for spec in manifest.inputs]
        self._output_names = [spec.name for spec in manifest.outputs]

    def __call__(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        try:
            args = [inputs[name] for name in self._input_names]
        except KeyError as exc:
            raise InvalidInput(
                f"input {exc.args[0]!r} is missing; the model takes {self._input_names}."
            ) from None
        return self._named(self.module(*args))

    def _named(self, result: Any) -> dict[str, Any]:
        names = self._output_names
        if isinstance(result, torch.Tensor):
            values = [result]
        elif isinstance(result, Mapping):
            values = [result[name] for name in names]
        elif isinstance(result, (tuple, list)):
            values = list(result)
        else:
            raise ArtifactError(f"the program returned a {type(result).__name__}, not tensors.")
        if len(values) != len(names):
            raise ArtifactError(
                f"the program returned {len(values)} outputs; its manifest names {len(names)}."
            )
        return dict(zip(names, values, strict=True))


def resolve_device(device: str | torch.device) -> torch.device:
    """A torch.device, refusing a CUDA device this process cannot use."""
    try:
        resolved = torch.device(device)
    except RuntimeError:
        raise ArtifactError(f"{device!r} is not a device; use cpu, cuda or cuda:N.") from None
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise ArtifactError(
                f"device {device} requested but CUDA is not available here (CPU build of torch "
                "or no GPU visible); run `torchrig doctor` to see why."
            )
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise ArtifactError(
                f"device {device} does not exist: {torch.cuda.device_count()} GPU(s) visible."
            )
    return resolved


def load_program(
    version_dir: Path, manifest: Manifest, *, device: str | torch.device = "cpu"
) -> Program:
    """Verify the version's files, then load its program onto `device`."""
    version_dir = Path(version_dir)
    verify_files(version_dir, manifest)
    target = resolve_device(device)
    path = str(version_dir / manifest.program)
    try:
        with torch_deprecations_ignored():
            module = _load(path, manifest, target)
    except ArtifactError:
        raise
    except Exception as exc:  # a corrupt or foreign archive surfaces as many torch errors
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise ArtifactError(
            f"cannot load {path} ({manifest.format}): {type(exc).__name__}: {first}. Re-pack "
            "the version with this torch, or check `torchrig env check` for drift."
        ) from None
    return Program(module, manifest, target)


def _load(path: str, manifest: Manifest, target: torch.device) -> Any:
    if manifest.format == "handler":
        raise ArtifactError(
            f"{path} is a Python handler, not a program: loading it runs its code, which only "
            "`torchrig serve --allow-python-handlers` does."
        )
    if manifest.format == "pipeline":
        raise ArtifactError(
            f"{path}: a pipeline is declared in its model's config.toml ([pipeline]), not packed."
        )
    if manifest.format == "torch.export":
        from torch.export.passes import move_to_device_pass

        return move_to_device_pass(torch.export.load(path), target).module()
    if manifest.format == "torchscript":
        return torch.jit.load(path, map_location=target).eval()
    built_for = manifest.golden.device if manifest.golden else None
    if built_for is not None and torch.device(built_for).type != target.type:
        raise ArtifactError(
            f"{path} is an AOTInductor package compiled for {built_for}; it cannot run on "
            f"{target}. Pack a torch.export version for {target.type}."
        )
    index = target.index if target.index is not None else -1
    return torch._inductor.aoti_load_package(path, device_index=index)
