"""Jetson, Grace (GH200) and Thor machines: arch lists per host architecture, JetPack drivers,
and the knowledge base against the installed torch's own table."""

from __future__ import annotations

import msgspec

from builders import node
from snapshot_files import load, one, problems
from torchrig.doctor import diagnose
from torchrig.facts.model import OsFacts, Snapshot


def on_machine(snap: Snapshot, machine: str) -> Snapshot:
    return msgspec.structs.replace(snap, os=msgspec.structs.replace(snap.os, machine=machine))


def without_arch_list(snap: Snapshot, *, table: bool) -> Snapshot:
    """As torch reports when CUDA cannot start: no get_arch_list(); maybe its own table."""
    assert snap.torch is not None
    torch = msgspec.structs.replace(
        snap.torch,
        arch_list=[],
        release_arch_table=snap.torch.release_arch_table if table else {},
    )
    return msgspec.structs.replace(snap, torch=torch)


def test_jetson_orin_on_jetpack6_with_nvidias_wheel_passes() -> None:
    report = diagnose(load("jetson-orin-jp6-jetson-wheel.json"))
    assert report.verdict == "ok", problems(report)
    assert report.exit_code == 0
    arch = one(report, "gpu.arch")
    assert "sm_87" in arch.message
    driver = one(report, "driver.cuda")
    # JetPack's driver 540.4.0 is below the desktop CUDA 12.6 minimum; it must not matter
    assert driver.status == "ok"
    assert "JetPack" in driver.message
    assert "JetPack wheel" in one(report, "torch.build").message
    assert one(report, "libs.shadowing").status == "skip"


def test_jetson_orin_with_a_pypi_wheel_fails_and_names_the_jetson_wheels() -> None:
    report = diagnose(load("jetson-orin-jp6-pypi-wheel.json"))
    assert report.exit_code == 2
    arch = one(report, "gpu.arch")
    assert arch.status == "fail"
    assert "sm_87" in arch.message
    assert arch.fix is not None
    assert "Jetson" in arch.fix
    assert "pypi.jetson-ai-lab.io/jp6/cu126" in arch.fix
    # the driver is not the problem, so the fix does not blame it
    assert "driver" not in arch.fix
    assert "no known torch build" not in arch.fix


def test_gh200_with_the_aarch64_cu130_wheel_passes() -> None:
    report = diagnose(load("gh200-aarch64-cu130.json"))
    assert report.verdict == "ok", problems(report)
    assert "sm_90" in one(report, "gpu.arch").message


def test_thor_with_the_aarch64_cu130_wheel_passes_on_sm_110() -> None:
    report = diagnose(load("thor-jp7-aarch64-cu130.json"))
    assert report.verdict == "ok", problems(report)
    arch = one(report, "gpu.arch")
    assert "sm_110" in arch.message
    assert "JetPack" in one(report, "driver.cuda").message


def test_without_torch_s_arch_list_thor_is_judged_by_the_aarch64_list() -> None:
    # the knowledge base's fallback: the aarch64 cu130 list has sm_110, the x86_64 one has not
    snap = without_arch_list(load("thor-jp7-aarch64-cu130.json"), table=False)
    arch = one(diagnose(snap), "gpu.arch")
    assert arch.status == "ok", arch.message
    assert "aarch64" in arch.message
    x86 = one(diagnose(on_machine(snap, "x86_64")), "gpu.arch")
    assert x86.status == "fail"
    assert "x86_64" in x86.message


def test_torch_s_own_table_is_used_when_cuda_cannot_start() -> None:
    snap = without_arch_list(load("gh200-aarch64-cu130.json"), table=True)
    arch = one(diagnose(snap), "gpu.arch")
    assert arch.status == "ok"
    assert "torch's own table" in arch.message
    assert "differs" not in arch.message


def test_knowledge_base_and_torch_s_table_disagreeing_is_said_and_torch_wins() -> None:
    snap = load("thor-jp7-aarch64-cu130.json")
    assert snap.torch is not None
    # a torch 2.14 whose own table (unlike the knowledge base's unverified 2.14 entry)
    # dropped sm_110 from the aarch64 cu130 wheels
    torch = msgspec.structs.replace(
        snap.torch,
        version="2.14.1+cu130",
        arch_list=[],
        release_arch_table={"13.0": {"aarch64": [80, 90, 100, 120]}},
    )
    arch = one(diagnose(msgspec.structs.replace(snap, torch=torch)), "gpu.arch")
    assert arch.status == "fail"  # judged by torch's table, not by the knowledge base
    assert "differs from torch's own table" in arch.message
    assert "sm_110" in arch.message


def test_an_aarch64_release_the_knowledge_base_lacks_is_not_judged_by_the_x86_list() -> None:
    snap = node(torch="2.9.1+cu128", gpu="H100", torch_extra={"arch_list": []})
    snap = msgspec.structs.replace(
        snap, os=OsFacts(system="Linux", release="6.8.0", machine="aarch64")
    )
    arch = one(diagnose(snap), "gpu.arch")
    assert arch.status == "skip"
    assert "aarch64" in arch.message
