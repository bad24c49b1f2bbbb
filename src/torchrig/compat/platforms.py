"""Knowledge beyond the desktop wheel matrix: Jetson platforms, per-architecture driver
minimums, and the soname majors a wheel loads.

Three data files, each entry with its source: `jetson.json` (JetPack release -> CUDA,
GPU, the torch wheels that carry code for it), `gpu_drivers.json` (the oldest driver
branch that knows an architecture: Blackwell needs R570) and `sonames.json` (the
soname major of each CUDA library per CUDA major, which decides whether a system copy
can shadow the wheel's). Read on first use and cached, never at import time.
"""

from __future__ import annotations

import functools

import msgspec

from torchrig.compat.versions import format_cc, parse_cc
from torchrig.jsondoc import package_data

SCHEMA_VERSION = 1


class JetsonWheel(msgspec.Struct, frozen=True):
    """torch wheels built for a JetPack release: which releases, how to install, which archs."""

    releases: list[str]
    install: str
    arch_list: list[str]
    publisher: str
    source: str
    verified: bool
    notes: str = ""


class JetsonPlatform(msgspec.Struct, frozen=True):
    """A JetPack release: it fixes the L4T driver and the CUDA version of a Jetson."""

    jetpack: str
    l4t: str
    cuda: str
    gpus: list[str]
    compute_capability: str
    system_libraries: bool  # its torch wheels use JetPack's CUDA libraries, not nvidia-* wheels
    wheels: list[JetsonWheel]
    source: str
    verified: bool
    notes: str = ""


class ArchDriver(msgspec.Struct, frozen=True):
    """The oldest driver that supports a GPU architecture at all."""

    architecture: str
    compute_capabilities: list[str]
    min_driver: str
    branch: str
    source: str
    verified: bool
    notes: str = ""


class SonameTable(msgspec.Struct, frozen=True):
    """Soname majors of the CUDA libraries the wheels of one CUDA major load."""

    cuda_major: int
    libraries: dict[str, str]
    source: str
    verified: bool
    notes: str = ""


class _JetsonFile(msgspec.Struct, frozen=True):
    schema_version: int
    updated: str
    platforms: list[JetsonPlatform]


class _GpuDriversFile(msgspec.Struct, frozen=True):
    schema_version: int
    updated: str
    architectures: list[ArchDriver]


class _SonamesFile(msgspec.Struct, frozen=True):
    schema_version: int
    updated: str
    majors: list[SonameTable]


class Platforms:
    """Lookups over the three data files."""

    def __init__(
        self, jetson: _JetsonFile, drivers: _GpuDriversFile, sonames: _SonamesFile
    ) -> None:
        self.jetson: list[JetsonPlatform] = list(jetson.platforms)
        self.arch_drivers: list[ArchDriver] = list(drivers.architectures)
        self.sonames: dict[int, SonameTable] = {t.cuda_major: t for t in sonames.majors}

    def jetson_platforms(self, cc: str) -> list[JetsonPlatform]:
        """The JetPack releases for a Jetson GPU of compute capability `cc`, newest first."""
        wanted = format_cc(parse_cc(cc))
        found = [p for p in self.jetson if p.compute_capability == wanted]
        return list(reversed(found))

    def is_jetson(self, cc: str | None) -> bool:
        """Whether `cc` is an integrated Jetson GPU (Orin 8.7, Thor 11.0)."""
        return cc is not None and bool(self.jetson_platforms(cc))

    def arch_driver(self, cc: str) -> ArchDriver | None:
        """The minimum driver of the architecture of compute capability `cc`, if one is known."""
        wanted = format_cc(parse_cc(cc))
        return next((a for a in self.arch_drivers if wanted in a.compute_capabilities), None)

    def soname_major(self, cuda_major: int, family: str) -> str | None:
        """The soname major of `family` that wheels of CUDA `cuda_major` load, if known."""
        table = self.sonames.get(cuda_major)
        return table.libraries.get(family) if table is not None else None


def jetson_wheels_text(platforms: list[JetsonPlatform]) -> str | None:
    """'NVIDIA's Jetson wheels for JetPack 6.1/6.2 (CUDA 12.6): pip install ...' for a fix."""
    parts: list[str] = []
    for platform in platforms:
        wheels = sorted(platform.wheels, key=lambda w: not w.verified)
        if not wheels:
            continue
        wheel = wheels[0]
        releases = ", ".join(wheel.releases)
        parts.append(
            f"JetPack {platform.jetpack} (CUDA {platform.cuda}): {wheel.publisher} wheels "
            f"with {', '.join(wheel.arch_list)} (torch {releases}): `{wheel.install}`"
        )
    return "; ".join(parts) or None


@functools.cache
def load_platforms() -> Platforms:
    """The platform knowledge, read from the package's data files once and cached."""
    return Platforms(
        package_data("torchrig.compat", "jetson.json", _JetsonFile, schema_version=SCHEMA_VERSION),
        package_data(
            "torchrig.compat", "gpu_drivers.json", _GpuDriversFile, schema_version=SCHEMA_VERSION
        ),
        package_data(
            "torchrig.compat", "sonames.json", _SonamesFile, schema_version=SCHEMA_VERSION
        ),
    )
