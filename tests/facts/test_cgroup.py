"""cgroup limits read from real files laid out like cgroup v1 and v2 hierarchies."""

from __future__ import annotations

from pathlib import Path

from torchrig.facts.cgroup import parse_self_cgroup, read_cgroup

GIB = 1024**3
V1_UNLIMITED = "9223372036854771712\n"  # what an unlimited v1 memory cgroup reports


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_v2_takes_the_tightest_limit_of_the_process_cgroup_and_its_ancestors(
    tmp_path: Path,
) -> None:
    root = tmp_path / "sys/fs/cgroup"
    write(root / "cgroup.controllers", "cpuset cpu io memory pids\n")
    write(root / "kubepods/memory.max", f"{8 * GIB}\n")
    write(root / "kubepods/cpu.max", "max 100000\n")
    write(root / "kubepods/pod1/memory.max", f"{2 * GIB}\n")
    write(root / "kubepods/pod1/cpu.max", "150000 100000\n")
    self_cgroup = tmp_path / "self-cgroup"
    write(self_cgroup, "0::/kubepods/pod1\n")

    facts = read_cgroup(root, self_cgroup)

    assert facts.version == 2
    assert facts.memory_limit_bytes == 2 * GIB
    assert facts.cpu_quota_cores == 1.5


def test_v2_without_limits_reports_none(tmp_path: Path) -> None:
    root = tmp_path / "cgroup"
    write(root / "cgroup.controllers", "cpu memory\n")
    write(root / "memory.max", "max\n")
    write(root / "cpu.max", "max 100000\n")
    self_cgroup = tmp_path / "self-cgroup"
    write(self_cgroup, "0::/\n")

    facts = read_cgroup(root, self_cgroup)

    assert (facts.version, facts.memory_limit_bytes, facts.cpu_quota_cores) == (2, None, None)


def test_v1_reads_memory_and_cfs_quota_and_ignores_the_unlimited_sentinel(
    tmp_path: Path,
) -> None:
    root = tmp_path / "cgroup"
    write(root / "memory/memory.limit_in_bytes", V1_UNLIMITED)
    write(root / "memory/docker/abc/memory.limit_in_bytes", f"{GIB // 2}\n")
    write(root / "cpu,cpuacct/cpu.cfs_quota_us", "-1\n")
    write(root / "cpu,cpuacct/cpu.cfs_period_us", "100000\n")
    write(root / "cpu,cpuacct/docker/abc/cpu.cfs_quota_us", "400000\n")
    write(root / "cpu,cpuacct/docker/abc/cpu.cfs_period_us", "100000\n")
    self_cgroup = tmp_path / "self-cgroup"
    write(self_cgroup, "4:memory:/docker/abc\n2:cpu,cpuacct:/docker/abc\n1:name=systemd:/x\n")

    facts = read_cgroup(root, self_cgroup)

    assert facts.version == 1
    assert facts.memory_limit_bytes == GIB // 2
    assert facts.cpu_quota_cores == 4.0


def test_v1_unlimited_everywhere_is_none(tmp_path: Path) -> None:
    root = tmp_path / "cgroup"
    write(root / "memory/memory.limit_in_bytes", V1_UNLIMITED)
    write(root / "cpu/cpu.cfs_quota_us", "-1\n")
    write(root / "cpu/cpu.cfs_period_us", "100000\n")

    facts = read_cgroup(root, tmp_path / "no-such-file")

    assert (facts.version, facts.memory_limit_bytes, facts.cpu_quota_cores) == (1, None, None)


def test_v1_without_cgroup_namespace_falls_back_to_the_mounted_root(tmp_path: Path) -> None:
    # Docker without a cgroup namespace: /proc/self/cgroup names /docker/<id>, but the
    # container sees its own cgroup mounted at the controller's root.
    root = tmp_path / "cgroup"
    write(root / "memory/memory.limit_in_bytes", f"{3 * GIB}\n")
    self_cgroup = tmp_path / "self-cgroup"
    write(self_cgroup, "4:memory:/docker/0123abcd\n")

    assert read_cgroup(root, self_cgroup).memory_limit_bytes == 3 * GIB


def test_no_cgroup_filesystem_gives_an_empty_record(tmp_path: Path) -> None:
    facts = read_cgroup(tmp_path / "missing", tmp_path / "missing-self")

    assert (facts.version, facts.memory_limit_bytes, facts.cpu_quota_cores) == (None, None, None)


def test_garbage_values_are_ignored(tmp_path: Path) -> None:
    root = tmp_path / "cgroup"
    write(root / "cgroup.controllers", "memory\n")
    write(root / "memory.max", "lots\n")
    write(root / "cpu.max", "1 2 3\n")

    facts = read_cgroup(root, tmp_path / "missing")

    assert (facts.version, facts.memory_limit_bytes, facts.cpu_quota_cores) == (2, None, None)


def test_parse_self_cgroup_maps_each_controller() -> None:
    text = "12:cpu,cpuacct:/kubepods/besteffort/pod1\n4:memory:/kubepods/pod1\n0::/init.scope\n"

    paths = parse_self_cgroup(text)

    assert paths == {
        "cpu": "/kubepods/besteffort/pod1",
        "cpuacct": "/kubepods/besteffort/pod1",
        "memory": "/kubepods/pod1",
        "": "/init.scope",
    }


def test_this_machine_reads_without_error() -> None:
    facts = read_cgroup()

    assert facts.version in (None, 1, 2)
    assert facts.memory_limit_bytes is None or facts.memory_limit_bytes > 0
    assert facts.cpu_quota_cores is None or facts.cpu_quota_cores > 0
