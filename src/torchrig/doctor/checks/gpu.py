"""Checks of the GPUs: visible at all, hidden by CUDA_VISIBLE_DEVICES, architecture, driver,
MIG, persistence and memory health."""

from __future__ import annotations

from torchrig import compat
from torchrig.doctor.checks.build import suggest_build
from torchrig.doctor.context import (
    cuda_build,
    cuda_visible_devices,
    driver_version,
    gpu_label,
    result,
    skip,
    visible_gpus,
)
from torchrig.doctor.model import CheckContext, CheckResult
from torchrig.errors import UnknownVersionError

GPU_ACCESS_FIX = (
    "start the container with GPU access: `docker run --gpus all` (NVIDIA container "
    "toolkit) or `--runtime=nvidia`; on Kubernetes request `nvidia.com/gpu` in "
    "resources.limits and run the NVIDIA device plugin"
)


def check_gpu_visible(ctx: CheckContext) -> list[CheckResult]:
    snap = ctx.snapshot
    container = snap.container
    if snap.gpus:
        names = ", ".join(gpu_label(g) for g in snap.gpus)
        return [result("gpu.visible", "ok", f"{len(snap.gpus)} GPU(s): {names}")]
    if container.device_nodes:
        return [
            result(
                "gpu.visible",
                "fail",
                f"GPU device nodes exist ({', '.join(container.device_nodes[:3])}) but the "
                f"driver cannot be queried: {snap.nvml_error or 'NVML unavailable'}",
                "the driver's user-space libraries (libnvidia-ml, libcuda) are missing in "
                "this container: run it through the NVIDIA container toolkit "
                "(NVIDIA_DRIVER_CAPABILITIES=compute,utility)",
            )
        ]
    if container.gpu_requested:
        hint = f" ({container.gpu_request_hint})" if container.gpu_request_hint else ""
        return [
            result(
                "gpu.visible",
                "fail" if ctx.require_gpu else "warn",
                f"this container asked for GPUs{hint} but no GPU device is present: it was "
                "started without GPU access",
                GPU_ACCESS_FIX,
            )
        ]
    if ctx.require_gpu:
        return [
            result(
                "gpu.visible",
                "fail",
                "no NVIDIA GPU is visible and --require-gpu was given",
                GPU_ACCESS_FIX
                if container.in_container
                else "run on a node with an NVIDIA GPU and its driver installed",
            )
        ]
    return [result("gpu.visible", "ok", "CPU-only machine: no NVIDIA GPU or driver found")]


def check_cuda_visible_devices(ctx: CheckContext) -> list[CheckResult]:
    snap = ctx.snapshot
    spec = cuda_visible_devices(snap)
    if not snap.gpus:
        return skip("gpu.cuda_visible_devices", "no GPU on this machine")
    if spec is None:
        return [result("gpu.cuda_visible_devices", "ok", "CUDA_VISIBLE_DEVICES is not set")]
    visible = visible_gpus(snap)
    entries = [e for e in spec.split(",") if e.strip()]
    if not visible:
        return [
            result(
                "gpu.cuda_visible_devices",
                "fail" if ctx.require_gpu else "warn",
                f"CUDA_VISIBLE_DEVICES={spec!r} hides all {len(snap.gpus)} GPU(s)",
                "unset CUDA_VISIBLE_DEVICES, or set it to indices 0.."
                f"{len(snap.gpus) - 1} or to GPU UUIDs",
            )
        ]
    if len(visible) < len(entries):
        return [
            result(
                "gpu.cuda_visible_devices",
                "warn",
                f"CUDA_VISIBLE_DEVICES={spec!r}: CUDA stops at the first entry it cannot "
                f"resolve, so only {len(visible)} of the {len(entries)} listed GPUs are used",
                f"list only existing GPUs (indices 0..{len(snap.gpus) - 1} or UUIDs)",
            )
        ]
    return [
        result(
            "gpu.cuda_visible_devices",
            "ok",
            f"CUDA_VISIBLE_DEVICES={spec!r}: {len(visible)} of {len(snap.gpus)} GPU(s) visible",
        )
    ]


