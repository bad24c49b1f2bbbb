"""The registry over a real repository of packed models: load, isolate failures, infer."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
import torch

from scorer_model import Scorer, examples
from torchrig.envlock import take_lock
from torchrig.errors import EnvironmentMismatch, InvalidInput, ModelNotFound, ModelNotReady
from torchrig.packaging import pack
from torchrig.repository import BatchingConfig, ModelConfig, Repository
from torchrig.runtime import ModelRegistry
from torchrig.runtime.executor import check_environment


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("repo")
    config = ModelConfig(batching=BatchingConfig(max_batch_size=32, max_queue_delay_ms=5))
    module = Scorer().eval()
    pack(
        module,
        examples(4),
        name="scorer",
        repository=root,
        version=1,
        config=config,
        output_names=["score"],
    )
    pack(module, examples(4), name="scorer", repository=root, version=2, output_names=["score"])
    broken = pack(
        module, examples(4), name="broken", repository=root, version=1, output_names=["score"]
    )
    program = broken.path / broken.manifest.program
    data = bytearray(program.read_bytes())
    data[len(data) // 2] ^= 0xFF
    program.write_bytes(bytes(data))
    pack(module, examples(4), name="typo", repository=root, version=1, output_names=["score"])
    (root / "typo" / "config.toml").write_text("[batching]\nmax_bacth_size = 8\n")
    (root / "scorer" / "3").mkdir()  # half-written: no manifest
    return root


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_load_isolates_failures_and_serves_the_rest(repo: Path) -> None:
    module = Scorer().eval()

    async def main() -> None:
        registry = ModelRegistry(Repository(repo), environment=take_lock())
        await registry.load_all()
        try:
            states = {(v.model, v.version): v for v in registry.versions()}
            assert states[("scorer", 2)].state == "ready"
            assert ("scorer", 3) not in states  # the half-written version is never loaded
            # a corrupted version is never loaded: the model reports why it has none
            assert ("broken", 1) not in states
            assert "checksum" in registry.model_errors()["broken"]
            assert "max_bacth_size" in registry.model_errors()["typo"]
            assert not registry.ready()  # a model that should serve does not
            for rows in (1, 3, 17, 32):
                inputs = examples(rows)
                served, out = await registry.infer("scorer", inputs)
                assert served.version == 2
                with torch.inference_mode():
                    expected = module(**inputs)
                torch.testing.assert_close(out["score"], expected)
            meta = registry.metadata("scorer")
            assert meta.versions == ["2"]
            assert [(s.name, s.datatype, s.shape) for s in meta.inputs] == [
                ("dense", "FP32", [-1, 3]),
                ("ids", "INT64", [-1, 5]),
            ]
            with pytest.raises(ModelNotReady, match="checksum"):
                registry.resolve("broken")
            with pytest.raises(ModelNotReady, match="max_bacth_size"):
                registry.resolve("typo")
            with pytest.raises(ModelNotFound):
                registry.resolve("nope")
            with pytest.raises(ModelNotFound):
                registry.resolve("scorer", "9")
        finally:
            await registry.close()

    run(main())


@pytest.mark.parametrize(
    ("inputs", "needle"),
    [
        ({"dense": torch.zeros(2, 3)}, "missing input(s) ids"),
        ({**examples(2), "extra": torch.zeros(2)}, "unknown input(s) extra"),
        (
            {
                "dense": torch.zeros(2, 3, dtype=torch.float64),
                "ids": torch.zeros(2, 5, dtype=torch.int64),
            },
            "dense has datatype FP64, expected FP32",
        ),
        (
            {"dense": torch.zeros(2, 4), "ids": torch.zeros(2, 5, dtype=torch.int64)},
            "dense has shape [2, 4], expected [-1, 3]",
        ),
        (
            {"dense": torch.zeros(2, 3), "ids": torch.zeros(3, 5, dtype=torch.int64)},
            "disagree on the batch size",
        ),
        (examples(33), "exceeds max_batch_size 32"),
    ],
)
def test_bad_inputs_name_the_input_and_expectation(
    repo: Path, inputs: dict[str, torch.Tensor], needle: str
) -> None:
    async def main() -> None:
        registry = ModelRegistry(Repository(repo))
        await registry.load("scorer", 1)
        try:
            with pytest.raises(InvalidInput) as err:
                await registry.infer("scorer", inputs, version="1")
            assert needle in err.value.message
        finally:
            await registry.close()

    run(main())


def test_breaking_environment_difference_refuses_the_load(repo: Path, tmp_path: Path) -> None:
    from torchrig.packaging import read_manifest

    manifest = read_manifest(repo / "scorer" / "1")
    assert manifest.environment is not None
    snapshot = manifest.environment.snapshot
    assert snapshot.torch is not None
    older = json.loads((repo / "scorer" / "1" / "manifest.json").read_text())
    older["environment"]["snapshot"]["torch"]["version"] = "2.9.1+cu128"
    from torchrig.packaging.manifest import manifest_from_json

    exported_elsewhere = manifest_from_json(json.dumps(older))
    with pytest.raises(EnvironmentMismatch) as err:
        check_environment(exported_elsewhere, take_lock())
    assert "2.9.1+cu128" in err.value.message
    assert "another minor release" in err.value.message
    assert check_environment(manifest, take_lock()) == []


def test_a_version_exported_elsewhere_is_refused_and_reported(repo: Path, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "repo"
    shutil.copytree(repo / "scorer", copy / "scorer")
    shutil.rmtree(copy / "scorer" / "3")
    manifest_path = copy / "scorer" / "2" / "manifest.json"
    data = json.loads(manifest_path.read_text())
    data["environment"]["snapshot"]["python"]["version"] = "3.8.10"
    manifest_path.write_text(json.dumps(data))

    async def main() -> None:
        registry = ModelRegistry(Repository(copy), environment=take_lock())
        await registry.load_all()
        try:
            (served,) = [v for v in registry.versions() if v.version == 2]
            assert served.state == "failed"
            assert "Python 3.8.10" in (served.reason or "")
            with pytest.raises(ModelNotReady, match=r"3\.8\.10"):
                registry.resolve("scorer", 2)
            await registry.load("scorer", 1)  # the older version still serves
            served_by, _ = await registry.infer("scorer", examples(2))
            assert served_by.version == 1
        finally:
            await registry.close()

    run(main())


def test_an_unusable_device_fails_that_version_with_the_fix(tmp_path: Path) -> None:
    config = ModelConfig(device="cuda:99")  # no CUDA here; no machine has 100 GPUs
    pack(
        Scorer().eval(),
        examples(4),
        name="gpu_only",
        repository=tmp_path,
        version=1,
        config=config,
        output_names=["score"],
    )

    async def main() -> None:
        registry = ModelRegistry(Repository(tmp_path))
        await registry.load_all()
        try:
            (served,) = registry.versions()
            assert served.state == "failed"
            reason = served.reason or ""
            assert "cuda:99" in reason
            assert "CUDA is not available" in reason or "does not exist" in reason
            assert 'set device = "cpu"' in reason
        finally:
            await registry.close()

    run(main())
