"""A lone failing request: the caller's fault when the model answers its known-good probe,
the model's when it fails on that too."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import pytest
import torch

from doubles import Doubler, rows
from torchrig.errors import InferenceFailed, InputRejected
from torchrig.repository.config import BatchingConfig
from torchrig.runtime.batcher import Batcher


class Broken:
    """A model that fails on every input (a bug of the model, not of its callers)."""

    def infer(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")


def _one(batcher: Batcher, value: float) -> Any:
    async def main() -> Any:
        return await batcher.infer({"x": torch.tensor([[value]])}, rows=1)

    try:
        return asyncio.run(main())
    finally:
        batcher.close()


def test_a_lone_bad_request_is_rejected_when_the_model_answers_its_probe() -> None:
    model = Doubler()
    model.poison = -1.0
    batcher = Batcher(model, BatchingConfig(max_batch_size=4), probe=rows(0, 1))
    with pytest.raises(InputRejected, match="poisoned row") as rejected:
        _one(batcher, -1.0)
    assert rejected.value.status_code == 400
    stats = batcher.stats()
    assert (stats.rejected_inputs, stats.model_faults) == (1, 0)
    assert model.seen_rows == [1, 1]  # the request, then the probe


def test_a_model_that_fails_on_everything_is_a_model_fault(
    caplog: pytest.LogCaptureFixture,
) -> None:
    batcher = Batcher(Broken(), BatchingConfig(max_batch_size=4), probe=rows(0, 1))
    with pytest.raises(InferenceFailed, match="warm-up example included") as failed:
        _one(batcher, 1.0)
    assert failed.value.status_code == 500
    assert (batcher.stats().rejected_inputs, batcher.stats().model_faults) == (0, 1)
    assert "failed on every input" in caplog.text


def test_without_a_probe_a_lone_failure_is_not_blamed_on_the_caller() -> None:
    model = Doubler()
    model.poison = -1.0
    batcher = Batcher(model, BatchingConfig(max_batch_size=4))
    with pytest.raises(InferenceFailed, match="poisoned row"):
        _one(batcher, -1.0)
    assert batcher.stats().model_faults == 1
