"""Load a version's program onto a device and call it with named tensors.

Nothing here unpickles arbitrary objects: torch.export and AOTInductor packages and
TorchScript archives carry code as graphs, never as pickled Python.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from operator import itemgetter
from pathlib import Path
from typing import Any

import torch

from torchrig.errors import ArtifactError, InvalidInput
from torchrig.packaging.export import torch_deprecations_ignored
from torchrig.packaging.files import verify_files
from torchrig.packaging.manifest import Manifest, TensorSpec


class Program:
    """A loaded model version: `program({name: tensor}) -> {name: tensor}`."""

    __slots__ = (
        "_input_names",
        "_output_names",
        "_pick",
        "builtin_ops_only",
        "checks_inputs",
        "device",
        "format",
        "inputs",
        "module",
        "outputs",
        "traced",
    )

    def __init__(
        self, module: Any, manifest: Manifest, device: torch.device, *, checks_inputs: bool = True
    ) -> None:
        self.module = module  # the underlying callable (GraphModule, ScriptModule, AOTI runner)
        # False: torch.export's per-call input checks are off, because the caller's
        # validation covers them (see `load_program`'s `max_rows`)
        self.checks_inputs = checks_inputs
        # True: a torch.export graph of PyTorch's own operators only (no custom operator,
        # whose time, locks or blocking nothing bounds), see `builtin_ops_only`
        self.builtin_ops_only = manifest.format == "torch.export" and builtin_ops_only(module)
        self.inputs: list[TensorSpec] = list(manifest.inputs)
        self.outputs: list[TensorSpec] = list(manifest.outputs)
        self.device = device
        self.format = manifest.format
        self.traced = False  # True once `trace` swapped in a verified TorchScript trace
        self._input_names = [spec.name for spec in manifest.inputs]
        self._output_names = [spec.name for spec in manifest.outputs]
        # the inputs in signature order, in one C call (a tuple from two names or more)
        self._pick = itemgetter(*self._input_names) if len(self._input_names) > 1 else None

    def __call__(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        try:
            args = (
                self._pick(inputs)
                if self._pick is not None
                else [inputs[name] for name in self._input_names]
            )
        except KeyError as exc:
            raise InvalidInput(
                f"input {exc.args[0]!r} is missing; the model takes {self._input_names}."
            ) from None
        return self._named(self.module(*args))

    def trace(self, examples: Sequence[Mapping[str, Any]]) -> str:
        """Run from now on as a TorchScript trace of the exported module, if the trace gives
        exactly the module's outputs on every one of `examples` (see packaging/traced.py);
        returns "" when it does, else why the exported module keeps running."""
        if self.traced:
            return ""
        if self.format != "torch.export" or self.device.type != "cpu":
            return "only a torch.export program on the CPU is traced"
        if not self.builtin_ops_only:
            return "the graph calls operators other than PyTorch's own"
        if self.checks_inputs:  # a trace runs without torch.export's guards: keep them
            return "the program checks its own inputs (torch.export's guards), a trace would not"
        from torchrig.packaging.traced import trace_module

        call, why = trace_module(self.module, self._input_names, examples)
        if call is not None:
            self.module, self.traced = call, True
        return why

    def _named(self, result: Any) -> dict[str, Any]:
        names = self._output_names
        if isinstance(result, torch.Tensor):
            if len(names) == 1:
                return {names[0]: result}
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
    version_dir: Path,
    manifest: Manifest,
    *,
    device: str | torch.device = "cpu",
    max_rows: int | None = None,
) -> Program:
    """Verify the version's files, then load its program onto `device`.

    `max_rows` is a promise from a caller that validates every call against the manifest
    first (names, datatypes, every static dimension, one row count shared by the inputs,
    from 1 to `max_rows`), as the server does. A torch.export program whose only dynamic
    dimension is that shared batch dimension, exported for at least 1..`max_rows`, then
    runs without torch.export's own per-call checks of the same things (ExportedProgram
    .module(check_guards=False) with `validate_inputs` off): they cost more than the
    whole forward pass of a small model. Anything else keeps the checks."""
    version_dir = Path(version_dir)
    verify_files(version_dir, manifest)
    target = resolve_device(device)
    path = str(version_dir / manifest.program)
    checks_inputs = True
    try:
        with torch_deprecations_ignored():
            if manifest.format == "torch.export":
                module, checks_inputs = _load_export(path, target, max_rows)
            else:
                module = _load(path, manifest, target)
    except ArtifactError:
        raise
    except Exception as exc:  # a corrupt or foreign archive surfaces as many torch errors
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise ArtifactError(
            f"cannot load {path} ({manifest.format}): {type(exc).__name__}: {first}. Re-pack "
            "the version with this torch, or check `torchrig env check` for drift."
        ) from None
    return Program(module, manifest, target, checks_inputs=checks_inputs)


def builtin_ops_only(module: Any) -> bool:
    """Whether an exported module's graph calls only PyTorch's own operators (aten, prims)
    and Python's (operator.getitem): no custom operator, which may run arbitrary code."""
    graph = getattr(module, "graph", None)
    if graph is None:
        return False
    for node in graph.nodes:
        if node.op in ("placeholder", "output", "get_attr"):
            continue
        if node.op == "call_module" and node.target == "_guards_fn":
            continue  # torch.export's own input checks
        if node.op != "call_function":
            return False
        target = node.target
        if isinstance(target, torch._ops.OpOverload):
            if target.namespace not in ("aten", "prims"):
                return False
        elif getattr(target, "__module__", None) != "_operator":
            return False
    return True


def _load_export(path: str, target: torch.device, max_rows: int | None) -> tuple[Any, bool]:
    """The unlifted module of a torch.export program, and whether it checks its inputs."""
    from torch.export.passes import move_to_device_pass

    exported = move_to_device_pass(torch.export.load(path), target)
    if max_rows is None or not _checks_covered(exported, max_rows):
        return exported.module(), True
    module = exported.module(check_guards=False)
    module.validate_inputs = False  # torch.export's own switch for callers that validate
    return module, False


def _checks_covered(exported: Any, max_rows: int) -> bool:
    """Whether validating inputs against the manifest for batches of 1..`max_rows` covers
    what the program's guards check: static dimensions (checked exactly), and at most one
    dynamic symbol, dimension 0 of inputs (one row count), with a range holding 1..max_rows."""
    placeholders = {n.name: n for n in exported.graph.nodes if n.op == "placeholder"}
    symbols = set()
    for name in exported.graph_signature.user_inputs:
        node = placeholders.get(name)
        shape = getattr(node.meta.get("val") if node is not None else None, "shape", None)
        if shape is None:  # not a tensor (or unknown): leave the checks on
            return False
        for index, size in enumerate(shape):
            if isinstance(size, torch.SymInt):
                expr = size.node.expr
                if index != 0 or not expr.is_Symbol:
                    return False
                symbols.add(expr)
    if not symbols:
        return True
    if len(symbols) > 1:
        return False
    bounds = exported.range_constraints.get(symbols.pop())
    return bounds is not None and bool(bounds.lower <= 1) and bool(bounds.upper >= max_rows)


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
