"""What one image is, validated against the compat knowledge base before anything is rendered.

`resolve_spec` turns user input (torch 2.9.1 or 2.9, CUDA 12.8, a flavour, a Python,
the cluster's driver floor) into an `ImageSpec`, or refuses with the reason and the
nearest valid choices. The rules:

- the torch release and patch must be known, and the release must publish a wheel
  for that CUDA (variant cuXY);
- `--driver-floor` is the oldest driver on the nodes the image must run on, and it
  must support the CUDA runtime *fully* (the toolkit's minimum driver), not merely
  under minor-version compatibility: minor-version compatibility forbids PTX JIT,
  which is what runs a build on GPUs it has no SASS for, and what torch.compile's
  Triton kernels need. A bare branch (`570`) means any driver of that branch, so it
  meets 570.26; a full version (`570.26.0`) is compared exactly;
- variants PyTorch marks experimental need `allow_experimental=True`.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Literal, get_args

from torchrig.compat import load_kb, parse_driver, parse_torch_version
from torchrig.compat.kb import KnowledgeBase
from torchrig.compat.model import DriverRequirement, TorchRelease, VariantInfo, VariantStatus
from torchrig.compat.versions import compare_driver, parse_cuda, variant_cuda
from torchrig.errors import UsageError
from torchrig.image.data_files import ImageData, load_image_data

Flavour = Literal["runtime", "dev", "serve"]
BaseKind = Literal["base", "runtime", "cudnn-runtime"]
PythonSource = Literal["auto", "distro", "uv"]
FLAVOURS: tuple[Flavour, ...] = get_args(Flavour)
BASE_KINDS: tuple[BaseKind, ...] = get_args(BaseKind)
PYTHON_SOURCES: tuple[PythonSource, ...] = get_args(PythonSource)
CPU = "cpu"  # the --cuda value (and wheel variant) of torch's CPU-only build
CPU_INDEX_URL = "https://download.pytorch.org/whl/cpu"
# A loose image reference check for --base (the strict grammar is in tags.py).
_BASE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/:@-]*$")


@dataclasses.dataclass(frozen=True)
class ImageSpec:
    """One validated image: torch build, CUDA (or `cpu`), flavour, Python, base and driver floor.

    A CPU image has `variant == cuda == "cpu"`, no CUDA patch and no driver requirement.
    """

    torch_version: str
    release: str
    variant: str
    cuda: str
    cuda_patch: str
    status: VariantStatus
    flavour: Flavour
    python: str
    with_compiler: bool
    base_image: str
    base_verified: bool
    min_driver: str | None
    driver_floor: str | None
    index_url: str
    cudnn: str | None
    nccl: str | None
    pypi_default: bool = False
    python_source: PythonSource = "auto"

    @property
    def is_cpu(self) -> bool:
        """Whether this is the CPU variant (torch's +cpu wheel, no CUDA base, no driver)."""
        return self.variant == CPU

    @property
    def torch_pin(self) -> str:
        """The exact requirement of the torch wheel: torch==2.9.1+cu128, torch==2.13.0+cpu.

        The variant PyPI publishes (the release's default) is pinned without the local label
        (torch==2.14.1): PyPI's wheel and the CUDA index's +cu130 are the same build, and
        the pin then matches either, so a plain PyPI mirror can serve the image.
        """
        if self.pypi_default:
            return f"torch=={self.torch_version}"
        return f"torch=={self.torch_version}+{self.variant}"

    @property
    def torch_label(self) -> str:
        """torch's version with its variant: 2.9.1+cu128."""
        return f"{self.torch_version}+{self.variant}"

    @property
    def accelerator_label(self) -> str:
        """The tag part naming the accelerator: cuda12.8, or cpu."""
        return CPU if self.is_cpu else f"cuda{self.cuda}"

    @property
    def uses_distro_python(self) -> bool:
        """Whether Python comes from the base's distribution rather than the pinned uv installer.

        `auto` means the distribution's when the Python is the default base's (3.12 on
        Ubuntu 24.04); for another base (Debian 12 has 3.11, Debian 13 has 3.13) say
        `distro` explicitly.
        """
        if self.python_source == "auto":
            return self.python == load_image_data().distro_python
        return self.python_source == "distro"

    @property
    def compiler(self) -> bool:
        """Whether the image has a C/C++ compiler (dev always; runtime/serve when asked)."""
        return self.with_compiler or self.flavour == "dev"


def _cuda_text(cuda: tuple[int, int]) -> str:
    return f"{cuda[0]}.{cuda[1]}"


def _variant_label(info: VariantInfo) -> str:
    return info.variant if info.status == "stable" else f"{info.variant} ({info.status})"


def _nearest(rel: TorchRelease, wanted: tuple[int, int]) -> list[VariantInfo]:
    """The release's variants, nearest CUDA first (same major before another major)."""

    def distance(info: VariantInfo) -> tuple[int, int, int]:
        have = parse_cuda(info.cuda)
        return (
            have[0] != wanted[0],
            abs(have[0] * 100 + have[1] - wanted[0] * 100 - wanted[1]),
            -have[1],
        )

    return sorted(rel.variants, key=distance)


def _release(kb: KnowledgeBase, torch: str) -> tuple[TorchRelease, str | None, str | None]:
    build = parse_torch_version(torch)
    rel = kb.release(build.release)
    if rel is None:
        raise UsageError(
            f"torch {build.release} is not in the knowledge base (it knows "
            f"{kb.known_releases_text()}); pick a known release or update torchrig"
        )
    patch = build.version if build.version.count(".") == 2 else None
    if patch is not None and patch not in rel.patches:
        raise UsageError(
            f"torch {patch} is not a known release of {rel.release} (known: "
            f"{', '.join(rel.patches)}); use one of those or just --torch {rel.release}"
        )
    return rel, patch, build.variant


def _pick_variant(
    rel: TorchRelease, torch_label: str, cuda: str | None, local: str | None
) -> VariantInfo:
    wanted = parse_cuda(cuda) if cuda is not None else None
    if local is not None:
        local_cuda = variant_cuda(local)
        from_local = parse_cuda(local_cuda) if local_cuda is not None else None
        if from_local is None or (wanted is not None and wanted != from_local):
            raise UsageError(
                f"--torch {torch_label}+{local} does not name a CUDA build matching --cuda "
                f"{cuda}; give the CUDA once, as --cuda X.Y"
            )
        wanted = from_local
    if wanted is None:
        info = rel.variant(rel.pypi_default)
    else:
        info = rel.variant(f"cu{wanted[0]}{wanted[1]}")
        if info is None:
            near = _nearest(rel, wanted)
            stable = [v for v in near if v.status != "experimental"]
            hint = f"nearest: {near[0].cuda}"
            if near[0].status == "experimental":
                hint += " (experimental: needs --allow-experimental)"
                if stable:
                    hint += f"; nearest stable: {stable[0].cuda}"
            raise UsageError(
                f"torch {torch_label} has no CUDA {_cuda_text(wanted)} build: it has "
                f"{', '.join(_variant_label(v) for v in rel.variants)}; {hint}"
            )
    if info is None:  # pragma: no cover - the KB guarantees the PyPI default exists
        raise UsageError(f"torch {rel.release} has no default variant in the knowledge base")
    return info


def floor_meets(floor: str, required: str) -> bool:
    """Whether driver floor `floor` fully supports a toolkit needing `required` (see module)."""
    parts = parse_driver(floor)
    if len(parts) == 1:
        return parts[0] >= parse_driver(required)[0]
    return compare_driver(floor, required) >= 0


def _driver_refusal(
    kb: KnowledgeBase, rel: TorchRelease, torch: str, info: VariantInfo, floor: str
) -> str:
    req = _requirement(kb, info)
    major = parse_cuda(info.cuda)[0]
    compat_floor = kb.minor_compat_floors.get(major, req.minor_compat_floor)
    fits = [
        v
        for v in _nearest(rel, parse_cuda(info.cuda))
        if floor_meets(floor, _requirement(kb, v).min_driver)
    ]
    head = (
        f"torch {torch} with CUDA {info.cuda} needs driver >= {req.min_driver} for the full "
        f"feature set (R{compat_floor.split('.')[0]} is the floor of any CUDA {major}.x runtime)"
        f", and --driver-floor is {floor}"
    )
    if floor_meets(floor, compat_floor):
        head += (
            f"; driver {floor} runs CUDA {info.cuda} only under minor-version compatibility "
            "(no PTX JIT, so GPUs the build has no SASS for cannot run it, and calls that need "
            "the newer driver fail)"
        )
    if fits:
        choices = ", ".join(
            f"{v.cuda} ({_requirement(kb, v).min_driver}"
            + (", experimental" if v.status == "experimental" else "")
            + ")"
            for v in fits
        )
        return f"{head}; with driver {floor} use CUDA {choices}"
    oldest = min(rel.variants, key=lambda v: parse_cuda(v.cuda))
    oldest_req = _requirement(kb, oldest)
    return (
        f"{head}; driver {floor} fully runs no torch {torch} build: the oldest, {oldest.variant} "
        f"(CUDA {oldest.cuda}), needs {oldest_req.min_driver}; raise --driver-floor to >= "
        f"{oldest_req.min_driver} (CUDA {oldest.cuda}) or >= {req.min_driver} (CUDA {info.cuda})"
    )


def _requirement(kb: KnowledgeBase, info: VariantInfo) -> DriverRequirement:
    req = kb.driver_requirement(info.cuda)
    if req is None:  # pragma: no cover - load_kb() checks every variant has one
        raise UsageError(f"CUDA {info.cuda} has no driver requirement in the knowledge base")
    return req


def resolve_spec(
    *,
    torch: str,
    cuda: str | None = None,
    flavour: str = "runtime",
    python: str | None = None,
    driver_floor: str | None = None,
    with_compiler: bool = False,
    base: str | None = None,
    base_kind: str = "base",
    allow_experimental: bool = False,
    python_source: str = "auto",
) -> ImageSpec:
    """Validate one image against the knowledge base; refuse with the reason and nearest choices.

    `torch` is a release (2.9: its newest patch) or a version (2.9.1, or 2.9.1+cu128);
    `cuda` is X.Y (default: the variant PyPI's torch wheel has for that release) or `cpu`.
    """
    if flavour not in FLAVOURS:
        raise UsageError(f"unknown flavour {flavour!r}; use one of {', '.join(FLAVOURS)}")
    if base_kind not in BASE_KINDS:
        raise UsageError(f"unknown base kind {base_kind!r}; use one of {', '.join(BASE_KINDS)}")
    if python_source not in PYTHON_SOURCES:
        raise UsageError(
            f"unknown Python source {python_source!r}; use one of {', '.join(PYTHON_SOURCES)}"
        )
    if base is not None and not _BASE_RE.match(base):
        raise UsageError(f"--base {base!r} is not an image reference like registry/name:tag")
    data = load_image_data()
    python = python or data.distro_python
    if python not in data.pythons:
        raise UsageError(
            f"Python {python} is not offered; torch wheels exist for {', '.join(data.pythons)}"
        )
    kb = load_kb()
    rel, patch, local = _release(kb, torch)
    common: dict[str, Any] = {
        "release": rel.release,
        "flavour": flavour,
        "python": python,
        "with_compiler": with_compiler,
        "driver_floor": driver_floor,
        "python_source": python_source,
    }
    if (cuda or "").lower() == CPU or local == CPU:
        return _cpu_spec(
            rel, patch=patch, cuda=cuda, local=local, base=base, data=data, common=common
        )
    info = _pick_variant(rel, patch or rel.release, cuda, local)
    version = patch or info.latest_patch
    if version not in info.patches:
        raise UsageError(
            f"torch {version} has no {info.variant} build (it exists for "
            f"{', '.join(info.patches)}); use --torch {info.latest_patch}"
        )
    req = _requirement(kb, info)
    if driver_floor is not None and not floor_meets(driver_floor, req.min_driver):
        raise UsageError(_driver_refusal(kb, rel, version, info, driver_floor))
    if info.status == "experimental" and not allow_experimental:
        stable = [v for v in _nearest(rel, parse_cuda(info.cuda)) if v.status != "experimental"]
        instead = f", or use CUDA {stable[0].cuda} ({stable[0].status})" if stable else ""
        raise UsageError(
            f"torch {version}'s {info.variant} (CUDA {info.cuda}) build is experimental "
            f"upstream; pass --allow-experimental to build it anyway{instead}"
        )
    cuda_patch = data.cuda_patch(info.cuda)
    if cuda_patch is None:
        raise UsageError(
            f"no nvidia/cuda base image is recorded for CUDA {info.cuda}; pass --base IMAGE"
        )
    base_image = base or f"{data.base_repository}:{cuda_patch.patch}-{base_kind}-{data.base_os}"
    return ImageSpec(
        torch_version=version,
        variant=info.variant,
        cuda=info.cuda,
        cuda_patch=cuda_patch.patch,
        status=info.status,
        base_image=base_image,
        base_verified=base is not None or cuda_patch.verified,
        min_driver=req.min_driver,
        index_url=info.index_url,
        cudnn=info.cudnn,
        nccl=info.nccl,
        pypi_default=info.pypi_default,
        **common,
    )


def _cpu_spec(
    rel: TorchRelease,
    *,
    patch: str | None,
    cuda: str | None,
    local: str | None,
    base: str | None,
    data: ImageData,
    common: dict[str, Any],
) -> ImageSpec:
    """The CPU variant: torch's +cpu wheel on a plain OS base, the same pins otherwise."""
    if local is not None and local != CPU:
        raise UsageError(
            f"--torch {patch}+{local} is a CUDA build but --cuda is {cuda}; give one of them"
        )
    if common["driver_floor"] is not None:
        raise UsageError(
            "--driver-floor applies to CUDA images only; a CPU image runs on any driver (drop "
            "the option, or give --cuda X.Y for a GPU image)"
        )
    return ImageSpec(
        torch_version=patch or rel.latest_patch,
        variant=CPU,
        cuda=CPU,
        cuda_patch="",
        status="stable",
        base_image=base or data.cpu_base,
        base_verified=base is not None or data.cpu_base_verified,
        min_driver=None,
        index_url=CPU_INDEX_URL,
        cudnn=None,
        nccl=None,
        **common,
    )
