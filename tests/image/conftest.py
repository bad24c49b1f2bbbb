"""Shared fixtures for the image tests: a hand-made lock for any spec (rendering is offline)."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from torchrig import __version__
from torchrig.image.spec import ImageSpec


def _fake_constraints(spec: ImageSpec) -> str:
    lines = ["# hand-made for tests", spec.torch_pin, "numpy==2.3.4"]
    if spec.flavour == "dev":
        lines.append("jupyterlab==4.4.10")
    if spec.flavour == "serve":
        lines.append(f"torchrig=={__version__}")
    return "\n".join(lines) + "\n"


@pytest.fixture
def fake_constraints() -> Callable[[ImageSpec], str]:
    """A constraints file of the right shape for a spec (the versions need not exist)."""
    return _fake_constraints


def tool(name: str) -> str:
    """A lint binary from the dev extra; its absence is a failure, not a skip."""
    found = shutil.which(name) or shutil.which(
        name, path=str(Path(__import__("sys").executable).parent)
    )
    if found is None:
        pytest.fail(f"{name} is not installed: pip install -e '.[dev]' installs it")
    return found


@pytest.fixture
def hadolint() -> str:
    return tool("hadolint")
