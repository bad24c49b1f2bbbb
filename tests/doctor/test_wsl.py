"""WSL2: the GPU belongs to the Windows host's driver (Windows version numbers, no
/dev/nvidia* nodes, no persistence mode, libcuda in /usr/lib/wsl/lib), so the Linux
driver table, node reboots and container toolkits are the wrong advice there."""

from __future__ import annotations

import msgspec

from snapshot_files import load, one, problems
from torchrig.doctor import diagnose
from torchrig.facts.model import DriverFacts, Snapshot

WSL = "wsl2-rtx4090-cu128.json"


def with_driver(snap: Snapshot, version: str, cuda: str) -> Snapshot:
    driver = DriverFacts(version=version, cuda_version=cuda, nvml_version=f"12.{version}")
    return msgspec.structs.replace(snap, driver=driver)


def test_the_windows_driver_is_judged_by_the_cuda_it_reports() -> None:
    report = diagnose(load(WSL))  # Windows driver 566.14, CUDA 12.7; a cu128 wheel
    driver = one(report, "driver.cuda")
    assert driver.status == "warn", driver.message
    assert "566.14 (Windows) supports CUDA 12.7" in driver.message
    assert "minor-version compatibility" in driver.message
    assert "570.26" not in driver.message  # Linux's CUDA 12.8 minimum says nothing here
    assert driver.fix == "upgrade the driver on Windows to one that supports CUDA 12.8 or newer"
    assert one(report, "gpu.persistence").status == "skip"
    assert report.verdict == "warn", problems(report)
    assert report.exit_code == 0

    current = diagnose(with_driver(load(WSL), "572.16", "12.8"))
    assert one(current, "driver.cuda").status == "ok"
    assert current.verdict == "ok", problems(current)

    old = one(diagnose(with_driver(load(WSL), "472.12", "11.4")), "driver.cuda")
    assert old.status == "fail"
    assert "older major" in old.message
    assert old.fix is not None
    assert "on Windows" in old.fix


def test_cuda_that_does_not_start_on_wsl2_points_at_the_windows_driver() -> None:
    snap = load(WSL)
    assert snap.torch is not None
    broken = msgspec.structs.replace(
        snap,
        torch=msgspec.structs.replace(
            snap.torch,
            cuda_available=False,
            device_count=0,
            cuda_init_error="CUDA driver initialization failed, you might not have a CUDA gpu.",
        ),
        gpus=[],
        driver=None,
        nvml_error="NVML Shared Library Not Found",
    )
    report = diagnose(broken)
    init = one(report, "torch.cuda_init")
    assert init.status == "fail"
    assert init.fix is not None
    assert "NVIDIA driver on Windows" in init.fix
    assert "reboot" not in init.fix
    required = one(diagnose(broken, require_gpu=True), "gpu.visible")
    assert required.status == "fail"
    assert required.fix is not None
    assert "/usr/lib/wsl/lib" in required.fix


def test_a_linux_node_keeps_the_linux_advice() -> None:
    snap = load(WSL)
    linux = msgspec.structs.replace(snap, os=msgspec.structs.replace(snap.os, release="6.8.0"))
    driver = one(diagnose(linux), "driver.cuda")
    assert driver.status == "warn"
    assert "570.26" in driver.message  # the Linux table: CUDA 12.8 needs >= 570.26
    assert one(diagnose(linux), "gpu.persistence").status == "warn"
