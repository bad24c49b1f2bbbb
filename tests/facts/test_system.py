"""OS, interpreter, memory, CPUs and /dev/shm, read from this machine and from real files."""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path

from torchrig.facts.system import (
    read_cpu_count,
    read_host_memory,
    read_os,
    read_pretty_name,
    read_python,
    read_shm,
)

MEMINFO = """\
MemTotal:       24684084 kB
MemFree:        20148220 kB
MemAvailable:   22917008 kB
Buffers:          235644 kB
"""

OS_RELEASE = """\
PRETTY_NAME="Ubuntu 24.04.1 LTS"
NAME="Ubuntu"
VERSION_ID="24.04"
"""


def test_read_os_on_this_machine() -> None:
    facts = read_os()

    assert facts.system == platform.system()
    assert facts.machine == platform.machine()
    if sys.platform.startswith("linux") and Path("/etc/os-release").is_file():
        assert facts.distro
    if platform.libc_ver()[0] == "glibc":
        assert facts.libc is not None
        assert facts.libc.startswith("glibc ")


def test_pretty_name_is_unquoted(tmp_path: Path) -> None:
    os_release = tmp_path / "os-release"
    os_release.write_text(OS_RELEASE)

    assert read_pretty_name(os_release) == "Ubuntu 24.04.1 LTS"
    assert read_pretty_name(tmp_path / "missing") is None


def test_read_python() -> None:
    facts = read_python()

    assert facts.version == platform.python_version()
    assert facts.executable == sys.executable


def test_host_memory_from_meminfo(tmp_path: Path) -> None:
    meminfo = tmp_path / "meminfo"
    meminfo.write_text(MEMINFO)

    assert read_host_memory(meminfo) == 24684084 * 1024
    assert read_host_memory(tmp_path / "missing") is None


def test_host_memory_of_this_machine() -> None:
    if not Path("/proc/meminfo").is_file():
        assert read_host_memory() is None
        return
    memory = read_host_memory()
    assert memory is not None
    assert memory > 256 * 1024**2


def test_cpu_count_is_what_this_process_may_use() -> None:
    count = read_cpu_count()

    assert count is not None
    assert 1 <= count <= (os.cpu_count() or count)


def test_shm_of_this_machine() -> None:
    if not Path("/dev/shm").is_dir():
        assert read_shm() is None
        return
    shm = read_shm()
    assert shm is not None
    assert shm.path == "/dev/shm"
    assert shm.total_bytes is not None
    assert shm.total_bytes > 0
    assert shm.free_bytes is not None
    assert 0 <= shm.free_bytes <= shm.total_bytes


def test_shm_missing_is_none(tmp_path: Path) -> None:
    assert read_shm(tmp_path / "no-shm") is None
