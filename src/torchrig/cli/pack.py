"""`torchrig pack MODULE:FACTORY | --torchscript FILE`: publish a model version."""

from __future__ import annotations

import importlib
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

import click

from torchrig.cli.output import console, emit_json
from torchrig.errors import PackError, UsageError

EXAMPLE = re.compile(
    r"^(?P<name>[^:]+):(?P<dtype>[A-Za-z0-9]+):(?P<shape>\d+(?:x\d+)*)"
    r"(?::(?P<low>-?\d+(?:\.\d+)?)-(?P<high>-?\d+(?:\.\d+)?))?$"
)
EXAMPLE_FORMAT = "NAME:DTYPE:SHAPE[:LOW-HIGH], e.g. dense:FP32:8x13 or sparse:INT64:8x26:0-999"


def import_factory(spec: str) -> Any:
    """Resolve "pkg.module:attr" like uvicorn does, with a message naming each failure."""
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise UsageError(f'Import string "{spec}" must be in format "<module>:<attribute>".')
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # like `python -m`: modules beside you import
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != module_name and not module_name.startswith(f"{exc.name}."):
            raise UsageError(f'Importing module "{module_name}" failed: {exc}.') from None
        raise UsageError(f'Could not import module "{module_name}".') from None
    except Exception as exc:  # the user's module raising on import
        raise UsageError(
            f'Importing module "{module_name}" raised {type(exc).__name__}: {exc}'
        ) from None
    target: Any = module
    for part in attribute.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise UsageError(
                f'Attribute "{attribute}" not found in module "{module_name}".'
            ) from None
    return target


INPUT_RANGE = re.compile(r"^(?P<name>[^:]+):(?P<low>-?\d+)-(?P<high>-?\d+)$")
INPUT_RANGE_FORMAT = "NAME:LOW-HIGH, e.g. sparse:0-999"


def parse_input_range(text: str) -> tuple[str, tuple[int, int]]:
    """One `--input-range NAME:LOW-HIGH` -> (name, (low, high)), inclusive integers."""
    match = INPUT_RANGE.match(text)
    if match is None:
        raise UsageError(f"--input-range {text!r} must be {INPUT_RANGE_FORMAT}.")
    low, high = int(match["low"]), int(match["high"])
    if low > high:
        raise UsageError(f"--input-range {text!r}: LOW must not exceed HIGH.")
    return match["name"], (low, high)


DYNAMIC = re.compile(r"^(?P<name>[^:]+):(?P<dim>-?\d+)(?::(?P<bounds>.*))?$")
DYNAMIC_BOUNDS = re.compile(r"^(?P<low>\d+)-(?P<high>\d+)?$")
DYNAMIC_FORMAT = "NAME:DIM[:MIN-MAX], e.g. src:1:1-512 (MAX may be left out: src:1:1-)"


def parse_dynamic(texts: tuple[str, ...]) -> dict[str, dict[int, tuple[int, int | None]]]:
    """`--dynamic NAME:DIM[:MIN-MAX]` options -> {input: {dim: (min, max)}}; MIN-MAX
    defaults to 1 and no upper bound. The packer checks them against the examples."""
    declared: dict[str, dict[int, tuple[int, int | None]]] = {}
    for text in texts:
        match = DYNAMIC.match(text)
        if match is None:
            raise UsageError(f"--dynamic {text!r} must be {DYNAMIC_FORMAT}.")
        bounds: tuple[int, int | None] = (1, None)
        if match["bounds"] is not None:
            found = DYNAMIC_BOUNDS.match(match["bounds"])
            if found is None:
                raise UsageError(
                    f"--dynamic {text!r}: {match['bounds']!r} is not MIN-MAX; write two "
                    f"whole numbers, MIN at least 1 ({DYNAMIC_FORMAT})."
                )
            low = int(found["low"])
            high = int(found["high"]) if found["high"] else None
            if low < 1 or (high is not None and low > high):
                raise UsageError(f"--dynamic {text!r}: MIN must be at least 1 and not exceed MAX.")
            bounds = (low, high)
        dims = declared.setdefault(match["name"], {})
        dim = int(match["dim"])
        if dim in dims:
            raise UsageError(f"--dynamic {text!r}: dim {dim} of {match['name']} is declared twice.")
        dims[dim] = bounds
    return declared


def example_range(text: str) -> tuple[str, tuple[int, int]] | None:
    """The integer range an `--example` declares (None for floats or no range)."""
    from torchrig.dtypes import FLOAT_DATATYPES

    match = EXAMPLE.match(text)
    if match is None or not match["low"] or match["dtype"].upper() in (*FLOAT_DATATYPES, "BOOL"):
        return None
    return match["name"], (int(float(match["low"])), int(float(match["high"])))


