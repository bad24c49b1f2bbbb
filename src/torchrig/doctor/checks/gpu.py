"""Checks of the GPUs: visible at all, hidden by CUDA_VISIBLE_DEVICES, architecture, MIG,
persistence and memory health. Identical GPUs with the same verdict share one row."""

from __future__ import annotations

from torchrig import compat
from torchrig.doctor.checks.driver import REBOOT_FIX, mismatch_text
from torchrig.doctor.context import (
    WSL_DRIVER_FIX,
    GpuVerdict,
    cuda_build,
    cuda_visible_devices,
    driver_version,
    gpu_models_text,
    human_bytes,
    jetson_gpus,
    machine,
    on_wsl,
    per_gpu,
    result,
    skip,
    visible_gpus,
)
from torchrig.doctor.model import CheckContext, CheckResult
from torchrig.doctor.suggest import installed_build, suggest_build
from torchrig.facts.model import GpuFacts

GPU_ACCESS_FIX = (
    "start the container with GPU access: `docker run --gpus all` (NVIDIA container "
    "toolkit) or `--runtime=nvidia`; on Kubernetes request `nvidia.com/gpu` in "
    "resources.limits and run the NVIDIA device plugin"
)


def check_gpu_visible(ctx: CheckContext) -> list[CheckResult]:
    snap = ctx.snapshot
    container = snap.container
    if snap.gpus:
        return [
            result("gpu.visible", "ok", f"{len(snap.gpus)} GPU(s): {gpu_models_text(snap.gpus)}")
        ]
    torch = snap.torch
    if torch is not None and torch.hip and torch.cuda_available and torch.device_count:
        # AMD GPUs through a ROCm build: not a CPU-only machine, though no NVIDIA check applies
        return [
            result(
                "gpu.visible",
                "ok",
                f"{torch.device_count} GPU(s) through ROCm (HIP {torch.hip}); the NVIDIA "
                "checks (driver, architectures, NVML, MIG) do not apply to them",
            )
        ]
    mismatch = mismatch_text(snap)
    if mismatch is not None:
        return [
            result(
                "gpu.visible",
                "fail",
                f"the driver cannot be queried: {mismatch}",
                REBOOT_FIX,
                cause="driver.userspace_match",
            )
        ]
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
                WSL_DRIVER_FIX
                if on_wsl(snap)
                else GPU_ACCESS_FIX
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


def _table_list(ctx: CheckContext) -> list[str] | None:
    """The installed torch's own arch table entry for its CUDA and this host, if it has one."""
    torch = ctx.snapshot.torch
    if torch is None or torch.cuda is None:
        return None
    codes = torch.release_arch_table.get(torch.cuda, {}).get(machine(ctx.snapshot))
    return [f"sm_{code}" for code in codes] if codes else None


def _kb_list(ctx: CheckContext) -> tuple[list[str] | None, str]:
    build = installed_build(ctx.snapshot)
    if build is None or build.variant is None:
        return None, ""
    info = compat.load_kb().variant(build.version, build.variant)
    if info is None:
        return None, ""
    host = machine(ctx.snapshot)
    return info.arch_list_for(host), f"{build.release} {build.variant} on {host}"


def _arch_list(ctx: CheckContext) -> tuple[list[str], str, str]:
    """The build's architectures, where they come from, and a note when the knowledge base
    disagrees with torch's own table (torch's is trusted)."""
    torch = ctx.snapshot.torch
    if torch is None:
        return [], "", ""
    table = _table_list(ctx)
    kb_list, which = _kb_list(ctx)
    note = ""
    if table is not None and kb_list is not None:
        kb_sass = {a for a in kb_list if a.startswith("sm_")}
        if kb_sass != set(table):
            note = (
                f"; note: the knowledge base's list for {which} ({' '.join(kb_list)}) differs "
                f"from torch's own table ({' '.join(table)}), which is trusted"
            )
    host = machine(ctx.snapshot)
    if torch.arch_list:
        return list(torch.arch_list), "the build's arch list", note
    if table is not None:
        return table, f"torch's own table for CUDA {torch.cuda} on {host}", note
    if kb_list is not None:
        return kb_list, f"the knowledge base's arch list for {which}", note
    return [], "", note


def _arch_fix(ctx: CheckContext, cc: str) -> str:
    fix = suggest_build(ctx)
    if fix:
        return fix
    other = suggest_build(ctx, use_driver=False)
    if other:
        return f"upgrade the driver (see driver.cuda), then {other}"
    return (
        f"no torch build in the knowledge base has code for compute capability {cc}: build "
        f"torch from source with TORCH_CUDA_ARCH_LIST={cc}"
    )


