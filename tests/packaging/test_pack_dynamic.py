"""Dimensions past the batch packed dynamic: the signature, the manifest's ranges, the
program at every declared size, warm-up buckets, and each bad declaration named."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from sequence_model import MAX_LENGTH, SequenceClassifier, example, tokens
from torchrig.envlock import EnvLock
from torchrig.errors import PackError
from torchrig.packaging import pack, read_manifest, verify_version
from torchrig.packaging.dynamic import size_buckets, size_levels
from torchrig.packaging.golden import GOLDEN_FILE, input_key
from torchrig.packaging.manifest import DynamicDim
from torchrig.repository.config import BatchingConfig, ModelConfig
from torchrig.runtime.cuda_lanes import graphable
from torchrig.runtime.executor import Executor


def encoder() -> nn.Module:
    layer = nn.TransformerEncoderLayer(32, 4, 64, dropout=0.0, batch_first=True)
    return nn.TransformerEncoder(layer, 2, enable_nested_tensor=False).eval()


def test_a_transformer_encoder_packed_for_lengths_1_to_512(
    tmp_path: Path, env_lock: EnvLock
) -> None:
    model = encoder()
    packed = pack(
        model,
        {"src": torch.randn(3, 10, 32)},
        name="encoder",
        repository=tmp_path,
        dynamic_dims={"src": {1: (1, 512)}},
        environment=env_lock,
    )
    manifest = read_manifest(packed.path)
    assert manifest.inputs[0].shape == [-1, -1, 32]
    assert manifest.outputs[0].shape == [-1, -1, 32]
    assert manifest.dynamic_dims == [DynamicDim(input="src", dim=1, min=1, max=512)]
    config = ModelConfig(batching=BatchingConfig(max_batch_size=4), device="cpu")
    runner = Executor(packed.path, manifest, config)
    runner.load()  # warms up every bucket: a length the program cannot run fails here
    for length in (1, 2, 10, 300, 512):
        src = torch.randn(2, length, 32)
        with torch.inference_mode():
            want = model(src)
        torch.testing.assert_close(runner.infer({"src": src})["output"], want)


def test_warm_up_covers_min_max_and_buckets_between(tmp_path: Path, env_lock: EnvLock) -> None:
    packed = pack(
        SequenceClassifier().eval(),
        example(),
        name="seq",
        repository=tmp_path,
        dynamic_dims={"tokens": {1: (1, MAX_LENGTH)}},
        golden_examples=1,
        environment=env_lock,
    )
    manifest = read_manifest(packed.path)
    config = ModelConfig(batching=BatchingConfig(max_batch_size=16), device="cpu")
    runner = Executor(packed.path, manifest, config)
    shapes = runner.warmup_shapes()
    lengths = [sizes[("tokens", 1)] for sizes, _ in shapes]
    assert lengths == [1, 4, 32, 128, 512]
    assert shapes[0][1] == [1, 2, 4, 8, 16]  # every batch size at the shortest length
    # longer buckets only at batches of at most the elements of the largest shortest one
    assert shapes[1][1] == [1, 2, 4]
    assert shapes[-1][1] == [1]
    # what decides whether its batches may run on the event loop: the most elements
    assert runner.heaviest_warmup_shape() == (1, {("tokens", 1): 512})
    assert runner.example(3, {("tokens", 1): 7})["tokens"].shape == (3, 7)
    assert runner.example(2)["tokens"].shape == (2, 1)  # default: the minimum
    assert graphable(manifest.inputs, manifest.dynamic_dims)
    assert not graphable(manifest.inputs)  # a -1 nobody declared has no known buckets


def test_buckets_of_one_dimension() -> None:
    assert size_buckets(DynamicDim(input="x", dim=1, min=1, max=512)) == [1, 4, 32, 128, 512]
    assert size_buckets(DynamicDim(input="x", dim=1, min=5, max=5)) == [5]
    assert size_buckets(DynamicDim(input="x", dim=1, min=3, max=9)) == [3, 4, 8, 9]
    assert size_buckets(DynamicDim(input="x", dim=1, min=2)) == [2, 4]  # unbounded: to 2 x min
    levels = size_levels(
        [DynamicDim(input="x", dim=1, min=3, max=9), DynamicDim(input="x", dim=2, min=5, max=5)]
    )
    assert levels == [
        {("x", 1): 3, ("x", 2): 5},
        {("x", 1): 4, ("x", 2): 5},
        {("x", 1): 8, ("x", 2): 5},
        {("x", 1): 9, ("x", 2): 5},
    ]


def test_torchscript_finds_the_output_dims_that_follow(tmp_path: Path, env_lock: EnvLock) -> None:
    packed = pack(
        encoder(),
        {"src": torch.randn(3, 10, 32)},
        name="encoder_ts",
        repository=tmp_path,
        format="torchscript",
        dynamic_dims={"src": {1: (2, 10)}},  # at the max: probed one shorter
        environment=env_lock,
    )
    manifest = read_manifest(packed.path)
    assert manifest.inputs[0].shape == [-1, -1, 32]
    assert manifest.outputs[0].shape == [-1, -1, 32]


class FixedLength(nn.Module):  # type: ignore[misc]
    def forward(self, src: torch.Tensor) -> torch.Tensor:
        return src.reshape(src.shape[0], 10 * 32)


@pytest.mark.parametrize(
    ("dynamic", "message"),
    [
        ({"source": {1: (1, 512)}}, "the model has no input 'source' (its inputs: src)"),
        ({"src": {0: (1, 512)}}, "dim 0 is the batch, which is dynamic already"),
        ({"src": {3: (1, 512)}}, "input 'src' has 3 dimensions (example shape [3, 10, 32])"),
        ({"src": {1: (0, 512)}}, "MIN 0 must be at least 1"),
        ({"src": {1: (20, 5)}}, "MIN 20 exceeds MAX 5"),
        ({"src": {1: (1, 5)}}, "the example has size 10 there, outside 1-5"),
        ({"src": 1}, "dynamic_dims['src'] must map each dimension to (MIN, MAX)"),
        ({"src": {1: 512}}, "the range must be (MIN, MAX) integers"),
        ({"src": {2: (1, 64)}}, None),  # fine: a second dimension is allowed
    ],
)
def test_bad_declarations_are_named(
    tmp_path: Path, env_lock: EnvLock, dynamic: Any, message: str | None
) -> None:
    def attempt() -> None:
        pack(
            encoder() if message is not None else nn.Identity(),
            {"src": torch.randn(3, 10, 32)},
            name="bad",
            repository=tmp_path,
            dynamic_dims=dynamic,
            golden_examples=0,
            environment=env_lock,
        )

    if message is None:
        attempt()
        assert read_manifest(tmp_path / "bad" / "1").inputs[0].shape == [-1, 10, -1]
        return
    with pytest.raises(PackError) as refused:
        attempt()
    assert message in refused.value.message
    assert not (tmp_path / "bad").exists() or not any((tmp_path / "bad").iterdir())


def test_an_example_of_size_one_is_refused(tmp_path: Path, env_lock: EnvLock) -> None:
    with pytest.raises(PackError, match="give an example of size 2 or more"):
        pack(
            encoder(),
            {"src": torch.randn(3, 1, 32)},
            name="short",
            repository=tmp_path,
            dynamic_dims={"src": {1: (1, 512)}},
            environment=env_lock,
        )


def test_a_model_that_fixes_a_declared_dim_is_named(tmp_path: Path, env_lock: EnvLock) -> None:
    with pytest.raises(PackError) as refused:
        pack(
            FixedLength(),
            {"src": torch.randn(3, 10, 32)},
            name="fixed",
            repository=tmp_path,
            dynamic_dims={"src": {1: (1, 512)}},
            environment=env_lock,
        )
    assert "fixes dim 1 of 'src', declared dynamic, to 10" in refused.value.message
    assert "leave that dimension out of --dynamic" in refused.value.message


def test_the_sequence_model_answers_each_length_as_it_does_eagerly(
    tmp_path: Path, env_lock: EnvLock
) -> None:
    model = SequenceClassifier().eval()
    packed = pack(
        model,
        example(),
        name="seq",
        repository=tmp_path,
        dynamic_dims={"tokens": {1: (1, MAX_LENGTH)}},
        environment=env_lock,
    )
    manifest = read_manifest(packed.path)
    assert manifest.outputs[0].shape == [-1, 4]
    runner = Executor(packed.path, manifest, ModelConfig(device="cpu", warmup=False))
    runner.load()
    for length in (1, 7, 64, 300, MAX_LENGTH):
        ids = tokens(length, seed=length, rows=2)
        with torch.inference_mode():
            want = model(ids)
        torch.testing.assert_close(runner.infer({"tokens": ids})["output"], want)


def test_golden_examples_cover_the_minimum_and_replay(tmp_path: Path, env_lock: EnvLock) -> None:
    packed = pack(
        SequenceClassifier().eval(),
        example(),
        name="seq",
        repository=tmp_path,
        dynamic_dims={"tokens": {1: (1, MAX_LENGTH)}},
        golden_examples=3,
        environment=env_lock,
    )
    golden = torch.load(str(packed.path / GOLDEN_FILE), weights_only=True)
    lengths = [golden[input_key(i, "tokens")].shape[1] for i in range(3)]
    assert lengths == [10, 1, 10]  # the example's length, the minimum, the example's
    report = verify_version(packed.path)
    assert report.examples == 3
    assert report.passed, report
