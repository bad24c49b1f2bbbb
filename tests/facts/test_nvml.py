"""NVML and the /proc driver fallback: this machine's real NVML, and real /proc text."""

from __future__ import annotations

from pathlib import Path

import pytest

from torchrig.facts.nvml import (
    format_cuda_driver_version,
    parse_proc_driver_version,
    read_nvml,
    read_proc_driver,
)

PROPRIETARY = (
    "NVRM version: NVIDIA UNIX x86_64 Kernel Module  550.135  Fri Jan 10 20:00:00 UTC 2025\n"
    "GCC version:  gcc version 12.2.0 (Debian 12.2.0-14)\n"
)
OPEN = (
    "NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  580.95.05  Release Build  "
    "(dvs-builder@U22-I3-B17-02-5)  Tue Sep 23 09:55:41 UTC 2025\n"
    "GCC version:  gcc version 11.4.0 (Ubuntu 11.4.0-1ubuntu1~22.04.2) \n"
)


def nvml_works() -> bool:
    return read_nvml().error is None


@pytest.mark.parametrize(
    ("text", "version"),
    [
        (PROPRIETARY, "550.135"),
        (OPEN, "580.95.05"),
        ("NVRM version: NVIDIA UNIX Open Kernel Module for aarch64  570.86.15", "570.86.15"),
    ],
)
def test_parse_proc_driver_version(text: str, version: str) -> None:
    driver = parse_proc_driver_version(text)

    assert driver is not None
    assert (driver.version, driver.source, driver.cuda_version) == (version, "proc", None)


def test_proc_text_without_a_version() -> None:
    assert parse_proc_driver_version("GCC version: gcc\n") is None


def test_read_proc_driver_from_a_file(tmp_path: Path) -> None:
    version_file = tmp_path / "version"
    version_file.write_text(OPEN)

    driver = read_proc_driver(version_file)

    assert driver is not None
    assert driver.version == "580.95.05"
    assert read_proc_driver(tmp_path / "missing") is None


@pytest.mark.parametrize(("value", "text"), [(12080, "12.8"), (13000, "13.0"), (12060, "12.6")])
def test_format_cuda_driver_version(value: int, text: str) -> None:
    assert format_cuda_driver_version(value) == text


def test_without_nvml_the_reason_is_recorded() -> None:
    if nvml_works():
        pytest.skip("NVML works here: tests/facts/test_gpu.py covers it")
    reading = read_nvml()

    assert reading.driver is None
    assert reading.gpus == []
    assert reading.error is not None
    assert "NVML" in reading.error


def test_reading_twice_works() -> None:
    # nvmlShutdown after each reading: a second reading starts from scratch.
    first, second = read_nvml(), read_nvml()

    assert (first.error, first.driver) == (second.error, second.driver)
    assert [gpu.uuid for gpu in first.gpus] == [gpu.uuid for gpu in second.gpus]
