"""What `torchrig env diff` answers: every difference with its severity and consequence."""

from __future__ import annotations

from typing import Literal

import msgspec

Severity = Literal["breaking", "risky", "info"]
SEVERITIES: tuple[Severity, ...] = ("breaking", "risky", "info")


class Difference(msgspec.Struct, frozen=True, kw_only=True):
    severity: Severity
    key: str  # dotted path: "torch.version", "packages.numpy", "gpus.compute_capability"
    a: str | None  # the value in A (None: absent)
    b: str | None  # the value in B
    message: str  # what changed, with the values
    consequence: str  # what the difference can cause ("" when nothing in particular)


class DiffReport(msgspec.Struct, frozen=True, kw_only=True):
    """The `--json` output of `env diff` and `env check`."""

    schema_version: int = 1
    a: str  # where A came from (a file path, "live")
    b: str
    a_summary: str  # "torch 2.11.0+cu130 (CUDA 13.0), Python 3.11.7, 1x NVIDIA H100 (sm_90)"
    b_summary: str
    breaking: int
    risky: int
    info: int
    differences: list[Difference]  # breaking first, then risky, then info
