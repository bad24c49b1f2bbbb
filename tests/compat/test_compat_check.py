"""`check`, `builds_for` and the lookups the doctor relies on."""

from __future__ import annotations

import pytest

from torchrig.compat import builds_for, check, load_kb, matrix
from torchrig.compat.model import CompatReport, Finding
from torchrig.errors import UnknownVersionError


def _by_topic(report: CompatReport, topic: str) -> Finding:
    found = [finding for finding in report.findings if finding.topic == topic]
    assert len(found) == 1, report.findings
    return found[0]


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("NVIDIA H100 80GB HBM3", "H100"),
        ("NVIDIA A100-SXM4-80GB", "A100"),
        ("Tesla V100-SXM2-32GB", "V100"),
        ("NVIDIA GeForce RTX 5090", "RTX 5090"),
        ("NVIDIA A10G", "A10G"),
        ("NVIDIA A10", "A10"),
        ("Tesla T4", "T4"),
        ("NVIDIA L4", "L4"),
        ("rtx 4090", "RTX 4090"),
        ("NVIDIA RTX PRO 6000 Blackwell Server Edition", "RTX PRO 6000 Blackwell Server Edition"),
        ("NVIDIA RTX PRO 6000 Blackwell Max-Q Workstation Edition", "RTX PRO 6000 Blackwell"),
        ("NVIDIA GH200 480GB", "GH200"),
        ("Orin (nvgpu)", "Jetson AGX Orin"),
    ],
)
def test_gpu_lookup_by_nvml_name(name: str, expected: str) -> None:
    gpu = load_kb().gpu(name)
    assert gpu is not None
    assert gpu.name == expected


def test_gpu_lookup_misses_rather_than_guessing() -> None:
    kb = load_kb()
    assert kb.gpu("Foo") is None
    assert kb.gpu("Quadro RTX 6000") is None  # Turing, not the RTX 6000 Ada
    assert kb.gpu("") is None


def test_gpu_facts() -> None:
    kb = load_kb()
    expected = {"B300": "10.3", "RTX 5090": "12.0", "L4": "8.9", "V100": "7.0", "H100": "9.0"}
    for name, cc in expected.items():
        gpu = kb.gpu(name)
        assert gpu is not None
        assert gpu.compute_capability == cc
    h100, rtx = kb.gpu("H100"), kb.gpu("RTX 5090")
    assert h100 is not None
    assert rtx is not None
    assert h100.datacenter
    assert not rtx.datacenter


def test_lookups_the_doctor_uses() -> None:
    kb = load_kb()
    rel = kb.release("2.9")
    assert rel is not None
    assert rel.pypi_default == "cu128"
    info = kb.variant("2.9.1", "cu126")
    assert info is not None
    assert (info.cuda, info.cudnn, info.nccl) == ("12.6", "9.10.2.21", "2.27.5")
    assert info.sass == ["5.0", "6.0", "7.0", "7.5", "8.0", "8.6", "9.0"]
    assert info.ptx == []
    assert info.index_url == "https://download.pytorch.org/whl/cu126"
    req = kb.driver_requirement("12.8")
    assert req is not None
    assert (req.min_driver, req.minor_compat_floor) == ("570.26", "525.60.13")
    assert kb.release("3.1") is None
    assert kb.variant("2.12.0", "cu128") is None  # 12.8 builds were dropped in 2.12


def test_h100_with_cu128_and_a_570_driver_is_ok() -> None:
    report = check(torch="2.9.1+cu128", gpu="NVIDIA H100 80GB HBM3", driver="570.86.15")
    assert report.verdict == "ok"
    assert _by_topic(report, "arch").status == "ok"
    assert _by_topic(report, "driver").status == "ok"
    assert report.known["gpu"] == "H100"
    assert report.known["cc"] == "9.0"
    assert report.known["min_driver"] == "570.26"


