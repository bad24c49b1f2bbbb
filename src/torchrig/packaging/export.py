"""Turn an eager module into a program file: torch.export, AOTInductor or TorchScript.

Export failures become a `PackError` that names the offending line or op and the fixes.
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
import traceback
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from torchrig.errors import PackError
from torchrig.packaging.dynamic import export_shapes
from torchrig.packaging.manifest import DynamicDim

EXPORT_FILE = "model.pt2"
TORCHSCRIPT_FILE = "model.ts"

_CALL_SITE = re.compile(r'File "([^"]+)", line (\d+), in (\S+)\n\s+(.+)')
_SPECIALISED = re.compile(r"specialized it to be a constant \((\d+)\)")
_CONSTRAINED_DIM = re.compile(r"L\['(\w+)'\]\.size\(\)\[(\d+)\]")
_OPERATOR = re.compile(r"(aten\.\w+(?:\.\w+)?|[\w.]+::\w+(?:\.\w+)?)")


@contextlib.contextmanager
def torch_deprecations_ignored() -> Iterator[None]:
    """Ignore the deprecation warnings of TorchScript and torch internals (we choose the
    format deliberately; the user cannot act on them)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.")
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
        # torch.export.load (2.11) builds tensors over its archive's read-only buffers
        warnings.filterwarnings("ignore", message="The given buffer is not writable")
        yield


@contextlib.contextmanager
def quiet_torch() -> Iterator[None]:
    """Silence torch's own chatter during export: deprecation warnings from its internals,
    log lines and the partial graph it prints on failure (we raise a clear error instead)."""
    loggers = [
        logging.getLogger(name)
        for name in list(logging.root.manager.loggerDict)
        if name == "torch" or name.startswith("torch.")
    ]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with torch_deprecations_ignored(), contextlib.redirect_stderr(io.StringIO()):
            yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def _user_site(exc: BaseException) -> str | None:
    """`file:line (`code`)` of the model's code that failed, if torch or the traceback say."""
    match = _CALL_SITE.search(str(exc))
    if match:
        return f"{match[1]}:{match[2]} in {match[3]} (`{match[4].strip()}`)"
    torch_dir = str(Path(torch.__file__).parent)
    here = str(Path(__file__).parents[1])
    for frame in reversed(traceback.extract_tb(exc.__traceback__)):
        if frame.filename.startswith((torch_dir, here, "<")):
            continue
        return f"{frame.filename}:{frame.lineno} in {frame.name} (`{(frame.line or '').strip()}`)"
    return None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    line = text[0] if text else type(exc).__name__
    return line if len(line) <= 240 else line[:237] + "..."


def explain_export_failure(exc: BaseException, input_names: list[str], what: str) -> PackError:
    """A PackError for a failed torch.export that says where, why, and what to do."""
    message = str(exc)
    site = _user_site(exc)
    where = f" at {site}" if site else ""
    constant = _SPECIALISED.search(message)
    fixed_dim = _CONSTRAINED_DIM.search(message)
    if "Constraints violated" in message and constant and fixed_dim and fixed_dim[2] != "0":
        return PackError(
            f"{what}: the model's code fixes dim {fixed_dim[2]} of {fixed_dim[1]!r}, declared "
            f"dynamic, to {constant[1]}{where}. Remove the hard-coded size (use x.shape[...] "
            "or -1 in reshapes), or leave that dimension out of --dynamic."
        )
    if "Constraints violated" in message and constant:
        return PackError(
            f"{what}: the model's code fixes the batch dimension (dim 0 of inputs "
            f"{', '.join(input_names)}) to {constant[1]}{where}. Remove the hard-coded size "
            "(e.g. x.reshape(x.shape[0], -1)), or pack with dynamic_batch=False "
            "(--no-dynamic-batch) for a fixed batch."
        )
    if "data-dependent" in message or "GuardOnDataDependent" in type(exc).__name__:
        return PackError(
            f"{what}: data-dependent control flow{where}: {_first_line(exc)} torch.export "
            "cannot branch on tensor values. Rewrite the branch with torch.cond or torch.where, "
            'or pack with format="torchscript" (--format torchscript).'
        )
    op = _OPERATOR.search(message)
    if "Unsupported" in type(exc).__name__ or isinstance(exc, NotImplementedError):
        name = f"operator {op[1]}" if op else "an operation"
        return PackError(
            f"{what}: {name} is not supported by torch.export{where}: {_first_line(exc)} "
            "Register a fake kernel for a custom op (torch.library.register_fake), or pack "
            'with format="torchscript" (--format torchscript).'
        )
    return PackError(
        f"{what} ({type(exc).__name__}){where}: {_first_line(exc)} Possible fixes: torch.cond "
        "for data-dependent branches, dynamic_batch=False (--no-dynamic-batch) for a fixed "
        'batch, or format="torchscript".'
    )


