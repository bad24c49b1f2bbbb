"""Small derived views of a snapshot that several checks share."""

from __future__ import annotations

from torchrig.doctor.model import CheckResult, Status
from torchrig.facts.libraries import is_from_wheel
from torchrig.facts.model import GpuFacts, Snapshot

GIB = 1024**3
MIB = 1024**2


def result(
    check_id: str,
    status: Status,
    message: str,
    fix: str | None = None,
    subject: str | None = None,
) -> CheckResult:
    return CheckResult(id=check_id, status=status, message=message, fix=fix, subject=subject)


def skip(check_id: str, reason: str) -> list[CheckResult]:
    return [result(check_id, "skip", reason)]


def cuda_build(snapshot: Snapshot) -> str | None:
    """The CUDA version the torch build was made for ("12.8"), or None (CPU/ROCm/no torch)."""
    return snapshot.torch.cuda if snapshot.torch is not None else None


def driver_version(snapshot: Snapshot) -> str | None:
    return snapshot.driver.version if snapshot.driver is not None else None


def gpu_label(gpu: GpuFacts) -> str:
    cc = f", sm_{gpu.compute_capability.replace('.', '')}" if gpu.compute_capability else ""
    return f"GPU {gpu.index} {gpu.name}{cc}"


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
