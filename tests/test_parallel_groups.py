"""The suite's parallel layout holds: a module whose tests share a module-scoped fixture is
one xdist group (tests/conftest.py), so that fixture is built on one worker only."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="module")
def shared() -> str:
    return "built once"


def test_a_module_fixture_puts_its_module_in_one_group(
    request: pytest.FixtureRequest, shared: str
) -> None:
    assert shared == "built once"
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        pytest.skip("a serial run (-n 0) has no worker groups")
    # xdist names the group in the id; a pytest that drops that suffix (pytest 9 with
    # xdist 3.8) would spread every group over the workers without a word
    assert request.node.nodeid.endswith("@module:tests/test_parallel_groups.py")
