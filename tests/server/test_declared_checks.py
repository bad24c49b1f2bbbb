"""Each served version's declared-input check is made once and belongs to that version: a
version loaded again (a new served version under the same name and number) gets its own."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from functools import partial
from pathlib import Path

import pytest

from torchrig.errors import InvalidInput
from torchrig.packaging import read_manifest
from torchrig.packaging.manifest import DynamicDim, TensorSpec
from torchrig.repository import ModelConfig
from torchrig.runtime.loader import ServedVersion
from torchrig.runtime.validation import DeclaredChecks, check_declared, declared_check


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


def test_the_made_check_refuses_exactly_what_check_declared_refuses() -> None:
    """`declared_check` answers a good declaration from a table and sends every other one
    through `check_declared`: over a grid of declarations, both refuse the same ones with
    the same message (fixed and variable dims, the batch bound, a dynamic dimension, an
    unbatched input, unknown names and wrong datatypes)."""
    specs = [
        TensorSpec(name="dense", datatype="FP32", shape=[-1, 13]),
        TensorSpec(name="tokens", datatype="INT64", shape=[-1, -1]),
        TensorSpec(name="image", datatype="UINT8", shape=[-1, 3, 4, 4]),
        TensorSpec(name="scale", datatype="FP64", shape=[2]),
    ]
    dynamic = [DynamicDim(input="tokens", dim=1, min=2, max=8)]
    made = declared_check("m/1", specs, max_batch_size=4, dynamic=dynamic)
    names = ["dense", "tokens", "image", "scale", "other"]
    datatypes = ["FP32", "INT64", "UINT8", "FP64"]
    shapes = [[1, 13], [4, 13], [5, 13], [2, 12], [1], [3, 1], [3, 9], [2, 3, 4, 4], [2, 3, 4]]
    shapes += [[2, 3, 5, 4], [2], [3], [0, 13], [1, 2, 13]]

    def verdict(check: Callable[[], None]) -> str:
        try:
            check()
        except InvalidInput as exc:
            return exc.message
        return "accepted"

    verdicts = []
    for name, datatype, shape in itertools.product(names, datatypes, shapes):
        want = verdict(
            partial(check_declared, "m/1", specs, name, datatype, shape, max_batch_size=4,
                    dynamic=dynamic)
        )  # fmt: skip
        assert verdict(partial(made, name, datatype, shape)) == want, (name, datatype, shape)
        verdicts.append(want)
    assert 0 < verdicts.count("accepted") < len(verdicts)
