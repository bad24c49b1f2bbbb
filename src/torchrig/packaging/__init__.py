"""Model artifacts: pack a module into a versioned, self-describing directory and load it.

A version is `<repo>/<model>/<version>/` with the program (torch.export, AOTInductor or
TorchScript; never a pickle), golden examples, and `manifest.json` (signature, checksums,
exporting environment). See `manifest.py` for the schema.

Names are imported on first use, so reading manifests and checksums does not import torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torchrig.packaging.files import read_manifest, verify_files
    from torchrig.packaging.manifest import (
        FileEntry,
        Format,
        GoldenSpec,
        Manifest,
        TensorSpec,
        Tolerance,
    )
    from torchrig.packaging.packer import PackedVersion, pack, pack_torchscript
    from torchrig.packaging.program import Program, load_program
    from torchrig.packaging.verify import OutputCheck, VerifyReport, verify_version

_WHERE = {
    "read_manifest": "files",
    "verify_files": "files",
    "FileEntry": "manifest",
    "Format": "manifest",
    "GoldenSpec": "manifest",
    "Manifest": "manifest",
    "TensorSpec": "manifest",
    "Tolerance": "manifest",
    "PackedVersion": "packer",
    "pack": "packer",
    "pack_torchscript": "packer",
    "Program": "program",
    "load_program": "program",
    "OutputCheck": "verify",
    "VerifyReport": "verify",
    "verify_version": "verify",
}

__all__ = [
    "FileEntry",
    "Format",
    "GoldenSpec",
    "Manifest",
    "OutputCheck",
    "PackedVersion",
    "Program",
    "TensorSpec",
    "Tolerance",
    "VerifyReport",
    "load_program",
    "pack",
    "pack_torchscript",
    "read_manifest",
    "verify_files",
    "verify_version",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'torchrig.packaging' has no attribute {name!r}")
    return getattr(importlib.import_module(f"torchrig.packaging.{module}"), name)
