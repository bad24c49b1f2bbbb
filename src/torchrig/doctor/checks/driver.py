"""Checks of the NVIDIA driver: the build's CUDA, each GPU's architecture, kernel module
against user-space libraries, and NVML."""

from __future__ import annotations

from pathlib import PurePosixPath

from torchrig import compat
from torchrig.compat.platforms import load_platforms
from torchrig.compat.versions import parse_cuda
from torchrig.doctor.context import (
    cuda_build,
    driver_version,
    jetson_gpus,
    on_wsl,
    per_gpu,
    result,
    skip,
)
from torchrig.doctor.cuda_errors import explain
from torchrig.doctor.model import CheckContext, CheckResult, Status
from torchrig.doctor.suggest import suggest_build
from torchrig.errors import UnknownVersionError
from torchrig.facts.model import GpuFacts, Snapshot

MISMATCH = "driver-library-mismatch"
REBOOT_FIX = (
    "drain the node (kubectl drain / cordon), then reboot it so the new kernel module "
    "loads, or unload and reload the nvidia kernel modules (`rmmod nvidia_uvm nvidia_drm "
    "nvidia_modeset nvidia && modprobe nvidia nvidia_uvm`) once no process uses the GPUs"
)
NVML_FIX = (
    "start the container with NVIDIA_DRIVER_CAPABILITIES=compute,utility (`utility` mounts "
    "libnvidia-ml and nvidia-smi; `--gpus all,capabilities=compute,utility` with docker)"
)


def _jetson_driver(snap: Snapshot, cuda: str, gpus: list[GpuFacts]) -> CheckResult:
    """On a Jetson the driver is part of JetPack: judge the build's CUDA against the CUDA
    the driver reports, not against the desktop driver tables."""
    name = gpus[0].name
    driver_cuda = snap.driver.cuda_version if snap.driver is not None else None
    platforms = load_platforms().jetson_platforms(gpus[0].compute_capability or "")
    jetpacks = ", ".join(f"JetPack {p.jetpack} (CUDA {p.cuda})" for p in platforms)
    if driver_cuda is None:
        return result(
            "driver.cuda",
            "skip",
            f"{name} is a Jetson: its driver is part of JetPack, and it does not report "
            "which CUDA it supports",
        )
    try:
        have, need = parse_cuda(driver_cuda), parse_cuda(cuda)
    except UnknownVersionError:
        return result("driver.cuda", "skip", f"cannot compare CUDA {cuda} with {driver_cuda}")
    head = (
        f"{name} is a Jetson: the driver is part of JetPack (L4T) and supports CUDA "
        f"{driver_cuda}; desktop driver minimums do not apply"
    )
    if need[0] > have[0]:
        return result(
            "driver.cuda",
            "fail",
            f"{head}. This torch build needs CUDA {cuda}, a newer major: CUDA fails with "
            "'CUDA driver version is insufficient for CUDA runtime version'",
            f"install a torch wheel built for this JetPack's CUDA {driver_cuda} ({jetpacks}), "
            "or flash a JetPack whose CUDA matches the build",
        )
    if need > have:
        return result(
            "driver.cuda",
            "warn",
            f"{head}. This torch build's CUDA {cuda} is newer: it runs under minor-version "
            "compatibility (no PTX JIT from the newer toolkit)",
            f"prefer a wheel built for CUDA {driver_cuda} ({jetpacks})",
        )
    return result("driver.cuda", "ok", f"{head}; the build's CUDA {cuda} runs on it")


def check_driver(ctx: CheckContext) -> list[CheckResult]:
    snap = ctx.snapshot
    cuda = cuda_build(snap)
    driver = driver_version(snap)
    if cuda is None:
        return skip("driver.cuda", "not a CUDA build of torch")
    jetson = jetson_gpus(snap)
    if jetson:
        return [_jetson_driver(snap, cuda, jetson)]
    if driver is None:
        return skip("driver.cuda", "no NVIDIA driver found")
    support = compat.driver_support(cuda, driver)
    if on_wsl(snap):  # a Windows driver: the Linux driver table's numbers do not apply
        return [_by_reported_cuda(snap, cuda, driver, support, windows=True)]
    if support.status == "ok":
        return [result("driver.cuda", "ok", support.message)]
    if support.status == "minor-compat":
        return [result("driver.cuda", "warn", support.message, support.fix)]
    if support.status == "insufficient":
        upgrade = f"upgrade the driver to >= {support.min_driver or support.floor}"
        alternative = suggest_build(ctx)
        fix = f"{upgrade}; or keep the driver and install {alternative}" if alternative else upgrade
        return [result("driver.cuda", "fail", support.message, fix)]
    # unknown to the knowledge base (an older or newer CUDA than its table): the driver's
    # own report, the highest CUDA it runs (NVML's cudaDriverGetVersion), decides instead
    return [_by_reported_cuda(snap, cuda, driver, support)]


