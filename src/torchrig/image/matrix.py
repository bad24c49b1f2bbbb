"""Every valid (torch, CUDA, flavour) image, with its driver floor and the GPUs it covers."""

from __future__ import annotations

import msgspec

from torchrig.compat import matrix as compat_matrix
from torchrig.errors import UsageError
from torchrig.image.spec import FLAVOURS, Flavour, floor_meets


class ImageMatrixRow(msgspec.Struct, frozen=True):
    """One image torchrig can render: newest patch of a release, one CUDA variant, one flavour."""

    torch: str
    release: str
    cuda: str
    variant: str
    flavour: Flavour
    status: str
    min_driver: str
    minor_compat_floor: str | None
    needs_flag: str | None
    gpus: list[str]


def image_matrix(
    *,
    release: str | None = None,
    driver_floor: str | None = None,
    stable_only: bool = False,
    flavours: tuple[Flavour, ...] = FLAVOURS,
) -> list[ImageMatrixRow]:
    """The renderable images, newest release first; filtered by release, driver and status."""
    for flavour in flavours:
        if flavour not in FLAVOURS:
            raise UsageError(f"unknown flavour {flavour!r}; use one of {', '.join(FLAVOURS)}")
    rows = []
    for row in compat_matrix(release):
        if row.min_driver is None:  # pragma: no cover - the KB has a driver for each variant
            continue
        if stable_only and row.status == "experimental":
            continue
        if driver_floor is not None and not floor_meets(driver_floor, row.min_driver):
            continue
        for flavour in flavours:
            rows.append(
                ImageMatrixRow(
                    torch=row.torch_version,
                    release=row.release,
                    cuda=row.cuda,
                    variant=row.variant,
                    flavour=flavour,
                    status=row.status,
                    min_driver=row.min_driver,
                    minor_compat_floor=row.minor_compat_floor,
                    needs_flag="--allow-experimental" if row.status == "experimental" else None,
                    gpus=row.gpus,
                )
            )
    return rows
