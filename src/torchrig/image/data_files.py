"""The image data file: CUDA toolkit patches of the base images, Pythons, the uv installer.

Like the compat knowledge base, every entry carries its public source and
whether it was verified; the file is read on first use, never at import time.
"""

from __future__ import annotations

import functools

import msgspec

from torchrig.jsondoc import package_data

SCHEMA_VERSION = 1


class CudaPatch(msgspec.Struct, frozen=True):
    """The full toolkit version (12.8.1) whose nvidia/cuda image serves CUDA X.Y (12.8)."""

    cuda: str
    patch: str
    verified: bool
    source: str
    notes: str = ""


class ImageData(msgspec.Struct, frozen=True):
    """The contents of `torchrig/image/data/images.json`."""

    schema_version: int
    updated: str
    base_repository: str
    base_os: str
    base_repository_source: str
    cuda_patches: list[CudaPatch]
    distro_python: str
    distro_python_source: str
    pythons: list[str]
    pythons_source: str
    uv_image: str
    uv_source: str
    uv_verified: bool
    cpu_base: str
    cpu_base_source: str
    cpu_base_verified: bool

    def cuda_patch(self, cuda: str) -> CudaPatch | None:
        """The base-image toolkit patch for CUDA `12.8`, or None when the file lacks it."""
        for entry in self.cuda_patches:
            if entry.cuda == cuda:
                return entry
        return None


@functools.cache
def load_image_data() -> ImageData:
    """The image data file, decoded once and cached."""
    return package_data("torchrig.image", "images.json", ImageData, schema_version=SCHEMA_VERSION)
