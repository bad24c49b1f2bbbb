"""The data files: they parse, every entry names its source, and they agree with each other."""

from __future__ import annotations

import datetime
import itertools
import json
import warnings
from importlib import resources
from typing import Any

import pytest

from torchrig.compat import load_kb, parse_cc, parse_torch_version, sass_runs_on
from torchrig.compat.versions import compare_driver, parse_cuda, release_key

DATA_FILES = ["torch_releases.json", "cuda_drivers.json", "gpus.json", "arch_rules.json"]


def _raw(name: str) -> dict[str, Any]:
    text = resources.files("torchrig.compat").joinpath("data").joinpath(name).read_text()
    data: dict[str, Any] = json.loads(text)
    return data


@pytest.mark.parametrize("name", DATA_FILES)
def test_data_file_has_schema_version_and_updated_date(name: str) -> None:
    data = _raw(name)
    assert data["schema_version"] == 1
    datetime.date.fromisoformat(data["updated"])


def _entries() -> list[tuple[str, dict[str, Any]]]:
    releases = _raw("torch_releases.json")["releases"]
    drivers = _raw("cuda_drivers.json")
    entries: list[tuple[str, dict[str, Any]]] = []
    for rel in releases:
        entries.append((f"torch {rel['release']}", rel))
        entries += [(f"torch {rel['release']} {v['variant']}", v) for v in rel["variants"]]
    entries += [(f"CUDA {t['cuda']}", t) for t in drivers["toolkits"]]
    entries += [(f"CUDA {m['major']}.x floor", m) for m in drivers["minor_compat"]]
    entries += [(f"GPU {g['name']}", g) for g in _raw("gpus.json")["gpus"]]
    entries += [(f"rule {r['code']}", r) for r in _raw("arch_rules.json")["sass_rules"]]
    return entries


def test_every_entry_names_a_source_and_whether_it_was_verified() -> None:
    entries = _entries()
    assert len(entries) > 80
    for label, entry in entries:
        assert isinstance(entry.get("source"), str), label
        assert len(entry["source"]) > 10, label
        assert isinstance(entry.get("verified"), bool), label


def test_knowledge_base_loads_and_is_cached() -> None:
    assert load_kb() is load_kb()
    releases = [rel.release for rel in load_kb().releases]
    assert releases == ["2.9", "2.10", "2.11", "2.12", "2.13", "2.14"]


def test_every_variant_is_consistent() -> None:
    kb = load_kb()
    for info in kb.variants:
        label = f"{info.release} {info.variant}"
        assert info.variant == "cu" + info.cuda.replace(".", ""), label
        assert kb.driver_requirement(info.cuda) is not None, label
        assert info.index_url == f"https://download.pytorch.org/whl/{info.variant}", label
        assert info.sass == sorted(info.sass, key=parse_cc), label
        for cc in info.sass + info.ptx:
            assert parse_cc(cc) in kb.sass_rules, f"{label}: no SASS rule for {cc}"
        rel = kb.release(info.release)
        assert rel is not None
        assert set(info.patches) <= set(rel.patches), label
        assert info.pip_command() == (
            f"pip install torch=={info.latest_patch} --index-url {info.index_url}"
        )


def test_every_release_is_consistent() -> None:
    kb = load_kb()
    for rel in kb.releases:
        defaults = [info.variant for info in rel.variants if info.pypi_default]
        assert defaults == [rel.pypi_default], rel.release
        assert rel.patches == sorted(rel.patches, key=release_key)
        for patch in rel.patches:
            assert parse_torch_version(patch).release == rel.release
        cudas = [parse_cuda(info.cuda) for info in rel.variants]
        assert cudas == sorted(cudas), f"{rel.release}: variants not in CUDA order"


def test_driver_requirements_are_consistent() -> None:
    kb = load_kb()
    reqs = kb.driver_requirements
    for older, newer in itertools.pairwise(reqs):
        assert compare_driver(older.min_driver, newer.min_driver) < 0, newer.cuda
    for req in reqs:
        assert compare_driver(req.minor_compat_floor, req.min_driver) <= 0, req.cuda
    assert kb.minor_compat_floors == {12: "525.60.13", 13: "580"}


def test_gpu_names_and_aliases_resolve_to_themselves() -> None:
    kb = load_kb()
    names = [gpu.name for gpu in kb.gpus]
    assert len(names) == len(set(names))
    for gpu in kb.gpus:
        parse_cc(gpu.compute_capability)
        for label in [gpu.name, *gpu.aliases]:
            found = kb.gpu(label)
            assert found is not None, label
            assert found.name == gpu.name, label


def test_sass_rules_match_the_installed_torch() -> None:
    """Our SASS rules are our own data; the installed torch's table must agree with them."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch warns when NumPy is absent
        import torch.cuda

    requirement = getattr(torch.cuda, "DEVICE_REQUIREMENT", None)
    if requirement is None:
        pytest.fail("the installed torch has no torch.cuda.DEVICE_REQUIREMENT to compare with")
    kb = load_kb()
    assert {(code // 10, code % 10) for code in requirement} == set(kb.sass_rules)
    devices = [(major, minor) for major in range(5, 13) for minor in range(10)]
    for code in requirement:
        for device in devices:
            expected = device[0] * 10 + device[1] in requirement[code]
            assert sass_runs_on((code // 10, code % 10), device) == expected, (code, device)


def test_2_13_archs_match_the_installed_torch() -> None:
    """torch 2.13.0 carries the x86_64 arch lists of its own release builds."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import torch
        import torch.cuda

    if not torch.__version__.startswith("2.13."):
        pytest.fail(f"this test reads torch 2.13's own tables, found torch {torch.__version__}")
    table = torch.cuda.PYTORCH_RELEASES_CODE_CC
    rel = load_kb().release("2.13")
    assert rel is not None
    ours = {info.cuda: {parse_cc(cc) for cc in info.sass} for info in rel.variants}
    theirs = {
        cuda: {(cc // 10, cc % 10) for cc in by_arch["x86_64"]} for cuda, by_arch in table.items()
    }
    assert ours == theirs
