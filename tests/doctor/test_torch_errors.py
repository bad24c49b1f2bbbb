"""torch's own error texts, each mapped to its own cause and fix, and the most specific
failing check carrying the verdict."""

from __future__ import annotations

import pytest

from builders import node
from snapshot_files import load, one
from torchrig.doctor import diagnose
from torchrig.doctor.cuda_errors import KNOWN_ERRORS, explain

TOO_OLD = (
    "The NVIDIA driver on your system is too old (found version 12090). Please update your "
    "GPU driver by downloading and installing a new version from the URL: "
    "http://www.nvidia.com/Download/index.aspx Alternatively, go to: https://pytorch.org to "
    "install a PyTorch version that has been compiled with your version of the CUDA driver."
)
NO_DRIVER = (
    "Found no NVIDIA driver on your system. Please check that you have an NVIDIA GPU and "
    "installed a driver from http://www.nvidia.com/Download/index.aspx"
)
NO_GPUS = "No CUDA GPUs are available"
CUDNN = (
    "cuDNN version incompatibility: PyTorch was compiled  against (9, 10, 2) but found "
    "runtime version (8, 9, 7). PyTorch already comes bundled with cuDNN."
)

# torch's texts (as torch.cuda.init() raises them) -> the key of their own table entry
TORCH_TEXTS = {
    TOO_OLD: "torch-driver-too-old",
    NO_DRIVER: "torch-no-driver",
    NO_GPUS: "torch-no-gpus",
    CUDNN: "torch-cudnn-incompatible",
    "CUDA driver initialization failed, you might not have a CUDA gpu.": "torch-init-failed",
    "CUDA unknown error - this may be due to an incorrectly set up environment, e.g. changing "
    "env variable CUDA_VISIBLE_DEVICES after program start. Setting the available devices to "
    "be zero.": "torch-unknown-error",
    "Cannot re-initialize CUDA in forked subprocess. To use CUDA with multiprocessing, you "
    "must use the 'spawn' start method": "torch-forked",
    "Torch not compiled with CUDA enabled": "torch-not-compiled",
    "Unexpected error from cudaGetDeviceCount(). Did you run some cuda functions before "
    "calling NumCudaDevices() that might have already set an error? Error 803: system has "
    "unsupported display driver / cuda driver combination": "driver-library-mismatch",
}


@pytest.mark.parametrize(("text", "key"), list(TORCH_TEXTS.items()))
def test_each_torch_text_maps_to_its_own_entry(text: str, key: str) -> None:
    known = explain(f"CUDA call failed lazily at initialization with error: {text}")
    assert known is not None
    assert known.key == key


def test_every_entry_has_its_own_fix_and_a_source() -> None:
    fixes = [known.fix for known in KNOWN_ERRORS]
    assert len(set(fixes)) == len(fixes)
    for known in KNOWN_ERRORS:
        assert len(known.source) > 20, known.key
    torch_entries = [k for k in KNOWN_ERRORS if k.key.startswith("torch-")]
    assert all("pytorch/pytorch" in k.source for k in torch_entries)


def failing_init(text: str, **extra: object) -> dict[str, object]:
    return {"cuda_available": False, "device_count": 0, "cuda_init_error": text, **extra}


def test_driver_too_old_decodes_the_version_and_points_at_driver_cuda() -> None:
    snap = node(
        torch="2.13.0+cu130",
        arch_key="cu130",
        gpu="H100",
        driver="575.57.08",
        driver_cuda="12.9",
        torch_extra={"cuda": "13.0", **failing_init(TOO_OLD)},
    )
    report = diagnose(snap)
    init = one(report, "torch.cuda_init")
    assert init.status == "fail"
    assert "the driver supports CUDA 12.9" in init.message
    assert init.cause == "driver.cuda"
    assert init.fix is not None
    assert init.fix.startswith("fix driver.cuda first")
    assert one(report, "driver.cuda").status == "fail"


def test_no_cuda_gpus_with_cuda_visible_devices_hiding_them_fails_there() -> None:
    snap = node(
        gpu="H100",
        gpu_count=2,
        env={"CUDA_VISIBLE_DEVICES": ""},
        torch_extra=failing_init(NO_GPUS),
    )
    report = diagnose(snap)
    cvd = one(report, "gpu.cuda_visible_devices")
    assert cvd.status == "fail"  # the cause carries the verdict, not only a warning
    init = one(report, "torch.cuda_init")
    assert init.cause == "gpu.cuda_visible_devices"
    assert init.fix is not None
    assert "unset CUDA_VISIBLE_DEVICES" in init.fix


def test_no_cuda_gpus_without_a_cause_found_keeps_torch_s_own_fix() -> None:
    init = one(diagnose(node(gpu="H100", torch_extra=failing_init(NO_GPUS))), "torch.cuda_init")
    assert init.status == "fail"
    assert init.cause is None
    assert init.fix is not None
    assert "CUDA_VISIBLE_DEVICES" in init.fix


def test_found_no_driver_names_gpu_access() -> None:
    init = one(diagnose(node(gpu="H100", torch_extra=failing_init(NO_DRIVER))), "torch.cuda_init")
    assert init.status == "fail"
    assert "no CUDA driver" in init.message
    assert init.fix is not None
    assert "--gpus all" in init.fix


def test_cudnn_incompatibility_is_carried_by_the_ld_preload_finding() -> None:
    report = diagnose(load("ld-preload-cudnn8.json"))
    cudnn = one(report, "libs.cudnn")
    assert cudnn.status == "fail"
    assert cudnn.cause == "libs.shadowing"
    assert cudnn.fix is not None
    assert "LD_PRELOAD" in cudnn.fix
    assert one(report, "libs.shadowing").status == "fail"
