"""The executor's execution switches: torch.compile with its eager fallback, and the CUDA
lanes (static buffers, padding to a captured batch size, CUDA graphs).

The CUDA tests need a GPU (marker `gpu`); the bucket arithmetic they rely on and the
compile path are tested on the CPU.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from torchrig.packaging import pack, read_manifest
from torchrig.packaging.manifest import TensorSpec
from torchrig.repository.config import BatchingConfig, ModelConfig
from torchrig.runtime.batcher import concat_rows
from torchrig.runtime.cuda_lanes import bucket_for, graphable
from torchrig.runtime.executor import Executor
from torchrig.runtime.threads import process_intra_op_threads


class Scorer(nn.Module):  # type: ignore[misc]
    """[B, 8] float + [B, 4] int64 ids -> [B, 2]; every row independent of the others."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.table = nn.Embedding(50, 8)
        self.mlp = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 2))

    def forward(self, dense: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        pooled = self.table(ids).sum(dim=1)
        return self.mlp(torch.cat([dense, pooled], dim=1))


def inputs(rows: int, seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {
        "dense": torch.randn(rows, 8, generator=generator),
        "ids": torch.randint(0, 50, (rows, 4), generator=generator),
    }


@pytest.fixture(scope="module")
def version_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = tmp_path_factory.mktemp("repo")
    example = inputs(4)
    pack(
        Scorer().eval(),
        example,
        name="scorer",
        repository=repo,
        version=1,
        output_names=["scores"],
        max_batch_size=64,
    )
    return repo / "scorer" / "1"


def executor(version_dir: Path, **config: Any) -> Executor:
    batching = BatchingConfig(max_batch_size=16, preferred_batch_sizes=[1, 4, 16])
    model_config = ModelConfig(batching=batching, **config)
    return Executor(version_dir, read_manifest(version_dir), model_config)


def expected(rows: int, seed: int = 0) -> torch.Tensor:
    with torch.inference_mode():
        return Scorer().eval()(**inputs(rows, seed))  # type: ignore[no-any-return]


def test_bucket_is_the_smallest_captured_size_that_holds_the_batch() -> None:
    assert bucket_for(1, [1, 4, 16]) == 1
    assert bucket_for(3, [1, 4, 16]) == 4
    assert bucket_for(16, [1, 4, 16]) == 16
    assert bucket_for(17, [1, 4, 16]) is None
    assert bucket_for(5, []) is None


def test_static_buffers_need_fixed_dimensions_past_the_batch() -> None:
    fixed = TensorSpec(name="x", datatype="FP32", shape=[-1, 3, 8])
    ragged = TensorSpec(name="y", datatype="INT64", shape=[-1, -1])
    scalar = TensorSpec(name="z", datatype="FP32", shape=[])
    assert graphable([fixed])
    assert not graphable([fixed, ragged])
    assert not graphable([scalar])


@pytest.fixture
def no_cxx_compiler() -> Iterator[None]:
    """Point inductor at a C++ compiler that does not exist: a real compile failure."""
    import torch._dynamo
    import torch._inductor.config as inductor_config

    saved = inductor_config.cpp.cxx
    inductor_config.cpp.cxx = ("/nonexistent/torchrig-test-c++",)
    torch._dynamo.reset()
    try:
        yield
    finally:
        inductor_config.cpp.cxx = saved
        torch._dynamo.reset()


@pytest.mark.usefixtures("no_cxx_compiler")
def test_a_compile_failure_falls_back_to_eager_with_a_warning(version_dir: Path) -> None:
    runner = executor(version_dir, compile="default")
    runner.load()  # the warm-up compiles, fails, and goes on eagerly
    assert any("torch.compile failed" in w for w in runner.warnings), runner.warnings
    got = runner.infer(inputs(5, seed=3))["scores"]
    torch.testing.assert_close(got, expected(5, seed=3))


def test_compiled_program_matches_eager(version_dir: Path) -> None:
    torch._dynamo.reset()
    runner = executor(version_dir, compile="default")
    runner.load()
    assert not runner.warnings, runner.warnings
    for rows in (1, 3, 16):
        got = runner.infer(inputs(rows, seed=rows))["scores"]
        torch.testing.assert_close(got, expected(rows, seed=rows), rtol=1e-4, atol=1e-5)


def test_the_cpu_path_captures_no_graphs(version_dir: Path) -> None:
    runner = executor(version_dir, device="cpu")
    runner.load()
    assert runner.graph_sizes == []
    torch.testing.assert_close(runner.infer(inputs(7))["scores"], expected(7))


def test_cpu_batches_use_the_process_thread_count_unless_configured(version_dir: Path) -> None:
    runner = executor(version_dir, device="cpu")
    runner.load()
    assert runner.intra_op_threads == process_intra_op_threads()
    pinned = executor(version_dir, device="cpu", threads=1)
    pinned.load()
    assert pinned.intra_op_threads == 1


def test_several_requests_join_into_fresh_memory_and_answer_as_one_batch(
    version_dir: Path,
) -> None:
    parts = [inputs(rows, seed=rows) for rows in (1, 5, 2)]
    joined = concat_rows(parts, pin=False)
    for name in ("dense", "ids"):
        assert torch.equal(joined[name], torch.cat([part[name] for part in parts]))
        assert joined[name].dtype == parts[0][name].dtype
        joined[name][0].zero_()  # fresh memory: the requests' own tensors are untouched
        assert parts[0][name].abs().sum() > 0
    runner = executor(version_dir, device="cpu")
    runner.load()
    assert not runner.wants_pinned_batches
    parts = [inputs(rows, seed=rows) for rows in (1, 5, 2)]
    got = runner.infer(concat_rows(parts))["scores"]
    want = torch.cat([expected(rows, seed=rows) for rows in (1, 5, 2)])
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("rows", [1, 3, 4, 9, 16, 20])
def test_cuda_graphs_pad_to_the_next_captured_size(version_dir: Path, rows: int) -> None:
    runner = executor(version_dir, device="cuda", instances=2)
    runner.load()
    assert runner.graph_sizes == [1, 4, 16], runner.warnings
    got = runner.infer(inputs(rows, seed=rows))["scores"]
    assert got.device.type == "cpu"
    assert got.shape == (rows, 2)  # 20 rows exceed every graph and run eagerly
    torch.testing.assert_close(got, expected(rows, seed=rows), rtol=1e-3, atol=1e-4)


@pytest.mark.gpu
@needs_cuda
def test_cuda_lanes_serve_concurrent_instances(version_dir: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    runner = executor(version_dir, device="cuda", instances=3)
    runner.load()
    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(lambda s: runner.infer(inputs(1 + s % 16, seed=s)), range(60)))
    for seed, result in enumerate(results):
        torch.testing.assert_close(
            result["scores"], expected(1 + seed % 16, seed=seed), rtol=1e-3, atol=1e-4
        )


@pytest.mark.gpu
@needs_cuda
def test_graphs_can_be_turned_off(version_dir: Path) -> None:
    runner = executor(version_dir, device="cuda", cuda_graphs=False)
    runner.load()
    assert runner.graph_sizes == []
    torch.testing.assert_close(runner.infer(inputs(6))["scores"], expected(6), rtol=1e-3, atol=1e-4)


@pytest.mark.gpu
@needs_cuda
def test_requests_join_in_pinned_memory_for_the_lane(version_dir: Path) -> None:
    parts = [inputs(rows, seed=rows) for rows in (3, 1, 4)]
    joined = concat_rows(parts, pin=True)
    assert all(tensor.is_pinned() for tensor in joined.values())
    runner = executor(version_dir, device="cuda", instances=2)
    runner.load()
    assert runner.intra_op_threads == 1  # the host side only joins and copies
    assert runner.wants_pinned_batches
    got = runner.infer(joined)["scores"]
    want = torch.cat([expected(rows, seed=rows) for rows in (3, 1, 4)])
    torch.testing.assert_close(got, want, rtol=1e-3, atol=1e-4)
