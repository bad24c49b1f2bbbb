"""`torchrig pack` end to end in real processes: success, and one-line errors (exit 2)."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from cli_runs import torchrig_pack
from torchrig.packaging import read_manifest

run = torchrig_pack


USER_MODELS = textwrap.dedent(
    """
    import torch

    class Branchy(torch.nn.Module):
        def forward(self, x):
            if x.sum() > 0:
                return x * 2
            return x

    def branchy():
        return Branchy(), (torch.randn(4, 3),)

    def broken():
        raise RuntimeError("weights not found")

    def bare():
        return torch.nn.Linear(3, 2)
    """
)


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    (tmp_path / "user_models.py").write_text(USER_MODELS)
    return tmp_path


def test_pack_a_factory_with_its_own_examples(workdir: Path) -> None:
    proc = run("torchrig.demo:ranker", "--name", "ranker", "--repository", "repo", "--json",
               "--input-range", "sparse:0-999", cwd=workdir)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert (result["name"], result["version"], result["format"]) == ("ranker", 1, "torch.export")
    assert [i["name"] for i in result["inputs"]] == ["dense", "sparse"]
    manifest = read_manifest(workdir / "repo" / "ranker" / "1")
    assert manifest.inputs[1].shape == [-1, 26]
    assert manifest.input_ranges == {"sparse": [0, 999]}  # the server checks it per request


def test_pack_with_generated_examples_from_the_command_line(workdir: Path) -> None:
    proc = run("user_models:bare", "--name", "bare", "--repository", "repo",
               "--example", "x:FP32:4x3", "--output-name", "y", cwd=workdir)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "packed bare version 1 (torch.export)" in proc.stdout
    manifest = read_manifest(workdir / "repo" / "bare" / "1")
    assert [(s.name, s.shape) for s in manifest.inputs] == [("x", [-1, 3])]
    assert [s.name for s in manifest.outputs] == ["y"]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["user_models"], 'Import string "user_models" must be in format "<module>:<attribute>".'),
        (["no_such_module:f"], 'Could not import module "no_such_module".'),
        (["user_models:nope"], 'Attribute "nope" not found in module "user_models".'),
        (["user_models:broken"], "raised RuntimeError: weights not found"),
        (["user_models:bare"], "returned no example inputs"),
        (["user_models:bare", "--example", "x:INT64:4x3"], "integer inputs need their valid range"),
        (["user_models:bare", "--example", "x:FP33:4x3"], "datatype 'FP33' is not one of"),
        (["user_models:branchy"], "data-dependent control flow at"),
        (["--torchscript", "model.pkl", "--example", "x:FP32:4x3"], "arbitrary code"),
        (["torchrig.demo:ranker", "--input-range", "dense:0-9"], "ranges are for integer inputs"),
        (["torchrig.demo:ranker", "--input-range", "sparse:0-9"], "outside [0, 9]"),
        (["torchrig.demo:ranker", "--input-range", "sparse:9"], "must be NAME:LOW-HIGH"),
    ],
)
def test_errors_are_one_line_and_exit_2(workdir: Path, args: list[str], expected: str) -> None:
    (workdir / "model.pkl").write_bytes(b"\x80\x04K\x01.")  # pickle.dumps(1)
    proc = run(*args, "--name", "m", "--repository", "repo", cwd=workdir)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("Error: ")
    assert expected in lines[0]
    assert not (workdir / "repo" / "m" / "1").exists()


def test_an_integer_examples_range_is_declared_a_float_ones_is_not() -> None:
    from torchrig.cli.pack import example_range

    assert example_range("sparse:INT64:8x26:0-999") == ("sparse", (0, 999))
    assert example_range("x:FP32:4x3:0-1") is None
    assert example_range("x:INT64:4x3") is None