def check_driver(ctx: CheckContext) -> list[CheckResult]:
    snap = ctx.snapshot
    cuda = cuda_build(snap)
    driver = driver_version(snap)
    if cuda is None:
        return skip("driver.cuda", "not a CUDA build of torch")
    if driver is None:
        return skip("driver.cuda", "no NVIDIA driver found")
    support = compat.driver_support(cuda, driver)
    if support.status == "ok":
        return [result("driver.cuda", "ok", support.message)]
    if support.status == "minor-compat":
        return [result("driver.cuda", "warn", support.message, support.fix)]
    if support.status == "insufficient":
        fix = support.fix or ""
        alternative = suggest_build(ctx)
        if alternative and alternative not in fix:
            fix = f"{fix}; or a build this driver supports: {alternative}".lstrip("; ")
        return [result("driver.cuda", "fail", support.message, fix or None)]
    # unknown to the knowledge base: fall back on what the driver itself reports
    driver_cuda = snap.driver.cuda_version if snap.driver else None
    if driver_cuda is not None:
        try:
            too_old = compat.parse_cc(driver_cuda)[0] < compat.parse_cc(cuda)[0]
        except UnknownVersionError:
            too_old = False
        if too_old:
            return [
                result(
                    "driver.cuda",
                    "fail",
                    f"driver {driver} supports CUDA {driver_cuda}, older than the build's "
                    f"CUDA {cuda} major ({support.message})",
                    "upgrade the driver or install a torch build for CUDA "
                    f"{driver_cuda.split('.')[0]}.x",
                )
            ]
    return [result("driver.cuda", "warn", support.message, support.fix)]


def _arch_list(ctx: CheckContext) -> tuple[list[str], str]:
    torch = ctx.snapshot.torch
    if torch is None:
        return [], ""
    if torch.arch_list:
        return list(torch.arch_list), "the build's arch list"
    try:
        parsed = compat.parse_torch_version(torch.version)
    except UnknownVersionError:
        return [], ""
    if parsed.variant is None:
        return [], ""
    info = compat.load_kb().variant(parsed.version, parsed.variant)
    if info is None:
        return [], ""
    archs = [f"sm_{a.replace('.', '')}" for a in info.sass]
    archs += [f"compute_{a.replace('.', '')}" for a in info.ptx]
    return archs, f"the knowledge base's arch list for {parsed.variant}"


def check_gpu_arch(ctx: CheckContext) -> list[CheckResult]:
    snap = ctx.snapshot
    if cuda_build(snap) is None:
        return skip("gpu.arch", "not a CUDA build of torch")
    gpus = visible_gpus(snap)
    if not gpus:
        return skip("gpu.arch", "no visible GPU")
    archs, origin = _arch_list(ctx)
    if not archs:
        return skip("gpu.arch", "the build's architecture list is unknown")
    driver = driver_version(snap)
    ptx_ok = True
    if driver is not None and snap.torch is not None and snap.torch.cuda is not None:
        ptx_ok = compat.driver_support(snap.torch.cuda, driver).status == "ok"
    release = None
    if snap.torch is not None:
        try:
            release = compat.parse_torch_version(snap.torch.version).release
        except UnknownVersionError:
            release = None
    results: list[CheckResult] = []
    for gpu in gpus:
        subject = f"gpu{gpu.index}"
        if gpu.compute_capability is None:
            results.append(
                result("gpu.arch", "skip", "compute capability unknown", subject=subject)
            )
            continue
        support = compat.arch_support(archs, gpu.compute_capability, ptx_jit_allowed=ptx_ok)
        label = gpu_label(gpu)
        if support.runs and support.how == "ptx-jit":
            results.append(
                result(
                    "gpu.arch",
                    "warn",
                    f"{label}: no SASS for it in {origin}; runs only by JIT-compiling "
                    f"{support.via} PTX (slow first start, may miss newer kernels)",
                    suggest_build(ctx, release),
                    subject,
                )
            )
        elif support.runs:
            results.append(result("gpu.arch", "ok", f"{label}: {support.message}", None, subject))
        else:
            fix = suggest_build(ctx, release) or suggest_build(ctx)
            results.append(
                result(
                    "gpu.arch",
                    "fail",
                    f"{label}: {support.message} — kernels fail with 'no kernel image is "
                    "available for execution on the device'",
                    fix or "no known torch build runs on this GPU with this driver",
                    subject,
                )
            )
    return results


