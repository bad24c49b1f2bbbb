"""The two rules every compatibility answer rests on: architectures and drivers.

`arch_support` decides whether a build's compiled code (SASS and PTX) can run
on a compute capability; `driver_support` decides whether a driver can run a
CUDA runtime. Both read their data from the knowledge base.
"""

from __future__ import annotations

from torchrig.compat.kb import KnowledgeBase, load_kb
from torchrig.compat.model import ArchSupport, DriverStatus, DriverSupport
from torchrig.compat.versions import (
    compare_driver,
    format_cc,
    parse_cuda,
    parse_driver,
    sm_name,
    split_arch,
)
from torchrig.errors import UnknownVersionError

CC = tuple[int, int]
_Arch = tuple[CC, str]  # (compute capability, suffix "" / "a" / "f")


def parse_arch_list(arch_list: list[str]) -> tuple[list[_Arch], list[_Arch]]:
    """Split `get_arch_list()` entries (`sm_80`, `compute_90`, `8.0`, `8.0+PTX`) into SASS, PTX."""
    sass: list[_Arch] = []
    ptx: list[_Arch] = []
    for entry in arch_list:
        text = entry.strip().lower()
        if text.endswith("+ptx"):
            arch = split_arch(text[: -len("+ptx")])
            sass.append(arch)
            ptx.append(arch)
        elif text.startswith("compute_"):
            ptx.append(split_arch(text))
        elif text.startswith("sm_") or text[:1].isdigit():
            sass.append(split_arch(text))
        else:
            raise UnknownVersionError(
                f"cannot parse architecture {entry!r}: expected sm_XY, compute_XY, X.Y or X.Y+PTX"
            )
    return sass, ptx


def sass_runs_on(code: CC, device: CC, suffix: str = "", kb: KnowledgeBase | None = None) -> bool:
    """Whether SASS built for `code` runs on a device of compute capability `device`."""
    if suffix == "a":
        return code == device
    rule = (kb or load_kb()).sass_rules.get(code)
    if rule is not None and rule.kind == "set":
        return format_cc(device) in rule.devices
    excluded = rule.exclude if rule is not None else []
    return device[0] == code[0] and device[1] >= code[1] and format_cc(device) not in excluded


def ptx_runs_on(code: CC, device: CC, suffix: str = "") -> bool:
    """Whether PTX for `code` can be JIT-compiled for `device` (a driver permitting)."""
    return code == device if suffix == "a" else device >= code


def _label(arch: _Arch, prefix: str) -> str:
    return sm_name(arch[0], prefix) + arch[1]


def arch_support(arch_list: list[str], cc: str, *, ptx_jit_allowed: bool = True) -> ArchSupport:
    """Whether code compiled for `arch_list` runs on compute capability `cc`, and through what.

    SASS for the exact capability is best, then SASS of the same major that the
    device accepts, then PTX that the driver JIT-compiles. Under CUDA minor-version
    compatibility the driver cannot JIT newer PTX, so pass `ptx_jit_allowed=False`.
    """
    kb = load_kb()
    device, _ = split_arch(cc)
    sass, ptx = parse_arch_list(arch_list)
    wanted = sm_name(device)
    for arch in sass:
        if arch[0] == device:
            return ArchSupport(
                runs=True,
                how="sass-exact",
                via=_label(arch, "sm"),
                message=f"the build has {_label(arch, 'sm')} SASS for compute capability "
                f"{format_cc(device)}",
            )
    compatible = [arch for arch in sass if sass_runs_on(arch[0], device, arch[1], kb)]
    if compatible:
        best = max(compatible)
        return ArchSupport(
            runs=True,
            how="sass-compatible",
            via=_label(best, "sm"),
            message=f"no {wanted} in the build, but its {_label(best, 'sm')} SASS runs on "
            f"compute capability {format_cc(device)} (same major, newer minor)",
        )
    jittable = [arch for arch in ptx if ptx_runs_on(arch[0], device, arch[1])]
    have = ", ".join([_label(a, "sm") for a in sass] + [_label(a, "compute") for a in ptx])
    if jittable:
        best = max(jittable)
        via = _label(best, "compute")
        if ptx_jit_allowed:
            return ArchSupport(
                runs=True,
                how="ptx-jit",
                via=via,
                message=f"no SASS for {wanted}; the driver JIT-compiles the build's {via} PTX "
                "(slow first launch)",
            )
        return ArchSupport(
            runs=False,
            how=None,
            via=None,
            message=f"no SASS for {wanted}, and the build's {via} PTX cannot be JIT-compiled "
            "under CUDA minor-version compatibility (the driver is older than the toolkit): "
            "'no kernel image is available for execution on the device'",
        )
    return ArchSupport(
        runs=False,
        how=None,
        via=None,
        message=f"no kernel image for compute capability {format_cc(device)}: the build needs "
        f"{wanted} SASS (or PTX it can JIT) but has only {have or 'nothing'}; CUDA fails with "
        "'no kernel image is available for execution on the device'",
    )


