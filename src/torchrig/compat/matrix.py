"""The release x variant matrix: one row per wheel with what it runs on."""

from __future__ import annotations

import msgspec

from torchrig.compat.advise import release_or_raise
from torchrig.compat.kb import load_kb
from torchrig.compat.model import VariantStatus
from torchrig.compat.rules import arch_support


class MatrixRow(msgspec.Struct, frozen=True):
    """One (release, variant) with its CUDA, architectures, libraries, driver and GPUs."""

    release: str
    variant: str
    torch_version: str
    cuda: str
    sass: list[str]
    ptx: list[str]
    cudnn: str | None
    nccl: str | None
    min_driver: str | None
    minor_compat_floor: str | None
    status: VariantStatus
    pypi_default: bool
    gpus: list[str]
    index_url: str
    verified: bool
    source: str


def matrix(release: str | None = None) -> list[MatrixRow]:
    """Every (release, variant) row, newest release first; only `release` if given."""
    kb = load_kb()
    releases = [release_or_raise(kb, release)] if release else kb.releases
    rows = []
    for rel in reversed(releases):
        for info in rel.variants:
            req = kb.driver_requirement(info.cuda)
            gpus = [
                gpu.name
                for gpu in kb.gpus
                if arch_support(info.arch_list, gpu.compute_capability).runs
            ]
            rows.append(
                MatrixRow(
                    release=rel.release,
                    variant=info.variant,
                    torch_version=info.latest_patch,
                    cuda=info.cuda,
                    sass=info.sass,
                    ptx=info.ptx,
                    cudnn=info.cudnn,
                    nccl=info.nccl,
                    min_driver=req.min_driver if req else None,
                    minor_compat_floor=req.minor_compat_floor if req else None,
                    status=info.status,
                    pypi_default=info.pypi_default,
                    gpus=gpus,
                    index_url=info.index_url,
                    verified=info.verified,
                    source=info.source,
                )
            )
    return rows
