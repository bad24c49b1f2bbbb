"""Fewer, sharper rows: identical GPUs grouped, LD_PRELOAD named first, only libraries the
process would really load counted as shadows."""

from __future__ import annotations

from builders import node
from snapshot_files import load, one, results
from torchrig.doctor import diagnose
from torchrig.facts.model import CandidateLibrary


def test_eight_identical_gpus_give_one_grouped_row() -> None:
    report = diagnose(node(gpu="H100", gpu_count=8))
    arch = one(report, "gpu.arch")
    assert arch.status == "ok"
    assert arch.subject == "gpu0-7"
    assert "GPU 0-7: 8x NVIDIA H100 80GB HBM3" in arch.message
    assert "8x NVIDIA H100" in one(report, "gpu.visible").message


def test_gpus_with_different_verdicts_are_not_grouped() -> None:
    report = diagnose(
        node(gpu="H100", gpu_count=4, gpu_extra={"mig_enabled": True, "mig_devices": 0})
    )
    mig = one(report, "gpu.mig")
    assert mig.subject == "gpu0-3"
    healthy = diagnose(node(gpu="H100", gpu_count=4))
    assert len(results(healthy, "gpu.health")) == 1


def test_ld_preload_case_gives_one_shadowing_finding_that_names_ld_preload() -> None:
    report = diagnose(load("ld-preload-cudnn8.json"))
    (shadow,) = results(report, "libs.shadowing")
    assert shadow.message.startswith("LD_PRELOAD=/usr/local/cuda-11.8/lib64/libcudnn.so.8")
    assert "libcudnn 8.9.7" in shadow.message
    # CUDA 11 sonames (.so.11 cuBLAS, cudart, ...) are never loaded by a cu128 wheel
    for never in ("libcublas.so.11", "libcudart.so.11.0", "libcufft.so.10", "libnvrtc.so.11.2"):
        assert never not in shadow.message
    assert shadow.fix is not None
    assert shadow.fix.startswith("remove /usr/local/cuda-11.8/lib64/libcudnn.so.8 from LD_PRELOAD")


def test_a_candidate_with_another_soname_major_is_not_a_shadow() -> None:
    old = CandidateLibrary(
        name="libcublas",
        path="/usr/local/cuda-11.8/lib64/libcublas.so.11",
        ld_library_path_entry="/usr/local/cuda-11.8/lib64",
    )
    same = CandidateLibrary(
        name="libcublas",
        path="/usr/local/cuda-12.4/lib64/libcublas.so.12",
        ld_library_path_entry="/usr/local/cuda-12.4/lib64",
    )
    assert one(diagnose(node(library_candidates=[old])), "libs.shadowing").status == "ok"
    found = one(diagnose(node(library_candidates=[same])), "libs.shadowing")
    assert found.status == "warn"
    assert "/usr/local/cuda-12.4/lib64" in found.message
