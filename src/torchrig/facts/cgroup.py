"""The memory limit and CPU quota the process's cgroup imposes (v1 or v2).

A container's limits are what matter for workers and batch sizes, not the host's
MemTotal. The process's own cgroup and each of its ancestors are read and the
tightest limit wins, since a limit on a parent applies to its children too.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import TypeVar

from torchrig.facts._files import read_text
from torchrig.facts.model import CgroupFacts

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_SELF_CGROUP = Path("/proc/self/cgroup")

# cgroup v1 reports "no limit" as PAGE_COUNTER_MAX pages, 9223372036854771712 on
# 4 KiB-page kernels; anything this large is no limit at all.
_V1_UNLIMITED_FLOOR = 1 << 62

_Number = TypeVar("_Number", int, float)


def read_cgroup(root: Path = CGROUP_ROOT, self_cgroup: Path = PROC_SELF_CGROUP) -> CgroupFacts:
    """Read the limits under `root`; a root with neither layout gives an empty record."""
    paths = parse_self_cgroup(read_text(self_cgroup) or "")
    if (root / "cgroup.controllers").is_file():
        return _read_v2(root, paths.get("", "/"))
    if (root / "memory").is_dir() or (root / "cpu").is_dir():
        return _read_v1(root, paths)
    return CgroupFacts()


def parse_self_cgroup(text: str) -> dict[str, str]:
    """Map each controller of /proc/self/cgroup to the process's path ("" is the v2 line).

    `4:memory:/docker/abc` gives {"memory": "/docker/abc"}; `1:cpu,cpuacct:/x` gives both
    "cpu" and "cpuacct".
    """
    paths: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        for controller in controllers.split(",") if controllers else [""]:
            paths[controller] = path
    return paths


def _read_v2(root: Path, path: str) -> CgroupFacts:
    memory: int | None = None
    cores: float | None = None
    for directory in _ancestry(root, path):
        memory = _tighter(memory, _v2_memory(read_text(directory / "memory.max")))
        cores = _tighter(cores, _v2_cpu(read_text(directory / "cpu.max")))
    return CgroupFacts(version=2, memory_limit_bytes=memory, cpu_quota_cores=cores)


def _read_v1(root: Path, paths: dict[str, str]) -> CgroupFacts:
    memory: int | None = None
    for directory in _ancestry(root / "memory", paths.get("memory", "/")):
        memory = _tighter(memory, _v1_memory(read_text(directory / "memory.limit_in_bytes")))
    cores: float | None = None
    cpu_base = root / "cpu" if (root / "cpu").is_dir() else root / "cpu,cpuacct"
    for directory in _ancestry(cpu_base, paths.get("cpu", "/")):
        quota = _parse_int(read_text(directory / "cpu.cfs_quota_us"))
        period = _parse_int(read_text(directory / "cpu.cfs_period_us"))
        if quota is not None and quota > 0 and period:
            cores = _tighter(cores, quota / period)
    return CgroupFacts(version=1, memory_limit_bytes=memory, cpu_quota_cores=cores)


def _ancestry(base: Path, path: str) -> Iterator[Path]:
    """`base/path` and each parent up to `base`, those that exist.

    Without a cgroup namespace /proc/self/cgroup names a path (`/docker/<id>`) that is
    not below the container's own mount, so `base` itself is always among them.
    """
    relative = PurePosixPath(path.strip() or "/").relative_to("/")
    seen: list[Path] = []
    for part in [relative, *relative.parents]:
        directory = base / part
        if directory not in seen and directory.is_dir():
            seen.append(directory)
            yield directory
    if base not in seen and base.is_dir():
        yield base


def _v2_memory(text: str | None) -> int | None:
    if text is None or text.strip() == "max":
        return None
    return _parse_int(text)


def _v2_cpu(text: str | None) -> float | None:
    if text is None:
        return None
    fields = text.split()
    if len(fields) != 2 or fields[0] == "max":
        return None
    quota, period = _parse_int(fields[0]), _parse_int(fields[1])
    if quota is None or not period:
        return None
    return quota / period


def _v1_memory(text: str | None) -> int | None:
    value = _parse_int(text)
    if value is None or value >= _V1_UNLIMITED_FLOOR:
        return None
    return value


def _parse_int(text: str | None) -> int | None:
    if text is None:
        return None
    try:
        return int(text.strip())
    except ValueError:
        return None


def _tighter(current: _Number | None, new: _Number | None) -> _Number | None:
    if new is None:
        return current
    if current is None:
        return new
    return min(current, new)