def test_rtx_5090_on_cu126_fails_with_the_cu128_fix() -> None:
    report = check(torch="2.9.1+cu126", gpu="RTX 5090")
    assert report.verdict == "fail"
    arch = _by_topic(report, "arch")
    assert arch.status == "fail"
    assert arch.message == "RTX 5090 (sm_120) needs a cu128 or newer build; this is cu126"
    assert arch.fix == (
        "install torch==2.9.1 from the cu128 index: "
        "pip install torch==2.9.1 --index-url https://download.pytorch.org/whl/cu128"
    )


def test_the_fix_respects_the_driver() -> None:
    report = check(torch="2.9.1+cu126", gpu="RTX 5090", driver="570.86.15")
    fix = _by_topic(report, "arch").fix
    assert fix is not None
    assert "/whl/cu128" in fix
    report = check(torch="2.9.1+cu126", gpu="RTX 5090", driver="580.95.05")
    fix = _by_topic(report, "arch").fix
    assert fix is not None
    assert "/whl/cu128" in fix  # stable beats experimental cu130


def test_v100_on_2_11_cu128_fails_and_the_fix_names_cu126() -> None:
    report = check(torch="2.11.0+cu128", gpu="Tesla V100-SXM2-32GB")
    assert report.verdict == "fail"
    arch = _by_topic(report, "arch")
    assert arch.message == "V100 (sm_70) needs a cu126 build; this is cu128"
    assert arch.fix is not None
    assert "cu126" in arch.fix
    assert check(torch="2.10.0+cu128", gpu="V100").verdict == "ok"


def test_l4_on_cu126_is_ok_via_sm_86() -> None:
    report = check(torch="2.9.1+cu126", gpu="NVIDIA L4")
    assert report.verdict == "ok"
    assert "sm_86" in _by_topic(report, "arch").message


def test_cu130_with_driver_550_fails() -> None:
    report = check(torch="2.13.0+cu130", gpu="H100", driver="550.54.15")
    assert report.verdict == "fail"
    driver = _by_topic(report, "driver")
    assert driver.status == "fail"
    assert driver.fix is not None
    assert driver.fix.startswith("upgrade the driver to >= 580.65.06 or install torch==2.13.0")
    assert "/whl/cu126" in driver.fix


def test_insufficient_driver_fix_never_names_a_build_the_gpu_cannot_run() -> None:
    report = check(torch="2.14.0+cu130", gpu="B300", driver="550")
    assert _by_topic(report, "driver").fix == "upgrade the driver to >= 580.65.06"


def test_cu128_with_driver_535_warns_minor_compat() -> None:
    report = check(torch="2.9.1+cu128", gpu="A100", driver="535.104.05")
    assert report.verdict == "warn"
    driver = _by_topic(report, "driver")
    assert driver.status == "warn"
    assert "minor-version compatibility" in driver.message


def test_ptx_only_gpu_needs_jit_which_minor_compat_forbids() -> None:
    # 2.10 cu130 ships compute_120 PTX; a (future) 13.0 device can only JIT it
    report = check(torch="2.10.0+cu130", cc="13.0", driver="580.65.06")
    assert report.verdict == "warn"
    assert "compute_120" in _by_topic(report, "arch").message
    report = check(torch="2.10.0+cu130", cc="13.0", driver="580.10")
    assert _by_topic(report, "driver").status == "warn"
    assert _by_topic(report, "arch").status == "fail"
    assert report.verdict == "fail"


def test_gpu_given_by_cc() -> None:
    report = check(torch="2.9.1+cu126", cc="12.0")
    assert report.verdict == "fail"
    assert "sm_120" in _by_topic(report, "arch").message
    report = check(torch="2.9.1+cu126", gpu="Foo", cc="8.9")
    assert report.verdict == "ok"


def test_unknown_torch_release_is_unknown() -> None:
    report = check(torch="3.1.0+cu130", gpu="H100")
    assert report.verdict == "unknown"
    torch = _by_topic(report, "torch")
    assert torch.message == "unknown: torch 3.1 is not in the knowledge base (it knows 2.9–2.14)"
    assert torch.fix is not None
    assert "torchrig doctor" in torch.fix


