"""Existing TorchScript files are packed; pickles are refused without being unpickled."""

from __future__ import annotations

import pickle
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

from torchrig.envlock import EnvLock
from torchrig.errors import PackError
from torchrig.packaging import load_program, pack_torchscript


class Scorer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(5, 2)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.linear(features))


def _script(path: Path) -> nn.Module:
    module = Scorer().eval()
    with warnings.catch_warnings():  # torch.jit is deprecated in torch 2.13: fine for a fixture
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.script(module).save(str(path))
    return module


def test_an_existing_torchscript_file_packs_and_round_trips(
    tmp_path: Path, env_lock: EnvLock
) -> None:
    source = tmp_path / "scorer.ts"
    module = _script(source)
    packed = pack_torchscript(
        source,
        (torch.randn(4, 5),),
        name="scorer",
        repository=tmp_path / "repo",
        environment=env_lock,
    )
    manifest = packed.manifest
    assert manifest.format == "torchscript"
    assert (packed.path / "model.ts").read_bytes() == source.read_bytes()
    assert [(s.name, s.shape) for s in manifest.inputs] == [("features", [-1, 5])]
    program = load_program(packed.path, manifest)
    for batch in (1, 3, 17, 64):
        x = torch.randn(batch, 5)
        with torch.no_grad():
            torch.testing.assert_close(program({"features": x})["output"], module(x))


@pytest.mark.parametrize("kind", ["torch.save", "raw pickle"])
def test_pickles_are_refused_with_the_reason_and_the_fix(
    tmp_path: Path, env_lock: EnvLock, kind: str
) -> None:
    path = tmp_path / "model.pt"
    if kind == "torch.save":
        torch.save(Scorer(), path)
    else:
        path.write_bytes(pickle.dumps({"weights": [1.0, 2.0]}))
    with pytest.raises(PackError) as caught:
        pack_torchscript(
            path, (torch.randn(4, 5),), name="m", repository=tmp_path, environment=env_lock
        )
    message = caught.value.message
    assert "pickle" in message
    assert "arbitrary code" in message
    assert "torch.export" in message
    assert "torch.jit.script" in message
    assert not (tmp_path / "m").exists()


def test_other_files_are_not_torchscript(tmp_path: Path, env_lock: EnvLock) -> None:
    path = tmp_path / "model.onnx"
    path.write_bytes(b"ONNX not really")
    with pytest.raises(PackError, match="is not a TorchScript archive"):
        pack_torchscript(path, (torch.randn(4, 5),), name="m", repository=tmp_path)
    with pytest.raises(PackError, match="does not exist"):
        pack_torchscript(tmp_path / "nope.ts", (torch.randn(4, 5),), name="m", repository=tmp_path)
