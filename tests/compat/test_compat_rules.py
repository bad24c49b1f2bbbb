"""Architecture (SASS/PTX) and driver rules."""

from __future__ import annotations

import pytest

from torchrig.compat import arch_support, driver_support, load_kb
from torchrig.errors import UnknownVersionError

CU126_ARCHS = ["sm_50", "sm_60", "sm_70", "sm_75", "sm_80", "sm_86", "sm_90"]


def _arch_list(release: str, variant: str) -> list[str]:
    info = load_kb().variant(release, variant)
    assert info is not None
    return info.arch_list


def test_exact_sass() -> None:
    result = arch_support(_arch_list("2.9.1", "cu128"), "9.0")
    assert (result.runs, result.how, result.via) == (True, "sass-exact", "sm_90")


def test_l4_runs_cu126_through_sm_86() -> None:
    result = arch_support(CU126_ARCHS, "8.9")
    assert (result.runs, result.how, result.via) == (True, "sass-compatible", "sm_86")


def test_rtx_5090_does_not_run_cu126_and_the_message_names_sm_120() -> None:
    result = arch_support(_arch_list("2.9", "cu126"), "12.0")
    assert not result.runs
    assert result.how is None
    assert "sm_120" in result.message
    assert "no kernel image is available" in result.message


def test_sm_86_code_does_not_run_on_8_7() -> None:
    assert not arch_support(["sm_86"], "8.7").runs
    assert not arch_support(["sm_80", "sm_86"], "8.7").runs
    assert arch_support(["sm_87"], "8.7").how == "sass-exact"


def test_b300_runs_sm_100() -> None:
    result = arch_support(_arch_list("2.14", "cu130"), "10.3")
    assert (result.runs, result.how, result.via) == (True, "sass-compatible", "sm_100")


def test_sm_100_does_not_run_on_10_1_and_sm_101_runs_on_11_0() -> None:
    assert not arch_support(["sm_100"], "10.1").runs
    assert arch_support(["sm_101"], "11.0").via == "sm_101"


def test_sass_does_not_cross_majors() -> None:
    assert not arch_support(["sm_90"], "10.0").runs


def test_arch_specific_sass_runs_only_on_its_own_cc() -> None:
    assert not arch_support(["sm_90a"], "9.1").runs
    assert arch_support(["sm_90a"], "9.0").runs


def test_ptx_jits_on_newer_ccs_across_majors() -> None:
    result = arch_support(["sm_80", "compute_80"], "12.0")
    assert (result.runs, result.how, result.via) == (True, "ptx-jit", "compute_80")
    assert not arch_support(["compute_90"], "8.9").runs


def test_ptx_needs_jit_which_minor_version_compat_forbids() -> None:
    result = arch_support(["sm_80", "compute_80"], "12.0", ptx_jit_allowed=False)
    assert not result.runs
    assert "minor-version compatibility" in result.message


def test_arch_list_in_dotted_form() -> None:
    assert arch_support(["7.5", "8.0+PTX"], "9.0").how == "ptx-jit"
    assert arch_support(["7.5", "8.0+PTX"], "8.0").how == "sass-exact"


def test_bad_arch_entry_is_an_error() -> None:
    with pytest.raises(UnknownVersionError, match="sm_XY, compute_XY"):
        arch_support(["ampere"], "8.0")


def test_cu130_with_driver_550_is_insufficient() -> None:
    result = driver_support("13.0", "550")
    assert result.status == "insufficient"
    assert (result.min_driver, result.floor) == ("580.65.06", "580")
    assert "CUDA driver version is insufficient for CUDA runtime version" in result.message
    assert "error 35" in result.message
    assert result.fix == "upgrade the driver to >= 580.65.06 or install a cu126 build"


def test_cu128_with_driver_535_is_minor_compat_and_names_the_limits() -> None:
    result = driver_support("12.8", "535.104.05")
    assert result.status == "minor-compat"
    assert (result.min_driver, result.floor) == ("570.26", "525.60.13")
    assert "PTX" in result.message
    assert "newer driver" in result.message
    assert result.fix is not None
    assert ">= 570.26" in result.fix


def test_driver_comparison_is_numeric() -> None:
    assert driver_support("12.8", "570.86.15").status == "ok"
    assert driver_support("12.8", "570.9").status == "minor-compat"


def test_driver_below_the_12x_floor_is_insufficient_without_alternative() -> None:
    result = driver_support("12.6", "520.61.05")
    assert result.status == "insufficient"
    assert result.fix == "upgrade the driver to >= 560.28.03"


def test_cuda_13_minor_compat_floor_is_the_r580_branch() -> None:
    result = driver_support("13.2", "580.95.05")
    assert result.status == "minor-compat"
    assert driver_support("13.0", "580.95.05").status == "ok"


def test_unknown_cuda_toolkit() -> None:
    result = driver_support("12.4", "560.35.03")
    assert result.status == "unknown"
    assert "12.4" in result.message
    assert driver_support("12.4", "500").status == "insufficient"


@pytest.mark.parametrize(("cuda", "driver"), [("12.8", "x"), ("twelve", "570.26")])
def test_malformed_input_is_an_error(cuda: str, driver: str) -> None:
    with pytest.raises(UnknownVersionError):
        driver_support(cuda, driver)
