"""`pack`: a module (or a TorchScript file) -> `<repo>/<name>/<version>/`, atomically."""

from __future__ import annotations

import re
import shutil
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from torchrig import __version__
from torchrig.envlock.model import EnvLock
from torchrig.errors import PackError
from torchrig.packaging.config_toml import write_config_if_absent
from torchrig.packaging.dynamic import DynamicSpec, check_dynamic, vary_dims
from torchrig.packaging.export import (
    TORCHSCRIPT_FILE,
    compile_aoti,
    export_module,
    quiet_torch,
    save_export,
    script_module,
    symbolic_dims,
)
from torchrig.packaging.files import (
    copy_files,
    file_entry,
    next_version,
    publish,
    staging_directory,
)
from torchrig.packaging.golden import GOLDEN_FILE, make_golden, tolerance_for
from torchrig.packaging.manifest import (
    PROGRAM_FORMATS,
    DynamicDim,
    Format,
    GoldenSpec,
    HandlerSpec,
    Manifest,
    Tolerance,
)
from torchrig.packaging.signature import (
    NamedTensors,
    check_batch,
    name_inputs,
    name_outputs,
    specs,
)
from torchrig.repository.config import ModelConfig

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
# program writer: staging dir -> (program file, variable dims of inputs, of outputs)
Writer = Callable[[Path], tuple[str, list[set[int]] | None, list[set[int]] | None]]


@dataclass(frozen=True)
class PackedVersion:
    """A published version: its directory and its manifest."""

    path: Path
    manifest: Manifest


@dataclass(frozen=True)
class _Options:
    name: str
    repository: Path
    version: int | None
    output_names: list[str] | None
    dynamic_batch: bool
    max_batch_size: int
    golden_examples: int
    config: ModelConfig | None
    description: str
    tolerances: dict[str, Tolerance] | None
    environment: EnvLock | None
    input_ranges: dict[str, tuple[int, int]] | None = None
    labels: dict[str, list[str]] | None = None
    dynamic: list[DynamicDim] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)  # packed beside the program (tokenizer)


def _check_labels(labels: dict[str, list[str]] | None, outputs: list[str]) -> dict[str, list[str]]:
    """Class labels per output, checked: a known output, at least one label, no line breaks."""
    checked: dict[str, list[str]] = {}
    for given, names in (labels or {}).items():
        output = given
        if output == "":  # `--labels FILE`: the model's only output
            if len(outputs) != 1:
                raise PackError(
                    f"the model has {len(outputs)} outputs ({', '.join(outputs)}): name the one "
                    "the labels are for, --labels OUTPUT=FILE."
                )
            output = outputs[0]
        if output not in outputs:
            raise PackError(
                f"labels for output {output!r}, which the model does not have; its outputs are "
                + ", ".join(outputs)
                + "."
            )
        if not names:
            raise PackError(f"the labels of output {output!r} are empty; give one per class.")
        if any("\n" in name or "\r" in name for name in names):
            raise PackError(f"a label of output {output!r} holds a line break; one per line.")
        checked[output] = list(names)
    return checked


def _eager(module: Any, output_names: list[str] | None) -> Callable[[list[Any]], NamedTensors]:
    def run(tensors: list[Any]) -> NamedTensors:
        try:
            with torch.no_grad(), quiet_torch():
                result = module(*tensors)
        except Exception as exc:  # the user's model raising: report it, not a traceback
            raise PackError(
                f"the module raised on the example inputs: {type(exc).__name__}: {exc}. "
                "Check the example shapes and dtypes against what forward() expects."
            ) from None
        return name_outputs(result, output_names)

    return run


def _check_options(options: _Options) -> None:
    if not NAME.fullmatch(options.name):
        raise PackError(
            f"model name {options.name!r} must be letters, digits, '_', '.', '-' and start "
            "with a letter or digit (it is a directory name and a URL path segment)."
        )
    if options.version is not None and options.version < 1:
        raise PackError(f"version {options.version} must be a positive integer.")
    if options.max_batch_size < 1:
        raise PackError(f"max_batch_size {options.max_batch_size} must be >= 1.")
    if options.golden_examples < 0:
        raise PackError("golden_examples must be >= 0.")


