"""CPU torch.export programs served as a TorchScript trace of their graph: only when the
trace answered exactly as the exported program at every warm-up shape and golden example,
with the same answers and the same errors afterwards; otherwise (a batch size baked into
the trace, a custom operator, `trace = "off"`) the exported module keeps running."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
import torch

from faults import pack_faulty
from scorer_model import Scorer, examples
from torchrig.errors import RepositoryError
from torchrig.packaging import pack, read_manifest
from torchrig.repository import ModelConfig, parse_config
from torchrig.runtime.executor import Executor


class SigmoidScorer(Scorer):
    def forward(self, dense: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(super().forward(dense, ids))


class RowCounter(torch.nn.Module):
    """Builds a tensor from the batch size: a trace records that size as a constant."""

    def forward(self, dense: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return dense + torch.arange(dense.shape[0]).unsqueeze(1), dense.sum(1)


class Positions(torch.nn.Module):
    """Adds a position table cut to the sequence length: a trace would keep the length it
    saw, and at length 1 broadcast the whole table instead of failing."""

    def __init__(self) -> None:
        super().__init__()
        self.table = torch.nn.Parameter(torch.arange(16 * 4, dtype=torch.float32).view(16, 4))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return tokens + self.table[: tokens.shape[1]]


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("repo")
    pack(SigmoidScorer().eval(), examples(4), name="scorer", repository=root, output_names=["s"])
    pack(
        RowCounter().eval(),
        {"dense": torch.randn(4, 3)},
        name="rows",
        repository=root,
        output_names=["shifted", "total"],
    )
    pack(  # no batch dimension: torch.export's guards stay on (see load_program)
        SigmoidScorer().eval(),
        examples(1),
        name="unbatched",
        repository=root,
        output_names=["s"],
        dynamic_batch=False,
    )
    pack(
        Positions().eval(),
        {"tokens": torch.randn(2, 8, 4)},
        name="positions",
        repository=root,
        output_names=["encoded"],
        dynamic_dims={"tokens": {1: (1, 16)}},
    )
    pack_faulty(root, "custom", 1)  # a custom operator: never traced
    return root


def _executor(repo: Path, name: str, **config: Any) -> Executor:
    directory = repo / name / "1"
    executor = Executor(directory, read_manifest(directory), ModelConfig(device="cpu", **config))
    executor.load()
    return executor


def _exported(repo: Path, name: str) -> Any:
    directory = repo / name / "1"
    return torch.export.load(str(directory / read_manifest(directory).program)).module()


def test_a_traced_program_answers_exactly_as_the_exported_program(repo: Path) -> None:
    executor = _executor(repo, "scorer")
    assert executor.program.traced
    # frozen: the weights are constants of its graph, no longer parameters it loads
    assert not list(executor.program.module.traced.parameters())
    exported = _exported(repo, "scorer")
    with torch.inference_mode():
        # warm-up sizes, golden sizes and others, each with its own values
        for rows in (1, 2, 3, 6, 7, 13, 64, 100):
            inputs = examples(rows)
            got = executor.infer(inputs)["s"]
            want = exported(inputs["dense"], inputs["ids"])
            assert got.shape == (rows, 2)
            assert torch.equal(got, want), rows


def test_a_failing_call_raises_the_exported_programs_error(repo: Path) -> None:
    executor = _executor(repo, "scorer")
    assert executor.program.traced
    bad = examples(3)
    bad["ids"][1, 2] = 50  # one past the embedding table
    with pytest.raises(IndexError) as from_export, torch.inference_mode():
        _exported(repo, "scorer")(bad["dense"], bad["ids"])
    with pytest.raises(IndexError) as from_server:
        executor.infer(bad)  # not the TorchScript interpreter's RuntimeError and traceback
    assert type(from_server.value) is type(from_export.value)
    assert str(from_server.value) == str(from_export.value) == "index out of range in self"
    good = examples(3)
    assert torch.equal(executor.infer(good)["s"], executor.infer(good)["s"])


def test_a_trace_with_a_baked_in_batch_size_is_refused(
    repo: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="torchrig.runtime.executor"):
        executor = _executor(repo, "rows")
    assert not executor.program.traced
    assert "the trace differs from the exported program at 1 rows" in caplog.text
    for rows in (1, 5):
        dense = torch.randn(rows, 3)
        out = executor.infer({"dense": dense})
        assert torch.equal(out["shifted"], dense + torch.arange(rows).unsqueeze(1))
        assert torch.equal(out["total"], dense.sum(1))


def test_what_is_never_traced(repo: Path, caplog: pytest.LogCaptureFixture) -> None:
    assert not _executor(repo, "scorer", trace="off").program.traced
    assert not _executor(repo, "scorer", warmup=False).program.traced  # nothing checked it
    with caplog.at_level(logging.INFO, logger="torchrig.runtime.executor"):
        custom = _executor(repo, "custom")
        # a trace would drop the guards that refuse inputs the program was not exported for
        unbatched = _executor(repo, "unbatched")
    assert not custom.program.traced
    assert "operators other than PyTorch's own" in caplog.text
    assert unbatched.program.checks_inputs
    assert not unbatched.program.traced
    assert "checks its own inputs" in caplog.text
    with pytest.raises(AssertionError, match="Guard failed"):
        unbatched.infer(examples(2))


def test_a_length_past_the_batch_is_never_traced(
    repo: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="torchrig.runtime.executor"):
        positions = _executor(repo, "positions")
    # a symbolic size past the batch keeps torch.export's guards on, and a program that
    # keeps its guards is never traced
    assert positions.program.checks_inputs
    assert not positions.program.traced
    assert "checks its own inputs" in caplog.text
    tokens = torch.randn(3, 1, 4)
    answer = positions.infer({"tokens": tokens})["encoded"]
    assert answer.shape == (3, 1, 4)
    assert torch.equal(answer, Positions().eval()(tokens))


def test_the_trace_setting_is_checked() -> None:
    assert parse_config('trace = "off"').trace == "off"
    assert ModelConfig().trace == "auto"
    with pytest.raises(RepositoryError, match=r"Expected `str`, got `bool` - at `\$\.trace`"):
        parse_config("trace = true")
    with pytest.raises(RepositoryError, match=r"Invalid enum value 'on' - at `\$\.trace`"):
        parse_config('trace = "on"')