def check_mig(ctx: CheckContext) -> list[CheckResult]:
    gpus = ctx.snapshot.gpus
    if not gpus:
        return skip("gpu.mig", "no GPU on this machine")
    results: list[CheckResult] = []
    for gpu in gpus:
        if not gpu.mig_enabled:
            continue
        subject = f"gpu{gpu.index}"
        if not gpu.mig_devices:
            results.append(
                result(
                    "gpu.mig",
                    "warn",
                    f"{gpu_label(gpu)}: MIG mode is on but no MIG instance exists, so CUDA "
                    "sees no device on this GPU",
                    "create GPU instances (nvidia-smi mig -cgi ... -C) or disable MIG "
                    "(nvidia-smi -i N -mig 0)",
                    subject,
                )
            )
        else:
            results.append(
                result(
                    "gpu.mig",
                    "ok",
                    f"{gpu_label(gpu)}: MIG with {gpu.mig_devices} instance(s); a process "
                    "uses one instance (select it by MIG UUID), and NCCL does not run across "
                    "instances",
                    subject=subject,
                )
            )
    return results or [result("gpu.mig", "ok", "MIG is off on every GPU")]


def check_persistence(ctx: CheckContext) -> list[CheckResult]:
    gpus = ctx.snapshot.gpus
    if not gpus:
        return skip("gpu.persistence", "no GPU on this machine")
    known = [g for g in gpus if g.persistence_mode is not None]
    if not known:
        return skip("gpu.persistence", "the driver does not report persistence mode")
    off = [g for g in known if not g.persistence_mode]
    if not off:
        return [result("gpu.persistence", "ok", "persistence mode is on")]
    indices = ", ".join(str(g.index) for g in off)
    return [
        result(
            "gpu.persistence",
            "warn",
            f"persistence mode is off on GPU {indices}: the driver tears the GPU down when "
            "no process holds it, so every start pays seconds of initialisation",
            "run nvidia-persistenced on the node (or `nvidia-smi -pm 1`)",
        )
    ]


def check_gpu_health(ctx: CheckContext) -> list[CheckResult]:
    gpus = ctx.snapshot.gpus
    if not gpus:
        return skip("gpu.health", "no GPU on this machine")
    results: list[CheckResult] = []
    for gpu in gpus:
        subject = f"gpu{gpu.index}"
        label = gpu_label(gpu)
        if gpu.remapped_rows_failure:
            results.append(
                result(
                    "gpu.health",
                    "fail",
                    f"{label}: row remapping failed: the memory is degraded",
                    "drain the node and have the GPU serviced (RMA)",
                    subject,
                )
            )
        elif gpu.remapped_rows_pending or gpu.retired_pages_pending:
            results.append(
                result(
                    "gpu.health",
                    "warn",
                    f"{label}: memory rows/pages are pending retirement after ECC errors",
                    "drain the node and reset the GPU (nvidia-smi -r) or reboot to apply",
                    subject,
                )
            )
        elif gpu.ecc_uncorrected_volatile:
            results.append(
                result(
                    "gpu.health",
                    "warn",
                    f"{label}: {gpu.ecc_uncorrected_volatile} uncorrectable ECC error(s) "
                    "since the driver loaded",
                    "check dmesg for Xid 48/63/64 and drain the node if they recur",
                    subject,
                )
            )
    if results:
        return results
    return [result("gpu.health", "ok", "no ECC or memory-retirement problems reported")]