def _status(kb: KnowledgeBase, cuda: str, driver: str) -> DriverStatus:
    req = kb.driver_requirement(cuda)
    if req is None:
        return "unknown"
    if compare_driver(driver, req.min_driver) >= 0:
        return "ok"
    if compare_driver(driver, req.minor_compat_floor) >= 0:
        return "minor-compat"
    return "insufficient"


def driver_status(cuda: str, driver: str) -> DriverStatus:
    """Only the status of `driver_support` (no messages)."""
    parse_driver(driver)
    return _status(load_kb(), cuda, driver)


def _alternative(kb: KnowledgeBase, cuda: str, driver: str) -> str | None:
    """The variant tag of an older-CUDA build this driver can run instead, if any."""
    current = parse_cuda(cuda)
    by_cuda: dict[tuple[int, int], str] = {}
    for info in kb.variants:
        by_cuda.setdefault(parse_cuda(info.cuda), info.variant)
    older = sorted(version for version in by_cuda if version < current)
    status = {version: _status(kb, f"{version[0]}.{version[1]}", driver) for version in older}
    full = [version for version in older if status[version] == "ok"]
    if full:
        return by_cuda[full[-1]]
    compat = [version for version in older if status[version] == "minor-compat"]
    return by_cuda[compat[0]] if compat else None


def driver_support(cuda: str, driver: str) -> DriverSupport:
    """Whether `driver` runs a CUDA `cuda` runtime fully, under minor-version compat, or not."""
    parse_driver(driver)
    major = parse_cuda(cuda)[0]
    kb = load_kb()
    req = kb.driver_requirement(cuda)
    floor = req.minor_compat_floor if req else kb.minor_compat_floors.get(major)
    min_driver = req.min_driver if req else None
    if floor is not None and compare_driver(driver, floor) < 0:
        alt = _alternative(kb, cuda, driver)
        upgrade = f"upgrade the driver to >= {min_driver or floor}"
        return DriverSupport(
            status="insufficient",
            cuda=cuda,
            driver=driver,
            min_driver=min_driver,
            floor=floor,
            message=f"driver {driver} is below {floor}, the minimum for any CUDA {major}.x "
            "runtime: CUDA calls fail with 'CUDA driver version is insufficient for CUDA "
            "runtime version' (error 35)",
            fix=f"{upgrade} or install a {alt} build" if alt else upgrade,
        )
    if req is None:
        known = ", ".join(r.cuda for r in kb.driver_requirements)
        return DriverSupport(
            status="unknown",
            cuda=cuda,
            driver=driver,
            min_driver=None,
            floor=floor,
            message=f"unknown: CUDA {cuda} is not in the knowledge base (it knows {known})",
            fix=f"check driver {driver} against CUDA {cuda}'s minimum in NVIDIA's CUDA Toolkit "
            "Release Notes (Table 3); on the machine, `torchrig doctor` compares it with the "
            "CUDA the driver reports",
        )
    if compare_driver(driver, req.min_driver) >= 0:
        return DriverSupport(
            status="ok",
            cuda=cuda,
            driver=driver,
            min_driver=req.min_driver,
            floor=floor,
            message=f"driver {driver} meets CUDA {cuda}'s minimum {req.min_driver}",
            fix=None,
        )
    limits = "; ".join(kb.minor_compat_limits)
    return DriverSupport(
        status="minor-compat",
        cuda=cuda,
        driver=driver,
        min_driver=req.min_driver,
        floor=floor,
        message=f"driver {driver} is below CUDA {cuda}'s minimum {req.min_driver} but not below "
        f"the CUDA {major}.x floor {floor}, so it runs under minor-version compatibility with "
        f"limits: {limits}",
        fix=f"upgrade the driver to >= {req.min_driver} for the full CUDA {cuda} feature set",
    )
