"""The doctor's verdicts on hand-written snapshots of machines we do not have."""

from __future__ import annotations

import pytest

from builders import GIB, MIB, node
from torchrig.doctor import diagnose
from torchrig.doctor.model import CheckResult, Report
from torchrig.facts.model import (
    CandidateLibrary,
    ContainerFacts,
    LoadedLibrary,
)


def results(report: Report, check_id: str) -> list[CheckResult]:
    found = [r for r in report.checks if r.id == check_id]
    assert found, f"no result for {check_id}"
    return found


def one(report: Report, check_id: str) -> CheckResult:
    (found,) = results(report, check_id)
    return found


def not_ok(report: Report) -> list[str]:
    return [
        f"{r.id}: {r.status}: {r.message}" for r in report.checks if r.status in ("warn", "fail")
    ]


def test_h100_cu128_driver_570_is_ok() -> None:
    report = diagnose(node(torch="2.9.1+cu128", gpu="H100", driver="570.86.15"))
    assert report.verdict == "ok", not_ok(report)
    assert report.exit_code == 0
    assert one(report, "gpu.arch").status == "ok"
    assert one(report, "driver.cuda").status == "ok"
    assert "sm_90" in one(report, "gpu.arch").message


def test_rtx5090_on_cu126_fails_for_missing_sm_120() -> None:
    report = diagnose(
        node(torch="2.9.1+cu126", gpu="RTX 5090", driver="570.86.15", driver_cuda="12.8")
    )
    arch = one(report, "gpu.arch")
    assert arch.status == "fail"
    assert "sm_120" in arch.message
    assert "no kernel image" in arch.message
    assert arch.fix is not None
    # the fix is a build that runs sm_120 *and* suits driver 570: a cu128 wheel, not cu130
    assert "cu128" in arch.fix
    assert "pip install torch==" in arch.fix
    assert report.verdict == "fail"
    assert report.exit_code == 2


def test_v100_on_torch_211_cu128_fails_volta_dropped() -> None:
    report = diagnose(
        node(torch="2.11.0+cu128", gpu="V100", arch_key="cu128-2.11", driver="570.86.15")
    )
    arch = one(report, "gpu.arch")
    assert arch.status == "fail"
    assert "sm_70" in arch.message
    assert arch.fix is not None
    assert "cu126" in arch.fix


def test_l4_on_cu126_runs_through_sm_86() -> None:
    report = diagnose(node(torch="2.9.1+cu126", gpu="L4", driver="560.35.03", driver_cuda="12.6"))
    arch = one(report, "gpu.arch")
    assert arch.status == "ok", arch.message
    assert "sm_86" in arch.message
    assert report.verdict == "ok", not_ok(report)


def test_cu130_build_with_driver_550_fails() -> None:
    report = diagnose(
        node(torch="2.10.0+cu130", gpu="H100", driver="550.54.15", driver_cuda="12.4")
    )
    drv = one(report, "driver.cuda")
    assert drv.status == "fail"
    assert "580" in (drv.message + (drv.fix or ""))
    assert drv.fix is not None
    assert report.exit_code == 2


def test_cu128_build_with_driver_535_is_minor_version_compat_warning() -> None:
    report = diagnose(
        node(torch="2.9.1+cu128", gpu="H100", driver="535.104.05", driver_cuda="12.2")
    )
    drv = one(report, "driver.cuda")
    assert drv.status == "warn"
    assert "PTX" in drv.message or "minor" in drv.message.lower()
    assert report.exit_code == 0
    strict = diagnose(
        node(torch="2.9.1+cu128", gpu="H100", driver="535.104.05", driver_cuda="12.2"), strict=True
    )
    assert strict.exit_code == 1


@pytest.mark.parametrize(
    ("torch", "driver", "driver_cuda", "status", "needle"),
    [
        # CUDA 11.8 and 12.4 are older than the driver table: the driver's report decides
        ("2.7.1+cu118", "535.183.01", "12.2", "ok", "covers the build's CUDA 11.8"),
        ("2.5.1+cu124", "550.54.15", "12.4", "ok", "covers the build's CUDA 12.4"),
        ("2.7.1+cu118", "470.82.01", "11.4", "warn", "minor-version compatibility"),
        ("2.7.1+cu118", "440.33.01", "10.2", "fail", "older major"),
        ("2.5.1+cu124", "550.54.15", None, "warn", "does not report which CUDA"),
    ],
)
def test_a_cuda_outside_the_driver_table_is_judged_by_the_drivers_own_report(
    torch: str, driver: str, driver_cuda: str | None, status: str, needle: str
) -> None:
    """A wheel for a CUDA the table has no row for (torch 2.5-2.7's cu118 and cu124 are
    still common on nodes): NVML's report of the highest CUDA the driver runs decides, and
    a warning or failure still says what to do."""
    report = diagnose(node(torch=torch, gpu="A100", driver=driver, driver_cuda=driver_cuda))
    drv = one(report, "driver.cuda")
    assert drv.status == status, drv.message
    assert needle in drv.message
    if status != "ok":
        assert drv.fix, drv.message


