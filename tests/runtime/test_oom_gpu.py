"""Out of memory on a real GPU, through the registry and batcher of a served version.

A model whose memory grows as rows x width^2 (an outer product per row) gets a batch
too big for the memory the allocator may use (capped with
`torch.cuda.set_per_process_memory_fraction`, so the test behaves alike on any card): the
batcher splits it until the pieces fit and every request gets its own correct rows; when
not even one row fits, that request fails with 507 and the registry stays ready. The
same split path is tested on the CPU with an injected failure (test_oom.py).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import torch
from torch import nn

from torchrig.errors import InsufficientMemory
from torchrig.packaging import pack
from torchrig.repository import BatchingConfig, ModelConfig, Repository
from torchrig.runtime import ModelRegistry

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]

WIDTH = 16_384  # 1 GiB of float32 per row in the outer product
GIB = 1 << 30


class Outer(nn.Module):  # type: ignore[misc]
    """[B, W] -> [B, 1]: the sum of each row's outer product with itself, (sum x)^2,
    computed the memory-hungry way."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x.unsqueeze(2) * x.unsqueeze(1)).sum(dim=(1, 2)).unsqueeze(1)


def limit_device_memory(gib: float) -> None:
    """Let this process's CUDA allocator use `gib` GiB beyond what it holds now (a real
    out-of-memory error past it, whatever the card's size)."""
    total = torch.cuda.get_device_properties(0).total_memory
    held = torch.cuda.memory_reserved(0)
    torch.cuda.set_per_process_memory_fraction(min(1.0, (held + gib * GIB) / total), 0)


def test_a_real_oversize_batch_is_split_and_a_row_that_never_fits_is_507(
    tmp_path: Path,
) -> None:
    repo = tmp_path / "repo"
    pack(
        Outer(),
        (torch.zeros(2, WIDTH),),
        name="outer",
        repository=repo,
        version=1,
        output_names=["y"],
        max_batch_size=512,
        golden_examples=1,
        config=ModelConfig(
            batching=BatchingConfig(max_batch_size=512, max_queue_delay_ms=500.0),
            device="cuda",
            warmup=False,  # a warm-up at 512 rows would itself run out of memory
        ),
    )
    generator = torch.Generator().manual_seed(0)
    inputs = [torch.rand(8, WIDTH, generator=generator) for _ in range(16)]  # 128 GiB at once

    async def main() -> None:
        registry = ModelRegistry(Repository(repo), device="cuda")
        try:
            await registry.load_all()
            served = registry.resolve("outer")
            assert served.state == "ready", served.reason
            assert served.batcher is not None
            limit_device_memory(24)  # about 20 rows fit at a time
            outputs = await asyncio.gather(*(registry.infer("outer", {"x": x}) for x in inputs))
            for x, (_, out) in zip(inputs, outputs, strict=True):
                expected = x.double().sum(dim=1, keepdim=True) ** 2
                torch.testing.assert_close(out["y"].double(), expected, rtol=1e-3, atol=1e-3)
            stats = served.batcher.stats()
            assert stats.oom_splits >= 1, stats
            assert stats.oom_failures == 0, stats

            limit_device_memory(0.5)  # not even one row fits now
            with pytest.raises(InsufficientMemory, match="single row") as caught:
                await registry.infer("outer", {"x": inputs[0][:1]})
            assert caught.value.status_code == 507
            assert registry.ready()  # out of memory does not poison the context

            limit_device_memory(8)
            _, again = await registry.infer("outer", {"x": inputs[0][:2]})
            assert again["y"].shape == (2, 1)
        finally:
            torch.cuda.set_per_process_memory_fraction(1.0, 0)
            await registry.close()

    asyncio.run(main())