def _checked_ranges(
    ranges: dict[str, tuple[int, int]] | None, inputs: NamedTensors
) -> dict[str, list[int]]:
    """Declared integer ranges, checked against the inputs and their examples."""
    from torchrig.dtypes import FLOAT_DATATYPES, v2_datatype

    checked: dict[str, list[int]] = {}
    tensors = dict(zip(inputs.names, inputs.tensors, strict=True))
    for name, (low, high) in (ranges or {}).items():
        if name not in tensors:
            raise PackError(
                f"input range for {name!r}: the model has no such input "
                f"(its inputs: {', '.join(inputs.names)})."
            )
        tensor = tensors[name]
        datatype = v2_datatype(tensor.dtype)
        if datatype in FLOAT_DATATYPES or datatype == "BOOL":
            raise PackError(
                f"input range for {name!r}: ranges are for integer inputs, not {datatype}."
            )
        if low > high:
            raise PackError(f"input range for {name!r}: LOW {low} exceeds HIGH {high}.")
        if tensor.numel() and (int(tensor.min()) < low or int(tensor.max()) > high):
            raise PackError(
                f"input range for {name!r}: the example has values in "
                f"[{int(tensor.min())}, {int(tensor.max())}], outside [{low}, {high}]; "
                "fix the range or the example."
            )
        checked[name] = [int(low), int(high)]
    return checked


def _write_version(
    options: _Options,
    fmt: Format,
    inputs: NamedTensors,
    module: Any,
    writer: Writer,
    *,
    handler: HandlerSpec | None = None,
) -> PackedVersion:
    _check_options(options)
    ranges = _checked_ranges(options.input_ranges, inputs)
    run = _eager(module, options.output_names)
    outputs = run(inputs.tensors)
    if options.dynamic_batch:
        batch = check_batch(inputs, outputs)
        if batch > options.max_batch_size:
            raise PackError(
                f"the example batch ({batch}) exceeds max_batch_size ({options.max_batch_size})."
            )
    model_dir = Path(options.repository) / options.name
    version = options.version if options.version is not None else next_version(model_dir)
    final = model_dir / str(version)
    if final.exists():
        raise PackError(
            f"{final} already exists; versions are immutable. Pack a new version "
            "(leave out --version to take the next free number)."
        )
    device = str(inputs.tensors[0].device)
    with staging_directory(model_dir, version) as staging:
        program, in_dims, out_dims = writer(staging)
        batch_dims = [{0} for _ in inputs.names] if options.dynamic_batch else None
        files = [file_entry(staging, program)]
        files += copy_files(staging, options.files, taken={program, GOLDEN_FILE})
        golden_spec = None
        if options.golden_examples:
            golden = make_golden(
                run,
                inputs,
                count=options.golden_examples,
                batching=options.dynamic_batch,
                max_batch_size=options.max_batch_size,
                # dynamic dims: the example's sizes, then their minimum (1 is where a
                # program exported from larger examples would go wrong)
                sizes=[{}, {(d.input, d.dim): d.min for d in options.dynamic}]
                if options.dynamic
                else (),
            )
            torch.save(golden, str(staging / GOLDEN_FILE))
            files.append(file_entry(staging, GOLDEN_FILE))
            datatypes = {spec.datatype for spec in specs(outputs)}
            golden_spec = GoldenSpec(
                file=GOLDEN_FILE,
                count=options.golden_examples,
                device=device,
                tolerances={d: tolerance_for(d, options.tolerances) for d in sorted(datatypes)},
            )
        if options.dynamic_batch:
            out_batch = [{0} for _ in outputs.names]
            in_dims = [
                a | b for a, b in zip(in_dims or batch_dims or [], batch_dims or [], strict=True)
            ]
            out_dims = [a | b for a, b in zip(out_dims or out_batch, out_batch, strict=True)]
        if options.dynamic:
            declared = [{d.dim for d in options.dynamic if d.input == n} for n in inputs.names]
            in_dims = [a | b for a, b in zip(in_dims or declared, declared, strict=True)]
            if fmt == "torchscript":  # no symbolic shapes: see which output dims follow
                varied = vary_dims(run, inputs.names, inputs.tensors, options.dynamic)
                out_dims = [a | b for a, b in zip(out_dims or varied, varied, strict=True)]
        environment = options.environment
        if environment is None:
            from torchrig.envlock import take_lock

            environment = take_lock()
        manifest = Manifest(
            name=options.name,
            version=version,
            format=fmt,
            program=program,
            inputs=specs(inputs, in_dims),
            outputs=specs(outputs, out_dims),
            batching=options.dynamic_batch,
            max_batch_size=options.max_batch_size if options.dynamic_batch else None,
            input_ranges=ranges,
            dynamic_dims=options.dynamic,
            files=files,
            golden=golden_spec,
            environment=environment,
            created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            torchrig_version=__version__,
            description=options.description,
            labels=_check_labels(options.labels, list(outputs.names)),
            handler=handler,
        )
        if options.config is not None:
            write_config_if_absent(model_dir, options.config)
        publish(staging, manifest, final)
    return PackedVersion(path=final, manifest=manifest)


