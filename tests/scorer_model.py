"""A tiny real model with two inputs of different dtypes (FP32 dense features and INT64
ids into an embedding), and its examples: what the runtime tests pack and serve."""

from __future__ import annotations

import torch


class Scorer(torch.nn.Module):
    """dense [n, 3] FP32 and ids [n, 5] INT64 -> [n, 2] scores."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.embed = torch.nn.Embedding(50, 4)
        self.linear = torch.nn.Linear(4 + 3, 2)

    def forward(self, dense: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        return self.linear(torch.cat([dense, self.embed(ids).sum(1)], dim=1))


def examples(rows: int) -> dict[str, torch.Tensor]:
    """`rows` rows of valid inputs, the same for the same `rows`."""
    generator = torch.Generator().manual_seed(rows)
    return {
        "dense": torch.randn(rows, 3, generator=generator),
        "ids": torch.randint(0, 50, (rows, 5), generator=generator),
    }
