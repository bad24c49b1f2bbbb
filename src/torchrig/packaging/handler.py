"""Python handlers: a model version that is a Python file, for what no program covers.

The contract of `handler.py` (the class is `Handler` unless packed with `FILE:CLASS`):

    class Handler:
        def load(self, directory: pathlib.Path, device: torch.device) -> None: ...  # optional
        def infer(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]: ...
        def unload(self) -> None: ...  # optional

`infer` is called once per batch (dimension 0 of every input and output is the batch,
unless packed with --no-dynamic-batch), with the inputs on the model's device, under
`torch.inference_mode()`; it returns every declared output with as many rows.

Loading a handler is executing code, so torchrig never does it by accident: the file is
imported from the very bytes whose sha256 the manifest records (a changed file is
refused, never run), under a module name of its own (`torchrig_handler_*`), never via
pickle, and a server runs it only when started with `--allow-python-handlers`.
"""

from __future__ import annotations

import hashlib
import itertools
import shutil
import sys
import tempfile
import types
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torchrig.errors import ArtifactError, PackError
from torchrig.packaging.manifest import HandlerSpec, Manifest

HANDLER_FILE = "handler.py"
DEFAULT_CLASS = "Handler"

_modules = itertools.count(1)


def source_sha256(source: bytes) -> str:
    return hashlib.sha256(source).hexdigest()


def verified_source(version_dir: Path, manifest: Manifest) -> bytes:
    """The handler's bytes, read once and checked against the manifest's sha256: the
    caller executes these bytes, not the file, so a change after the check cannot run."""
    spec = manifest.handler
    where = f"{manifest.name} version {manifest.version}"
    if spec is None:
        raise ArtifactError(
            f"{where} has format 'handler' but no handler entry in manifest.json; re-pack it "
            "with `torchrig pack --handler FILE`."
        )
    path = version_dir / spec.file
    try:
        source = path.read_bytes()
    except OSError as exc:
        raise ArtifactError(f"{where}: cannot read its handler {spec.file}: {exc}.") from None
    digest = source_sha256(source)
    if digest != spec.sha256:
        raise ArtifactError(
            f"{where}: {spec.file} has sha256 {digest[:12]}…, not the {spec.sha256[:12]}… its "
            "manifest records: the handler's code changed since it was packed, so it is not "
            "run. Re-pack the handler you trust with `torchrig pack --handler FILE`."
        )
    return source


def import_handler(source: bytes, *, filename: str, class_name: str, label: str) -> type[Any]:
    """Execute `source` as a fresh module named `torchrig_handler_<label>_<n>` and return
    its handler class. The module is registered in `sys.modules` (dataclasses and
    pickling-free helpers need it); `forget_handler` removes it."""
    safe = "".join(c if c.isalnum() else "_" for c in label)
    module_name = f"torchrig_handler_{safe}_{next(_modules)}"
    module = types.ModuleType(module_name)
    module.__file__ = filename
    sys.modules[module_name] = module
    try:
        code = compile(source, filename, "exec", dont_inherit=True)
        exec(code, module.__dict__)  # the point of a handler; the caller gates it
    except Exception as exc:  # the handler's own code raising on import
        sys.modules.pop(module_name, None)
        raise ArtifactError(
            f"importing the handler {filename} raised {type(exc).__name__}: {exc}"
        ) from None
    handler_class = getattr(module, class_name, None)
    if not isinstance(handler_class, type) or not callable(getattr(handler_class, "infer", None)):
        sys.modules.pop(module_name, None)
        raise ArtifactError(
            f"the handler {filename} has no class {class_name} with an infer(self, inputs) "
            "method; define one, or pack FILE:CLASS naming the class that has it."
        )
    return handler_class


def forget_handler(handler_class: type[Any]) -> None:
    """Drop the module `import_handler` registered for this class."""
    name = handler_class.__module__
    if name.startswith("torchrig_handler_"):
        sys.modules.pop(name, None)


