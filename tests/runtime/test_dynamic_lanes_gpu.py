"""CUDA graphs of a model with a dynamic length: one set per warm-up bucket of the length,
replayed only for that exact length; every other length runs eagerly. The answers equal
the eager model's either way. (The CPU path of the same model: tests/packaging/
test_pack_dynamic.py.)"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from sequence_model import SequenceClassifier, example, tokens
from torchrig.packaging import pack, read_manifest
from torchrig.packaging.dynamic import size_buckets
from torchrig.repository.config import BatchingConfig, ModelConfig
from torchrig.runtime.executor import Executor

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.gpu
@needs_cuda
def test_graphs_follow_the_length_buckets_and_other_lengths_run_eagerly(tmp_path: Path) -> None:
    model = SequenceClassifier().eval()
    packed = pack(
        model,
        example(),
        name="seq",
        repository=tmp_path,
        dynamic_dims={"tokens": {1: (1, 64)}},
        golden_examples=1,
    )
    manifest = read_manifest(packed.path)
    config = ModelConfig(batching=BatchingConfig(max_batch_size=8), device="cuda")
    runner = Executor(packed.path, manifest, config)
    runner.load()
    assert runner.graph_sizes == [1, 2, 4, 8], runner.warnings
    buckets = size_buckets(manifest.dynamic_dims[0])
    assert runner._lanes is not None
    lane = runner._lanes.get()
    try:
        captured = {key[0][0]: sorted(graphs) for key, graphs in lane.shapes.items()}
    finally:
        runner._lanes.put(lane)
    assert sorted(captured) == buckets  # one graph set per bucket of the length
    assert captured[buckets[0]] == [1, 2, 4, 8]  # every batch size at the shortest
    assert captured[buckets[-1]] == [1]  # the longest: batch 1 only (its element budget)
    for seed, (length, rows) in enumerate([(1, 3), (2, 4), (64, 1), (7, 3), (64, 5), (33, 8)]):
        ids = tokens(length, seed=seed, rows=rows)
        with torch.inference_mode():
            want = model(ids)
        got = runner.infer({"tokens": ids})["output"]
        torch.testing.assert_close(got, want, rtol=1e-3, atol=1e-4)
