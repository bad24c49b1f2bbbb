"""Session-wide test settings."""

from __future__ import annotations

import os

import pytest

# `torchrig serve` processes started by tests listen for gRPC on an OS-assigned port, not
# on the default 8001, which concurrent test runs (and a developer's server) would share;
# a test that means a fixed gRPC port passes --grpc-port itself
os.environ.setdefault("TORCHRIG_SERVE_GRPC_PORT", "0")


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """`-n auto` (the suite's default): one worker more than there are cores, at most 8.
    Much of the suite waits on servers and subprocesses it started, so a 2-core runner
    still gains from a third worker; TORCHRIG_TEST_WORKERS overrides it."""
    wanted = os.environ.get("TORCHRIG_TEST_WORKERS")
    if wanted:
        return max(int(wanted), 1)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return min((cores or 1) + 1, 8)
