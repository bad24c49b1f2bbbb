"""Loading the data files and looking things up in them.

The data files live in `torchrig/compat/data/`; they are read with
importlib.resources on first use and cached, never at import time.
"""

from __future__ import annotations

import functools
import re
from typing import TypeVar

import msgspec

from torchrig.compat.model import (
    DriverRequirement,
    GpuModel,
    PlatformArchs,
    TorchRelease,
    VariantInfo,
    VariantStatus,
)
from torchrig.compat.versions import (
    parse_cuda,
    parse_torch_version,
    release_key,
    split_arch,
)
from torchrig.errors import KnowledgeBaseError
from torchrig.jsondoc import package_data

SCHEMA_VERSION = 1
_T = TypeVar("_T")
_VENDOR_WORDS = frozenset({"nvidia", "geforce", "tesla"})


# ---- the shape of the data files -------------------------------------------------------


class _VariantRecord(msgspec.Struct, frozen=True):
    variant: str
    cuda: str
    sass: list[str]
    ptx: list[str]
    cudnn: str | None
    nccl: str | None
    status: VariantStatus
    patches: list[str] | None
    source: str
    verified: bool
    notes: str = ""
    aarch64: PlatformArchs | None = None


class _ReleaseRecord(msgspec.Struct, frozen=True):
    release: str
    patches: list[str]
    pypi_default: str
    variants: list[_VariantRecord]
    source: str
    verified: bool
    notes: str = ""


class _ReleasesFile(msgspec.Struct, frozen=True):
    schema_version: int
    updated: str
    index_url_pattern: str
    index_url_source: str
    releases: list[_ReleaseRecord]


class _ToolkitRecord(msgspec.Struct, frozen=True):
    cuda: str
    min_driver: str
    source: str
    verified: bool


class _MinorCompatRecord(msgspec.Struct, frozen=True):
    major: int
    floor: str
    source: str
    verified: bool
    notes: str = ""


class _DriversFile(msgspec.Struct, frozen=True):
    schema_version: int
    updated: str
    toolkits: list[_ToolkitRecord]
    minor_compat: list[_MinorCompatRecord]
    minor_compat_limits: list[str]
    minor_compat_limits_source: str


class _GpusFile(msgspec.Struct, frozen=True):
    schema_version: int
    updated: str
    gpus: list[GpuModel]


class SassRule(msgspec.Struct, frozen=True):
    """Which device compute capabilities run SASS built for `code` (data from arch_rules.json)."""

    code: str
    kind: str
    exclude: list[str]
    devices: list[str]
    source: str
    verified: bool
    notes: str = ""


class _ArchRulesFile(msgspec.Struct, frozen=True):
    schema_version: int
    updated: str
    sass_default_source: str
    sass_rules: list[SassRule]
    ptx_source: str


# ---- the knowledge base ----------------------------------------------------------------


def _normalize_gpu_name(name: str) -> list[str]:
    words = re.split(r"[^a-z0-9]+", name.lower())
    return [word for word in words if word and word not in _VENDOR_WORDS]


