"""System tools some tests need (Debian packages, not pip): skipped with the reason on a
machine that lacks them, a failure in CI (`CI=true`), where `.ci/run` installs them."""

from __future__ import annotations

import os
import shutil

import pytest


def in_ci() -> bool:
    """Whether this run is CI's, where a missing tool is a failure, never a skip."""
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def missing(reason: str) -> None:
    """Skip with `reason` on a developer's machine; fail with it in CI."""
    if in_ci():
        pytest.fail(f"{reason} (CI=true: .ci/run must install it)")
    pytest.skip(reason)


def require_tool(name: str, install: str) -> str:
    """The path of `name`, or a skip (fail in CI) that says how to install it."""
    path = shutil.which(name)
    if path is None:
        missing(f"{name} is not installed: {install}")
    return path  # type: ignore[return-value]  # missing() never returns
