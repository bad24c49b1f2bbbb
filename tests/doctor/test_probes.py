"""Judging --deep probe results written by hand (GPU cases) or measured here (CPU)."""

from __future__ import annotations

import msgspec

from builders import node
from torchrig.doctor import diagnose
from torchrig.doctor.model import Report
from torchrig.facts.model import (
    AllReduceProbe,
    KernelProbe,
    ProbeFacts,
    SdpaBackendProbe,
    SdpaProbe,
)

H100_SDPA = SdpaProbe(
    device="cuda:0",
    dtype="bfloat16",
    shape=[8, 16, 2048, 64],
    backends=[
        SdpaBackendProbe(backend="flash", ok=True, median_ms=0.29),
        SdpaBackendProbe(backend="efficient", ok=True, median_ms=0.61),
        SdpaBackendProbe(backend="cudnn", ok=True, median_ms=0.19),
        SdpaBackendProbe(backend="math", ok=True, median_ms=11.5),
    ],
)


def statuses(report: Report, check_id: str) -> list[str]:
    return [r.status for r in report.checks if r.id == check_id]


def with_probes(probes: ProbeFacts, **kw: object) -> Report:
    snap = msgspec.structs.replace(node(**kw), probes=probes)  # type: ignore[arg-type]
    return diagnose(snap)


def test_without_deep_probe_checks_skip_and_say_how() -> None:
    report = diagnose(node())
    for check_id in ("probe.run", "probe.kernel", "probe.sdpa", "probe.allreduce"):
        (res,) = [r for r in report.checks if r.id == check_id]
        assert res.status == "skip"
        assert "--deep" in res.message


def test_healthy_h100_probes() -> None:
    report = with_probes(
        ProbeFacts(
            kernels=[
                KernelProbe(device="cuda:0", ok=True, kernel_ms=0.01, matmul_max_rel_error=1e-7)
            ],
            sdpa=[H100_SDPA],
            allreduce=AllReduceProbe(
                backend="nccl", world_size=1, ok=True, size_bytes=16 * 2**20, median_ms=0.05
            ),
            duration_s=4.2,
        )
    )
    assert report.deep
    assert statuses(report, "probe.kernel") == ["ok"]
    assert statuses(report, "probe.sdpa") == ["ok"]
    (sdpa,) = [r for r in report.checks if r.id == "probe.sdpa"]
    assert "60.5x math" in sdpa.message  # 11.5 ms math / 0.19 ms cudnn
    assert statuses(report, "probe.allreduce") == ["ok"]


def test_no_kernel_image_in_the_probe_names_the_fix() -> None:
    report = with_probes(
        ProbeFacts(
            kernels=[
                KernelProbe(
                    device="cuda:0",
                    ok=False,
                    error="CUDA error: no kernel image is available for execution on the device",
                )
            ]
        )
    )
    (res,) = [r for r in report.checks if r.id == "probe.kernel"]
    assert res.status == "fail"
    assert res.fix is not None
    assert "gpu.arch" in res.fix


def test_wrong_matmul_fails() -> None:
    report = with_probes(
        ProbeFacts(
            kernels=[
                KernelProbe(device="cuda:0", ok=True, kernel_ms=0.01, matmul_max_rel_error=0.3)
            ]
        )
    )
    assert statuses(report, "probe.kernel") == ["fail"]


def test_math_only_attention_on_gpu_fails_and_missing_flash_warns() -> None:
    math_only = SdpaProbe(
        device="cuda:0",
        dtype="bfloat16",
        shape=[8, 16, 2048, 64],
        backends=[
            SdpaBackendProbe(backend="flash", ok=False, error="No available kernel"),
            SdpaBackendProbe(backend="efficient", ok=False, error="No available kernel"),
            SdpaBackendProbe(backend="cudnn", ok=False, error="No available kernel"),
            SdpaBackendProbe(backend="math", ok=True, median_ms=11.5),
        ],
    )
    assert statuses(with_probes(ProbeFacts(sdpa=[math_only])), "probe.sdpa") == ["fail"]
    no_flash = msgspec.structs.replace(
        math_only,
        backends=[
            SdpaBackendProbe(backend="flash", ok=False, error="No available kernel"),
            SdpaBackendProbe(backend="efficient", ok=True, median_ms=0.61),
            SdpaBackendProbe(backend="math", ok=True, median_ms=11.5),
        ],
    )
    assert statuses(with_probes(ProbeFacts(sdpa=[no_flash])), "probe.sdpa") == ["warn"]


def test_nccl_failure_from_small_shm_names_shm_fix() -> None:
    report = with_probes(
        ProbeFacts(
            allreduce=AllReduceProbe(
                backend="nccl",
                world_size=8,
                ok=False,
                error="NCCL error: unhandled system error, "
                "Error while creating shared memory segment",
            )
        ),
        gpu_count=8,
    )
    (res,) = [r for r in report.checks if r.id == "probe.allreduce"]
    assert res.status == "fail"
    assert res.fix is not None
    assert "--shm-size" in res.fix


def test_probe_process_crash_fails() -> None:
    report = with_probes(ProbeFacts(error="probe process timed out after 180 s"))
    assert statuses(report, "probe.run") == ["fail"]
