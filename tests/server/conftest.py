"""A real torchrig server on an OS-assigned port, over a real repository."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from serving import running
from torchrig.demo import build_demo_repository
from torchrig.packaging import pack
from torchrig.repository import BatchingConfig, ModelConfig
from torchrig.settings import ServeSettings


class Halver(torch.nn.Module):
    """A tiny bf16 model: the demo models take FP32 and INT64 only."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 0.5


class Slow(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + 1


@pytest.fixture
def slow_repo(tmp_path: Path) -> Path:
    """A model whose batches wait 1.5 s for company: requests stay in flight long enough."""
    root = tmp_path / "models"
    config = ModelConfig(
        batching=BatchingConfig(max_batch_size=64, max_queue_delay_ms=1500), warmup=False
    )
    pack(
        Slow(),
        (torch.zeros(2, 4),),
        name="slow",
        repository=root,
        version=1,
        output_names=["y"],
        config=config,
    )
    return root


@pytest.fixture(scope="session")
def demo_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("served") / "models"
    build_demo_repository(root)
    pack(
        Halver(),
        (torch.randn(4, 8, dtype=torch.bfloat16),),
        name="halver",
        repository=root,
        version=1,
        output_names=["y"],
        config=ModelConfig(batching=BatchingConfig(max_batch_size=16, max_queue_delay_ms=1)),
    )
    return root


@pytest.fixture(scope="session")
def server(demo_repo: Path) -> Iterator[tuple[str, Any]]:
    settings = ServeSettings(port=0, log_format="text", max_body_mb=1.0)
    with running(demo_repo, settings) as (url, state):
        yield url, state