def export_module(
    module: Any,
    args: tuple[Any, ...],
    input_names: list[str],
    *,
    dynamic_batch: bool,
    max_batch_size: int,
    dynamic: Sequence[DynamicDim] = (),
) -> Any:
    """`torch.export.export` with dim 0 of every input sharing one dynamic batch `Dim`,
    and each `dynamic` dimension variable within its declared range."""
    batch = torch.export.Dim("batch", min=1, max=max_batch_size) if dynamic_batch else None
    dynamic_shapes = export_shapes(dynamic, input_names, batch)
    try:
        with quiet_torch():
            return torch.export.export(module, args, dynamic_shapes=dynamic_shapes)
    except Exception as exc:  # torch raises many unrelated types; each becomes a PackError
        raise explain_export_failure(
            exc, input_names, f"torch.export failed for {type(module).__name__}"
        ) from None


def symbolic_dims(exported: Any) -> tuple[list[set[int]], list[set[int]]]:
    """The variable dimensions of each user input and output of an ExportedProgram."""
    placeholders = {n.name: n for n in exported.graph.nodes if n.op == "placeholder"}
    user_inputs = exported.graph_signature.user_inputs
    output_node = next(n for n in exported.graph.nodes if n.op == "output")

    def dims(node: Any) -> set[int]:
        val = getattr(node, "meta", {}).get("val")
        shape = getattr(val, "shape", ())
        return {i for i, d in enumerate(shape) if isinstance(d, torch.SymInt)}

    inputs = [dims(placeholders[name]) for name in user_inputs if name in placeholders]
    outputs = [dims(node) for node in output_node.args[0]]
    return inputs, outputs


def save_export(exported: Any, directory: Path) -> str:
    torch.export.save(exported, str(directory / EXPORT_FILE))
    return EXPORT_FILE


def compile_aoti(exported: Any, directory: Path) -> str:
    """An AOTInductor package for the device the program was exported on."""
    try:
        with quiet_torch():
            torch._inductor.aoti_compile_and_package(
                exported, package_path=str(directory / EXPORT_FILE)
            )
    except Exception as exc:  # compiler missing, unsupported op, ...: all mean "cannot"
        raise PackError(
            f"AOTInductor compilation failed ({type(exc).__name__}): {_first_line(exc)} "
            "It needs a working C++ compiler (and nvcc/Triton for CUDA). Pack with "
            'format="torch.export" instead; the server runs it without compiling.'
        ) from None
    return EXPORT_FILE


def script_module(module: Any, directory: Path) -> str:
    """Save `module` as TorchScript: as is when already scripted, else `torch.jit.script`."""
    try:
        with quiet_torch():
            scripted = (
                module if isinstance(module, torch.jit.ScriptModule) else torch.jit.script(module)
            )
            scripted.save(str(directory / TORCHSCRIPT_FILE))
    except Exception as exc:  # TorchScript's frontend raises its own assorted errors
        raise PackError(
            f"torch.jit.script failed for {type(module).__name__}: {_first_line(exc)} "
            'Use format="torch.export", or trace it yourself (torch.jit.trace) and pack the '
            "file with `torchrig pack --torchscript FILE`."
        ) from None
    return TORCHSCRIPT_FILE
