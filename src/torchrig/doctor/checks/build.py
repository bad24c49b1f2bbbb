"""Checks of the torch build itself: installed, CUDA or not, CUDA initialises, SDPA kernels."""

from __future__ import annotations

from torchrig import compat
from torchrig.doctor.context import (
    WSL_DRIVER_FIX,
    gpu_models_text,
    jetson_gpus,
    on_wsl,
    result,
    skip,
    visible_gpus,
)
from torchrig.doctor.cuda_errors import describe_cause, explain
from torchrig.doctor.model import CheckContext, CheckResult, Status
from torchrig.doctor.suggest import suggest_build
from torchrig.errors import UnknownVersionError

# NVIDIA's JetPack wheels carry a local tag like "872d972e41.nv24.08"
_JETPACK_TAG = ".nv2"


def check_torch_installed(ctx: CheckContext) -> list[CheckResult]:
    snap = ctx.snapshot
    if snap.torch is not None:
        where = f" at {snap.torch.location}" if snap.torch.location else ""
        return [result("torch.installed", "ok", f"torch {snap.torch.version}{where}")]
    reason = snap.torch_error or "torch is not installed"
    fix = suggest_build(ctx) or "pip install torch"
    return [result("torch.installed", "fail", f"torch cannot be imported: {reason}", fix)]


def check_torch_build(ctx: CheckContext) -> list[CheckResult]:
    snap = ctx.snapshot
    torch = snap.torch
    if torch is None:
        return skip("torch.build", "torch is not installed")
    known = ""
    try:
        parsed = compat.parse_torch_version(torch.version)
        if _JETPACK_TAG in (parsed.variant or "") and jetson_gpus(snap):
            known = " (an NVIDIA JetPack wheel: judged by what it reports)"
        elif compat.load_kb().release(parsed.release) is None:
            known = (
                f" (torch {parsed.release} is not in the knowledge base; judged by what it reports)"
            )
    except UnknownVersionError:
        known = " (version not understood by the knowledge base; judged by what it reports)"
    if torch.hip is not None:
        if not snap.gpus:
            return [result("torch.build", "ok", f"ROCm (HIP {torch.hip}) build{known}")]
        return [
            result(
                "torch.build",
                "fail",
                f"torch {torch.version} is a ROCm (HIP {torch.hip}) build: it cannot use the "
                f"NVIDIA GPUs of this machine ({gpu_models_text(snap.gpus)}), so everything "
                f"runs on the CPU{known}",
                suggest_build(ctx)
                or "install a CUDA build of torch from https://download.pytorch.org/whl/",
            )
        ]
    if torch.cuda is None:
        # Intel's XPU wheels (+xpu) have no CUDA either, but are not CPU-only builds
        xpu = torch.version.partition("+")[2].startswith("xpu")
        kind = "an Intel XPU build (for Intel GPUs)" if xpu else "a CPU-only build"
        if snap.gpus:
            fix = suggest_build(ctx)
            names = ", ".join(sorted({g.name for g in snap.gpus}))
            return [
                result(
                    "torch.build",
                    "fail",
                    f"torch {torch.version} is {kind} but this machine has "
                    f"{len(snap.gpus)} NVIDIA GPU(s) ({names}){known}",
                    fix or "install a CUDA build of torch from https://download.pytorch.org/whl/",
                )
            ]
        if xpu:
            return [
                result(
                    "torch.build",
                    "ok",
                    f"Intel XPU build; no NVIDIA GPU here, and torchrig's GPU checks judge "
                    f"NVIDIA GPUs only{known}",
                )
            ]
        return [result("torch.build", "ok", f"CPU-only build on a machine without GPUs{known}")]
    return [result("torch.build", "ok", f"CUDA {torch.cuda} build{known}")]


def check_cuda_init(ctx: CheckContext) -> list[CheckResult]:
    snap = ctx.snapshot
    torch = snap.torch
    if torch is None or torch.cuda is None:
        return skip("torch.cuda_init", "not a CUDA build of torch")
    seen_gpu = bool(snap.gpus or snap.container.device_nodes or torch.cuda_init_error)
    if not seen_gpu and not torch.cuda_available:
        return skip("torch.cuda_init", "no NVIDIA GPU on this machine")
    error = torch.cuda_init_error
    if torch.cuda_available and not error:
        count = torch.device_count if torch.device_count is not None else "?"
        expected = len(visible_gpus(snap))
        if snap.gpus and isinstance(count, int) and count != expected:
            return [
                result(
                    "torch.cuda_init",
                    "warn",
                    f"CUDA initialised with {count} device(s), but {expected} GPU(s) should be "
                    "visible (NVML and CUDA_VISIBLE_DEVICES disagree with the CUDA runtime)",
                    "check CUDA_VISIBLE_DEVICES and NVIDIA_VISIBLE_DEVICES, and that every GPU "
                    "is healthy (nvidia-smi -q, dmesg Xid errors)",
                )
            ]
        return [result("torch.cuda_init", "ok", f"CUDA initialised: {count} device(s)")]
    text = error or "torch.cuda.is_available() is False"
    known = explain(text)
    wsl = on_wsl(snap)  # the node, container and reboot advice does not apply there
    if known is None:
        return [
            result(
                "torch.cuda_init",
                "fail",
                f"CUDA does not initialise: {text}",
                WSL_DRIVER_FIX
                if wsl
                else "run `python -c 'import torch; torch.cuda.init()'` for the full error; "
                "check the driver (driver.cuda) and the container's GPU access (gpu.visible)",
            )
        ]
    return [
        result(
            "torch.cuda_init",
            "fail",
            f"CUDA does not initialise: {text} — cause: {describe_cause(known, text)}",
            WSL_DRIVER_FIX if wsl and known.host_driver else known.fix,
        )
    ]


def check_sdpa_build(ctx: CheckContext) -> list[CheckResult]:
    """Flash Attention compiled in? Without it SDPA falls back to slower kernels."""
    snap = ctx.snapshot
    torch = snap.torch
    if torch is None or torch.cuda is None:
        return skip("torch.sdpa", "not a CUDA build of torch")
    flags = torch.build_flags
    flash = torch.flash_attention_available
    if flash is None and "USE_FLASH_ATTENTION" in flags:
        flash = flags["USE_FLASH_ATTENTION"].upper() in {"ON", "1", "TRUE"}
    mem_eff = flags.get("USE_MEM_EFF_ATTENTION", "").upper() in {"ON", "1", "TRUE", ""}
    if flash is None:
        return skip("torch.sdpa", "the build does not say whether it has Flash Attention")
    ampere = [
        g
        for g in visible_gpus(snap)
        if g.compute_capability and compat.parse_cc(g.compute_capability) >= (8, 0)
    ]
    if flash:
        return [result("torch.sdpa", "ok", "Flash Attention is compiled into this build")]
    fallback = "memory-efficient attention" if mem_eff else "the math fallback"
    status: Status = "warn" if ampere or not snap.gpus else "ok"
    return [
        result(
            "torch.sdpa",
            status,
            "this build has no Flash Attention: scaled_dot_product_attention falls back to "
            f"{fallback}; the math path is ~60x slower on an H100 and materialises the full "
            "attention matrix (out-of-memory on long sequences)",
            "install an official torch wheel from https://download.pytorch.org/whl/ (they "
            "include Flash Attention), or build with USE_FLASH_ATTENTION=1; `torchrig doctor "
            "--deep` measures which backends run",
        )
    ]
