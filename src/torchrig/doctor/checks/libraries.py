"""Checks of the CUDA libraries: cuDNN and NCCL versions, shadowing, forward compatibility."""

from __future__ import annotations

from pathlib import PurePosixPath

from torchrig import compat
from torchrig.doctor.context import result, skip, visible_gpus, wheel_install
from torchrig.doctor.cuda_errors import explain
from torchrig.doctor.model import CheckContext, CheckResult
from torchrig.errors import UnknownVersionError
from torchrig.facts.libraries import LIBRARY_FAMILIES
from torchrig.facts.model import Snapshot
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
        return [
            result(
                "libs.cudnn",
                "fail",
                f"cuDNN {loaded} is loaded but torch was built against cuDNN "
                f"{cudnn_text(compiled)}: the major versions differ",
                "remove the other cuDNN from LD_LIBRARY_PATH so the wheel's own loads",
            )
        ]
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


def check_shadowing(ctx: CheckContext) -> list[CheckResult]:
    snap = ctx.snapshot
    torch = snap.torch
    if torch is None or torch.cuda is None:
        return skip("libs.shadowing", "not a CUDA build of torch")
    if not wheel_install(snap):
        return skip(
            "libs.shadowing", "torch is not a pip wheel: it uses the system's CUDA libraries"
        )
    results: list[CheckResult] = []
    loaded_families = set()
    for lib in snap.libraries:
        if lib.name not in WHEEL_FAMILIES:
            continue
        loaded_families.add(lib.name)
        if lib.from_wheel:
            continue
        entry = str(PurePosixPath(lib.path).parent)
        results.append(
            result(
                "libs.shadowing",
                "warn",
                f"{lib.name} is loaded from {lib.path}, not from the torch wheel's own copy: "
                "version mismatches give errors such as 'undefined symbol: "
                "__nvJitLinkComplete_12_4' or cuDNN version incompatibility",
                f"remove {entry} from LD_LIBRARY_PATH (and LD_PRELOAD); the wheel ships "
                f"its own {lib.name}",
                lib.name,
            )
        )
    flagged = {r.subject for r in results}
    for cand in snap.library_candidates:
        if cand.name not in WHEEL_FAMILIES or cand.name in flagged:
            continue
        flagged.add(cand.name)
        results.append(
            result(
                "libs.shadowing",
                "warn",
                f"LD_LIBRARY_PATH entry {cand.ld_library_path_entry} holds {cand.path}, which "
                f"takes precedence over the wheel's {cand.name} when it is loaded",
                f"remove {cand.ld_library_path_entry} from LD_LIBRARY_PATH",
                cand.name,
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
