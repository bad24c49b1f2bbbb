"""The rules that decide which differences between two environments matter.

Each rule compares environment A (the reference: the lock, the laptop, the exporting
environment) with B (the candidate: production, this container) and returns the
differences it owns, with a severity and what the difference can cause. Keys the rules own
are listed in `OWNED_KEYS` so the generic comparison does not report them twice.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from packaging.version import InvalidVersion, Version

from torchrig import compat
from torchrig.envlock.model import Distribution, EnvLock
from torchrig.envlock.report import Difference, Severity
from torchrig.errors import UnknownVersionError
from torchrig.facts.model import Snapshot
from torchrig.facts.torch_build import cudnn_text, decode_cudnn_version

# snapshot keys (dotted prefixes) whose differences the rules below report
OWNED_KEYS = (
    "python.version",
    "torch.version",
    "torch.cuda",
    "torch.arch_list",
    "torch.cudnn_version",
    "torch.cudnn_compile_version",
    "torch.nccl_version",
    "torch.flash_attention_available",
    "driver.version",
    "gpus",
    "probes",
)

Rule = Callable[[Snapshot, Snapshot], list[Difference]]


def _diff(  # noqa: PLR0917 - one positional field per Difference attribute
    severity: Severity, key: str, a: object, b: object, message: str, consequence: str
) -> Difference:
    return Difference(
        severity=severity,
        key=key,
        a=None if a is None else str(a),
        b=None if b is None else str(b),
        message=message,
        consequence=consequence,
    )


def _release(text: str) -> tuple[int, ...]:
    try:
        return Version(text.split("+", 1)[0]).release
    except InvalidVersion:
        return ()


def python_minor(a: Snapshot, b: Snapshot) -> list[Difference]:
    va, vb = a.python.version, b.python.version
    if va == vb:
        return []
    if _release(va)[:2] != _release(vb)[:2]:
        return [
            _diff(
                "breaking",
                "python.version",
                va,
                vb,
                f"Python {va} → {vb}: another minor version",
                "compiled extensions and wheels are built per Python minor; pickled objects "
                "and cached bytecode may not load",
            )
        ]
    return [_diff("info", "python.version", va, vb, f"Python {va} → {vb}", "patch release")]


def torch_version(a: Snapshot, b: Snapshot) -> list[Difference]:
    ta, tb = a.torch, b.torch
    if ta is None and tb is None:
        return []
    if ta is None or tb is None:
        return [
            _diff(
                "breaking",
                "torch.version",
                ta.version if ta else None,
                tb.version if tb else None,
                "torch is installed in only one of the environments",
                "the model cannot load or run where torch is missing",
            )
        ]
    ra, rb = _release(ta.version), _release(tb.version)
    if ra[:2] != rb[:2]:
        return [
            _diff(
                "breaking",
                "torch.version",
                ta.version,
                tb.version,
                f"torch {ta.version} → {tb.version}: another minor release",
                "operators, defaults and numerics change between minor releases; exported "
                "programs and compiled artifacts are not guaranteed to load in another release",
            )
        ]
    if ra != rb:
        return [
            _diff(
                "risky",
                "torch.version",
                ta.version,
                tb.version,
                f"torch {ta.version} → {tb.version}: another patch release",
                "patch releases fix bugs, which can change results in the fixed operators",
            )
        ]
    if ta.version != tb.version and ta.cuda == tb.cuda:
        return [
            _diff(
                "info",
                "torch.version",
                ta.version,
                tb.version,
                f"torch {ta.version} → {tb.version}",
                "same release and CUDA, another local build tag",
            )
        ]
    return []


def cuda_build(a: Snapshot, b: Snapshot) -> list[Difference]:
    if a.torch is None or b.torch is None:
        return []
    ca, cb = a.torch.cuda, b.torch.cuda
    if ca == cb:
        return []
    if ca is None or cb is None:
        return [
            _diff(
                "breaking",
                "torch.cuda",
                ca,
                cb,
                f"torch build CUDA {ca or 'none (CPU build)'} → {cb or 'none (CPU build)'}",
                "a CPU build cannot use the GPU; code that moves tensors to cuda fails",
            )
        ]
    if ca.split(".")[0] != cb.split(".")[0]:
        return [
            _diff(
                "breaking",
                "torch.cuda",
                ca,
                cb,
                f"torch built for CUDA {ca} → {cb}: another CUDA major",
                "another driver floor applies, and CUDA extensions built against one major do "
                "not load with the other",
            )
        ]
    return [
        _diff(
            "risky",
            "torch.cuda",
            ca,
            cb,
            f"torch built for CUDA {ca} → {cb}",
            "the minimum driver and the bundled CUDA libraries (cuBLAS, cuDNN) differ, so "
            "kernels and numerics can differ",
        )
    ]


def _ccs(snapshot: Snapshot) -> list[str]:
    return sorted({g.compute_capability for g in snapshot.gpus if g.compute_capability})


def gpus(a: Snapshot, b: Snapshot) -> list[Difference]:
    out: list[Difference] = []
    arch_list = b.torch.arch_list if b.torch is not None and b.torch.cuda else []
    for gpu in b.gpus:
        if not gpu.compute_capability or not arch_list:
            continue
        support = compat.arch_support(arch_list, gpu.compute_capability)
        if not support.runs:
            out.append(
                _diff(
                    "breaking",
                    f"gpus[{gpu.index}].compute_capability",
                    None,
                    gpu.compute_capability,
                    f"B's torch build cannot run on GPU {gpu.index} {gpu.name}: {support.message}",
                    "kernels fail with 'no kernel image is available for execution on the device'",
                )
            )
    if a.gpus and not b.gpus:
        out.append(
            _diff(
                "breaking",
                "gpus",
                f"{len(a.gpus)} GPU(s)",
                "none",
                "A had GPUs, B has none",
                "the model runs on the CPU (far slower) or fails where it asks for cuda",
            )
        )
        return out
    ccs_a, ccs_b = _ccs(a), _ccs(b)
    if ccs_a and ccs_b and ccs_a != ccs_b:
        out.append(
            _diff(
                "risky",
                "gpus.compute_capability",
                " ".join(ccs_a),
                " ".join(ccs_b),
                f"GPU architecture {', '.join(ccs_a)} → {', '.join(ccs_b)}",
                "kernel selection, bf16/TF32 and fused attention availability, speed and memory "
                "differ between architectures",
            )
        )
    if len(a.gpus) != len(b.gpus) and a.gpus and b.gpus:
        out.append(
            _diff(
                "risky",
                "gpus.count",
                len(a.gpus),
                len(b.gpus),
                f"{len(a.gpus)} → {len(b.gpus)} GPUs",
                "device placement and collective (NCCL) topologies that assume a GPU count break",
            )
        )
    names_a = sorted(g.name for g in a.gpus)
    names_b = sorted(g.name for g in b.gpus)
    if names_a != names_b and ccs_a == ccs_b:
        out.append(
            _diff(
                "info",
                "gpus.name",
                ", ".join(names_a) or None,
                ", ".join(names_b) or None,
                "other GPU models of the same architecture",
                "memory size and speed may differ",
            )
        )
    return out


def cudnn(a: Snapshot, b: Snapshot) -> list[Difference]:
    va = a.torch.cudnn_version if a.torch else None
    vb = b.torch.cudnn_version if b.torch else None
    if va == vb or va is None or vb is None:
        return []
    ta, tb = cudnn_text(va), cudnn_text(vb)
    if decode_cudnn_version(va)[0] != decode_cudnn_version(vb)[0]:
        return [
            _diff(
                "breaking",
                "torch.cudnn_version",
                ta,
                tb,
                f"cuDNN {ta} → {tb}: another major version",
                "convolution and attention kernels differ; torch refuses a cuDNN major it was "
                "not built against",
            )
        ]
    return [
        _diff(
            "risky",
            "torch.cudnn_version",
            ta,
            tb,
            f"cuDNN {ta} → {tb}",
            "heuristics pick other convolution kernels: speed and last-bit results can change",
        )
    ]


def sdpa(a: Snapshot, b: Snapshot) -> list[Difference]:
    """A fused attention backend that ran in A and cannot run in B."""
    if a.probes is not None and b.probes is not None and a.probes.sdpa and b.probes.sdpa:
        ran_a = {
            (p.device.split(":")[0], s.backend) for p in a.probes.sdpa for s in p.backends if s.ok
        }
        ran_b = {
            (p.device.split(":")[0], s.backend) for p in b.probes.sdpa for s in p.backends if s.ok
        }
        lost = sorted(ran_a - ran_b)
        return [
            _diff(
                "breaking",
                f"probes.sdpa.{device}.{backend}",
                "runs",
                "does not run",
                f"SDPA backend {backend} ran on {device} in A and does not in B",
                "attention falls back to a slower backend; the math fallback is ~60x slower "
                "and materialises the full attention matrix (out-of-memory on long inputs)",
            )
            for device, backend in lost
            if backend != "math" or not ran_b
        ]
    fa = a.torch.flash_attention_available if a.torch else None
    fb = b.torch.flash_attention_available if b.torch else None
    if fa and fb is False:
        return [
            _diff(
                "breaking",
                "torch.flash_attention_available",
                fa,
                fb,
                "A's torch has Flash Attention, B's does not",
                "attention falls back to slower kernels (up to ~60x for the math path) and can "
                "run out of memory on long sequences",
            )
        ]
    return []


def nccl(a: Snapshot, b: Snapshot) -> list[Difference]:
    va = a.torch.nccl_version if a.torch else None
    vb = b.torch.nccl_version if b.torch else None
    if va == vb or (va is None and vb is None):
        return []
    return [
        _diff(
            "risky",
            "torch.nccl_version",
            va,
            vb,
            f"NCCL {va or 'none'} → {vb or 'none'}",
            "collective algorithms, topology detection and their bugs differ; multi-GPU jobs "
            "can hang or slow down",
        )
    ]


def driver(a: Snapshot, b: Snapshot) -> list[Difference]:
    va = a.driver.version if a.driver else None
    vb = b.driver.version if b.driver else None
    if va == vb or va is None or vb is None:
        return []
    if va.split(".")[0] != vb.split(".")[0]:
        return [
            _diff(
                "risky",
                "driver.version",
                va,
                vb,
                f"driver branch {va.split('.')[0]} → {vb.split('.')[0]} ({va} → {vb})",
                "another branch supports other CUDA versions (PTX JIT, minor-version "
                "compatibility) and has other bugs",
            )
        ]
    return [_diff("info", "driver.version", va, vb, f"driver {va} → {vb}", "same branch")]


SNAPSHOT_RULES: tuple[Rule, ...] = (
    python_minor,
    torch_version,
    cuda_build,
    gpus,
    cudnn,
    sdpa,
    nccl,
    driver,
)


def _major(version: str) -> int | None:
    release = _release(version)
    return release[0] if release else None


# packages whose differences the snapshot rules already judge
COVERED_PACKAGES = frozenset({"torch"})


def packages(
    a: Iterable[Distribution], b: Iterable[Distribution], model_dependencies: Iterable[str]
) -> list[Difference]:
    """Python distributions: numpy major and a model's own dependencies are risky."""
    from packaging.utils import canonicalize_name

    deps = {canonicalize_name(d) for d in model_dependencies}
    by_a = {d.name: d for d in a}
    by_b = {d.name: d for d in b}
    out: list[Difference] = []
    for name in sorted(set(by_a) | set(by_b)):
        if name in COVERED_PACKAGES:
            continue
        da, db = by_a.get(name), by_b.get(name)
        key = f"packages.{name}"
        va = da.version if da else None
        vb = db.version if db else None
        if va == vb:
            if da and db and da.hash and db.hash and da.hash != db.hash:
                out.append(
                    _diff(
                        "info",
                        key + ".hash",
                        da.hash,
                        db.hash,
                        f"{name} {va}: another archive (hash differs)",
                        "a rebuilt or locally built wheel of the same version",
                    )
                )
            continue
        if name in deps:
            out.append(
                _diff(
                    "risky",
                    key,
                    va,
                    vb,
                    f"{name} {va or 'missing'} → {vb or 'missing'}",
                    "a dependency of the model's code: its behaviour can change the outputs",
                )
            )
        elif name == "numpy" and va and vb and _major(va) != _major(vb):
            out.append(
                _diff(
                    "risky",
                    key,
                    va,
                    vb,
                    f"numpy {va} → {vb}: another major version",
                    "extensions compiled against one numpy major fail to import with the "
                    "other; dtype promotion rules changed in numpy 2",
                )
            )
        else:
            change = "added" if va is None else "removed" if vb is None else "changed"
            out.append(
                _diff("info", key, va, vb, f"{name} {change}: {va or '-'} → {vb or '-'}", "")
            )
    return out


def lock_rules(a: EnvLock, b: EnvLock, model_dependencies: Iterable[str]) -> list[Difference]:
    """Every rule, snapshot and packages, in a stable order."""
    out: list[Difference] = []
    for rule in SNAPSHOT_RULES:
        try:
            out.extend(rule(a.snapshot, b.snapshot))
        except UnknownVersionError as exc:  # a hand-written lock with an odd version string
            out.append(_diff("risky", rule.__name__, None, None, exc.message, "not comparable"))
    out.extend(packages(a.packages, b.packages, model_dependencies))
    return out
