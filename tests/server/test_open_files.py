"""`torchrig serve` raises its soft limit on open files to the hard one before it listens,
and says when even the hard limit is below what --max-connections allows. Real limits,
set on a real process (a child, so this test process keeps its own)."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

resource = pytest.importorskip("resource")

PROBE = """
import io, json, resource, sys
from torchrig.server.logs import configure_logging
from torchrig.server.runner import raise_open_files
from torchrig.settings import ServeSettings

soft, hard = (int(v) for v in sys.argv[1:3])
resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
out = io.StringIO()
configure_logging("json", stream=out)
raise_open_files(ServeSettings(max_connections=int(sys.argv[3]), grpc_port=int(sys.argv[4])))
print(json.dumps({
    "limit": list(resource.getrlimit(resource.RLIMIT_NOFILE)),
    "log": [json.loads(line) for line in out.getvalue().splitlines()],
}))
"""


def probe(soft: int, hard: int, max_connections: int, grpc_port: int = 8001) -> dict[str, Any]:
    run = subprocess.run(
        [sys.executable, "-c", PROBE, str(soft), str(hard), str(max_connections), str(grpc_port)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    found: dict[str, Any] = json.loads(run.stdout)
    return found


@pytest.fixture
def hard() -> int:
    limit: int = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if limit != resource.RLIM_INFINITY and limit < 1024:
        pytest.skip(f"this machine's hard limit on open files is {limit}, under the test's 1024")
    return 1024


def test_the_soft_limit_is_raised_to_the_hard_one(hard: int) -> None:
    found = probe(256, hard, max_connections=300, grpc_port=-1)
    assert found["limit"] == [hard, hard]
    assert [entry["message"] for entry in found["log"]] == [
        f"open-files limit raised from 256 to {hard}"
    ]


def test_a_hard_limit_under_the_connections_is_named_with_the_fix(hard: int) -> None:
    # REST and gRPC: 2 x 500 connections and 256 files beside them
    found = probe(256, hard, max_connections=500)
    warning = found["log"][-1]
    assert warning["level"] == "WARNING"
    assert "fewer than the 1256 that --max-connections 500 allows" in warning["message"]
    assert "--ulimit nofile=1256:1256" in warning["message"]
    assert found["limit"] == [hard, hard]
