"""Two tiny packed models and a pipeline of them (test helper): `encoder` (x -> hidden)
then `head` (h -> logits), as the pipeline `chain` (features -> scores)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from torchrig.packaging import load_program, pack, read_manifest
from torchrig.repository import BatchingConfig, ModelConfig

PIPELINE_TOML = """\
[pipeline]
outputs = ["scores"]

[[pipeline.step]]
model = "encoder"
input_map = { x = "features" }
output_map = { hidden = "embedding" }

[[pipeline.step]]
model = "head"
input_map = { h = "embedding" }
output_map = { logits = "scores" }
"""
CONFIG = ModelConfig(batching=BatchingConfig(max_batch_size=16), warmup=False)


class Encoder(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(6, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.linear(x))


class Head(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(8, 3)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.linear(h)


def pack_head(root: Path, version: int) -> None:
    pack(Head(), (torch.randn(2, 8),), name="head", repository=root, version=version,
         output_names=["logits"], config=CONFIG)  # fmt: skip


def build_repo(root: Path) -> Path:
    torch.manual_seed(0)
    pack(Encoder(), (torch.randn(2, 6),), name="encoder", repository=root, version=1,
         output_names=["hidden"], config=CONFIG)  # fmt: skip
    pack_head(root, 1)
    (root / "chain").mkdir()
    (root / "chain" / "config.toml").write_text(PIPELINE_TOML)
    return root


def in_sequence(root: Path, x: np.ndarray, *, head_version: int = 1) -> np.ndarray:
    """The two programs loaded in this process and run one after the other."""
    encoder = load_program(root / "encoder" / "1", read_manifest(root / "encoder" / "1"))
    head_dir = root / "head" / str(head_version)
    head = load_program(head_dir, read_manifest(head_dir))
    with torch.inference_mode():
        hidden = encoder({"x": torch.from_numpy(x)})["hidden"]
        logits = head({"h": hidden})["logits"]
    result: np.ndarray = logits.numpy()
    return result
