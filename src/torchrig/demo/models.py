"""Demo models with random weights from a fixed seed (nothing is downloaded)."""

from __future__ import annotations

import importlib
from typing import Any

import torch
from torch import nn

DENSE_FEATURES = 13
SPARSE_FEATURES = 26
EMBEDDING_ROWS = 1000
EMBEDDING_DIM = 16
IMAGE_SIZE = 64
CLASSES = 10
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _mlp(sizes: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class DemoRanker(nn.Module):  # type: ignore[misc]
    """DLRM-style click model: 13 dense FP32 + 26 sparse INT64 features -> probability.

    Each sparse feature indexes its own 1000 x 16 embedding table (stored as one table
    with offsets); the bottom MLP maps the dense features to the same width; pairwise dot
    products of the 27 vectors plus the dense vector feed the top MLP and a sigmoid.
    """

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.embeddings = nn.Embedding(SPARSE_FEATURES * EMBEDDING_ROWS, EMBEDDING_DIM)
            nn.init.uniform_(self.embeddings.weight, -0.1, 0.1)
            self.bottom = _mlp([DENSE_FEATURES, 64, EMBEDDING_DIM])
            vectors = SPARSE_FEATURES + 1
            pairs = vectors * (vectors - 1) // 2
            self.top = _mlp([EMBEDDING_DIM + pairs, 64, 1])
        self.register_buffer(
            "offsets", torch.arange(SPARSE_FEATURES, dtype=torch.int64) * EMBEDDING_ROWS
        )
        rows, cols = torch.triu_indices(vectors, vectors, offset=1)
        self.register_buffer("pair_rows", rows.clone())
        self.register_buffer("pair_cols", cols.clone())

    def forward(self, dense: torch.Tensor, sparse: torch.Tensor) -> torch.Tensor:
        x = self.bottom(dense)  # [B, D]
        e = self.embeddings(sparse + self.offsets)  # [B, 26, D]
        vectors = torch.cat([x.unsqueeze(1), e], dim=1)  # [B, 27, D]
        dots = torch.bmm(vectors, vectors.transpose(1, 2))  # [B, 27, 27]
        pairs = dots[:, self.pair_rows, self.pair_cols]  # [B, 351]
        return torch.sigmoid(self.top(torch.cat([x, pairs], dim=1)))

    @staticmethod
    def example_inputs(batch: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """Random (dense [batch, 13] FP32, sparse [batch, 26] INT64 in 0..999)."""
        generator = torch.Generator().manual_seed(seed)
        dense = torch.randn(batch, DENSE_FEATURES, generator=generator)
        sparse = torch.randint(0, EMBEDDING_ROWS, (batch, SPARSE_FEATURES), generator=generator)
        sparse[0, 0] = 0  # the examples span every row, so golden indices can too
        sparse[-1, -1] = EMBEDDING_ROWS - 1
        return dense, sparse


class TinyImageClassifier(nn.Module):  # type: ignore[misc]
    """A small CNN: [batch, 3, 64, 64] FP32 image -> [batch, 10] logits."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.features = nn.Sequential(
                nn.Conv2d(3, 16, 3, stride=2, padding=1),
                nn.BatchNorm2d(16),
                nn.ReLU(),
                nn.Conv2d(16, 32, 3, stride=2, padding=1),
                nn.BatchNorm2d(32),
                nn.ReLU(),
                nn.Conv2d(32, 64, 3, stride=2, padding=1),
                nn.ReLU(),
                nn.AdaptiveAvgPool2d(1),
            )
            self.head = nn.Linear(64, CLASSES)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(self.features(image), 1))

    @staticmethod
    def example_inputs(batch: int = 4, seed: int = 0) -> tuple[torch.Tensor]:
        generator = torch.Generator().manual_seed(seed)
        return (torch.randn(batch, 3, IMAGE_SIZE, IMAGE_SIZE, generator=generator),)


def ranker() -> tuple[nn.Module, tuple[Any, ...]]:
    """Factory for `torchrig pack torchrig.demo:ranker`: the module and example inputs."""
    return DemoRanker().eval(), DemoRanker.example_inputs()


def classifier() -> tuple[nn.Module, tuple[Any, ...]]:
    """Factory for `torchrig pack torchrig.demo:classifier`."""
    return TinyImageClassifier().eval(), TinyImageClassifier.example_inputs()


def encoder() -> tuple[nn.Module, dict[str, Any]]:
    """Factory for `torchrig pack torchrig.demo:encoder --dynamic src:1:1-512`: a
    two-layer TransformerEncoder over [batch, length, 32] and an example of length 10."""
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(32, 4, 64, dropout=0.0, batch_first=True)
    model = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False).eval()
    return model, {"src": torch.randn(3, 10, 32)}


class NormalizedImageModel(nn.Module):  # type: ignore[misc]
    """Takes decoded RGB frames as uint8 [batch, 3, H, W] and normalises them on the model's
    device, in the model's dtype, so clients send 4x fewer bytes than float32 pixels and
    the GPU, not the server's CPU, does the arithmetic. Logits come back as float32."""

    def __init__(self, model: nn.Module, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
        self.model = model.to(dtype)
        self.register_buffer("scale", (1.0 / (255.0 * std)).to(dtype))
        self.register_buffer("shift", (-mean / std).to(dtype))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = image.to(self.scale.dtype) * self.scale + self.shift
        return self.model(x.contiguous(memory_format=torch.channels_last)).float()


def torchvision_models(
    dtype: torch.dtype = torch.bfloat16,
) -> dict[str, tuple[nn.Module, tuple[Any, ...]]]:
    """ResNet-50 and ViT-B/16 with random weights (weights=None), taking uint8 frames
    [batch, 3, 224, 224] and exported in `dtype` (bf16 by default: what they are served
    in on a GPU); needs torchvision."""
    torchvision = importlib.import_module("torchvision")

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        resnet = torchvision.models.resnet50(weights=None).eval()
        vit = torchvision.models.vit_b_16(weights=None).eval()
    generator = torch.Generator().manual_seed(0)
    image = torch.randint(0, 256, (2, 3, 224, 224), dtype=torch.uint8, generator=generator)
    return {
        "resnet50": (NormalizedImageModel(resnet, dtype).eval(), (image,)),
        "vit_b_16": (NormalizedImageModel(vit, dtype).eval(), (image,)),
    }
