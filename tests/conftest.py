"""Session-wide test settings."""

from __future__ import annotations

import os

import pytest

# `torchrig serve` processes started by tests listen for gRPC on an OS-assigned port, not
# on the default 8001, which concurrent test runs (and a developer's server) would share;
# a test that means a fixed gRPC port passes --grpc-port itself
os.environ.setdefault("TORCHRIG_SERVE_GRPC_PORT", "0")


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """`-n auto` (the suite's default): two workers more than there are cores, at most 8.
    Much of the suite waits on servers, subprocesses and package indexes it started (three
    workers kept 2 cores 60 % busy), so a 2-core runner gains from a fourth worker (the
    non-image suite: 575 -> 396 s); TORCHRIG_TEST_WORKERS overrides it."""
    wanted = os.environ.get("TORCHRIG_TEST_WORKERS")
    if wanted:
        return max(int(wanted), 1)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return min((cores or 1) + 2, 8)


def pytest_itemcollected(item: pytest.Item) -> None:
    """The tests of a module that share a module-scoped fixture (a packed model, a running
    server) run on one worker, so that fixture is built once rather than once per worker.
    (Marked as each test is collected: xdist reads the groups before other hooks run.)"""
    if item.get_closest_marker("xdist_group") is None and _uses_module_fixture(item):
        item.add_marker(pytest.mark.xdist_group(f"module:{item.nodeid.split('::')[0]}"))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The longest tests first (the built-image group, then `long`), so that no worker
    starts a several-minute test when the others are about to finish."""

    def rank(item: pytest.Item) -> int:
        if item.get_closest_marker("images"):
            return 0
        return 1 if item.get_closest_marker("long") else 2

    items.sort(key=rank)


def _uses_module_fixture(item: pytest.Item) -> bool:
    info = getattr(item, "_fixtureinfo", None)
    if info is None:
        return False
    return any(
        getattr(definition, "scope", None) == "module"
        for definitions in info.name2fixturedefs.values()
        for definition in definitions
    )