def _by_reported_cuda(
    snap: Snapshot,
    cuda: str,
    driver: str,
    support: compat.DriverSupport,
    *,
    windows: bool = False,
) -> CheckResult:
    """Judge the driver by the highest CUDA it reports; `windows`: it is the Windows host's
    driver of a WSL2 machine, whose version numbers are not Linux's."""
    reported = snap.driver.cuda_version if snap.driver is not None else None
    try:
        have = parse_cuda(reported) if reported else None
    except UnknownVersionError:
        have = None
    need = parse_cuda(cuda)
    where = " on Windows" if windows else ""
    if windows:
        rests = (
            f"WSL2: driver {driver} is the Windows host's, whose version numbers differ from "
            "Linux's: this rests on the driver's report"
        )
        driver = f"{driver} (Windows)"
    else:
        rests = (
            f"CUDA {cuda} has no row in torchrig's driver table: this rests on the driver's report"
        )
    if have is None:
        problem = (
            f"WSL2: the Windows driver {driver}"
            if windows
            else f"{support.message}, and the driver"
        )
        return result(
            "driver.cuda",
            "warn",
            f"{problem} does not report which CUDA it supports",
            f"check driver {driver} against CUDA {cuda}'s minimum in NVIDIA's CUDA Toolkit "
            "Release Notes (Table 3), or run the doctor where NVML answers (nvidia-smi shows "
            "the driver's 'CUDA Version')",
        )
    if have >= need:
        return result(
            "driver.cuda",
            "ok",
            f"driver {driver} supports CUDA {reported}, which covers the build's CUDA {cuda} "
            f"({rests})",
        )
    if have[0] < need[0]:
        return result(
            "driver.cuda",
            "fail",
            f"driver {driver} supports CUDA {reported}, an older major than the build's CUDA "
            f"{cuda}: CUDA calls fail with 'CUDA driver version is insufficient for CUDA "
            f"runtime version' (error 35) ({rests})",
            f"upgrade the driver{where} to one that supports CUDA {cuda}, or install a torch "
            f"build for CUDA {have[0]}.x",
        )
    floor = ""
    if support.floor and not windows:  # the floor is a Linux driver number
        floor = f" (the CUDA {need[0]}.x floor is {support.floor})"
    return result(
        "driver.cuda",
        "warn",
        f"driver {driver} supports CUDA {reported}, older than the build's CUDA {cuda} of the "
        f"same major: it runs only under minor-version compatibility{floor}, without PTX JIT "
        f"from the newer toolkit ({rests})",
        f"upgrade the driver{where} to one that supports CUDA {cuda} or newer",
    )


def check_gpu_support(ctx: CheckContext) -> list[CheckResult]:
    """A driver branch older than a GPU's architecture does not know the GPU at all."""
    snap = ctx.snapshot
    driver = driver_version(snap)
    jetson = {g.index for g in jetson_gpus(snap)}
    gpus = [g for g in snap.gpus if g.index not in jetson]
    if not gpus:
        return skip("driver.gpu_support", "no discrete NVIDIA GPU")
    if driver is None:
        return skip("driver.gpu_support", "no NVIDIA driver version known")
    platforms = load_platforms()
    wsl = on_wsl(snap)

    def judge(gpu: GpuFacts) -> tuple[Status, str, str | None] | None:
        try:
            need = platforms.arch_driver(gpu.compute_capability or "")
            too_old = need is not None and compat.compare_driver(driver, need.min_driver) < 0
        except UnknownVersionError:
            return None
        if need is None or not too_old:
            return None
        return (
            "fail",
            f"driver {driver} predates the {need.branch} branch, the first that supports "
            f"{need.architecture} GPUs: the driver does not know this GPU, so no torch build "
            "can use it",
            f"upgrade the NVIDIA driver on Windows to the {need.branch} branch or newer"
            if wsl  # the Linux minimum's number says nothing of Windows drivers
            else f"upgrade the driver to the {need.branch} branch or newer "
            f"(>= {need.min_driver}); drain the node first",
        )

    failures = per_gpu("driver.gpu_support", gpus, judge)
    if failures:
        return failures
    return [
        result(
            "driver.gpu_support",
            "ok",
            f"driver {driver} supports the architecture of every GPU "
            "(Blackwell needs R570 or newer)",
        )
    ]


