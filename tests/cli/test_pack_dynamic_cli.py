"""`torchrig pack --dynamic` in real processes: -1 in the signature, and every bad
declaration a one-line error with exit 2, never a traceback."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from cli_runs import torchrig_pack


def pack(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return torchrig_pack("torchrig.demo:encoder", "--name", "encoder", "--repository", "repo",
                         "--golden-examples", "1", *args, cwd=cwd)  # fmt: skip


def test_the_length_becomes_minus_one_with_its_range(tmp_path: Path) -> None:
    proc = pack("--dynamic", "src:1:1-512", "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["inputs"][0]["shape"] == [-1, -1, 32]
    assert result["outputs"][0]["shape"] == [-1, -1, 32]
    manifest = json.loads((tmp_path / "repo" / "encoder" / "1" / "manifest.json").read_text())
    assert manifest["dynamic_dims"] == [{"input": "src", "dim": 1, "min": 1, "max": 512}]


@pytest.mark.parametrize(
    ("declared", "reason"),
    [
        ("source:1:1-512", "the model has no input 'source' (its inputs: src)"),
        ("src:0", "dim 0 is the batch, which is dynamic already"),
        ("src:3:1-512", "input 'src' has 3 dimensions (example shape [3, 10, 32])"),
        ("src:1:0-512", "MIN must be at least 1 and not exceed MAX"),
        ("src:1:600-512", "MIN must be at least 1 and not exceed MAX"),
        ("src:1:1to512", "'1to512' is not MIN-MAX"),
        ("src:1:11-512", "the example has size 10 there, outside 11-512"),
        ("src", "must be NAME:DIM[:MIN-MAX]"),
    ],
)
def test_bad_declarations_exit_2_with_the_reason(
    tmp_path: Path, declared: str, reason: str
) -> None:
    proc = pack("--dynamic", declared, cwd=tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert reason in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "repo" / "encoder" / "1").exists()


def test_a_handler_cannot_declare_dynamic_dims_yet(tmp_path: Path) -> None:
    (tmp_path / "handler.py").write_text("class Handler:\n    pass\n")
    proc = torchrig_pack("--handler", "handler.py", "--name", "h", "--repository", "repo",
                         "--example", "x:FP32:2x3", "--dynamic", "x:1", cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "a --handler cannot declare dynamic dimensions yet" in proc.stderr
    assert "Traceback" not in proc.stderr
