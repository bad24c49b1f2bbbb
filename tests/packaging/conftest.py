"""Shared fixtures: one environment lock and one packed demo ranker per session."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from torchrig.demo import DemoRanker
from torchrig.envlock import EnvLock, take_lock
from torchrig.packaging import PackedVersion, pack


@pytest.fixture(scope="session")
def env_lock() -> EnvLock:
    return take_lock()


@pytest.fixture(scope="session")
def ranker() -> DemoRanker:
    return DemoRanker().eval()


@pytest.fixture(scope="session")
def packed_ranker(
    tmp_path_factory: pytest.TempPathFactory, env_lock: EnvLock, ranker: DemoRanker
) -> PackedVersion:
    repo = tmp_path_factory.mktemp("repo")
    return pack(
        ranker,
        DemoRanker.example_inputs(8),
        name="ranker",
        repository=repo,
        output_names=["probability"],
        max_batch_size=128,
        environment=env_lock,
    )


@pytest.fixture
def ranker_copy(packed_ranker: PackedVersion, tmp_path: Path) -> Path:
    """A private copy of the packed ranker's version that a test may damage."""
    target = tmp_path / "repo" / "ranker" / "1"
    shutil.copytree(packed_ranker.path, target)
    return target
