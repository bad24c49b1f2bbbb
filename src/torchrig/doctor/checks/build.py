"""Checks of the torch build itself: installed, CUDA or not, CUDA initialises, SDPA kernels."""

from __future__ import annotations

from torchrig import compat
from torchrig.doctor.context import driver_version, result, skip, visible_gpus
from torchrig.doctor.cuda_errors import explain
from torchrig.doctor.model import CheckContext, CheckResult, Status
from torchrig.errors import UnknownVersionError


def suggest_build(ctx: CheckContext, release: str | None = None) -> str | None:
    """A pip command for a build that runs on every visible GPU with this driver, if any."""
    snap = ctx.snapshot
    ccs = sorted({g.compute_capability for g in snap.gpus if g.compute_capability})
    if not ccs:
        return None
    driver = driver_version(snap)
    candidates: list[compat.BuildChoice] | None = None
    for cc in ccs:
        choices = compat.builds_for(cc, release=release, driver=driver)
        if candidates is None:
            candidates = choices
        else:
            keep = {(c.torch_version, c.variant) for c in choices}
            candidates = [c for c in candidates if (c.torch_version, c.variant) in keep]
    if not candidates:
        return None
    return candidates[0].pip_command


def _release_of(version: str) -> str | None:
    try:
        return compat.parse_torch_version(version).release
    except UnknownVersionError:
        return None


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
        if compat.load_kb().release(parsed.release) is None:
            known = (
                f" (torch {parsed.release} is not in the knowledge base; judged by what it reports)"
            )
    except UnknownVersionError:
        known = " (version not understood by the knowledge base; judged by what it reports)"
    if torch.hip is not None:
        return [
            result(
                "torch.build",
                "warn" if snap.gpus else "ok",
                f"ROCm (HIP {torch.hip}) build: it cannot use NVIDIA GPUs{known}",
                suggest_build(ctx, _release_of(torch.version)) if snap.gpus else None,
            )
        ]
    if torch.cuda is None:
        if snap.gpus:
            fix = suggest_build(ctx, _release_of(torch.version)) or suggest_build(ctx)
            names = ", ".join(sorted({g.name for g in snap.gpus}))
            return [
                result(
                    "torch.build",
                    "fail",
                    f"torch {torch.version} is a CPU-only build but this machine has "
                    f"{len(snap.gpus)} NVIDIA GPU(s) ({names}){known}",
                    fix or "install a CUDA build of torch from https://download.pytorch.org/whl/",
                )
            ]
        return [result("torch.build", "ok", f"CPU-only build on a machine without GPUs{known}")]
    return [result("torch.build", "ok", f"CUDA {torch.cuda} build{known}")]


def check_cuda_init(ctx: CheckContext) -> list[CheckResult]:
    snap = ctx.snapshot
    torch = snap.torch
    if torch is None or torch.cuda is None:
        return skip("torch.cuda_init", "not a CUDA build of torch")
    if not snap.gpus and not torch.cuda_available:
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
    if known is None:
        return [
            result(
                "torch.cuda_init",
                "fail",
                f"CUDA does not initialise: {text}",
                "run `python -c 'import torch; torch.cuda.init()'` for the full error; check "
                "the driver (driver.cuda) and the container's GPU access (gpu.visible)",
            )
        ]
    return [
        result(
            "torch.cuda_init",
            "fail",
            f"CUDA does not initialise: {text} — cause: {known.cause}",
            known.fix,
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
