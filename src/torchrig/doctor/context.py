"""Small derived views of a snapshot that several checks share."""

from __future__ import annotations

from collections.abc import Callable

from torchrig.compat.model import host_arch
from torchrig.compat.platforms import load_platforms
from torchrig.doctor.model import CheckResult, Status
from torchrig.errors import UnknownVersionError
from torchrig.facts.libraries import is_from_wheel
from torchrig.facts.model import GpuFacts, Snapshot

# what a per-GPU judgement returns: status, message (without the GPU's label), fix
GpuVerdict = tuple[Status, str, str | None]

GIB = 1024**3
MIB = 1024**2


def result(
    check_id: str,
    status: Status,
    message: str,
    fix: str | None = None,
    subject: str | None = None,
    *,
    cause: str | None = None,
) -> CheckResult:
    return CheckResult(
        id=check_id, status=status, message=message, fix=fix, subject=subject, cause=cause
    )


def skip(check_id: str, reason: str) -> list[CheckResult]:
    return [result(check_id, "skip", reason)]


def cuda_build(snapshot: Snapshot) -> str | None:
    """The CUDA version the torch build was made for ("12.8"), or None (CPU/ROCm/no torch)."""
    return snapshot.torch.cuda if snapshot.torch is not None else None


def driver_version(snapshot: Snapshot) -> str | None:
    return snapshot.driver.version if snapshot.driver is not None else None


def arch_label(compute_capability: str | None) -> str:
    """', sm_90' for "9.0"; a value in another form as it is (', compute capability 'x'')."""
    if not compute_capability:
        return ""
    major, dot, minor = compute_capability.partition(".")
    if dot and major.isdecimal() and minor.isdecimal() and major.isascii() and minor.isascii():
        return f", sm_{major}{minor}"
    return f", compute capability {compute_capability!r}"


def gpu_label(gpu: GpuFacts) -> str:
    return f"GPU {gpu.index} {gpu.name}{arch_label(gpu.compute_capability)}"


def _index_ranges(indices: list[int]) -> str:
    """[0, 1, 2, 3, 6] -> '0-3,6'."""
    parts: list[str] = []
    start = prev = indices[0]
    for index in [*indices[1:], -2]:
        if index == prev + 1:
            prev = index
            continue
        parts.append(str(start) if start == prev else f"{start}-{prev}")
        start = prev = index
    return ",".join(parts)


def group_label(gpus: list[GpuFacts]) -> str:
    """'GPU 0 NVIDIA H100, sm_90' for one GPU, 'GPU 0-7: 8x NVIDIA H100, sm_90' for a group."""
    if len(gpus) == 1:
        return gpu_label(gpus[0])
    first = gpus[0]
    indices = _index_ranges(sorted(g.index for g in gpus))
    return f"GPU {indices}: {len(gpus)}x {first.name}{arch_label(first.compute_capability)}"


def group_subject(gpus: list[GpuFacts]) -> str:
    return "gpu" + _index_ranges(sorted(g.index for g in gpus))


def unreadable(exc: UnknownVersionError) -> GpuVerdict:
    """The verdict on facts a check cannot read (a version or architecture in no form it
    knows): it cannot prove this works, so it fails, naming the value instead of crashing."""
    return (
        "fail",
        f"cannot judge this: {exc.message}",
        "correct the value if the snapshot was written by hand or edited; if it is what "
        "this machine reports, torchrig does not know its form yet: report it with the "
        "snapshot (torchrig doctor --save-snapshot FILE)",
    )


def per_gpu(
    check_id: str, gpus: list[GpuFacts], judge: Callable[[GpuFacts], GpuVerdict | None]
) -> list[CheckResult]:
    """One result per group of GPUs that are the same model and get the same verdict.

    Eight identical GPUs give one row ("GPU 0-7: 8x NVIDIA H100 ..."), not eight.
    """
    groups: dict[tuple[str, str | None, Status, str, str | None], list[GpuFacts]] = {}
    for gpu in gpus:
        try:
            verdict = judge(gpu)
        except UnknownVersionError as exc:  # a value in no form torchrig reads: this GPU only
            verdict = unreadable(exc)
        if verdict is None:
            continue
        groups.setdefault((gpu.name, gpu.compute_capability, *verdict), []).append(gpu)
    return [
        result(check_id, status, f"{group_label(members)}: {message}", fix, group_subject(members))
        for (_name, _cc, status, message, fix), members in groups.items()
    ]