def new_handler(handler_class: type[Any], directory: Path, device: Any) -> Any:
    """Make a handler and call its `load(directory, device)` if it has one."""
    try:
        handler = handler_class()
        load = getattr(handler, "load", None)
        if callable(load):
            load(directory, device)
    except Exception as exc:  # the handler's own code raising
        raise ArtifactError(
            f"the handler's {handler_class.__name__}.load raised {type(exc).__name__}: {exc}"
        ) from None
    return handler


def pack_handler(
    path: str | Path,
    example_inputs: dict[str, Any],
    *,
    name: str,
    repository: str | Path,
    class_name: str = DEFAULT_CLASS,
    version: int | None = None,
    output_names: list[str] | None = None,
    dynamic_batch: bool = True,
    max_batch_size: int = 1024,
    golden_examples: int = 3,
    config: Any = None,
    description: str = "",
    input_ranges: dict[str, tuple[int, int]] | None = None,
    labels: dict[str, list[str]] | None = None,
    environment: Any = None,
    files: Sequence[str | Path] = (),
) -> Any:
    """Publish a Python handler file as a version of model `name`.

    The handler runs here (you are packing your own code): it is loaded from a copy of
    the file in an empty directory, as the server will, and its outputs on
    `example_inputs` (a dict name -> tensor, batch first) give the output signature and
    the golden examples. The manifest records the file's sha256 and its source. `files`
    (weights, a vocabulary) are packed beside it, checksummed, under their own names: its
    `load(directory, device)` finds them there (at pack time too).
    """
    import torch

    from torchrig.packaging.packer import _Options, _write_version
    from torchrig.packaging.signature import name_inputs

    source_path = Path(path)
    try:
        source = source_path.read_bytes()
    except OSError as exc:
        raise PackError(f"--handler {source_path}: cannot read it ({exc}).") from None
    try:
        text = source.decode("utf-8")
    except UnicodeDecodeError:
        raise PackError(f"--handler {source_path} is not UTF-8 Python source.") from None
    if not isinstance(example_inputs, dict) or not example_inputs:
        raise PackError(
            "a handler needs its example inputs by name (--example NAME:DTYPE:SHAPE for each)."
        )
    inputs = name_inputs(None, example_inputs, None)
    spec = HandlerSpec(
        file=HANDLER_FILE, class_name=class_name, sha256=source_sha256(source), source=text
    )
    try:
        handler_class = import_handler(
            source, filename=str(source_path), class_name=class_name, label=name
        )
    except ArtifactError as exc:
        raise PackError(exc.message) from None
    extra = [Path(item) for item in files]
    with tempfile.TemporaryDirectory(prefix="torchrig-handler-") as scratch:
        (Path(scratch) / HANDLER_FILE).write_bytes(source)
        for item in extra:
            if item.is_file() and item.name != HANDLER_FILE:  # else _write_version says why
                shutil.copyfile(item, Path(scratch) / item.name)
        try:
            handler = new_handler(handler_class, Path(scratch), torch.device("cpu"))
        except ArtifactError as exc:
            forget_handler(handler_class)
            raise PackError(exc.message) from None

    def run(*tensors: Any) -> Any:
        with torch.inference_mode():
            return handler.infer(dict(zip(inputs.names, tensors, strict=True)))

    def writer(staging: Path) -> tuple[str, list[set[int]] | None, list[set[int]] | None]:
        (staging / HANDLER_FILE).write_bytes(source)
        return HANDLER_FILE, None, None

    options = _Options(
        name=name,
        repository=Path(repository),
        version=version,
        output_names=output_names,
        dynamic_batch=dynamic_batch,
        max_batch_size=max_batch_size,
        golden_examples=golden_examples,
        config=config,
        description=description,
        tolerances=None,
        environment=environment,
        input_ranges=input_ranges,
        labels=labels,
        files=extra,
    )
    try:
        return _write_version(options, "handler", inputs, run, writer, handler=spec)
    finally:
        unload = getattr(handler, "unload", None)
        if callable(unload):
            unload()
        forget_handler(handler_class)


__all__ = [
    "DEFAULT_CLASS",
    "HANDLER_FILE",
    "forget_handler",
    "import_handler",
    "new_handler",
    "pack_handler",
    "source_sha256",
    "verified_source",
]
