"""Run a CPU torch.export program as a TorchScript trace of its graph, when it is proven to
give the same answers.

An exported program's module runs its graph in Python: each aten operator is dispatched
through `torch._ops`, and the call flattens and unflattens its arguments with pytree. For a
small model (the demo ranker: 15 operators, about 20 us of arithmetic per row) that Python
costs more than the arithmetic. `torch.jit.trace` of the unlifted module records the same
aten calls into a TorchScript graph, which the C++ interpreter runs with no Python per
operator (about 2.5x fewer microseconds per call for the ranker, see
benchmarks/program_call.py).

The trace runs frozen (`torch.jit.freeze` without its numerics-changing passes: the
weights become constants of the graph, shared, not copied), which saves the attribute
loads of every call: 15-18 % of the ranker's call when its caches are cold, as between
requests, in four runs of five (`program_call.py --cold-kb 1024`), 3 % in a tight loop; a
trace that will not freeze, or whose frozen form differs, runs unfrozen.

A trace records one run, so it is trusted only after it matched the exported module
exactly (same dtypes, shapes and values, bit for bit) on every example it is given: the
server gives every warm-up batch size and dynamic bucket, and the version's golden
examples, whose batch sizes (1, 5, 3, 7...) differ from the traced one, so a batch size
baked into the trace is caught. Anything else (a trace that raises, differs, or a model
that is not a plain CPU graph of PyTorch's own operators) keeps the exported module, and
the reason is returned for the caller to log. A call that raises in the trace is run
again by the exported module, so errors read exactly as they did without the trace.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from torchrig.packaging.export import torch_deprecations_ignored
from torchrig.packaging.golden import input_key
from torchrig.packaging.manifest import Manifest


class TracedCall:
    """The traced module, called like the exported one; a failing call is replayed by the
    exported module, whose error (type and message) is the one the caller sees."""

    __slots__ = ("_forward", "exported", "traced")

    def __init__(self, traced: Any, exported: Any) -> None:
        self.traced = traced
        self.exported = exported
        # the script method itself: a trace has no hooks, so nn.Module.__call__'s checks
        # for them are Python run for nothing on every call
        self._forward = traced.forward

    def __call__(self, *args: torch.Tensor) -> Any:
        try:
            return self._forward(*args)
        except Exception:
            return self.exported(*args)


def trace_module(
    module: Any, input_names: Sequence[str], examples: Sequence[Mapping[str, torch.Tensor]]
) -> tuple[TracedCall | None, str]:
    """(the traced call, "") when a trace of `module` matches it on every example, else
    (None, why not). The trace is made on the example with the most rows that is not a
    single row, so that a batch size specialised into the trace cannot match size 1."""
    if not examples:
        return None, "no examples to check a trace against"
    ordered = sorted(examples, key=lambda e: _rows(e, input_names))
    base = next((e for e in reversed(ordered) if _rows(e, input_names) > 1), ordered[-1])
    try:
        with torch_deprecations_ignored(), warnings.catch_warnings():
            # TracerWarnings (a Python value read from a tensor) are what the check is for
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            with torch.inference_mode():
                traced = torch.jit.trace(
                    module, tuple(base[name] for name in input_names), check_trace=False
                )
    except Exception as exc:
        return None, f"torch.jit.trace failed ({type(exc).__name__}: {_first_line(exc)})"
    # frozen (weights folded into the graph as constants, no numerics-changing passes):
    # fewer attribute loads per call, the same arithmetic; kept only if it too matches
    frozen = _frozen(traced)
    if frozen is not None and not _mismatch(frozen, module, input_names, examples):
        return TracedCall(frozen, module), ""
    why = _mismatch(traced, module, input_names, examples)
    return (None, why) if why else (TracedCall(traced, module), "")


def _frozen(traced: Any) -> Any:
    """`torch.jit.freeze` of the trace, or None where freezing fails."""
    try:
        with torch_deprecations_ignored(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.jit.freeze(traced.eval(), optimize_numerics=False)
    except Exception:  # the plain trace is as exact, only a little slower
        return None


def _mismatch(
    traced: Any,
    module: Any,
    input_names: Sequence[str],
    examples: Sequence[Mapping[str, torch.Tensor]],
) -> str:
    """'' when `traced` gives exactly `module`'s outputs on every example, else why not."""
    for example in examples:
        args = tuple(example[name] for name in input_names)
        try:
            with torch.inference_mode():
                want = module(*args)
                # twice: TorchScript's profiling executor optimises the graph after a run
                traced(*args)
                got = traced(*args)
        except Exception as exc:
            return f"the trace failed on an example ({type(exc).__name__}: " + (
                f"{_first_line(exc)})"
            )
        difference = _difference(want, got)
        if difference:
            rows = _rows(example, input_names)
            return f"the trace differs from the exported program at {rows} rows: " + difference
    return ""


def golden_inputs(version_dir: Path, manifest: Manifest) -> list[dict[str, torch.Tensor]]:
    """The version's golden example inputs (CPU tensors; [] when it has none or they
    cannot be read: `torchrig verify` is where a broken golden file is reported)."""
    golden = manifest.golden
    if golden is None or golden.count == 0:
        return []
    try:
        data = torch.load(str(version_dir / golden.file), map_location="cpu", weights_only=True)
        return [
            {s.name: data[input_key(i, s.name)] for s in manifest.inputs}
            for i in range(golden.count)
        ]
    except Exception:  # a missing or unreadable file only means fewer examples
        return []


def _rows(example: Mapping[str, torch.Tensor], input_names: Sequence[str]) -> int:
    first = example[input_names[0]] if input_names else None
    return int(first.shape[0]) if first is not None and first.dim() else 1


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else ""


def _difference(want: Any, got: Any) -> str:
    """'' when the two results are the same structure of identical tensors."""
    if isinstance(want, torch.Tensor):
        if not isinstance(got, torch.Tensor):
            return f"a {type(got).__name__} instead of a tensor"
        if want.dtype != got.dtype or want.shape != got.shape:
            return f"{got.dtype} {list(got.shape)} instead of {want.dtype} {list(want.shape)}"
        same = torch.equal(want, got) or (
            want.is_floating_point() and bool(torch.isclose(want, got, 0, 0, True).all())
        )
        return "" if same else "different values"
    if isinstance(want, Mapping):
        if not isinstance(got, Mapping) or set(want) != set(got):
            return "different output names"
        return next((d for k in want if (d := _difference(want[k], got[k]))), "")
    if isinstance(want, (tuple, list)):
        if not isinstance(got, (tuple, list)) or len(want) != len(got):
            return "a different number of outputs"
        return next((d for w, g in zip(want, got, strict=True) if (d := _difference(w, g))), "")
    return f"an output of type {type(want).__name__}, which a trace cannot return"