class KnowledgeBase:
    """Torch releases and variants, CUDA driver requirements, GPU models, SASS rules."""

    def __init__(
        self,
        releases: _ReleasesFile,
        drivers: _DriversFile,
        gpus: _GpusFile,
        rules: _ArchRulesFile,
    ) -> None:
        self._releases = {
            record.release: _build_release(record, releases.index_url_pattern)
            for record in releases.releases
        }
        floors = {record.major: record.floor for record in drivers.minor_compat}
        self._drivers: dict[str, DriverRequirement] = {}
        for toolkit in drivers.toolkits:
            major = parse_cuda(toolkit.cuda)[0]
            if major not in floors:
                raise KnowledgeBaseError(f"no minor-compat floor for CUDA {major}.x")
            self._drivers[toolkit.cuda] = DriverRequirement(
                cuda=toolkit.cuda,
                min_driver=toolkit.min_driver,
                minor_compat_floor=floors[major],
                source=toolkit.source,
                verified=toolkit.verified,
            )
        self.minor_compat_floors: dict[int, str] = floors
        self.minor_compat_limits: list[str] = list(drivers.minor_compat_limits)
        self.gpus: list[GpuModel] = list(gpus.gpus)
        self.sass_rules: dict[tuple[int, int], SassRule] = {
            split_arch(rule.code)[0]: rule for rule in rules.sass_rules
        }
        self.updated: dict[str, str] = {
            "torch_releases": releases.updated,
            "cuda_drivers": drivers.updated,
            "gpus": gpus.updated,
            "arch_rules": rules.updated,
        }
        self._gpu_keys = sorted(
            (
                (_normalize_gpu_name(label), gpu)
                for gpu in self.gpus
                for label in [gpu.name, *gpu.aliases]
            ),
            key=lambda item: -len(item[0]),
        )

    @property
    def releases(self) -> list[TorchRelease]:
        """Every known release, oldest first."""
        return sorted(self._releases.values(), key=lambda rel: release_key(rel.release))

    @property
    def variants(self) -> list[VariantInfo]:
        """Every (release, variant) pair, oldest release first."""
        return [info for rel in self.releases for info in rel.variants]

    @property
    def driver_requirements(self) -> list[DriverRequirement]:
        """Every known CUDA toolkit's driver requirement, oldest toolkit first."""
        return sorted(self._drivers.values(), key=lambda req: parse_cuda(req.cuda))

    def release(self, release: str) -> TorchRelease | None:
        """The release `2.9` (a full version such as `2.9.1+cu126` also works), or None."""
        if release in self._releases:
            return self._releases[release]
        key = release_key(release)
        return self._releases.get(f"{key[0]}.{key[1]}") if len(key) >= 2 else None

    def variant(self, torch_version: str, variant: str) -> VariantInfo | None:
        """The variant `cu126` of the release that `torch_version` (`2.9.1` or `2.9`) belongs to."""
        rel = self.release(torch_version)
        return rel.variant(variant.lower()) if rel is not None else None

    def gpu(self, name: str) -> GpuModel | None:
        """The GPU model for an NVML name or alias ('NVIDIA H100 80GB HBM3' -> H100), or None."""
        words = _normalize_gpu_name(name)
        if not words:
            return None
        for key, gpu in self._gpu_keys:
            if key == words:
                return gpu
        for key, gpu in self._gpu_keys:
            if words[: len(key)] == key:
                return gpu
        return None

    def similar_gpus(self, name: str) -> list[GpuModel]:
        """Known models whose names share the words of `name` ('RTX PRO 6000' -> both RTX
        PRO 6000 Blackwell editions), for a name `gpu` does not resolve."""
        words = set(_normalize_gpu_name(name))
        if not words:
            return []
        found: dict[str, GpuModel] = {}
        for key, gpu in self._gpu_keys:
            if words <= set(key):
                found.setdefault(gpu.name, gpu)
        return list(found.values())

    def unknown_gpu_text(self, name: str) -> str:
        """What to say of a GPU name `gpu` does not resolve: the models it could mean,
        else every known one."""
        similar = self.similar_gpus(name)
        if similar:
            return f"unknown GPU {name!r}; did you mean {', '.join(g.name for g in similar)}?"
        return f"unknown GPU {name!r}; known GPUs: {', '.join(g.name for g in self.gpus)}"

    def gpus_with_cc(self, cc: tuple[int, int]) -> list[GpuModel]:
        """The known GPU models of compute capability `cc`."""
        return [gpu for gpu in self.gpus if split_arch(gpu.compute_capability)[0] == cc]

    def driver_requirement(self, cuda: str) -> DriverRequirement | None:
        """The driver requirement of CUDA `12.8` (or `12.8.1`), or None when unknown."""
        major, minor = parse_cuda(cuda)
        return self._drivers.get(f"{major}.{minor}")

    def known_releases_text(self) -> str:
        """'2.9–2.14' for messages about releases the knowledge base lacks."""
        names = [rel.release for rel in self.releases]
        return f"{names[0]}–{names[-1]}"


def _build_release(record: _ReleaseRecord, pattern: str) -> TorchRelease:
    variants = []
    for rec in record.variants:
        variants.append(
            VariantInfo(
                release=record.release,
                variant=rec.variant,
                cuda=rec.cuda,
                sass=list(rec.sass),
                ptx=list(rec.ptx),
                cudnn=rec.cudnn,
                nccl=rec.nccl,
                status=rec.status,
                pypi_default=rec.variant == record.pypi_default,
                patches=list(rec.patches if rec.patches is not None else record.patches),
                index_url=pattern.format(variant=rec.variant),
                source=rec.source,
                verified=rec.verified,
                notes=rec.notes,
                aarch64=rec.aarch64,
            )
        )
    for patch in record.patches:
        if parse_torch_version(patch).release != record.release:
            raise KnowledgeBaseError(f"patch {patch} is not of release {record.release}")
    return TorchRelease(
        release=record.release,
        patches=sorted(record.patches, key=release_key),
        pypi_default=record.pypi_default,
        variants=variants,
        source=record.source,
        verified=record.verified,
        notes=record.notes,
    )


def _decode(name: str, kind: type[_T]) -> _T:
    return package_data("torchrig.compat", name, kind, schema_version=SCHEMA_VERSION)


@functools.cache
def load_kb() -> KnowledgeBase:
    """The knowledge base, read from the package's data files once and cached."""
    kb = KnowledgeBase(
        _decode("torch_releases.json", _ReleasesFile),
        _decode("cuda_drivers.json", _DriversFile),
        _decode("gpus.json", _GpusFile),
        _decode("arch_rules.json", _ArchRulesFile),
    )
    for info in kb.variants:
        if kb.driver_requirement(info.cuda) is None:
            raise KnowledgeBaseError(f"torch {info.release} {info.variant}: no driver for CUDA")
    return kb
