"""`torchrig env`: environment locks (fingerprints) and the semantic diff between two.

`take_lock()` fingerprints this environment; `diff(a, b)` says which differences break
things. `torchrig pack` embeds the same lock into model artifacts, so a server can
compare the exporting environment with its own at load time.
"""

from __future__ import annotations

from collections.abc import Iterable

from torchrig import __version__
from torchrig.envlock.generic import generic_differences
from torchrig.envlock.model import (
    LOCK_KIND,
    Distribution,
    EnvLock,
    load_lock,
    lock_from_json,
    lock_to_json,
    write_lock,
)
from torchrig.envlock.report import SEVERITIES, Difference, DiffReport, Severity
from torchrig.envlock.rules import OWNED_KEYS, lock_rules
from torchrig.facts.model import Snapshot

__all__ = [
    "LOCK_KIND",
    "DiffReport",
    "Difference",
    "Distribution",
    "EnvLock",
    "Severity",
    "diff",
    "diff_for_load",
    "load_lock",
    "lock_from_json",
    "lock_to_json",
    "summary",
    "take_lock",
    "write_lock",
]


def take_lock(*, deep: bool = False, probe_timeout_s: float = 180.0) -> EnvLock:
    """Fingerprint the running environment: facts snapshot plus Python distributions."""
    from torchrig.envlock.packages import collect_packages
    from torchrig.facts import collect_snapshot

    snapshot = collect_snapshot(deep=deep, probe_timeout_s=probe_timeout_s)
    return EnvLock(torchrig_version=__version__, snapshot=snapshot, packages=collect_packages())


def summary(snapshot: Snapshot) -> str:
    """One line for people: "torch 2.11.0+cu130 (CUDA 13.0), Python 3.11.7, 1x H100 (sm_90)"."""
    torch = snapshot.torch
    if torch is None:
        parts = ["no torch"]
    else:
        parts = [f"torch {torch.version} ({'CUDA ' + torch.cuda if torch.cuda else 'CPU build'})"]
    parts.append(f"Python {snapshot.python.version}")
    if snapshot.gpus:
        names: dict[str, int] = {}
        for gpu in snapshot.gpus:
            cc = (
                f" (sm_{gpu.compute_capability.replace('.', '')})" if gpu.compute_capability else ""
            )
            names[f"{gpu.name}{cc}"] = names.get(f"{gpu.name}{cc}", 0) + 1
        parts.extend(f"{count}x {name}" for name, count in names.items())
    else:
        parts.append("no GPU")
    if snapshot.driver is not None and snapshot.driver.version:
        parts.append(f"driver {snapshot.driver.version}")
    return ", ".join(parts)


def diff(
    a: EnvLock,
    b: EnvLock,
    *,
    model_dependencies: Iterable[str] = (),
    a_origin: str = "A",
    b_origin: str = "B",
) -> DiffReport:
    """The semantic diff of A (reference) and B (candidate), breaking differences first."""
    found = lock_rules(a, b, model_dependencies)
    found.extend(generic_differences(a.snapshot, b.snapshot, OWNED_KEYS))
    return _report(found, a, b, a_origin, b_origin)


def diff_for_load(exported: EnvLock, running: EnvLock, *, device_specific: bool) -> DiffReport:
    """The differences that matter when a server loads an artifact exported elsewhere.

    The exporting machine's GPUs, packages and CUDA build do not bind a portable program
    (torch.export, TorchScript): only Python and torch do. A device-specific artifact
    (AOTInductor) also needs the same CUDA major and an architecture the build runs.
    """
    from torchrig.envlock import rules

    chosen = [rules.python_minor, rules.torch_version]
    if device_specific:
        chosen += [rules.cuda_build, rules.gpus]
    found = [d for rule in chosen for d in rule(exported.snapshot, running.snapshot)]
    return _report(found, exported, running, "exporting environment", "this server")


def _report(
    found: list[Difference], a: EnvLock, b: EnvLock, a_origin: str, b_origin: str
) -> DiffReport:
    """Breaking differences first (rule order kept within a severity), with the counts."""
    order = {s: i for i, s in enumerate(SEVERITIES)}
    found.sort(key=lambda d: order[d.severity])
    counts = {s: sum(1 for d in found if d.severity == s) for s in SEVERITIES}
    return DiffReport(
        a=a_origin,
        b=b_origin,
        a_summary=summary(a.snapshot),
        b_summary=summary(b.snapshot),
        breaking=counts["breaking"],
        risky=counts["risky"],
        info=counts["info"],
        differences=found,
    )