def test_unknown_cuda_says_where_to_compare_the_driver() -> None:
    report = check(torch="2.5.1+cu118", gpu="H100", driver="535.183.01")
    driver = _by_topic(report, "driver")
    assert driver.status == "unknown"
    assert driver.fix is not None
    assert "CUDA 11.8's minimum" in driver.fix


def test_unknown_gpu_is_unknown_and_lists_the_known_ones() -> None:
    report = check(torch="2.9.1+cu126", gpu="Foo")
    assert report.verdict == "unknown"
    gpu = _by_topic(report, "gpu")
    assert gpu.message.startswith("unknown GPU 'Foo'; known GPUs: ")
    assert "H100" in gpu.message
    assert gpu.fix is not None
    assert "--cc" in gpu.fix


def test_a_partial_gpu_name_offers_the_models_it_could_mean() -> None:
    gpu = _by_topic(check(torch="2.9.1+cu126", gpu="RTX PRO 6000"), "gpu")
    assert gpu.status == "unknown"
    assert gpu.message == (
        "unknown GPU 'RTX PRO 6000'; did you mean RTX PRO 6000 Blackwell, "
        "RTX PRO 6000 Blackwell Server Edition?"
    )


def test_unknown_variant_is_unknown() -> None:
    report = check(torch="2.12.0+cu128", gpu="H100")
    assert report.verdict == "unknown"
    assert "no cu128 build" in _by_topic(report, "torch").message


def test_cpu_build_with_a_gpu_fails_with_a_cuda_fix() -> None:
    report = check(torch="2.13.0+cpu", gpu="H100")
    assert report.verdict == "fail"
    fix = _by_topic(report, "torch").fix
    assert fix is not None
    assert "/whl/cu130" in fix
    assert check(torch="2.13.0+cpu").verdict == "warn"


def test_no_local_tag_assumes_the_pypi_wheel() -> None:
    report = check(torch="2.9.1", gpu="RTX 5090")
    assert report.verdict == "ok"
    assert report.known["variant"] == "cu128"


@pytest.mark.parametrize(
    "kwargs",
    [{"torch": "abc"}, {"torch": "2.9.1+cu126", "driver": "x"}, {"torch": "2.9.1", "cc": "z"}],
)
def test_malformed_input_raises(kwargs: dict[str, str]) -> None:
    with pytest.raises(UnknownVersionError):
        check(**kwargs)


def test_builds_for_newest_first_and_with_driver() -> None:
    builds = builds_for("12.0")
    assert builds[0].release == "2.14"
    assert all(build.variant != "cu126" for build in builds)
    with_driver = builds_for("12.0", driver="570.86.15")
    assert {(b.release, b.variant) for b in with_driver if b.driver_status == "ok"} == {
        ("2.9", "cu128"),
        ("2.10", "cu128"),
        ("2.11", "cu128"),
    }
    assert all(b.driver_status != "insufficient" for b in with_driver)
    assert builds_for("12.0", release="2.9", driver="570.86.15")[0].pip_command == (
        "pip install torch==2.9.1 --index-url https://download.pytorch.org/whl/cu128"
    )


def test_builds_for_volta_and_orin() -> None:
    assert {b.variant for b in builds_for("7.0")} == {"cu126", "cu128", "cu129"}
    assert {b.release for b in builds_for("7.0") if b.variant != "cu126"} == {"2.9", "2.10"}
    assert builds_for("8.7") == []
    with pytest.raises(UnknownVersionError, match="not in the knowledge base"):
        builds_for("9.0", release="1.0")


def test_matrix_rows() -> None:
    rows = matrix("2.9")
    assert [row.variant for row in rows] == ["cu126", "cu128", "cu129", "cu130"]
    cu126 = rows[0]
    assert cu126.min_driver == "560.28.03"
    assert "V100" in cu126.gpus
    assert "RTX 5090" not in cu126.gpus
    assert "Jetson AGX Orin" not in cu126.gpus
    assert matrix()[0].release == "2.14"
