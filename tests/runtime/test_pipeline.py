"""A pipeline in the registry's lifecycle: it follows its members' hot reloads and its own
config, turns not ready (naming the member) when a member leaves, and its config errors
name the step and the fix."""

from __future__ import annotations

import asyncio
import re
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from pipeline_models import PIPELINE_TOML, build_repo, in_sequence, pack_head
from torchrig.errors import InvalidInput, ModelNotReady, RepositoryError
from torchrig.packaging.manifest import TensorSpec
from torchrig.repository import Repository, parse_config
from torchrig.runtime import ModelRegistry


def run(coro: Any) -> Any:
    return asyncio.run(coro)


async def infer(registry: ModelRegistry, x: np.ndarray) -> np.ndarray:
    _, outputs = await registry.infer("chain", {"features": torch.from_numpy(x)})
    result: np.ndarray = outputs["scores"].numpy()
    return result


def test_the_pipeline_follows_a_member_reload_and_a_member_leaving(tmp_path: Path) -> None:
    root = build_repo(tmp_path / "models")
    x = np.random.default_rng(0).standard_normal((3, 6)).astype(np.float32)

    async def main() -> None:
        registry = ModelRegistry(Repository(root))
        await registry.load_all()
        assert registry.ready()
        np.testing.assert_allclose(await infer(registry, x), in_sequence(root, x), rtol=1e-5)

        pack_head(root, 2)  # a new version of a member: the next request runs it
        await registry.refresh()
        await registry.wait_released()
        assert [v.version for v in registry.versions() if v.model == "head"] == [2]
        got = await infer(registry, x)
        np.testing.assert_allclose(got, in_sequence(root, x, head_version=2), rtol=1e-5)

        shutil.rmtree(root / "head")  # the member leaves: the pipeline is not ready, named
        await registry.refresh()
        assert not registry.ready()
        with pytest.raises(ModelNotReady, match="member head is not ready"):
            registry.resolve("chain")
        await registry.close()

    run(main())


def test_the_pipeline_follows_its_own_config(tmp_path: Path) -> None:
    root = build_repo(tmp_path / "models")
    x = np.ones((2, 6), dtype=np.float32)

    async def main() -> None:
        registry = ModelRegistry(Repository(root))
        await registry.load_all()
        first = registry.resolve("chain")
        # only the encoder now: the pipeline's outputs become the embedding
        one_step = PIPELINE_TOML.split("[[pipeline.step]]")[:2]
        text = "[[pipeline.step]]".join(one_step).replace('outputs = ["scores"]', "")
        (root / "chain" / "config.toml").write_text(text)
        await registry.refresh()
        second = registry.resolve("chain")
        assert second is not first
        assert second.manifest is not None
        assert [s.name for s in second.manifest.outputs] == ["embedding"]
        _, outputs = await registry.infer("chain", {"features": torch.from_numpy(x)})
        assert outputs["embedding"].shape == (2, 8)
        with pytest.raises(InvalidInput, match="missing input"):
            await registry.infer("chain", {"x": torch.from_numpy(x)})
        await registry.close()

    run(main())


def test_a_pipeline_unloaded_and_loaded_again_serves(tmp_path: Path) -> None:
    root = build_repo(tmp_path / "models")
    x = np.ones((1, 6), dtype=np.float32)

    async def main() -> None:
        registry = ModelRegistry(Repository(root))
        await registry.load_all()
        await registry.unload("chain")
        with pytest.raises(ModelNotReady, match="unloaded"):
            registry.resolve("chain")
        await registry.load("chain")
        np.testing.assert_allclose(await infer(registry, x), in_sequence(root, x), rtol=1e-5)
        await registry.close()

    run(main())


def test_tensors_that_do_not_fit_between_steps_are_named(tmp_path: Path) -> None:
    root = build_repo(tmp_path / "models")
    # head takes 8 features; give it the pipeline's 6-wide input instead
    wrong = PIPELINE_TOML.replace(
        'input_map = { h = "embedding" }', 'input_map = { h = "features" }'
    )
    (root / "chain" / "config.toml").write_text(wrong)

    async def main() -> None:
        registry = ModelRegistry(Repository(root))
        await registry.load_all()
        with pytest.raises(ModelNotReady) as caught:
            registry.resolve("chain")
        assert "input h takes FP32[-1, 8]" in caught.value.message
        assert "features" in caught.value.message
        await registry.close()

    run(main())


def test_config_errors_name_the_step_and_the_fix() -> None:
    with pytest.raises(RepositoryError, match="step 1 must name either model"):
        parse_config('[[pipeline.step]]\nmodel = "a"\nstep = "softmax"\n')
    with pytest.raises(RepositoryError, match="at least one"):
        parse_config("[pipeline]\n")
    with pytest.raises(RepositoryError, match=re.escape("pipeline.{outputs, step")):
        parse_config('[[pipeline.step]]\nmodels = "a"\n')
    with pytest.raises(RepositoryError, match=r"holds \[pipeline\] only"):
        parse_config('[batching]\nmax_batch_size = 8\n\n[[pipeline.step]]\nmodel = "a"\n')


def test_a_builtin_step_without_a_factory_is_named(tmp_path: Path) -> None:
    root = build_repo(tmp_path / "models")
    (root / "chain" / "config.toml").write_text(
        PIPELINE_TOML + '\n[[pipeline.step]]\nstep = "softmax"\n'
    )

    async def main() -> None:
        registry = ModelRegistry(Repository(root))
        await registry.load_all()
        with pytest.raises(ModelNotReady, match="built-in step 'softmax' is not available"):
            registry.resolve("chain")
        await registry.close()

    run(main())


class Softmax:
    """A built-in step as a `StepFactory` makes one: a signature and a call per request."""

    label = "step softmax"
    batching = True
    max_batch_size = None

    def __init__(self, width: int) -> None:
        self.inputs = [TensorSpec(name="logits", datatype="FP32", shape=[-1, width])]
        self.outputs = [TensorSpec(name="probabilities", datatype="FP32", shape=[-1, width])]

    async def submit(self, inputs: dict[str, Any], *, timeout_s: float | None) -> dict[str, Any]:
        return {"probabilities": torch.softmax(inputs["logits"], dim=-1)}


def test_a_step_factory_supplies_builtin_steps(tmp_path: Path) -> None:
    root = build_repo(tmp_path / "models")
    text = PIPELINE_TOML.replace('outputs = ["scores"]', 'outputs = ["probabilities"]')
    text += '\n[[pipeline.step]]\nstep = "softmax"\noptions = { width = 3 }\n'
    text += 'input_map = { logits = "scores" }\n'
    (root / "chain" / "config.toml").write_text(text)
    made: list[tuple[str, dict[str, Any]]] = []

    def steps(kind: str, options: Mapping[str, Any]) -> Softmax:
        made.append((kind, dict(options)))
        return Softmax(int(options["width"]))

    x = np.random.default_rng(5).standard_normal((2, 6)).astype(np.float32)

    async def main() -> None:
        registry = ModelRegistry(Repository(root), steps=steps)
        await registry.load_all()
        _, outputs = await registry.infer("chain", {"features": torch.from_numpy(x)})
        expected = torch.softmax(torch.from_numpy(in_sequence(root, x)), dim=-1)
        torch.testing.assert_close(outputs["probabilities"], expected)
        await registry.close()

    run(main())
    assert made == [("softmax", {"width": 3})]  # made once, kept for every request
