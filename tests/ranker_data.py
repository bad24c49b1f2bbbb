"""The demo ranker's inputs and its in-process answer (test helper for the client tests)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from torchrig.packaging import load_program, read_manifest


def ranker_arrays(rows: int = 5, seed: int = 7) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "dense": rng.standard_normal((rows, 13)).astype(np.float32),
        "sparse": rng.integers(0, 1000, (rows, 26)).astype(np.int64),
    }


def in_process(demo_repo: Path, model: str, inputs: dict[str, np.ndarray]) -> np.ndarray:
    """The packed version's program run here, on the same inputs."""
    directory = demo_repo / model / "1"
    program = load_program(directory, read_manifest(directory))
    with torch.inference_mode():
        out = program({k: torch.from_numpy(v) for k, v in inputs.items()})
    (tensor,) = out.values()
    result: np.ndarray = tensor.numpy()
    return result
