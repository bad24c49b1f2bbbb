"""pack -> load_program round trips, manifests, and the ways pack refuses."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from torchrig.demo import DemoRanker
from torchrig.envlock import EnvLock
from torchrig.errors import PackError
from torchrig.packaging import PackedVersion, load_program, pack, read_manifest
from torchrig.packaging.files import sha256_of
from torchrig.repository.config import BatchingConfig, ModelConfig, parse_config


def _eager(module: nn.Module, *args: Any) -> Any:
    with torch.no_grad():
        return module(*args)


def test_round_trip_matches_eager_at_every_batch_size(
    packed_ranker: PackedVersion, ranker: DemoRanker
) -> None:
    manifest = read_manifest(packed_ranker.path)
    program = load_program(packed_ranker.path, manifest)
    assert program.device == torch.device("cpu")
    for batch in (1, 3, 17, 64):
        dense, sparse = DemoRanker.example_inputs(batch, seed=batch)
        with torch.inference_mode():
            got = program({"sparse": sparse, "dense": dense})
        assert list(got) == ["probability"]
        assert got["probability"].shape == (batch, 1)
        torch.testing.assert_close(got["probability"], _eager(ranker, dense, sparse))


def test_manifest_describes_signature_files_and_environment(packed_ranker: PackedVersion) -> None:
    manifest = read_manifest(packed_ranker.path)
    assert manifest == packed_ranker.manifest
    assert (manifest.name, manifest.version, manifest.format) == ("ranker", 1, "torch.export")
    assert manifest.program == "model.pt2"
    assert [(s.name, s.datatype, s.shape) for s in manifest.inputs] == [
        ("dense", "FP32", [-1, 13]),
        ("sparse", "INT64", [-1, 26]),
    ]
    assert [(s.name, s.datatype, s.shape) for s in manifest.outputs] == [
        ("probability", "FP32", [-1, 1])
    ]
    assert manifest.batching
    assert manifest.max_batch_size == 128
    for entry in manifest.files:
        path = packed_ranker.path / entry.path
        assert (sha256_of(path), path.stat().st_size) == (entry.sha256, entry.size)
    assert {f.path for f in manifest.files} == {"model.pt2", "golden.pt"}
    assert manifest.golden is not None
    assert manifest.golden.count == 3
    assert manifest.golden.device == "cpu"
    assert manifest.golden.tolerances["FP32"].atol == 1e-5
    assert manifest.environment is not None
    assert manifest.environment.snapshot.torch is not None
    assert manifest.environment.snapshot.torch.version == torch.__version__
    # manifest.json is the last thing written and nothing else is left behind
    assert sorted(p.name for p in packed_ranker.path.iterdir()) == [
        "golden.pt",
        "manifest.json",
        "model.pt2",
    ]
    assert [p.name for p in packed_ranker.path.parent.iterdir()] == ["1"]


def test_golden_integer_inputs_stay_within_the_example_range(packed_ranker: PackedVersion) -> None:
    golden = torch.load(packed_ranker.path / "golden.pt", weights_only=True)
    sparse = [v for k, v in golden.items() if k.endswith("/inputs/sparse")]
    assert len(sparse) == 3
    assert {t.shape[0] for t in sparse} == {1, 5, 16}
    assert all(int(t.min()) >= 0 and int(t.max()) <= 999 for t in sparse)
    assert all(t.dtype == torch.int64 for t in sparse)


class TwoHeads(nn.Module):
    """Keyword inputs, dict outputs, an integer output."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 3)

    def forward(self, features: torch.Tensor, ids: torch.Tensor) -> dict[str, torch.Tensor]:
        scores = self.linear(features) + ids.float().sum(1, keepdim=True)
        return {"scores": scores, "best": scores.argmax(dim=1)}


def test_dict_inputs_follow_forward_order_and_dict_outputs_keep_names(
    tmp_path: Path, env_lock: EnvLock
) -> None:
    module = TwoHeads()
    examples = {"ids": torch.randint(0, 5, (4, 2)), "features": torch.randn(4, 4)}
    packed = pack(module, examples, name="heads", repository=tmp_path, environment=env_lock)
    manifest = packed.manifest
    assert [s.name for s in manifest.inputs] == ["features", "ids"]
    assert [(s.name, s.datatype, s.shape) for s in manifest.outputs] == [
        ("scores", "FP32", [-1, 3]),
        ("best", "INT64", [-1]),
    ]
    assert manifest.golden is not None
    assert manifest.golden.tolerances["INT64"].atol == 0.0
    program = load_program(packed.path, manifest)
    features, ids = torch.randn(5, 4), torch.randint(0, 5, (5, 2))
    got = program({"features": features, "ids": ids})
    expected = _eager(module, features, ids)
    torch.testing.assert_close(got["scores"], expected["scores"])
    assert torch.equal(got["best"], expected["best"])


def test_fixed_shapes_without_dynamic_batch(tmp_path: Path, env_lock: EnvLock) -> None:
    module = nn.Linear(6, 2)
    packed = pack(
        module,
        (torch.randn(3, 6),),
        name="fixed",
        repository=tmp_path,
        dynamic_batch=False,
        environment=env_lock,
    )
    assert packed.manifest.inputs[0].shape == [3, 6]
    assert packed.manifest.outputs[0].shape == [3, 2]
    assert not packed.manifest.batching
    assert packed.manifest.max_batch_size is None


