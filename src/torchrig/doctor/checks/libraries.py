"""Checks of the CUDA libraries: cuDNN and NCCL versions, shadowing, forward compatibility."""

from __future__ import annotations

import re
from pathlib import PurePosixPath

from torchrig import compat
from torchrig.compat.platforms import load_platforms
from torchrig.compat.versions import parse_cuda
from torchrig.doctor.context import (
    jetpack_system_libraries,
    result,
    skip,
    visible_gpus,
    wheel_install,
)
from torchrig.doctor.cuda_errors import explain
from torchrig.doctor.model import CheckContext, CheckResult
from torchrig.errors import UnknownVersionError
from torchrig.facts.libraries import LIBRARY_FAMILIES, library_family
from torchrig.facts.model import LoadedLibrary, Snapshot
from torchrig.facts.torch_build import cudnn_text, decode_cudnn_version

# Families the torch wheel ships itself (nvidia-* wheels); a copy from elsewhere shadows
# it. Only libcuda, the driver's own library, must come from the system.
WHEEL_FAMILIES = frozenset(LIBRARY_FAMILIES) - {"libcuda"}


def _expected(snapshot: Snapshot) -> compat.VariantInfo | None:
    torch = snapshot.torch
    if torch is None:
        return None
    try:
        parsed = compat.parse_torch_version(torch.version)
    except UnknownVersionError:
        return None
    if parsed.variant is None:
        return None
    return compat.load_kb().variant(parsed.version, parsed.variant)


def _major(text: str) -> str:
    return text.split(".", maxsplit=1)[0]


def check_cudnn(ctx: CheckContext) -> list[CheckResult]:
    snap = ctx.snapshot
    torch = snap.torch
    if torch is None or torch.cuda is None:
        return skip("libs.cudnn", "not a CUDA build of torch")
    if torch.build_flags.get("USE_CUDNN", "ON").upper() in {"OFF", "0"}:
        return [
            result(
                "libs.cudnn",
                "warn",
                "this torch build was compiled without cuDNN: convolutions and cuDNN "
                "attention use slower kernels",
                "install an official torch wheel (they bundle cuDNN)",
            )
        ]
    if torch.cudnn_error:
        known = explain(torch.cudnn_error)
        return [
            result(
                "libs.cudnn",
                "fail",
                f"cuDNN cannot be used: {torch.cudnn_error}",
                known.fix
                if known
                else "remove other cuDNN copies from LD_LIBRARY_PATH so the wheel's own loads",
            )
        ]
    runtime = torch.cudnn_version
    if runtime is None:
        return [
            result(
                "libs.cudnn",
                "warn" if snap.gpus else "skip",
                "cuDNN could not be loaded (torch.backends.cudnn.version() is None)",
                "reinstall torch with its nvidia-cudnn dependency (pip install --force-reinstall "
                "torch==<version> --index-url <its CUDA index>)",
            )
        ]
    loaded = cudnn_text(runtime)
    compiled = torch.cudnn_compile_version
    if (
        compiled is not None
        and decode_cudnn_version(compiled)[0] != decode_cudnn_version(runtime)[0]
    ):
        return [_cudnn_major_mismatch(snap, loaded, cudnn_text(compiled))]
    if compiled is not None and runtime < compiled:
        return [
            result(
                "libs.cudnn",
                "warn",
                f"cuDNN {loaded} is older than the {cudnn_text(compiled)} torch was built with",
                "let the wheel's nvidia-cudnn package load (check LD_LIBRARY_PATH), or upgrade it",
            )
        ]
    expected = _expected(snap)
    if expected is not None and expected.cudnn and _major(expected.cudnn) != _major(loaded):
        return [
            result(
                "libs.cudnn",
                "warn",
                f"cuDNN {loaded} is loaded; this build's wheels ship cuDNN {expected.cudnn}",
                "let the wheel's nvidia-cudnn package load (check LD_LIBRARY_PATH)",
            )
        ]
    shipped = f" (wheel ships {expected.cudnn})" if expected and expected.cudnn else ""
    return [result("libs.cudnn", "ok", f"cuDNN {loaded} loaded{shipped}")]


def _cudnn_major_mismatch(snap: Snapshot, loaded: str, compiled: str) -> CheckResult:
    message = (
        f"cuDNN {loaded} is loaded but torch was built against cuDNN {compiled}: the major "
        "versions differ"
    )
    for lib in snap.libraries:
        entry = preloaded(snap, lib) if lib.name == "libcudnn" else None
        if entry is not None:
            return result(
                "libs.cudnn",
                "fail",
                f"{message}; LD_PRELOAD brings it in ({entry})",
                f"remove {entry} from LD_PRELOAD so the wheel's own cuDNN loads",
                cause="libs.shadowing",
            )
    return result(
        "libs.cudnn",
        "fail",
        message,
        "remove the other cuDNN from LD_LIBRARY_PATH so the wheel's own loads",
    )


