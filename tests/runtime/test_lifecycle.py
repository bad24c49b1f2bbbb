"""The registry following a real repository as it changes: hot swaps, half-copied uploads,
policy and config changes, broken versions, memory budgets (driven by `refresh()`, as the
poll task drives it)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

from doubles import until_async
from faults import gate, pack_faulty, seen
from torchrig.envlock import take_lock
from torchrig.errors import ModelNotReady
from torchrig.repository import Repository
from torchrig.runtime import ModelRegistry


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Packed versions to copy into the repositories the tests serve."""
    root = tmp_path_factory.mktemp("source")
    pack_faulty(root, "m", 1, tag=101)
    pack_faulty(root, "m", 2, tag=102)
    pack_faulty(root, "m", 3, tag=103)
    return root


def x(*values: float) -> dict[str, torch.Tensor]:
    return {"x": torch.tensor([[v, 0.0] for v in values])}


def copy_version(source: Path, repo: Path, version: int, model: str = "m") -> Path:
    target = repo / model / str(version)
    shutil.copytree(source / "m" / str(version), target)
    _rename(target, model)
    return target


def _rename(directory: Path, model: str) -> None:
    manifest = json.loads((directory / "manifest.json").read_text())
    manifest["name"] = model
    (directory / "manifest.json").write_text(json.dumps(manifest))


