"""KServe's Python SDK (InferenceGRPCClient, InferenceRESTClient v2) against torchrig: the
health calls answer True, infer with typed and raw contents equals the in-process model,
errors keep their status. The client runs in a process of its own (see kserve_client.py)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from serving import running
from torchrig.packaging import load_program, read_manifest

# found, never imported here: kserve's protos and tritonclient.grpc's cannot share a process
if importlib.util.find_spec("kserve") is None:
    pytest.skip("KServe's SDK is in the dev extra", allow_module_level=True)
CLIENT = Path(__file__).with_name("kserve_client.py")


def run_client(address: str, url: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, str(CLIENT), address, url],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_kserve_clients(server: tuple[str, Any], demo_repo: Path) -> None:
    import torch

    url, state = server
    got = run_client(state.grpc_address, url)
    assert got["grpc_live"] is True
    assert got["grpc_ready"] is True
    assert got["grpc_model_ready"] is True
    assert got["rest_live"] is True
    assert got["rest_ready"] is True
    assert got["rest_model_ready"] is True
    rng = np.random.default_rng(7)
    arrays = {
        "dense": rng.standard_normal((5, 13)).astype(np.float32),
        "sparse": rng.integers(0, 1000, (5, 26)).astype(np.int64),
    }
    directory = demo_repo / "ranker" / "1"
    program = load_program(directory, read_manifest(directory))
    with torch.inference_mode():
        (expected,) = program({k: torch.from_numpy(v) for k, v in arrays.items()}).values()
    for kind in ("typed", "raw"):
        answer = got[f"grpc_infer_{kind}"]
        assert answer["id"] == "k-1"
        np.testing.assert_allclose(
            np.array(answer["probability"], np.float32), expected.numpy(), rtol=1e-6
        )
    code, details = got["grpc_error"]
    assert code == "INVALID_ARGUMENT"
    assert "dense" in details


def test_kserve_rest_health_while_not_ready(tmp_path: Path) -> None:
    """A live server with a model that cannot load: live True, ready an HTTP error (503)."""
    repo = tmp_path / "models"
    broken = repo / "broken" / "1"
    broken.mkdir(parents=True)
    (broken / "manifest.json").write_text("{not json", encoding="utf-8")
    with running(repo) as (url, state):
        assert not state.ready()
        got = run_client("--not-ready", url)
    assert got == {"live": True, "ready_error": 503}