def _version_tuple(text: str) -> tuple[int, ...]:
    parts: list[int] = []
    for piece in text.split("."):
        if not piece.isdigit():
            break
        parts.append(int(piece))
    return tuple(parts)


def check_nccl(ctx: CheckContext) -> list[CheckResult]:
    snap = ctx.snapshot
    torch = snap.torch
    if torch is None or torch.cuda is None:
        return skip("libs.nccl", "not a CUDA build of torch")
    if snap.os.system != "Linux":
        return skip("libs.nccl", "NCCL is Linux-only")
    several = len(visible_gpus(snap)) > 1
    if torch.nccl_version is None:
        return [
            result(
                "libs.nccl",
                "warn" if several else "ok",
                "NCCL is not available in this build"
                + ("; multi-GPU collectives will fail" if several else " (one GPU: not needed)"),
                "install an official Linux torch wheel (they bundle NCCL)" if several else None,
            )
        ]
    expected = _expected(snap)
    if expected is not None and expected.nccl:
        have, want = _version_tuple(torch.nccl_version), _version_tuple(expected.nccl)
        if have[:1] != want[:1] or have < want:
            return [
                result(
                    "libs.nccl",
                    "warn",
                    f"NCCL {torch.nccl_version} is loaded; this build's wheels ship NCCL "
                    f"{expected.nccl}",
                    "let the wheel's nvidia-nccl package load (remove other NCCLs from "
                    "LD_LIBRARY_PATH / LD_PRELOAD)",
                )
            ]
        return [
            result(
                "libs.nccl",
                "ok",
                f"NCCL {torch.nccl_version} (wheel ships {expected.nccl})",
            )
        ]
    return [result("libs.nccl", "ok", f"NCCL {torch.nccl_version}")]


def _preload_entries(snap: Snapshot) -> list[str]:
    """LD_PRELOAD's entries (the loader splits on colons and whitespace)."""
    return [e for e in re.split(r"[:\s]+", snap.env.get("LD_PRELOAD", "")) if e]


def preloaded(snap: Snapshot, lib: LoadedLibrary) -> str | None:
    """The LD_PRELOAD entry that brought `lib` into the process, if one did."""
    path = PurePosixPath(lib.path)
    for entry in _preload_entries(snap):
        named = PurePosixPath(entry)
        found = library_family(named.name)
        same_dir = "/" not in entry or named.parent == path.parent
        if entry == lib.path or (found is not None and found[0] == lib.name and same_dir):
            return entry
    return None


def _soname_major(version: str | None) -> str | None:
    return version.split(".", 1)[0] if version else None


def expected_major(snap: Snapshot, family: str) -> str | None:
    """The soname major the wheel loads for `family`: what it did load, else the build's
    cuDNN major, else the soname table for the build's CUDA major."""
    for lib in snap.libraries:
        if lib.name == family and lib.from_wheel and lib.version:
            return _soname_major(lib.version)
    torch = snap.torch
    if family == "libcudnn" and torch is not None and torch.cudnn_compile_version:
        return str(decode_cudnn_version(torch.cudnn_compile_version)[0])
    if torch is None or torch.cuda is None:
        return None
    return load_platforms().soname_major(parse_cuda(torch.cuda)[0], family)


def _loadable(snap: Snapshot, family: str, filename: str) -> bool:
    """Whether a file of `family` could be loaded in place of the wheel's copy: only a
    file with the soname major the wheel asks for (libcublas.so.11 never replaces .so.12)."""
    found = library_family(filename)
    have = _soname_major(found[1] if found else None)
    want = expected_major(snap, family)
    return have is None or want is None or have == want


def _families(paths: list[str]) -> str:
    names = [library_family(PurePosixPath(p).name) for p in paths]
    return ", ".join(dict.fromkeys(n[0] for n in names if n is not None))


def _preload_finding(
    snap: Snapshot, forced: list[tuple[LoadedLibrary, str]], by_entry: dict[str, list[str]]
) -> CheckResult:
    """One finding for everything LD_PRELOAD brings in, named first; LD_LIBRARY_PATH
    entries of the same directories are folded into it (same cause, same fix)."""
    dirs = {str(PurePosixPath(lib.path).parent) for lib, _ in forced}
    what = ", ".join(
        f"{lib.name} {lib.version} ({lib.path})" if lib.version else f"{lib.name} ({lib.path})"
        for lib, _ in forced
    )
    entries = " ".join(dict.fromkeys(entry for _, entry in forced))
    message = (
        f"LD_PRELOAD={snap.env.get('LD_PRELOAD', '')} forces {what} into every process, ahead "
        "of the torch wheel's own copies: version mismatches give errors such as 'cuDNN "
        "version incompatibility' or 'undefined symbol'"
    )
    fix = f"remove {entries} from LD_PRELOAD (unset it if it lists only CUDA libraries)"
    also = [entry for entry in by_entry if entry in dirs]
    for entry in also:
        paths = by_entry.pop(entry)
        message += (
            f"; the same directory is on LD_LIBRARY_PATH, where {', '.join(paths)} carry the "
            "sonames the wheel loads"
        )
    if also:
        fix += f", and {' '.join(also)} from LD_LIBRARY_PATH"
    names = ", ".join(dict.fromkeys(lib.name for lib, _ in forced))
    return result("libs.shadowing", "warn", message, f"{fix}; the wheel ships its own", names)


