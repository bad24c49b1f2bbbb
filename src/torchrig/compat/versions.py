"""Parsing and comparing the version strings the knowledge base deals in.

Torch builds (`2.9.1+cu126`), compute capabilities (`9.0`, `sm_90`) and driver
versions (`570.86.15`) arrive as text from users, NVML and `torch.version`;
each parser here names the expected form when the text does not fit it.
"""

from __future__ import annotations

import re

import msgspec

from torchrig.errors import UnknownVersionError

_TORCH_RE = re.compile(
    r"^(?P<major>\d+)\.(?P<minor>\d+)(?:\.(?P<patch>\d+))?"
    r"(?P<pre>(?:a|b|rc)\d+|\.dev\d+|\.post\d+)*"
    r"(?:\+(?P<local>[A-Za-z0-9.]+))?$"
)
_CUDA_VARIANT_RE = re.compile(r"^cu(?P<digits>\d{3,4})$")
_CC_RE = re.compile(r"^(?:sm_|compute_)?(?P<digits>\d{2,3})(?P<suffix>[af]?)$")
_CC_DOTTED_RE = re.compile(r"^(?P<major>\d{1,2})\.(?P<minor>\d)(?P<suffix>[af]?)$")
_DRIVER_RE = re.compile(r"^\d+(?:\.\d+){0,3}$")
_CUDA_RE = re.compile(r"^(?P<major>\d{1,2})\.(?P<minor>\d{1,2})(?:\.\d+)?$")


class TorchBuild(msgspec.Struct, frozen=True):
    """A parsed torch version: `2.9.1+cu126` -> release 2.9, variant cu126, CUDA 12.6."""

    version: str
    release: str
    variant: str | None
    cuda: str | None


def variant_cuda(variant: str) -> str | None:
    """The CUDA version a wheel variant tag stands for: `cu126` -> `12.6`, `cpu` -> None."""
    match = _CUDA_VARIANT_RE.match(variant)
    if match is None:
        return None
    digits = match.group("digits")
    return f"{int(digits[:-1])}.{digits[-1]}"


def parse_torch_version(text: str) -> TorchBuild:
    """Parse `torch.__version__`-style text; the local tag (`+cu126`) names the wheel variant."""
    cleaned = text.strip()
    match = _TORCH_RE.match(cleaned)
    if match is None:
        raise UnknownVersionError(
            f"cannot parse torch version {text!r}: expected MAJOR.MINOR.PATCH[+VARIANT], "
            "e.g. 2.9.1+cu126 or 2.13.0+cpu"
        )
    release = f"{int(match.group('major'))}.{int(match.group('minor'))}"
    local = match.group("local")
    version = cleaned.split("+", 1)[0]
    variant = local.lower() if local else None
    cuda = variant_cuda(variant) if variant else None
    return TorchBuild(version=version, release=release, variant=variant, cuda=cuda)


def _cc_from_digits(digits: str) -> tuple[int, int]:
    return int(digits[:-1]), int(digits[-1])


def split_arch(text: str) -> tuple[tuple[int, int], str]:
    """Parse a compute capability and keep its suffix: `sm_90a` -> ((9, 0), 'a')."""
    cleaned = text.strip().lower()
    match = _CC_RE.match(cleaned)
    if match is not None:
        return _cc_from_digits(match.group("digits")), match.group("suffix")
    dotted = _CC_DOTTED_RE.match(cleaned)
    if dotted is not None:
        return (int(dotted.group("major")), int(dotted.group("minor"))), dotted.group("suffix")
    raise UnknownVersionError(
        f"cannot parse compute capability {text!r}: expected MAJOR.MINOR like 9.0, "
        "or sm_90 / compute_90 / 90"
    )


def parse_cc(text: str) -> tuple[int, int]:
    """Parse a compute capability: `9.0`, `sm_90`, `90`, `compute_90` -> (9, 0)."""
    cc, _suffix = split_arch(text)
    if cc[0] < 1:
        raise UnknownVersionError(f"compute capability {text!r} has no valid major version")
    return cc


def format_cc(cc: tuple[int, int]) -> str:
    """(9, 0) -> '9.0'."""
    return f"{cc[0]}.{cc[1]}"


def sm_name(cc: tuple[int, int], prefix: str = "sm") -> str:
    """(12, 0) -> 'sm_120'."""
    return f"{prefix}_{cc[0]}{cc[1]}"


def parse_driver(text: str) -> tuple[int, ...]:
    """Parse an NVIDIA driver version into numeric components: `570.86.15` -> (570, 86, 15)."""
    cleaned = text.strip()
    if not _DRIVER_RE.match(cleaned):
        raise UnknownVersionError(
            f"cannot parse driver version {text!r}: expected a dotted number like 570.86.15"
        )
    return tuple(int(part) for part in cleaned.split("."))


def compare_driver(left: str, right: str) -> int:
    """Compare two driver versions numerically per component: -1, 0 or 1."""
    a, b = parse_driver(left), parse_driver(right)
    width = max(len(a), len(b))
    a_padded = a + (0,) * (width - len(a))
    b_padded = b + (0,) * (width - len(b))
    return (a_padded > b_padded) - (a_padded < b_padded)


def parse_cuda(text: str) -> tuple[int, int]:
    """Parse a CUDA toolkit version: `12.8` or `12.8.1` -> (12, 8)."""
    match = _CUDA_RE.match(text.strip())
    if match is None:
        raise UnknownVersionError(
            f"cannot parse CUDA version {text!r}: expected MAJOR.MINOR like 12.8"
        )
    return int(match.group("major")), int(match.group("minor"))


def release_key(release: str) -> tuple[int, ...]:
    """Sort key for `2.10`-style release and `2.10.1`-style version strings."""
    return tuple(int(part) for part in re.findall(r"\d+", release.split("+", 1)[0])[:3])