def _libcuda_version(snap: Snapshot) -> str | None:
    """The version in the file name of the loaded libcuda, unless it is a cuda-compat copy."""
    for lib in snap.libraries:
        if lib.name != "libcuda" or lib.version is None:
            continue
        if "compat" in PurePosixPath(lib.path).parts:
            return None  # forward compatibility: a newer libcuda on purpose
        try:
            parts = compat.parse_driver(lib.version)
        except UnknownVersionError:
            return None
        return lib.version if len(parts) >= 2 and parts[0] >= 100 else None
    return None


def mismatch_text(snap: Snapshot) -> str | None:
    """The message that shows a kernel-module/user-space mismatch, if any fact has one."""
    torch_error = snap.torch.cuda_init_error if snap.torch is not None else None
    for text in (snap.nvml_error, torch_error):
        if text and (known := explain(text)) is not None and known.key == MISMATCH:
            return text
    return None


def check_userspace_match(ctx: CheckContext) -> list[CheckResult]:
    snap = ctx.snapshot
    kernel = driver_version(snap)
    library = _libcuda_version(snap)
    text = mismatch_text(snap)
    versions = ""
    torch = snap.torch
    broken = snap.nvml_error is not None or (
        torch is not None and (torch.cuda_init_error is not None or torch.cuda_available is False)
    )
    # differing file versions matter only when NVML or CUDA also refuse to start
    if kernel and library and kernel != library and broken:
        versions = f" (kernel module {kernel}, libcuda {library})"
    if text is not None or versions:
        seen = f": {text}" if text else ""
        return [
            result(
                "driver.userspace_match",
                "fail",
                f"the nvidia kernel module and the driver's user-space libraries are different "
                f"versions{versions}{seen} — the driver was upgraded without a reboot, so NVML "
                "and CUDA refuse to start",
                REBOOT_FIX,
            )
        ]
    if kernel is None and not snap.gpus:
        return skip("driver.userspace_match", "no NVIDIA driver found")
    same = f": {kernel}" if kernel and library else ""
    return [
        result(
            "driver.userspace_match",
            "ok",
            f"kernel module and user-space driver libraries agree{same}",
        )
    ]


def check_nvml(ctx: CheckContext) -> list[CheckResult]:
    snap = ctx.snapshot
    error = snap.nvml_error
    if error is None:
        return [result("driver.nvml", "ok", "NVML answers (nvidia-smi, metrics, health checks)")]
    if mismatch_text(snap) is not None:
        return skip("driver.nvml", "NVML refuses to start: see driver.userspace_match")
    torch = snap.torch
    cuda_works = torch is not None and bool(torch.cuda_available)
    if not cuda_works:
        if snap.container.device_nodes:
            return skip("driver.nvml", f"NVML unavailable ({error}): see gpu.visible")
        return [result("driver.nvml", "ok", f"no NVIDIA driver on this machine ({error})")]
    if jetson_gpus(snap):
        return [
            result(
                "driver.nvml",
                "ok",
                f"Jetson: NVML is limited on JetPack ({error}); tegrastats reports the GPU",
            )
        ]
    capabilities = snap.env.get("NVIDIA_DRIVER_CAPABILITIES")
    current = f" (NVIDIA_DRIVER_CAPABILITIES={capabilities})" if capabilities is not None else ""
    return [
        result(
            "driver.nvml",
            "warn",
            f"CUDA works but NVML does not ({error}){current}: no nvidia-smi, no GPU metrics "
            "for DCGM or NVML exporters, and no ECC or row-remap health checks (gpu.health "
            "cannot judge the memory)",
            NVML_FIX,
        )
    ]
