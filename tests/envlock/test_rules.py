"""Each drift rule on hand-edited pairs of locks: breaking, risky, info."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from builders import node
from torchrig.envlock import DiffReport, Distribution, EnvLock, diff
from torchrig.facts.model import (
    ProbeFacts,
    PythonFacts,
    SdpaBackendProbe,
    SdpaProbe,
    Snapshot,
)

NUMPY_2 = Distribution(name="numpy", version="2.1.3", installer="pip", source="index")
PILLOW = Distribution(name="pillow", version="11.0.0", installer="pip", source="index")


def lock(snapshot: Snapshot | None = None, packages: list[Distribution] | None = None) -> EnvLock:
    return EnvLock(
        torchrig_version="0.1.0",
        snapshot=snapshot or node(),
        packages=[NUMPY_2, PILLOW] if packages is None else packages,
    )


def changed(snapshot: Snapshot, **torch: Any) -> Snapshot:
    assert snapshot.torch is not None
    return msgspec.structs.replace(snapshot, torch=msgspec.structs.replace(snapshot.torch, **torch))


def severities(report: DiffReport, key_prefix: str) -> list[str]:
    return [d.severity for d in report.differences if d.key.startswith(key_prefix)]


def test_identical_locks_have_no_difference() -> None:
    report = diff(lock(), lock())
    assert report.differences == []
    assert (report.breaking, report.risky, report.info) == (0, 0, 0)


@pytest.mark.parametrize(
    ("b_snapshot", "key"),
    [
        (node(torch="2.10.0+cu128"), "torch.version"),
        (node(torch="2.9.1+cu130", driver="580.65.06", driver_cuda="13.0"), "torch.cuda"),
        (node(torch="2.9.1+cpu", gpu=None), "torch.cuda"),
        (node(gpu="RTX 5090", torch="2.9.1+cu126"), "gpus[0].compute_capability"),
        (changed(node(), cudnn_version=80902), "torch.cudnn_version"),
        (changed(node(), cudnn_version=8907), "torch.cudnn_version"),
        (changed(node(), flash_attention_available=False), "torch.flash_attention_available"),
        (node(gpu=None), "gpus"),
    ],
    ids=[
        "torch-minor",
        "cuda-major",
        "cpu-build",
        "arch-not-runnable",
        "cudnn-major",
        "cudnn-8-encoding",
        "flash-lost",
        "gpu-lost",
    ],
)
def test_breaking_rules(b_snapshot: Snapshot, key: str) -> None:
    report = diff(lock(), lock(b_snapshot))
    assert "breaking" in severities(report, key), report.differences
    assert report.breaking >= 1
    breaking = [d for d in report.differences if d.severity == "breaking"]
    assert all(d.consequence for d in breaking)
    assert report.differences[0].severity == "breaking"  # breaking first


def test_python_minor_is_breaking_and_patch_is_info() -> None:
    base = node()
    minor = msgspec.structs.replace(
        base, python=PythonFacts(version="3.12.4", implementation="CPython", executable="x")
    )
    patch = msgspec.structs.replace(
        base, python=msgspec.structs.replace(base.python, version="3.11.9")
    )
    assert severities(diff(lock(base), lock(minor)), "python.version") == ["breaking"]
    assert severities(diff(lock(base), lock(patch)), "python.version") == ["info"]


def test_sdpa_backend_that_ran_in_a_and_not_in_b_is_breaking() -> None:
    def probed(*working: str) -> Snapshot:
        backends = [
            SdpaBackendProbe(
                backend=name, ok=name in working, median_ms=1.0 if name in working else None
            )
            for name in ("flash", "efficient", "cudnn", "math")
        ]
        sdpa = SdpaProbe(
            device="cuda:0", dtype="bfloat16", shape=[8, 16, 2048, 64], backends=backends
        )
        return msgspec.structs.replace(node(), probes=ProbeFacts(sdpa=[sdpa]))

    report = diff(lock(probed("flash", "efficient", "math")), lock(probed("efficient", "math")))
    lost = [d for d in report.differences if d.severity == "breaking"]
    assert [d.key for d in lost] == ["probes.sdpa.cuda.flash"]
    # probe timings are not drift
    same = diff(lock(probed("flash", "math")), lock(probed("flash", "math")))
    assert same.differences == []


@pytest.mark.parametrize(
    ("b_snapshot", "key"),
    [
        (node(torch="2.9.0+cu128"), "torch.version"),
        (node(torch="2.9.1+cu126", driver="570.86.15"), "torch.cuda"),
        (changed(node(), nccl_version="2.21.5"), "torch.nccl_version"),
        (node(driver="580.82.07", driver_cuda="13.0"), "driver.version"),
        (node(gpu="A100"), "gpus.compute_capability"),
        (node(gpu_count=2), "gpus.count"),
        (changed(node(), cudnn_version=91300), "torch.cudnn_version"),
    ],
    ids=["torch-patch", "cuda-minor", "nccl", "driver-branch", "gpu-arch", "gpu-count", "cudnn"],
)
def test_risky_rules(b_snapshot: Snapshot, key: str) -> None:
    report = diff(lock(), lock(b_snapshot))
    assert severities(report, key) == ["risky"], report.differences
    assert report.breaking == 0


def test_numpy_major_is_risky_minor_is_info() -> None:
    numpy_1 = msgspec.structs.replace(NUMPY_2, version="1.26.4")
    numpy_2_2 = msgspec.structs.replace(NUMPY_2, version="2.2.0")
    assert severities(diff(lock(), lock(packages=[numpy_1, PILLOW])), "packages.numpy") == ["risky"]
    assert severities(diff(lock(), lock(packages=[numpy_2_2, PILLOW])), "packages.numpy") == [
        "info"
    ]


def test_model_dependency_change_is_risky() -> None:
    newer = msgspec.structs.replace(PILLOW, version="12.0.0")
    b = lock(packages=[NUMPY_2, newer])
    assert severities(diff(lock(), b), "packages.pillow") == ["info"]
    assert severities(diff(lock(), b, model_dependencies=["Pillow"]), "packages.pillow") == [
        "risky"
    ]
    gone = lock(packages=[NUMPY_2])
    assert severities(diff(lock(), gone, model_dependencies=["pillow"]), "packages.pillow") == [
        "risky"
    ]


def test_everything_else_is_info_and_volatile_values_are_not_drift() -> None:
    a = node()
    b = msgspec.structs.replace(
        a,
        taken_at="2027-01-01T00:00:00Z",
        hostname="prod-7",
        env={"NCCL_DEBUG": "INFO"},
        gpus=[msgspec.structs.replace(a.gpus[0], memory_used_bytes=123)],
    )
    report = diff(lock(a), lock(b))
    keys = {d.key: d.severity for d in report.differences}
    assert keys == {"hostname": "info", "env.NCCL_DEBUG": "info"}


def test_summary_names_build_python_and_gpus() -> None:
    report = diff(lock(), lock(node(torch="2.11.0+cu130", driver="580.65.06")))
    assert report.a_summary.startswith("torch 2.9.1+cu128 (CUDA 12.8), Python 3.11.7")
    assert "1x NVIDIA H100 80GB HBM3 (sm_90)" in report.a_summary
    assert "driver 580.65.06" in report.b_summary