def pack(
    module: Any,
    example_inputs: Any,
    *,
    name: str,
    repository: str | Path,
    version: int | None = None,
    input_names: list[str] | None = None,
    output_names: list[str] | None = None,
    format: Format = "torch.export",
    dynamic_batch: bool = True,
    max_batch_size: int = 1024,
    golden_examples: int = 3,
    config: ModelConfig | None = None,
    description: str = "",
    tolerances: dict[str, Tolerance] | None = None,
    environment: EnvLock | None = None,
    input_ranges: dict[str, tuple[int, int]] | None = None,
    labels: dict[str, list[str]] | None = None,
    dynamic_dims: DynamicSpec | None = None,
    files: Sequence[str | Path] = (),
) -> PackedVersion:
    """Export `module` (in eval mode) and publish it as a new version of model `name`.

    `example_inputs` is a tuple of tensors or a dict name -> tensor; with `dynamic_batch`
    dim 0 is the batch (give a batch >= 2). `tolerances` overrides the per-datatype golden
    tolerances; `environment` reuses a lock taken earlier (default: `take_lock()`).
    `input_ranges` declares integer inputs' inclusive value ranges (embedding indices):
    the server refuses a request outside them before it reaches the model.
    `dynamic_dims` makes dimensions past the batch variable, input -> {dim: (min, max)}
    (max None: unbounded; (min, max) None: 1 and up), e.g. {"src": {1: (1, 512)}} for
    sequences of 1 to 512: the signature shows -1 there and the server refuses sizes
    outside the range; give examples of size 2 or more in those dimensions.
    `files` are copied into the version beside the program, checksummed in the manifest
    (a tokenizer.json for a text step of the model's config.toml).
    """
    if format not in PROGRAM_FORMATS:
        raise PackError(
            f"format {format!r} must be one of {', '.join(PROGRAM_FORMATS)} "
            "(a Python handler is packed with pack_handler / `torchrig pack --handler`)."
        )
    if not isinstance(module, torch.nn.Module):
        raise PackError(f"pack needs a torch.nn.Module, got a {type(module).__name__}.")
    inputs = name_inputs(module, example_inputs, input_names)
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
        tolerances=tolerances,
        environment=environment,
        input_ranges=input_ranges,
        labels=labels,
        dynamic=check_dynamic(
            dynamic_dims, inputs.names, inputs.tensors, dynamic_batch=dynamic_batch
        ),
        files=[Path(item) for item in files],
    )

    def writer(staging: Path) -> tuple[str, list[set[int]] | None, list[set[int]] | None]:
        if format == "torchscript":
            return script_module(module, staging), None, None
        exported = export_module(
            module,
            tuple(inputs.tensors),
            inputs.names,
            dynamic_batch=dynamic_batch,
            max_batch_size=max_batch_size,
            dynamic=options.dynamic,
        )
        in_dims, out_dims = symbolic_dims(exported)
        if format == "aoti":
            return compile_aoti(exported, staging), in_dims, out_dims
        return save_export(exported, staging), in_dims, out_dims

    was_training = module.training
    module.eval()
    try:
        return _write_version(options, format, inputs, module, writer)
    finally:
        module.train(was_training)


