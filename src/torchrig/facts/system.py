"""Facts about the operating system, the interpreter and the host's memory and CPUs.

Every reader takes the file it reads as a parameter, so tests can feed real
files laid out in a temporary directory; every reader returns `None` when the
file is missing or unreadable instead of raising.
"""

from __future__ import annotations

import os
import platform
import socket
import sys
from pathlib import Path

from torchrig.facts._files import read_text
from torchrig.facts.model import OsFacts, PythonFacts, ShmFacts


def read_os(os_release: Path = Path("/etc/os-release")) -> OsFacts:
    """Kernel, machine, distribution (PRETTY_NAME) and C library of this host."""
    libc_name, libc_version = platform.libc_ver()
    libc = f"{libc_name} {libc_version}" if libc_name and libc_version else None
    return OsFacts(
        system=platform.system(),
        release=platform.release(),
        machine=platform.machine(),
        distro=read_pretty_name(os_release),
        libc=libc,
    )


def read_pretty_name(os_release: Path) -> str | None:
    """PRETTY_NAME from an os-release file, unquoted; None if absent."""
    text = read_text(os_release)
    if text is None:
        return None
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip() == "PRETTY_NAME":
            return value.strip().strip("\"'") or None
    return None


def read_python() -> PythonFacts:
    """Version, implementation and executable of the running interpreter."""
    return PythonFacts(
        version=platform.python_version(),
        implementation=platform.python_implementation(),
        executable=sys.executable,
    )


def read_hostname() -> str | None:
    try:
        return socket.gethostname() or None
    except OSError:
        return None


def read_host_memory(meminfo: Path = Path("/proc/meminfo")) -> int | None:
    """MemTotal of the host in bytes (a cgroup limit may be lower: see `cgroup`)."""
    text = read_text(meminfo)
    if text is None:
        return None
    for line in text.splitlines():
        if line.startswith("MemTotal:"):
            fields = line.split()
            try:
                value = int(fields[1])
            except (IndexError, ValueError):
                return None
            unit = fields[2].lower() if len(fields) > 2 else ""
            return value * 1024 if unit == "kb" else value
    return None


def read_cpu_count() -> int | None:
    """CPUs this process may run on (its affinity mask), else the host's count."""
    getaffinity = getattr(os, "sched_getaffinity", None)
    if getaffinity is not None:
        try:
            return len(getaffinity(0))
        except OSError:
            pass
    return os.cpu_count()


def read_shm(path: Path = Path("/dev/shm")) -> ShmFacts | None:
    """Size of the shared-memory filesystem NCCL and DataLoader workers use; None if absent."""
    statvfs = getattr(os, "statvfs", None)
    if statvfs is None or not path.is_dir():
        return None
    try:
        st = statvfs(path)
    except OSError:
        return None
    return ShmFacts(
        path=str(path),
        total_bytes=st.f_blocks * st.f_frsize,
        free_bytes=st.f_bavail * st.f_frsize,
    )