def test_64mb_shm_with_8_gpus_fails_and_names_the_fixes() -> None:
    report = diagnose(node(gpu="H100", gpu_count=8, shm_bytes=64 * MIB))
    shm = one(report, "system.shm")
    assert shm.status == "fail"
    assert "64 MiB" in shm.message
    assert shm.fix is not None
    for remedy in ("--shm-size", "--ipc=host", "emptyDir"):
        assert remedy in shm.fix


def test_small_shm_single_gpu_is_only_a_warning() -> None:
    report = diagnose(node(gpu="H100", gpu_count=1, shm_bytes=64 * MIB))
    assert one(report, "system.shm").status == "warn"


def test_system_libcudnn_shadowing_the_wheel_warns() -> None:
    libs = [
        LoadedLibrary(
            name="libcudnn",
            path="/usr/local/cuda/lib64/libcudnn.so.9.1.0",
            version="9.1.0",
            from_wheel=False,
        ),
        LoadedLibrary(
            name="libcuda", path="/usr/lib/x86_64-linux-gnu/libcuda.so.1", from_wheel=False
        ),
    ]
    report = diagnose(node(libraries=libs, env={"LD_LIBRARY_PATH": "/usr/local/cuda/lib64"}))
    shadow = one(report, "libs.shadowing")
    assert shadow.status == "warn"
    assert "/usr/local/cuda/lib64/libcudnn.so.9.1.0" in shadow.message
    assert shadow.fix is not None
    assert "LD_LIBRARY_PATH" in shadow.fix
    assert "/usr/local/cuda/lib64" in shadow.fix


def test_library_on_ld_library_path_not_yet_loaded_warns() -> None:
    cand = CandidateLibrary(
        name="libnvJitLink",
        path="/usr/local/cuda-12.4/lib64/libnvJitLink.so.12",
        ld_library_path_entry="/usr/local/cuda-12.4/lib64",
    )
    report = diagnose(node(library_candidates=[cand]))
    (shadow,) = results(report, "libs.shadowing")
    assert shadow.status == "warn"
    assert shadow.subject == "libnvJitLink"


def test_no_gpu_with_require_gpu_fails() -> None:
    snap = node(torch="2.13.0+cpu", gpu=None, driver=None)
    assert diagnose(snap).verdict != "fail"
    report = diagnose(snap, require_gpu=True)
    visible = one(report, "gpu.visible")
    assert visible.status == "fail"
    assert visible.fix is not None
    assert report.exit_code == 2


def test_container_that_asked_for_gpus_but_has_none() -> None:
    box = ContainerFacts(
        in_container=True,
        runtime="docker",
        gpu_requested=True,
        gpu_request_hint="NVIDIA_VISIBLE_DEVICES=all",
    )
    snap = node(torch="2.9.1+cu128", gpu=None, container=box)
    visible = one(diagnose(snap), "gpu.visible")
    assert visible.status == "warn"
    assert visible.fix is not None
    assert "--gpus" in visible.fix
    assert "nvidia.com/gpu" in visible.fix
    assert one(diagnose(snap, require_gpu=True), "gpu.visible").status == "fail"


def test_cpu_only_machine_passes() -> None:
    report = diagnose(node(torch="2.13.0+cpu", gpu=None, driver=None))
    assert report.verdict == "ok", not_ok(report)
    assert "CPU-only" in one(report, "gpu.visible").message


def test_cpu_wheel_on_a_gpu_node_fails_with_a_cuda_build() -> None:
    report = diagnose(node(torch="2.9.1+cpu", gpu="H100", driver="570.86.15"))
    build = one(report, "torch.build")
    assert build.status == "fail"
    assert build.fix is not None
    assert "--index-url" in build.fix


def test_cuda_visible_devices_hiding_all_gpus() -> None:
    snap = node(gpu="H100", gpu_count=2, env={"CUDA_VISIBLE_DEVICES": ""})
    assert one(diagnose(snap), "gpu.cuda_visible_devices").status == "warn"
    assert one(diagnose(snap, require_gpu=True), "gpu.cuda_visible_devices").status == "fail"
    partial = node(gpu="H100", gpu_count=2, env={"CUDA_VISIBLE_DEVICES": "1,7"})
    assert one(diagnose(partial), "gpu.cuda_visible_devices").status == "warn"
    fine = node(gpu="H100", gpu_count=2, env={"CUDA_VISIBLE_DEVICES": "1"})
    assert one(diagnose(fine), "gpu.cuda_visible_devices").status == "ok"


