"""MIG slices, ROCm wheels on NVIDIA nodes, drivers upgraded without a reboot, containers
without NVML, driver branches older than the GPU, and fixes that keep the torch release."""

from __future__ import annotations

from builders import node
from snapshot_files import load, one, problems, results
from torchrig.doctor import diagnose


def test_a100_with_mig_instances_warns_with_the_limits() -> None:
    report = diagnose(load("a100-mig-7x1g.json"))
    mig = one(report, "gpu.mig")
    assert mig.status == "warn"
    assert "7 instance(s)" in mig.message
    assert "one MIG instance" in mig.message
    assert "NCCL cannot run across instances" in mig.message
    assert "memory" in mig.message
    assert mig.fix is not None
    assert "CUDA_VISIBLE_DEVICES=MIG-<uuid>" in mig.fix
    assert report.verdict == "warn", problems(report)
    assert report.exit_code == 0
    assert diagnose(load("a100-mig-7x1g.json"), strict=True).exit_code == 1


def test_mig_off_is_ok() -> None:
    assert one(diagnose(node(gpu="A100")), "gpu.mig").status == "ok"


def test_rocm_wheel_on_an_nvidia_node_fails_with_a_cuda_build() -> None:
    report = diagnose(load("rocm-wheel-on-h100.json"))
    build = one(report, "torch.build")
    assert build.status == "fail"
    assert "ROCm" in build.message
    assert "NVIDIA H100" in build.message
    assert build.fix is not None
    assert "pip install torch==2.9.1 --index-url https://download.pytorch.org/whl/cu128" in (
        build.fix
    )
    assert report.exit_code == 2


def test_rocm_wheel_without_nvidia_gpus_is_fine() -> None:
    snap = node(torch="2.13.0+cpu", gpu=None, driver=None, torch_extra={"hip": "6.4.43482"})
    assert one(diagnose(snap), "torch.build").status == "ok"


def test_an_amd_node_is_not_called_cpu_only() -> None:
    """A ROCm build that sees AMD GPUs (no NVIDIA GPU, no driver): gpu.visible counts them,
    says the NVIDIA checks do not apply, and --require-gpu is met."""
    amd = {"hip": "6.4.43482", "cuda_available": True, "device_count": 8}
    snap = node(torch="2.13.0+cpu", gpu=None, driver=None, torch_extra=amd)
    for require_gpu in (False, True):
        visible = one(diagnose(snap, require_gpu=require_gpu), "gpu.visible")
        assert visible.status == "ok"
        assert visible.message.startswith("8 GPU(s) through ROCm (HIP 6.4.43482)")
    idle = node(torch="2.13.0+cpu", gpu=None, driver=None, torch_extra={"hip": "6.4.43482"})
    assert one(diagnose(idle, require_gpu=True), "gpu.visible").status == "fail"


def test_driver_upgraded_without_reboot_names_the_reboot() -> None:
    report = diagnose(load("driver-upgraded-without-reboot.json"))
    match = one(report, "driver.userspace_match")
    assert match.status == "fail"
    assert "570.86.15" in match.message
    assert "575.57.08" in match.message
    assert match.fix is not None
    assert "reboot" in match.fix
    assert "drain" in match.fix
    assert "modprobe" in match.fix
    visible = one(report, "gpu.visible")
    assert visible.status == "fail"
    assert visible.cause == "driver.userspace_match"
    # not the "container without the NVIDIA toolkit" diagnosis
    assert "container toolkit" not in (visible.fix or "")
    init = one(report, "torch.cuda_init")
    assert init.cause == "driver.userspace_match"
    assert init.fix is not None
    assert "reboot" in init.fix
    assert report.exit_code == 2


def test_matching_driver_versions_pass_userspace_match() -> None:
    assert one(diagnose(node()), "driver.userspace_match").status == "ok"


def test_compute_only_capabilities_warn_that_nvml_is_missing() -> None:
    report = diagnose(load("l4-compute-only-capabilities.json"))
    nvml = one(report, "driver.nvml")
    assert nvml.status == "warn"
    assert "nvidia-smi" in nvml.message
    assert "ECC" in nvml.message
    assert "NVIDIA_DRIVER_CAPABILITIES=compute" in nvml.message
    assert nvml.fix is not None
    assert "compute,utility" in nvml.fix
    assert one(report, "gpu.health").status == "skip"
    assert report.verdict == "warn", problems(report)


def test_blackwell_with_a_driver_older_than_r570_fails_for_the_driver_branch() -> None:
    report = diagnose(
        node(torch="2.9.1+cu128", gpu="RTX 5090", driver="535.104.05", driver_cuda="12.2")
    )
    support = one(report, "driver.gpu_support")
    assert support.status == "fail"
    assert "R570" in support.message
    assert "Blackwell" in support.message
    assert support.fix is not None
    assert "570.26" in support.fix
    assert report.exit_code == 2
    # the arch itself is fine: the build has sm_120
    assert one(report, "gpu.arch").status == "ok"


def test_driver_too_old_fix_keeps_the_release_when_a_build_of_it_fits() -> None:
    report = diagnose(
        node(
            torch="2.13.0+cu130",
            arch_key="cu130",
            gpu="H100",
            driver="550.54.15",
            driver_cuda="12.4",
            torch_extra={"cuda": "13.0"},
        )
    )
    drv = one(report, "driver.cuda")
    assert drv.status == "fail"
    assert drv.fix is not None
    assert "upgrade the driver to >= 580.65.06" in drv.fix
    assert "pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cu126" in drv.fix
    assert "your torch 2.13 release" in drv.fix
    assert "a cu129 build" not in drv.fix


def test_driver_too_old_fix_says_when_the_release_must_change() -> None:
    # no torch 2.14 build runs sm_120 on driver 550 (cu126 lacks sm_120, cu130+ need 580);
    # torch 2.13's cu129 does, under minor-version compatibility
    report = diagnose(
        node(
            torch="2.14.1+cu130",
            arch_key="cu130",
            gpu="RTX 5090",
            driver="550.54.15",
            driver_cuda="12.4",
            torch_extra={"cuda": "13.0"},
        )
    )
    drv = one(report, "driver.cuda")
    assert drv.status == "fail"
    assert drv.fix is not None
    assert "changes torch from 2.14.1 to 2.13.0" in drv.fix
    assert "whl/cu129" in drv.fix


def test_no_kernel_image_is_said_once_per_message() -> None:
    report = diagnose(load("rtx5090-cu126.json"))
    for res in results(report, "gpu.arch"):
        assert res.message.count("no kernel image is available") == 1, res.message


def test_an_intel_xpu_build_is_named_as_such() -> None:
    on_nvidia = one(diagnose(node(torch="2.9.1+xpu")), "torch.build")
    assert on_nvidia.status == "fail"
    assert "is an Intel XPU build (for Intel GPUs) but this machine has 1 NVIDIA GPU" in (
        on_nvidia.message
    )
    alone = one(diagnose(node(torch="2.9.1+xpu", gpu=None)), "torch.build")
    assert alone.status == "ok"
    assert alone.message.startswith("Intel XPU build")
