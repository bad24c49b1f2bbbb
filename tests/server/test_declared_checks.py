"""Each served version's declared-input check is made once and belongs to that version: a
version loaded again (a new served version under the same name and number) gets its own."""

from __future__ import annotations

from pathlib import Path

import pytest

from torchrig.errors import InvalidInput
from torchrig.packaging import read_manifest
from torchrig.repository import ModelConfig
from torchrig.runtime.loader import ServedVersion
from torchrig.runtime.validation import DeclaredChecks


def test_a_version_keeps_its_check_and_a_reloaded_one_gets_a_new_one(demo_repo: Path) -> None:
    manifest = read_manifest(demo_repo / "ranker" / "1")
    first = ServedVersion("ranker", 1, "ready", ModelConfig(), manifest=manifest)
    checks = DeclaredChecks()
    check = checks.of(first, manifest)
    assert checks.of(first, manifest) is check  # made once
    check("dense", "FP32", [3, 13])  # what the signature takes
    with pytest.raises(InvalidInput, match="ranker/1: unknown input"):
        check("wide", "FP32", [3, 13])
    with pytest.raises(InvalidInput, match="ranker/1: input dense has datatype FP64"):
        check("dense", "FP64", [3, 13])

    reloaded = ServedVersion("ranker", 1, "ready", ModelConfig(), manifest=manifest)
    assert checks.of(reloaded, manifest) is not check


def test_past_the_kept_versions_the_checks_start_over(demo_repo: Path) -> None:
    manifest = read_manifest(demo_repo / "ranker" / "1")
    checks = DeclaredChecks()
    versions = [
        ServedVersion("ranker", n, "ready", ModelConfig(), manifest=manifest)
        for n in range(1, DeclaredChecks.MAX_KEPT + 2)
    ]
    made = [checks.of(v, manifest) for v in versions]
    assert len(checks._checks) <= DeclaredChecks.MAX_KEPT  # bounded
    assert checks.of(versions[-1], manifest) is made[-1]
