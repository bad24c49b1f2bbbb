"""The compatibility knowledge base: torch build <-> CUDA <-> architectures <-> driver <-> GPU.

Data files with a public source for every entry (`torchrig/compat/data/*.json`)
and a small, pure lookup API over them. Nothing is read until first use.
"""

from __future__ import annotations

from torchrig.compat.advise import builds_for
from torchrig.compat.check import check
from torchrig.compat.kb import KnowledgeBase, load_kb
from torchrig.compat.matrix import MatrixRow, matrix
from torchrig.compat.model import (
    ArchSupport,
    BuildChoice,
    CompatReport,
    DriverRequirement,
    DriverSupport,
    Finding,
    GpuModel,
    TorchRelease,
    VariantInfo,
)
from torchrig.compat.rules import arch_support, driver_support, sass_runs_on
from torchrig.compat.versions import (
    TorchBuild,
    compare_driver,
    parse_cc,
    parse_driver,
    parse_torch_version,
)

__all__ = [
    "ArchSupport",
    "BuildChoice",
    "CompatReport",
    "DriverRequirement",
    "DriverSupport",
    "Finding",
    "GpuModel",
    "KnowledgeBase",
    "MatrixRow",
    "TorchBuild",
    "TorchRelease",
    "VariantInfo",
    "arch_support",
    "builds_for",
    "check",
    "compare_driver",
    "driver_support",
    "load_kb",
    "matrix",
    "parse_cc",
    "parse_driver",
    "parse_torch_version",
    "sass_runs_on",
]