def check_gpu_arch(ctx: CheckContext) -> list[CheckResult]:
    snap = ctx.snapshot
    if cuda_build(snap) is None:
        return skip("gpu.arch", "not a CUDA build of torch")
    gpus = visible_gpus(snap)
    if not gpus:
        return skip("gpu.arch", "no visible GPU")
    archs, origin, note = _arch_list(ctx)
    if not archs:
        host = machine(snap)
        return skip("gpu.arch", f"the build's architecture list for {host} is unknown{note}")
    driver = driver_version(snap)
    ptx_ok = True
    torch_cuda = snap.torch.cuda if snap.torch is not None else None
    # a Jetson's JetPack driver is judged by driver.cuda, not by the desktop tables
    if driver is not None and torch_cuda is not None and not jetson_gpus(snap):
        ptx_ok = compat.driver_support(torch_cuda, driver).status == "ok"

    def judge(gpu: GpuFacts) -> GpuVerdict:
        if gpu.compute_capability is None:
            return "skip", "compute capability unknown", None
        support = compat.arch_support(archs, gpu.compute_capability, ptx_jit_allowed=ptx_ok)
        if support.runs and support.how == "ptx-jit":
            return (
                "warn",
                f"no SASS for it in {origin}; runs only by JIT-compiling {support.via} PTX "
                f"(slow first start, may miss newer kernels){note}",
                suggest_build(ctx) or _arch_fix(ctx, gpu.compute_capability),
            )
        if support.runs:
            return "ok", f"{support.message} ({origin}){note}", None
        return "fail", f"{support.message} ({origin}){note}", _arch_fix(ctx, gpu.compute_capability)

    return per_gpu("gpu.arch", gpus, judge)


def check_mig(ctx: CheckContext) -> list[CheckResult]:
    gpus = ctx.snapshot.gpus
    if not gpus:
        return skip("gpu.mig", "no GPU on this machine")

    def judge(gpu: GpuFacts) -> GpuVerdict | None:
        if not gpu.mig_enabled:
            return None
        if gpu.mig_devices == 0:
            return (
                "warn",
                "MIG mode is on but no MIG instance exists, so CUDA sees no device on this GPU",
                "create GPU instances (nvidia-smi mig -cgi ... -C) or disable MIG "
                "(nvidia-smi -i N -mig 0)",
            )
        count = f"{gpu.mig_devices} instance(s)" if gpu.mig_devices else "instances"
        whole = f" {human_bytes(gpu.memory_total_bytes)}" if gpu.memory_total_bytes else ""
        return (
            "warn",
            f"MIG is on with {count}: a process sees one MIG instance, not the GPU; NCCL "
            "cannot run across instances (no collectives between slices); memory and SMs are "
            f"the slice's share, not the whole GPU's{whole}",
            "give each process one instance with CUDA_VISIBLE_DEVICES=MIG-<uuid> (`nvidia-smi "
            "-L` lists the UUIDs; the Kubernetes device plugin does it per pod); for multi-GPU "
            "jobs or NCCL, disable MIG (`nvidia-smi -i N -mig 0`) and reset the GPU",
        )

    return per_gpu("gpu.mig", gpus, judge) or [result("gpu.mig", "ok", "MIG is off on every GPU")]


def check_persistence(ctx: CheckContext) -> list[CheckResult]:
    gpus = ctx.snapshot.gpus
    if not gpus:
        return skip("gpu.persistence", "no GPU on this machine")
    if on_wsl(ctx.snapshot):
        return skip(
            "gpu.persistence",
            "WSL2: the Windows driver manages the GPU; Linux's persistence mode does not apply",
        )
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
    if all(g.source != "nvml" for g in gpus):
        return skip("gpu.health", "NVML is unavailable, so ECC and row remapping cannot be read")

    def judge(gpu: GpuFacts) -> GpuVerdict | None:
        if gpu.remapped_rows_failure:
            return (
                "fail",
                "row remapping failed: the memory is degraded",
                "drain the node and have the GPU serviced (RMA)",
            )
        if gpu.remapped_rows_pending or gpu.retired_pages_pending:
            return (
                "warn",
                "memory rows/pages are pending retirement after ECC errors",
                "drain the node and reset the GPU (nvidia-smi -r) or reboot to apply",
            )
        if gpu.ecc_uncorrected_volatile:
            return (
                "warn",
                f"{gpu.ecc_uncorrected_volatile} uncorrectable ECC error(s) since the driver "
                "loaded",
                "check dmesg for Xid 48/63/64 and drain the node if they recur",
            )
        return None

    found = per_gpu("gpu.health", gpus, judge)
    return found or [result("gpu.health", "ok", "no ECC or memory-retirement problems reported")]
