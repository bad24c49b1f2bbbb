"""Parsing of torch versions, compute capabilities and driver versions."""

from __future__ import annotations

import pytest

from torchrig.compat import TorchBuild, compare_driver, parse_cc, parse_driver, parse_torch_version
from torchrig.errors import UnknownVersionError


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2.9.1+cu126", TorchBuild(version="2.9.1", release="2.9", variant="cu126", cuda="12.6")),
        ("2.13.0+cpu", TorchBuild(version="2.13.0", release="2.13", variant="cpu", cuda=None)),
        ("2.9.1", TorchBuild(version="2.9.1", release="2.9", variant=None, cuda=None)),
        (
            "2.14.0+cu132",
            TorchBuild(version="2.14.0", release="2.14", variant="cu132", cuda="13.2"),
        ),
        (
            " 2.10.0+cu130 ",
            TorchBuild(version="2.10.0", release="2.10", variant="cu130", cuda="13.0"),
        ),
        (
            "2.12.0.dev20260407+cu132",
            TorchBuild(version="2.12.0.dev20260407", release="2.12", variant="cu132", cuda="13.2"),
        ),
        ("2.9.1+rocm6.4", TorchBuild(version="2.9.1", release="2.9", variant="rocm6.4", cuda=None)),
    ],
)
def test_parse_torch_version(text: str, expected: TorchBuild) -> None:
    assert parse_torch_version(text) == expected


@pytest.mark.parametrize("text", ["", "abc", "2", "2.9.1+", "v2.9.1", "2.9.1+cu 126", "2.x.1"])
def test_parse_torch_version_rejects_bad_text_naming_the_form(text: str) -> None:
    with pytest.raises(UnknownVersionError, match=r"expected MAJOR\.MINOR\.PATCH\[\+VARIANT\]"):
        parse_torch_version(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("9.0", (9, 0)),
        ("sm_90", (9, 0)),
        ("90", (9, 0)),
        ("compute_90", (9, 0)),
        ("sm_90a", (9, 0)),
        ("12.0", (12, 0)),
        ("sm_120", (12, 0)),
        ("103", (10, 3)),
        ("8.7", (8, 7)),
    ],
)
def test_parse_cc(text: str, expected: tuple[int, int]) -> None:
    assert parse_cc(text) == expected


@pytest.mark.parametrize("text", ["", "9", "sm90", "9.0.1", "ampere", "sm_", "0.5", "compute_9000"])
def test_parse_cc_rejects_bad_text(text: str) -> None:
    with pytest.raises(UnknownVersionError, match="compute capability"):
        parse_cc(text)


def test_parse_driver_is_numeric_per_component() -> None:
    assert parse_driver("570.86.15") == (570, 86, 15)
    assert parse_driver("580.65.06") == (580, 65, 6)
    assert parse_driver("550") == (550,)


@pytest.mark.parametrize("text", ["", "x.y", "570..1", "570.86.15-1", "r570"])
def test_parse_driver_rejects_bad_text(text: str) -> None:
    with pytest.raises(UnknownVersionError, match=r"expected a dotted number like 570\.86\.15"):
        parse_driver(text)


@pytest.mark.parametrize(
    ("left", "right", "expected"),
    [
        ("570.86.15", "570.26", 1),  # a string comparison would say otherwise
        ("570.26", "570.26", 0),
        ("570.26.0", "570.26", 0),
        ("535.104.05", "560.28.03", -1),
        ("580", "580.65.06", -1),
        ("1000.1", "999.99.99", 1),
    ],
)
def test_compare_driver(left: str, right: str, expected: int) -> None:
    assert compare_driver(left, right) == expected