def gpu_models_text(gpus: list[GpuFacts]) -> str:
    """'8x NVIDIA H100 80GB HBM3 (sm_90)' / 'GPU 0 ..., GPU 1 ...' grouped by model."""
    models: dict[tuple[str, str | None], list[GpuFacts]] = {}
    for gpu in gpus:
        models.setdefault((gpu.name, gpu.compute_capability), []).append(gpu)
    return ", ".join(group_label(members) for members in models.values())


def machine(snapshot: Snapshot) -> str:
    """The host architecture as torch keys its wheels: 'x86_64' or 'aarch64'."""
    return host_arch(snapshot.os.machine)


def on_wsl(snapshot: Snapshot) -> bool:
    """Whether this is Linux under WSL2 (kernel release "...-microsoft-standard-WSL2"):
    the GPU belongs to the Windows host's driver, reached through /dev/dxg and
    /usr/lib/wsl/lib, with Windows driver version numbers."""
    release = snapshot.os.release.lower()
    return snapshot.os.system == "Linux" and ("microsoft" in release or "wsl" in release)


WSL_DRIVER_FIX = (
    "on WSL2 the GPU driver is the Windows host's: install or update the NVIDIA driver on "
    "Windows (not a Linux driver inside WSL), run `wsl --update` and `wsl --shutdown`, and "
    "check that `ldconfig -p | grep libcuda` lists /usr/lib/wsl/lib/libcuda.so.1"
)


def jetson_gpus(snapshot: Snapshot) -> list[GpuFacts]:
    """The integrated Jetson GPUs (Orin, Thor) of the snapshot."""
    platforms = load_platforms()
    found = []
    for gpu in snapshot.gpus:
        try:
            if platforms.is_jetson(gpu.compute_capability):
                found.append(gpu)
        except UnknownVersionError:
            continue
    return found


def jetpack_system_libraries(snapshot: Snapshot) -> bool:
    """Whether this is a Jetson whose torch wheels use JetPack's CUDA libraries (Orin)."""
    platforms = load_platforms()
    return any(
        platform.system_libraries
        for gpu in jetson_gpus(snapshot)
        for platform in platforms.jetson_platforms(gpu.compute_capability or "")
    )


def cuda_visible_devices(snapshot: Snapshot) -> str | None:
    return snapshot.env.get("CUDA_VISIBLE_DEVICES")


def visible_gpus(snapshot: Snapshot) -> list[GpuFacts]:
    """The GPUs CUDA will enumerate, applying CUDA_VISIBLE_DEVICES as the CUDA runtime does.

    The runtime reads the comma-separated list of indices or (MIG-)UUID prefixes and stops
    at the first entry it cannot resolve; an empty value or "-1" hides every GPU.
    """
    gpus = snapshot.gpus
    spec = cuda_visible_devices(snapshot)
    if spec is None:
        return list(gpus)
    chosen: list[GpuFacts] = []
    for raw in spec.split(","):
        token = raw.strip()
        if not token:
            break
        match: GpuFacts | None = None
        if token.lstrip("-").isdigit():
            index = int(token)
            match = next((g for g in gpus if g.index == index), None)
        else:
            match = next(
                (g for g in gpus if g.uuid and g.uuid.lower().startswith(token.lower())),
                None,
            )
            if match is None and token.upper().startswith("MIG-"):
                # a MIG instance UUID: it lives on a GPU with MIG enabled; count it once
                match = next((g for g in gpus if g.mig_enabled), None)
        if match is None or match in chosen:
            break
        chosen.append(match)
    return chosen


def gpu_memory_total(gpus: list[GpuFacts]) -> int:
    return sum(g.memory_total_bytes or 0 for g in gpus)


def human_bytes(value: int) -> str:
    if value >= GIB:
        return f"{value / GIB:.1f} GiB"
    return f"{value / MIB:.0f} MiB"


def wheel_install(snapshot: Snapshot) -> bool:
    """True when torch is a pip wheel (it then ships its own CUDA libraries)."""
    torch = snapshot.torch
    if torch is None or torch.location is None:
        return False
    return is_from_wheel(torch.location)