def test_torchscript_format_round_trips(tmp_path: Path, env_lock: EnvLock) -> None:
    module = TwoHeads()
    packed = pack(
        module,
        (torch.randn(4, 4), torch.randint(0, 5, (4, 2))),
        name="heads",
        repository=tmp_path,
        format="torchscript",
        environment=env_lock,
    )
    assert packed.manifest.program == "model.ts"
    assert [s.shape for s in packed.manifest.inputs] == [[-1, 4], [-1, 2]]
    program = load_program(packed.path, packed.manifest)
    for batch in (1, 17):
        features, ids = torch.randn(batch, 4), torch.randint(0, 5, (batch, 2))
        got = program({"features": features, "ids": ids})
        torch.testing.assert_close(got["scores"], _eager(module, features, ids)["scores"])


def test_aoti_package_round_trips(tmp_path: Path, env_lock: EnvLock) -> None:
    """AOTInductor compiles C++ (about 20 s cold on a 2-core box, less with a warm cache)."""
    module = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    packed = pack(
        module,
        (torch.randn(4, 4),),
        name="aoti",
        repository=tmp_path,
        format="aoti",
        max_batch_size=64,
        environment=env_lock,
    )
    assert packed.manifest.format == "aoti"
    program = load_program(packed.path, packed.manifest)
    for batch in (1, 3, 17, 64):
        x = torch.randn(batch, 4)
        torch.testing.assert_close(program({"input": x})["output"], _eager(module, x))


class Branchy(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:
            return x * 2
        return x


class FixedBatch(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(8, -1) * 2


def test_data_dependent_control_flow_is_named(tmp_path: Path, env_lock: EnvLock) -> None:
    with pytest.raises(PackError) as caught:
        pack(Branchy(), (torch.randn(8, 4),), name="b", repository=tmp_path, environment=env_lock)
    message = caught.value.message
    assert "data-dependent control flow" in message
    assert "if x.sum() > 0:" in message
    assert "test_pack.py" in message
    assert "torch.cond" in message
    assert "torchscript" in message
    assert not (tmp_path / "b" / "1").exists()
    assert list((tmp_path / "b").iterdir()) == []  # the staging directory is gone


def test_a_specialised_batch_dimension_suggests_a_fixed_batch(
    tmp_path: Path, env_lock: EnvLock
) -> None:
    with pytest.raises(PackError) as caught:
        pack(
            FixedBatch(), (torch.randn(8, 4),), name="f", repository=tmp_path, environment=env_lock
        )
    message = caught.value.message
    assert "batch dimension (dim 0 of inputs x) to 8" in message
    assert "dynamic_batch=False" in message


def test_existing_versions_are_refused_and_numbers_continue(
    tmp_path: Path, env_lock: EnvLock
) -> None:
    module, examples = nn.Linear(2, 1), (torch.randn(4, 2),)
    first = pack(module, examples, name="m", repository=tmp_path, environment=env_lock)
    with pytest.raises(PackError, match=r"m/1 already exists; versions are immutable"):
        pack(module, examples, name="m", repository=tmp_path, version=1, environment=env_lock)
    second = pack(module, examples, name="m", repository=tmp_path, environment=env_lock)
    assert (first.manifest.version, second.manifest.version) == (1, 2)
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["1", "2"]


def test_config_is_written_once_as_valid_toml(tmp_path: Path, env_lock: EnvLock) -> None:
    config = ModelConfig(
        batching=BatchingConfig(max_batch_size=32, preferred_batch_sizes=[8, 32]),
        device="cuda:0",
        dtype="bf16",
    )
    module, examples = nn.Linear(2, 1), (torch.randn(4, 2),)
    pack(module, examples, name="m", repository=tmp_path, config=config, environment=env_lock)
    path = tmp_path / "m" / "config.toml"
    assert parse_config(path.read_text(), origin=str(path)) == config
    pack(
        module, examples, name="m", repository=tmp_path, config=ModelConfig(), environment=env_lock
    )
    assert parse_config(path.read_text()) == config  # a user's file is never overwritten


@pytest.mark.parametrize(
    ("examples", "kwargs", "expected"),
    [
        ((torch.randn(1, 2),), {}, "batch size 1"),
        (("not a tensor",), {}, "is a str, not a tensor"),
        ((torch.randn(4, 2),), {"name": "../escape"}, "model name '../escape'"),
        ((torch.randn(4, 2),), {"max_batch_size": 2}, "exceeds max_batch_size"),
        ((torch.randn(4, 3),), {}, "the module raised on the example inputs"),
        ((torch.randn(4, 2),), {"format": "onnx"}, "format 'onnx' must be one of"),
    ],
)
def test_bad_requests_are_refused_clearly(
    tmp_path: Path, env_lock: EnvLock, examples: Any, kwargs: dict[str, Any], expected: str
) -> None:
    arguments: dict[str, Any] = {"name": "m", "repository": tmp_path, "environment": env_lock}
    arguments.update(kwargs)
    with pytest.raises(PackError, match=expected.replace(".", r"\.").replace("(", r"\(")):
        pack(nn.Linear(2, 1), examples, **arguments)
    assert not (tmp_path / "m" / "1").exists()


def test_manifest_json_is_sorted_and_readable(packed_ranker: PackedVersion) -> None:
    raw = json.loads((packed_ranker.path / "manifest.json").read_text())
    assert raw["kind"] == "torchrig-model"
    assert list(raw) == sorted(raw)