def test_cuda_init_error_804_is_named() -> None:
    snap = node(
        torch_extra={
            "cuda_available": False,
            "cuda_init_error": "CUDA call failed lazily at initialization with error: forward "
            "compatibility was attempted on non supported HW",
        }
    )
    init = one(diagnose(snap), "torch.cuda_init")
    assert init.status == "fail"
    assert "cuda-compat" in init.message or "forward" in init.message
    assert init.fix is not None
    assert "LD_LIBRARY_PATH" in init.fix


def test_forward_compat_libcuda_on_geforce_fails() -> None:
    libs = [LoadedLibrary(name="libcuda", path="/usr/local/cuda-13.0/compat/libcuda.so.580.65.06")]
    report = diagnose(node(gpu="RTX 5090", torch="2.9.1+cu128", libraries=libs))
    assert one(report, "driver.forward_compat").status == "fail"


def test_mig_without_instances_and_persistence_off_warn() -> None:
    report = diagnose(
        node(
            gpu="A100", gpu_extra={"persistence_mode": False, "mig_enabled": True, "mig_devices": 0}
        )
    )
    assert one(report, "gpu.mig").status == "warn"
    assert one(report, "gpu.persistence").status == "warn"


def test_row_remap_failure_fails() -> None:
    report = diagnose(node(gpu="H100", gpu_extra={"remapped_rows_failure": True}))
    assert one(report, "gpu.health").status == "fail"


def test_cudnn_major_mismatch_fails() -> None:
    report = diagnose(node(torch_extra={"cudnn_version": 80902, "cudnn_compile_version": 91002}))
    assert one(report, "libs.cudnn").status == "fail"


def test_cudnn_8_in_its_own_encoding_against_a_cudnn_9_build_fails() -> None:
    # cuDNN before 9 encodes major*1000 (8.9.7 -> 8907), from 9 on major*10000
    report = diagnose(node(torch_extra={"cudnn_version": 8907, "cudnn_compile_version": 91002}))
    cudnn = one(report, "libs.cudnn")
    assert cudnn.status == "fail"
    assert "cuDNN 8.9.7 is loaded" in cudnn.message


def test_memory_limit_below_gpu_memory_warns() -> None:
    from torchrig.facts.model import CgroupFacts

    report = diagnose(
        node(gpu="H100", gpu_count=8, cgroup=CgroupFacts(version=2, memory_limit_bytes=64 * GIB))
    )
    assert one(report, "system.memory").status == "warn"


def test_cpu_quota_below_torch_threads_warns() -> None:
    from torchrig.facts.model import CgroupFacts

    report = diagnose(node(cgroup=CgroupFacts(version=2, cpu_quota_cores=2.0)))
    cpu = one(report, "system.cpu")
    assert cpu.status == "warn"
    assert cpu.fix is not None
    assert "OMP_NUM_THREADS=2" in cpu.fix


def test_risky_environment_variables_warn() -> None:
    report = diagnose(
        node(
            env={
                "CUDA_LAUNCH_BLOCKING": "1",
                "PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True,bogus:1",
            }
        )
    )
    found = {r.subject: r for r in results(report, "env.variables")}
    assert found["CUDA_LAUNCH_BLOCKING"].status == "warn"
    assert "bogus" in found["PYTORCH_CUDA_ALLOC_CONF"].message


def test_build_without_flash_attention_warns() -> None:
    report = diagnose(
        node(
            torch_extra={
                "flash_attention_available": False,
                "build_flags": {"USE_FLASH_ATTENTION": "OFF"},
            }
        )
    )
    sdpa = one(report, "torch.sdpa")
    assert sdpa.status == "warn"
    assert "60x" in sdpa.message


def test_unknown_torch_release_is_judged_by_what_it_reports() -> None:
    report = diagnose(node(torch="3.1.0+cu128"))
    assert "not in the knowledge base" in one(report, "torch.build").message
    assert one(report, "gpu.arch").status == "ok"


def test_every_check_reports_on_every_snapshot() -> None:
    from torchrig.doctor import CHECKS

    for snap in (node(), node(torch=None, gpu=None), node(torch="2.13.0+cpu", gpu=None)):
        report = diagnose(snap)
        assert {c.id for c in CHECKS} == {r.id for r in report.checks}
        for res in report.checks:
            assert "the check itself failed" not in res.message
            if res.status in ("warn", "fail"):
                assert res.fix, f"{res.id} {res.status} without a fix"