def _refuse_unless_torchscript(path: Path) -> None:
    """Tell TorchScript archives from pickles without unpickling anything."""
    convert = (
        "In the environment you trust, load the model and convert it: "
        "torch.export (`torchrig pack module:factory`) or "
        "torch.jit.script(model).save('model.ts') / torch.jit.trace "
        "(`torchrig pack --torchscript model.ts`)."
    )
    if not path.is_file():
        raise PackError(f"{path} does not exist or is not a file.")
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
        has_code = any("/code/" in n or n.startswith("code/") for n in names)
        has_pickle = any(n.endswith(("/data.pkl", "/constants.pkl")) for n in names)
        if has_code and has_pickle and any(n.endswith("/version") for n in names):
            return
        if has_pickle:
            raise PackError(
                f"{path} is a torch.save pickle, not TorchScript: loading it would run "
                f"arbitrary code from the file, so torchrig refuses it. {convert}"
            )
        raise PackError(f"{path} is a zip archive but not TorchScript. {convert}")
    with path.open("rb") as handle:
        head = handle.read(2)
    if head.startswith(b"\x80"):
        raise PackError(
            f"{path} is a Python pickle: loading it would run arbitrary code from the file, "
            f"so torchrig refuses it. {convert}"
        )
    raise PackError(f"{path} is not a TorchScript archive. {convert}")


def pack_torchscript(
    path: str | Path,
    example_inputs: Any,
    *,
    name: str,
    repository: str | Path,
    version: int | None = None,
    input_names: list[str] | None = None,
    output_names: list[str] | None = None,
    dynamic_batch: bool = True,
    max_batch_size: int = 1024,
    golden_examples: int = 3,
    config: ModelConfig | None = None,
    description: str = "",
    tolerances: dict[str, Tolerance] | None = None,
    environment: EnvLock | None = None,
    input_ranges: dict[str, tuple[int, int]] | None = None,
    labels: dict[str, list[str]] | None = None,
    dynamic_dims: DynamicSpec | None = None,
    files: Sequence[str | Path] = (),
) -> PackedVersion:
    """Publish an existing TorchScript file as a version; pickles are refused unread."""
    source = Path(path)
    _refuse_unless_torchscript(source)
    try:
        with quiet_torch():
            module = torch.jit.load(str(source), map_location="cpu")
    except Exception as exc:  # a damaged archive: TorchScript raises assorted errors
        raise PackError(f"torch.jit.load cannot read {source}: {exc}".strip() + ".") from None
    module.eval()
    inputs = name_inputs(module, example_inputs, input_names)
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
        tolerances=tolerances,
        environment=environment,
        input_ranges=input_ranges,
        labels=labels,
        dynamic=check_dynamic(
            dynamic_dims, inputs.names, inputs.tensors, dynamic_batch=dynamic_batch
        ),
        files=[Path(item) for item in files],
    )

    def writer(staging: Path) -> tuple[str, list[set[int]] | None, list[set[int]] | None]:
        shutil.copyfile(source, staging / TORCHSCRIPT_FILE)
        return TORCHSCRIPT_FILE, None, None

    return _write_version(options, "torchscript", inputs, module, writer)
