"""Real packed models on the fast path: torch.export's per-call checks skipped only where the
server's validation covers them (same answers as the exported program), and which models
run their batches on the event loop."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import pytest
import torch

from faults import pack_faulty
from scorer_model import Scorer, examples
from torchrig.packaging import load_program, pack, read_manifest
from torchrig.repository import BatchingConfig, ModelConfig, Repository
from torchrig.runtime import ModelRegistry
from torchrig.runtime.executor import Executor


class Tokens(torch.nn.Module):
    """A model with a variable sequence length (a dynamic dimension past the batch)."""

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return tokens.float().mean(dim=1, keepdim=True)


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("repo")
    scorer = Scorer().eval()
    pack(scorer, examples(4), name="scorer", repository=root, version=1, output_names=["s"])
    pack(
        scorer,
        examples(4),
        name="small",  # exported for batches of at most 16
        repository=root,
        version=1,
        output_names=["s"],
        max_batch_size=16,
    )
    pack(
        scorer,
        examples(4),
        name="slow",  # any batch is "slow" against this threshold: a worker thread
        repository=root,
        version=1,
        output_names=["s"],
        config=ModelConfig(batching=BatchingConfig(inline_max_ms=1e-9)),
    )
    pack(
        Tokens().eval(),
        {"tokens": torch.zeros(2, 8, dtype=torch.int64)},
        name="tokens",
        repository=root,
        version=1,
        output_names=["mean"],
        dynamic_dims={"tokens": {1: (1, 64)}},
    )
    pack_faulty(root, "custom", 1)  # a custom operator (here one that can block on a gate)
    return root


def _version(repo: Path, name: str) -> Path:
    return repo / name / "1"


def test_unchecked_program_answers_exactly_as_the_exported_program(repo: Path) -> None:
    directory = _version(repo, "scorer")
    manifest = read_manifest(directory)
    fast = load_program(directory, manifest, max_rows=64)
    assert fast.checks_inputs is False
    exported = torch.export.load(str(directory / manifest.program)).module()
    with torch.inference_mode():
        for rows in (1, 2, 7, 64):
            inputs = examples(rows)
            got = fast(inputs)["s"]
            assert torch.equal(got, exported(inputs["dense"], inputs["ids"])), rows


def test_checks_stay_where_validation_does_not_cover_them(repo: Path) -> None:
    scorer = _version(repo, "scorer")
    assert load_program(scorer, read_manifest(scorer)).checks_inputs  # no promise made
    small = _version(repo, "small")
    # batches past the export's bound would reach an unchecked graph: keep its guards
    assert load_program(small, read_manifest(small), max_rows=32).checks_inputs
    assert not load_program(small, read_manifest(small), max_rows=16).checks_inputs
    tokens = _version(repo, "tokens")
    program = load_program(tokens, read_manifest(tokens), max_rows=8)
    assert program.checks_inputs  # a sequence length has bounds the server does not check
    with pytest.raises(AssertionError, match=r"Guard failed: tokens\.size\(\)\[1\] <= 64"):
        program({"tokens": torch.zeros(2, 65, dtype=torch.int64)})


def _executor(repo: Path, name: str, **config: Any) -> Executor:
    directory = _version(repo, name)
    executor = Executor(directory, read_manifest(directory), ModelConfig(**config))
    executor.load()
    return executor


def test_which_models_run_inline(repo: Path) -> None:
    fast = _executor(repo, "scorer", device="cpu")
    assert fast.batch_time_s is not None
    assert fast.runs_inline
    assert fast.program.checks_inputs is False
    assert fast.program.builtin_ops_only
    off = _executor(repo, "scorer", device="cpu", batching=BatchingConfig(inline_max_ms=0))
    assert not off.runs_inline  # 0 turns it off
    two = _executor(repo, "scorer", device="cpu", instances=2)
    assert not two.runs_inline  # several instances asked for parallel workers
    cold = _executor(repo, "scorer", device="cpu", warmup=False)
    assert cold.batch_time_s is None
    assert not cold.runs_inline
    assert not _executor(repo, "tokens", device="cpu").runs_inline  # unbounded shapes
    custom = _executor(repo, "custom", device="cpu")
    assert not custom.program.builtin_ops_only
    assert not custom.runs_inline  # a custom operator may block: never on the event loop


def test_a_slow_model_keeps_its_worker_thread_and_a_fast_one_runs_on_the_loop(
    repo: Path,
) -> None:
    async def main() -> list[str]:
        registry = ModelRegistry(Repository(repo))
        await registry.load_all()
        try:
            for name in ("scorer", "slow"):
                inputs = examples(3)
                _, out = await registry.infer(name, inputs)
                with torch.inference_mode():
                    expected = Scorer().eval()(**inputs)
                torch.testing.assert_close(out["s"], expected)
            assert registry.resolve("scorer").batcher.inline  # type: ignore[union-attr]
            assert not registry.resolve("slow").batcher.inline  # type: ignore[union-attr]
            return [t.name for t in threading.enumerate() if t.name.startswith("torchrig-")]
        finally:
            await registry.close()

    workers = asyncio.run(main())
    assert "torchrig-slow/1-0" in workers
    assert not [name for name in workers if name.startswith("torchrig-scorer/")]
