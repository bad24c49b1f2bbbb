"""The GPU twin of tests/server/test_isolation.py: on CUDA a bad embedding index would be
a device-side assert that poisons the replica, so a declared range must stop it before
the model, while its batch-mates are answered and the device stays healthy."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import torch

from torchrig.demo.models import EMBEDDING_ROWS, SPARSE_FEATURES, ranker
from torchrig.errors import InvalidInput
from torchrig.packaging import pack
from torchrig.repository import BatchingConfig, ModelConfig, Repository
from torchrig.runtime import ModelRegistry

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]

ROUNDS = 30


def request(index: int) -> dict[str, Any]:
    sparse = torch.full((1, SPARSE_FEATURES), 7, dtype=torch.int64)
    sparse[0, 0] = index
    return {"dense": torch.full((1, 13), 0.25), "sparse": sparse}


def test_a_bad_index_never_reaches_the_gpu_and_never_fails_its_batch_mates(
    tmp_path: Path,
) -> None:
    module, example = ranker()
    pack(
        module,
        example,
        name="ranker",
        repository=tmp_path / "repo",
        version=1,
        output_names=["probability"],
        config=ModelConfig(batching=BatchingConfig(max_batch_size=64), device="cuda"),
        golden_examples=0,
        input_ranges={"sparse": (0, EMBEDDING_ROWS - 1)},
    )

    async def main() -> tuple[list[BaseException], list[Any], Any]:
        registry = ModelRegistry(Repository(tmp_path / "repo"))
        await registry.load_all()
        bad: list[BaseException] = []
        good: list[Any] = []
        try:
            served = registry.resolve("ranker")
            for _ in range(ROUNDS):
                # past the whole shared table: on the GPU an index error is an assert
                indices = [SPARSE_FEATURES * EMBEDDING_ROWS, 1, 2, 3]
                results = await asyncio.gather(
                    *(registry.infer_on(served, request(i)) for i in indices),
                    return_exceptions=True,
                )
                bad.append(results[0])  # type: ignore[arg-type]
                good.extend(results[1:])
            return bad, good, registry.device_fault
        finally:
            await registry.close()

    bad, good, fault = asyncio.run(main())
    assert all(isinstance(b, InvalidInput) and "declared range" in str(b) for b in bad), bad[0]
    assert not [g for g in good if isinstance(g, BaseException)], good
    assert all(g["probability"].shape == (1, 1) for g in good)
    assert fault is None  # the replica stays healthy