def check_shadowing(ctx: CheckContext) -> list[CheckResult]:
    snap = ctx.snapshot
    torch = snap.torch
    if torch is None or torch.cuda is None:
        return skip("libs.shadowing", "not a CUDA build of torch")
    if jetpack_system_libraries(snap):
        return skip("libs.shadowing", "Jetson: JetPack's torch wheels use JetPack's CUDA libraries")
    if not wheel_install(snap):
        return skip(
            "libs.shadowing", "torch is not a pip wheel: it uses the system's CUDA libraries"
        )
    outside = [lib for lib in snap.libraries if lib.name in WHEEL_FAMILIES and not lib.from_wheel]
    loaded_families = {lib.name for lib in snap.libraries if lib.name in WHEEL_FAMILIES}
    forced = [(lib, entry) for lib in outside if (entry := preloaded(snap, lib)) is not None]
    flagged = {lib.name for lib in outside}
    by_entry: dict[str, list[str]] = {}
    for cand in snap.library_candidates:
        if cand.name not in WHEEL_FAMILIES or cand.name in flagged:
            continue
        if not _loadable(snap, cand.name, PurePosixPath(cand.path).name):
            continue  # another soname major: the loader never takes it for the wheel's
        flagged.add(cand.name)
        by_entry.setdefault(cand.ld_library_path_entry, []).append(cand.path)
    results: list[CheckResult] = []
    if forced:
        results.append(_preload_finding(snap, forced, by_entry))
    forced_names = {lib.name for lib, _ in forced}
    for lib in outside:
        if lib.name in forced_names:
            continue
        entry = str(PurePosixPath(lib.path).parent)
        results.append(
            result(
                "libs.shadowing",
                "warn",
                f"{lib.name} is loaded from {lib.path}, not from the torch wheel's own copy: "
                "version mismatches give errors such as 'undefined symbol: "
                "__nvJitLinkComplete_12_4' or cuDNN version incompatibility",
                f"remove {entry} from LD_LIBRARY_PATH; the wheel ships its own {lib.name}",
                lib.name,
            )
        )
    for entry, paths in by_entry.items():
        results.append(
            result(
                "libs.shadowing",
                "warn",
                f"LD_LIBRARY_PATH entry {entry} holds {', '.join(paths)}, with the soname the "
                "wheel loads, so it takes precedence over the wheel's copy when loaded",
                f"remove {entry} from LD_LIBRARY_PATH",
                _families(paths),
            )
        )
    if results:
        return results
    if not loaded_families:
        return [result("libs.shadowing", "ok", "no CUDA library loaded from outside the wheel")]
    return [
        result(
            "libs.shadowing",
            "ok",
            f"{', '.join(sorted(loaded_families))} loaded from the torch wheel",
        )
    ]


def check_forward_compat(ctx: CheckContext) -> list[CheckResult]:
    snap = ctx.snapshot
    libcuda = next((lib for lib in snap.libraries if lib.name == "libcuda"), None)
    if libcuda is None:
        return skip("driver.forward_compat", "libcuda is not loaded")
    if "compat" not in PurePosixPath(libcuda.path).parts:
        return [result("driver.forward_compat", "ok", f"libcuda from {libcuda.path}")]
    kb = compat.load_kb()
    consumer = [g for g in snap.gpus if (m := kb.gpu(g.name)) is not None and not m.datacenter]
    if consumer:
        names = ", ".join(sorted({g.name for g in consumer}))
        return [
            result(
                "driver.forward_compat",
                "fail",
                f"libcuda is loaded from the CUDA forward-compatibility package ({libcuda.path}), "
                f"which does not support {names}: CUDA fails with error 804 'forward "
                "compatibility was attempted on non supported HW'",
                "remove the compat directory from LD_LIBRARY_PATH (or the cuda-compat package "
                "from the image) and use a torch build the host driver supports",
            )
        ]
    return [
        result(
            "driver.forward_compat",
            "warn",
            f"libcuda is loaded from the CUDA forward-compatibility package ({libcuda.path}): "
            "supported on datacenter GPUs only, and only with specific driver branches",
            "prefer a host driver that supports the build's CUDA natively",
        )
    ]