def parse_example(text: str, generator: Any) -> tuple[str, Any]:
    """One `--example NAME:DTYPE:SHAPE[:LOW-HIGH]` -> (name, random tensor)."""
    from torchrig.dtypes import FLOAT_DATATYPES, V2_TO_TORCH, torch_dtype
    from torchrig.packaging.signature import random_tensor

    match = EXAMPLE.match(text)
    if match is None:
        raise UsageError(f"--example {text!r} must be {EXAMPLE_FORMAT}.")
    datatype = match["dtype"].upper()
    if datatype not in V2_TO_TORCH:
        raise UsageError(
            f"--example {text!r}: datatype {match['dtype']!r} is not one of "
            f"{', '.join(V2_TO_TORCH)}."
        )
    shape = [int(s) for s in match["shape"].split("x")]
    value_range = (float(match["low"]), float(match["high"])) if match["low"] else None
    if value_range is None and datatype not in FLOAT_DATATYPES and datatype != "BOOL":
        raise UsageError(
            f"--example {text!r}: integer inputs need their valid range LOW-HIGH (e.g. "
            f"{match['name']}:{datatype}:{match['shape']}:0-999 for a 1000-row embedding)."
        )
    if value_range is not None and value_range[0] > value_range[1]:
        raise UsageError(f"--example {text!r}: LOW must not exceed HIGH.")
    return match["name"], random_tensor(torch_dtype(datatype), shape, value_range, generator)


def _call_factory(spec: str) -> tuple[Any, Any]:
    factory = import_factory(spec)
    if not callable(factory):
        raise UsageError(f'"{spec}" is a {type(factory).__name__}, not a factory function.')
    try:
        made = factory()
    except Exception as exc:  # the user's factory: report, no traceback
        raise UsageError(f'Factory "{spec}" raised {type(exc).__name__}: {exc}') from None
    if isinstance(made, tuple) and len(made) == 2:
        return made[0], made[1]
    return made, None