def break_program(directory: Path) -> None:
    """Garbage program bytes under a manifest whose checksums match them: complete, unloadable."""
    manifest = json.loads((directory / "manifest.json").read_text())
    junk = b"not a program at all"
    (directory / manifest["program"]).write_bytes(junk)
    for item in manifest["files"]:
        if item["path"] == manifest["program"]:
            item["sha256"], item["size"] = hashlib.sha256(junk).hexdigest(), len(junk)
    (directory / "manifest.json").write_text(json.dumps(manifest))


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_hot_swap_waits_for_a_complete_version_and_lets_the_old_one_finish(
    source: Path, tmp_path: Path
) -> None:
    repo = tmp_path / "repo"
    copy_version(source, repo, 1)
    old_gate = gate(101)

    async def main() -> None:
        registry = ModelRegistry(Repository(repo))
        await registry.load_all()
        try:
            old = registry.resolve("m")
            assert old.version == 1
            old_gate.clear()
            before = len(seen(101))
            inflight = [asyncio.ensure_future(registry.infer("m", x(float(i)))) for i in (1, 2)]
            await until_async(lambda: len(seen(101)) > before)  # a batch is in the model
            # files first, manifest missing: not a version yet
            half = repo / "m" / "2"
            half.mkdir()
            for item in (source / "m" / "2").iterdir():
                if item.name != "manifest.json":
                    shutil.copy(item, half / item.name)
            await registry.refresh()
            assert [v.version for v in registry.versions()] == [1]
            # manifest there, program truncated (still copying): fails its checksum
            program = json.loads((source / "m" / "2" / "manifest.json").read_text())["program"]
            data = (source / "m" / "2" / program).read_bytes()
            (half / program).write_bytes(data[: len(data) // 2])
            shutil.copy(source / "m" / "2" / "manifest.json", half / "manifest.json")
            await registry.refresh()
            assert [v.version for v in registry.versions()] == [1]
            assert registry.resolve("m") is old
            # complete: loaded beside v1, then the default; v1 drains in the background
            (half / program).write_bytes(data)
            await registry.refresh()
            new = registry.resolve("m")
            assert new.version == 2
            assert old.state == "unloading"
            _, out = await registry.infer("m", x(5.0))
            assert out["y"][0, 0].item() == 10.0  # version 2 doubles
            assert not any(f.done() for f in inflight)  # v1's requests still in its model
            old_gate.set()
            answers = await asyncio.gather(*inflight)
            assert [(s.version, o["y"][0, 0].item()) for s, o in answers] == [(1, 1.0), (1, 2.0)]
            await registry.wait_released()
            assert old.state == "unloaded"
            assert [v.version for v in registry.versions()] == [2]
            assert registry.ready()
        finally:
            old_gate.set()
            await registry.close()

    run(main())


def test_policy_and_config_changes_are_followed(source: Path, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    for version in (1, 2):
        copy_version(source, repo, version)
    config = repo / "m" / "config.toml"

    async def main() -> None:
        registry = ModelRegistry(Repository(repo))
        await registry.load_all()
        try:
            assert [v.version for v in registry.versions()] == [2]
            config.write_text('[version_policy]\npolicy = "all"\n')
            await registry.refresh()
            assert [(v.version, v.state) for v in registry.versions()] == [
                (1, "ready"),
                (2, "ready"),
            ]
            config.write_text('[version_policy]\npolicy = "specific"\nversions = [1]\n')
            await registry.refresh()
            await registry.wait_released()
            assert [v.version for v in registry.versions()] == [1]
            first = registry.resolve("m")
            assert first.batcher is not None
            assert first.batcher.max_batch_size == 64
            config.write_text(
                '[version_policy]\npolicy = "specific"\nversions = [1]\n'
                "[batching]\nmax_batch_size = 4\n"
            )
            await registry.refresh()
            reloaded = registry.resolve("m")
            assert reloaded is not first  # the same version, loaded again with the new config
            assert reloaded.batcher is not None
            assert reloaded.batcher.max_batch_size == 4
            await registry.wait_released()
            assert first.state == "unloaded"
            await registry.refresh()  # nothing changed: nothing reloads
            assert registry.resolve("m") is reloaded
        finally:
            await registry.close()

    run(main())


def test_a_broken_version_fails_alone_is_not_retried_and_a_fixed_one_replaces_it(
    source: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    repo = tmp_path / "repo"
    copy_version(source, repo, 1)

    async def main() -> None:
        registry = ModelRegistry(Repository(repo))
        await registry.load_all()
        try:
            broken = copy_version(source, repo, 2)
            break_program(broken)
            with caplog.at_level(logging.INFO, logger="torchrig"):
                await registry.refresh()
                await registry.refresh()
            failed = [v for v in registry.versions() if v.version == 2]
            assert failed[0].state == "failed"
            assert "cannot load" in (failed[0].reason or "")
            assert caplog.text.count("m version 2 loading") == 1  # not retried unchanged
            assert registry.resolve("m").version == 1  # the old one keeps serving
            assert registry.ready()
            with pytest.raises(ModelNotReady, match="cannot load"):
                registry.resolve("m", 2)
            shutil.rmtree(broken)
            copy_version(source, repo, 2)  # a fixed upload
            await registry.refresh()
            assert registry.resolve("m").version == 2
            await registry.wait_released()
            assert [v.version for v in registry.versions()] == [2]
        finally:
            await registry.close()

    run(main())


def test_a_version_from_another_environment_is_refused_with_the_differences(
    source: Path, tmp_path: Path
) -> None:
    repo = tmp_path / "repo"
    copy_version(source, repo, 1)

    async def main() -> None:
        registry = ModelRegistry(Repository(repo), environment=take_lock())
        await registry.load_all()
        try:
            other = copy_version(source, repo, 2)
            manifest = json.loads((other / "manifest.json").read_text())
            manifest["environment"]["snapshot"]["python"]["version"] = "3.8.10"
            (other / "manifest.json").write_text(json.dumps(manifest))
            await registry.refresh()
            refused = next(v for v in registry.versions() if v.version == 2)
            assert refused.state == "failed"
            assert "Python 3.8.10" in (refused.reason or "")
            assert "Re-export" in (refused.reason or "")
            assert registry.resolve("m").version == 1
        finally:
            await registry.close()

    run(main())


def test_models_come_and_go_and_a_late_failure_does_not_unready_the_replica(
    source: Path, tmp_path: Path
) -> None:
    repo = tmp_path / "repo"
    copy_version(source, repo, 1)
    copy_version(source, repo, 1, model="other")

    async def main() -> None:
        registry = ModelRegistry(Repository(repo))
        await registry.load_all()
        try:
            assert registry.ready()
            shutil.rmtree(repo / "other")
            await registry.refresh()
            await registry.wait_released()
            assert {v.model for v in registry.versions()} == {"m"}
            assert registry.ready()  # a model taken away is no longer waited for
            late = copy_version(source, repo, 1, model="late")
            break_program(late)
            await registry.refresh()
            with pytest.raises(ModelNotReady, match="cannot load"):
                registry.resolve("late")
            assert registry.ready()  # "m" serves as before
            _, out = await registry.infer("m", x(3.0))
            assert out["y"][0, 0].item() == 3.0
        finally:
            await registry.close()

    run(main())


@pytest.mark.parametrize(("budget", "fits"), [('"1B"', False), ('"1MiB"', True), ("0.5", True)])
def test_memory_budget_is_checked_at_load(
    source: Path, tmp_path: Path, budget: str, fits: bool
) -> None:
    repo = tmp_path / "repo"
    copy_version(source, repo, 1)
    (repo / "m" / "config.toml").write_text(f"memory_budget = {budget}\n")

    async def main() -> None:
        registry = ModelRegistry(Repository(repo))
        await registry.load_all()
        try:
            (served,) = registry.versions()
            assert served.memory_bytes == 4  # the Faulty model's one FP32 buffer
            if fits:
                assert served.state == "ready"
            else:
                assert served.state == "failed"
                reason = served.reason or ""
                assert "needs 4 B (parameters and buffers)" in reason
                assert "memory_budget of 1 B" in reason
                assert not registry.ready()
        finally:
            await registry.close()

    run(main())
