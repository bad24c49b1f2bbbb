"""The platform knowledge added for Jetson, aarch64 wheels, driver branches and sonames:
every entry names its source, and the lookups answer what the doctor asks."""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

from torchrig.compat import builds_for, load_kb
from torchrig.compat.platforms import load_platforms


def _raw(name: str) -> dict[str, Any]:
    text = resources.files("torchrig.compat").joinpath("data").joinpath(name).read_text()
    data: dict[str, Any] = json.loads(text)
    return data


def test_new_entries_name_a_source_and_whether_it_was_verified() -> None:
    entries: list[dict[str, Any]] = []
    jetson = _raw("jetson.json")["platforms"]
    entries += jetson + [w for p in jetson for w in p["wheels"]]
    entries += _raw("gpu_drivers.json")["architectures"]
    entries += _raw("sonames.json")["majors"]
    entries += [
        v["aarch64"]
        for r in _raw("torch_releases.json")["releases"]
        for v in r["variants"]
        if "aarch64" in v
    ]
    assert len(entries) >= 20
    for entry in entries:
        assert isinstance(entry["source"], str)
        assert len(entry["source"]) > 20
        assert isinstance(entry["verified"], bool)


def test_aarch64_and_x86_64_lists_differ_for_cu130() -> None:
    info = load_kb().variant("2.13.0", "cu130")
    assert info is not None
    assert info.arch_list_for("x86_64") == info.arch_list
    assert "sm_110" not in info.arch_list
    assert info.arch_list_for("aarch64") == ["sm_80", "sm_90", "sm_100", "sm_110", "sm_120"]
    assert info.aarch64 is not None
    assert info.aarch64.verified
    older = load_kb().variant("2.9.1", "cu128")
    assert older is not None
    assert older.arch_list_for("aarch64") is None  # unknown, not guessed from x86_64


def test_builds_for_thor_exist_only_for_aarch64_wheels() -> None:
    assert builds_for("11.0") == []
    arm = builds_for("11.0", machine="aarch64")
    assert arm
    assert {b.variant for b in arm} <= {"cu130", "cu132"}


def test_jetson_lookups() -> None:
    platforms = load_platforms()
    assert platforms.is_jetson("8.7")
    assert platforms.is_jetson("11.0")
    assert not platforms.is_jetson("9.0")
    orin = platforms.jetson_platforms("8.7")
    assert orin[0].cuda == "12.6"  # newest JetPack first
    assert all("sm_87" in w.arch_list for p in orin for w in p.wheels)


def test_blackwell_needs_r570_and_soname_majors() -> None:
    platforms = load_platforms()
    blackwell = platforms.arch_driver("12.0")
    assert blackwell is not None
    assert blackwell.branch == "R570"
    assert platforms.arch_driver("8.0") is None
    assert platforms.soname_major(12, "libcublas") == "12"
    assert platforms.soname_major(12, "libcufft") == "11"
    assert platforms.soname_major(11, "libcublas") is None


def test_compat_check_on_a_jetson_names_the_jetpack_wheels() -> None:
    from torchrig.compat import check

    report = check(torch="2.9.1+cu128", gpu="Jetson AGX Orin")
    arch = next(f for f in report.findings if f.topic == "arch")
    assert arch.status == "fail"
    assert arch.fix is not None
    assert "JetPack" in arch.fix
    assert "sm_87" in arch.fix