@click.command("pack")
@click.argument("factory", required=False, metavar="MODULE:FACTORY")
@click.option("--torchscript", type=click.Path(path_type=Path), help="Pack this TorchScript file.")
@click.option(
    "--handler",
    metavar="FILE[:CLASS]",
    help="Pack this Python handler file (class Handler unless named); its signature comes "
    "from --example. A server runs it only with --allow-python-handlers.",
)
@click.option("--name", required=True, help="Model name (the directory under the repository).")
@click.option("--repository", required=True, type=click.Path(path_type=Path), help="Repo root.")
@click.option("--version", "version", type=int, help="Version number (default: next free).")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["torch.export", "aoti", "torchscript"]),
    default="torch.export",
    show_default=True,
    help="Program format.",
)
@click.option("--example", "examples", multiple=True, help=f"Example input: {EXAMPLE_FORMAT}.")
@click.option(
    "--input-range",
    "input_ranges",
    multiple=True,
    help=f"Valid values of an integer input, checked per request: {INPUT_RANGE_FORMAT} "
    "(an integer --example's LOW-HIGH declares it too).",
)
@click.option(
    "--dynamic",
    "dynamic",
    multiple=True,
    help=f"A variable dimension past the batch: {DYNAMIC_FORMAT}; the signature shows -1 "
    "there and the server refuses sizes outside MIN-MAX. Repeatable.",
)
@click.option("--no-dynamic-batch", is_flag=True, help="Fixed shapes: dim 0 is not a batch.")
@click.option("--max-batch-size", type=int, default=1024, show_default=True)
@click.option("--golden-examples", type=int, default=3, show_default=True)
@click.option("--output-name", "output_names", multiple=True, help="Output names, in order.")
@click.option("--description", default="", help="Free text stored in the manifest.")
@click.option(
    "--labels",
    "label_files",
    multiple=True,
    help="Class labels for the classification extension: [OUTPUT=]FILE, one label per line "
    "in class-index order (OUTPUT may be left out when the model has one output).",
)
@click.option(
    "--file",
    "extra_files",
    multiple=True,
    type=click.Path(path_type=Path),
    help="A file packed beside the program under its own name, checksummed (e.g. the "
    "tokenizer.json a text step of config.toml reads); repeatable.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def pack(
    *,
    factory: str | None,
    torchscript: Path | None,
    handler: str | None,
    name: str,
    repository: Path,
    version: int | None,
    fmt: str,
    examples: tuple[str, ...],
    input_ranges: tuple[str, ...],
    dynamic: tuple[str, ...],
    no_dynamic_batch: bool,
    max_batch_size: int,
    golden_examples: int,
    output_names: tuple[str, ...],
    description: str,
    label_files: tuple[str, ...],
    extra_files: tuple[Path, ...],
    as_json: bool,
) -> None:
    """Export a module (MODULE:FACTORY returns a module or (module, example_inputs)) or a
    TorchScript file into REPOSITORY/NAME/VERSION/ with its manifest and golden examples."""
    import torch

    from torchrig.packaging import pack as pack_module
    from torchrig.packaging import pack_torchscript

    if [factory, torchscript, handler].count(None) != 2:
        raise UsageError("give MODULE:FACTORY, --torchscript FILE or --handler FILE (exactly one).")
    generator = torch.Generator().manual_seed(0)
    given = dict(parse_example(text, generator) for text in examples) if examples else None
    ranges = dict(r for r in (example_range(text) for text in examples) if r is not None)
    ranges.update(parse_input_range(text) for text in input_ranges)
    common: dict[str, Any] = {
        "name": name,
        "repository": repository,
        "version": version,
        "output_names": list(output_names) or None,
        "dynamic_batch": not no_dynamic_batch,
        "max_batch_size": max_batch_size,
        "golden_examples": golden_examples,
        "description": description,
        "input_ranges": ranges or None,
        "labels": dict(read_labels(text) for text in label_files) or None,
    }
    if dynamic:
        if handler is not None:
            raise UsageError(
                "--dynamic is for programs (MODULE:FACTORY or --torchscript); a --handler "
                "cannot declare dynamic dimensions yet."
            )
        common["dynamic_dims"] = parse_dynamic(dynamic)
    if extra_files:
        common["files"] = list(extra_files)
    started = time.monotonic()
    if handler is not None:
        packed = _pack_handler(handler, given, common)
    elif torchscript is not None:
        if given is None:
            raise UsageError("--torchscript needs --example for every input (in order).")
        packed = pack_torchscript(torchscript, tuple(given.values()), **common)
    else:
        module, from_factory = _call_factory(str(factory))
        example_inputs = given if given is not None else from_factory
        if example_inputs is None:
            raise PackError(
                f'"{factory}" returned no example inputs; return (module, example_inputs) '
                f"from it or give --example {EXAMPLE_FORMAT}."
            )
        packed = pack_module(module, example_inputs, format=fmt, **common)  # type: ignore[arg-type]
    elapsed = time.monotonic() - started
    manifest = packed.manifest
    if as_json:
        emit_json(
            {
                "path": str(packed.path),
                "name": manifest.name,
                "version": manifest.version,
                "format": manifest.format,
                "inputs": manifest.inputs,
                "outputs": manifest.outputs,
                "files": manifest.files,
                "seconds": round(elapsed, 3),
            }
        )
        return
    out = console()
    out.print(
        f"packed {manifest.name} version {manifest.version} ({manifest.format}) at "
        f"{packed.path} in {elapsed:.1f} s"
    )
    for role, tensor_specs in (("input", manifest.inputs), ("output", manifest.outputs)):
        for spec in tensor_specs:
            out.print(f"  {role:6} {spec.name}: {spec.datatype} {spec.shape}")


def _pack_handler(spec: str, given: dict[str, Any] | None, common: dict[str, Any]) -> Any:
    """`--handler FILE[:CLASS]`: the handler's signature comes from --example."""
    from torchrig.packaging.handler import DEFAULT_CLASS, pack_handler

    path, _, class_name = spec.partition(":")
    if given is None:
        raise UsageError(
            f"--handler needs --example for every input ({EXAMPLE_FORMAT}); they declare its "
            "signature."
        )
    return pack_handler(path, given, class_name=class_name or DEFAULT_CLASS, **common)


def read_labels(text: str) -> tuple[str, list[str]]:
    """`[OUTPUT=]FILE` -> (OUTPUT or "" for the only output, the file's labels)."""
    output, sep, path = text.partition("=")
    if not sep or "/" in output:
        output, path = "", text
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"--labels {text}: cannot read {path} ({exc}).") from None
    labels = [line.strip() for line in lines]
    while labels and not labels[-1]:  # a trailing newline or blank lines at the end
        labels.pop()
    if not labels:
        raise UsageError(f"--labels {text}: {path} holds no labels; write one per line.")
    return output, labels
