"""Replay a version's golden examples in this environment and compare per output."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import msgspec
import torch

from torchrig.errors import ArtifactError
from torchrig.packaging.files import read_manifest
from torchrig.packaging.golden import input_key, output_key, tolerance_for
from torchrig.packaging.manifest import Manifest
from torchrig.packaging.program import load_program


class OutputCheck(msgspec.Struct, frozen=True, kw_only=True):
    """One output over all golden examples: worst errors against its tolerance."""

    name: str
    datatype: str
    max_abs_err: float
    max_rel_err: float  # over elements whose golden value is not 0
    atol: float
    rtol: float
    passed: bool
    detail: str = ""  # why it failed, when not a plain tolerance excess (shape, dtype)


class VerifyReport(msgspec.Struct, frozen=True, kw_only=True):
    model: str
    version: int
    device: str
    passed: bool
    examples: int  # golden examples replayed; 0 when the version has none
    outputs: list[OutputCheck]


def _load_golden(version_dir: Path, file: str) -> dict[str, Any]:
    path = version_dir / file
    try:
        data = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # the file passed its checksum; anything here is a bad pack
        raise ArtifactError(f"cannot read golden examples {path}: {exc}; re-pack.") from None
    if not isinstance(data, dict):
        raise ArtifactError(f"{path} is not a dict of tensors; re-pack the version.")
    return data


class _Worst:
    def __init__(self) -> None:
        self.abs = 0.0
        self.rel = 0.0
        self.passed = True
        self.detail = ""

    def add(self, actual: Any, expected: Any, atol: float, rtol: float) -> None:
        if actual.dtype != expected.dtype or actual.shape != expected.shape:
            self.passed = False
            self.abs = self.rel = math.inf
            self.detail = (
                f"got {actual.dtype} {list(actual.shape)}, golden {expected.dtype} "
                f"{list(expected.shape)}"
            )
            return
        a, e = actual.double(), expected.double()
        both_nan = torch.isnan(a) & torch.isnan(e)
        diff = torch.where(both_nan, torch.zeros_like(a), (a - e).abs())
        diff = torch.nan_to_num(diff, nan=math.inf)
        if diff.numel():
            self.abs = max(self.abs, float(diff.max()))
            nonzero = e != 0
            if bool(nonzero.any()):
                self.rel = max(self.rel, float((diff[nonzero] / e[nonzero].abs()).max()))
        if bool((diff > atol + rtol * e.abs().nan_to_num(nan=0.0)).any()):
            self.passed = False


def verify_loaded(version_dir: Path, manifest: Manifest, *, device: str = "cpu") -> VerifyReport:
    """Like `verify_version` for an already read manifest."""
    golden_spec = manifest.golden
    if golden_spec is None or golden_spec.count == 0:
        load_program(version_dir, manifest, device=device)
        return VerifyReport(
            model=manifest.name,
            version=manifest.version,
            device=device,
            passed=True,
            examples=0,
            outputs=[],
        )
    program = load_program(version_dir, manifest, device=device)
    golden = _load_golden(version_dir, golden_spec.file)
    worst = {spec.name: _Worst() for spec in manifest.outputs}
    tolerances = {
        spec.name: tolerance_for(spec.datatype, golden_spec.tolerances) for spec in manifest.outputs
    }
    for i in range(golden_spec.count):
        try:
            inputs = {s.name: golden[input_key(i, s.name)] for s in manifest.inputs}
            expected = {s.name: golden[output_key(i, s.name)] for s in manifest.outputs}
        except KeyError as exc:
            raise ArtifactError(
                f"{version_dir / golden_spec.file} lacks {exc.args[0]!r}; re-pack the version."
            ) from None
        with torch.inference_mode():
            outputs = program({k: v.to(program.device) for k, v in inputs.items()})
        for name, value in outputs.items():
            tol = tolerances[name]
            worst[name].add(value.detach().cpu(), expected[name], tol.atol, tol.rtol)
    checks = [
        OutputCheck(
            name=spec.name,
            datatype=spec.datatype,
            max_abs_err=worst[spec.name].abs,
            max_rel_err=worst[spec.name].rel,
            atol=tolerances[spec.name].atol,
            rtol=tolerances[spec.name].rtol,
            passed=worst[spec.name].passed,
            detail=worst[spec.name].detail,
        )
        for spec in manifest.outputs
    ]
    return VerifyReport(
        model=manifest.name,
        version=manifest.version,
        device=str(program.device),
        passed=all(c.passed for c in checks),
        examples=golden_spec.count,
        outputs=checks,
    )


def verify_version(version_dir: Path, *, device: str = "cpu") -> VerifyReport:
    """Replay the golden inputs through the program on `device` (no casting) and report,
    per output, the worst absolute and relative error against the recorded tolerance."""
    version_dir = Path(version_dir)
    return verify_loaded(version_dir, read_manifest(version_dir), device=device)
