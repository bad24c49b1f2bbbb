"""A small sequence model with a variable length (test helper): token ids -> class scores.

Embedding, a two-layer TransformerEncoder and mean pooling over the length, so the answer
for a sequence depends on every one of its tokens and on its length.
"""

from __future__ import annotations

import torch
from torch import nn

VOCABULARY = 1000
WIDTH = 32
CLASSES = 4
MAX_LENGTH = 512


class SequenceClassifier(nn.Module):  # type: ignore[misc]
    """[batch, length] INT64 token ids -> [batch, CLASSES] FP32 scores."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(7)
        self.embed = nn.Embedding(VOCABULARY, WIDTH)
        layer = nn.TransformerEncoderLayer(
            WIDTH, nhead=4, dim_feedforward=64, dropout=0.0, batch_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=False)
        self.head = nn.Linear(WIDTH, CLASSES)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        encoded = self.encoder(self.embed(tokens))
        return self.head(encoded.mean(dim=1))


def tokens(length: int, seed: int, rows: int = 1) -> torch.Tensor:
    """Random token ids of shape [rows, length]."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, VOCABULARY, (rows, length), generator=generator)


def example() -> dict[str, torch.Tensor]:
    """Pack-time example: batch 3, length 10 (sizes of 2 or more stay symbolic)."""
    return {"tokens": tokens(10, seed=0, rows=3)}


class MaskedSequenceEncoder(nn.Module):  # type: ignore[misc]
    """Token ids and a mask of the real positions -> class scores (masked mean pooling) and
    per-position encodings: padded positions change neither, so it may be padded."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(11)
        self.embed = nn.Embedding(VOCABULARY, WIDTH)
        layer = nn.TransformerEncoderLayer(
            WIDTH, nhead=4, dim_feedforward=64, dropout=0.0, batch_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=False)
        self.head = nn.Linear(WIDTH, CLASSES)

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        encoded = self.encoder(self.embed(tokens), src_key_padding_mask=~mask)
        weights = mask.unsqueeze(-1).to(encoded.dtype)
        pooled = (encoded * weights).sum(dim=1) / weights.sum(dim=1)
        return {"scores": self.head(pooled), "encoded": encoded}


def masked_example() -> dict[str, torch.Tensor]:
    return {"tokens": tokens(10, seed=0, rows=3), "mask": torch.ones(3, 10, dtype=torch.bool)}
