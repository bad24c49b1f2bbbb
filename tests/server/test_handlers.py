"""Python handler versions: packed with `torchrig pack --handler` (source and sha256 in the
manifest), refused by a server started without --allow-python-handlers, served with it
over REST and tritonclient.grpc, batched and isolated like programs, and refused when the
file no longer matches its hash."""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import torch
from tritonclient import grpc as tgrpc
from tritonclient.utils import InferenceServerException

from cli_runs import torchrig_pack
from serving import running
from torchrig.errors import ArtifactError, PackError
from torchrig.packaging import read_manifest
from torchrig.packaging.handler import pack_handler, source_sha256, verified_source
from torchrig.repository import BatchingConfig, ModelConfig
from torchrig.settings import ServeSettings

HANDLER = """\
import torch

class Handler:
    def load(self, directory, device):
        self.scale = torch.tensor(3.0, device=device)
        self.directory = directory

    def infer(self, inputs):
        x = inputs["x"]
        if bool(torch.isnan(x).any()):
            raise ValueError("a NaN row")
        return {"y": x * self.scale, "total": x.sum(dim=1, keepdim=True)}
"""
ALLOWED = ServeSettings(port=0, log_format="text", allow_python_handlers=True)


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`scaler`, packed by the CLI; its config gathers concurrent requests into batches."""
    work = tmp_path_factory.mktemp("handlers")
    (work / "handler.py").write_text(HANDLER)
    root = work / "models"
    packed = torchrig_pack("--handler", "handler.py", "--example", "x:FP32:4x3", "--name", "scaler",
                      "--repository", str(root), "--json", cwd=work)  # fmt: skip
    assert packed.returncode == 0, packed.stderr
    assert json.loads(packed.stdout)["format"] == "handler"
    (root / "scaler" / "config.toml").write_text(
        "[batching]\nmax_batch_size = 16\nmax_queue_delay_ms = 300\n"
    )
    return root


@pytest.fixture(scope="module")
def allowed(repo: Path) -> Iterator[tuple[str, Any]]:
    with running(repo, ALLOWED) as served:
        yield served


def infer_body(x: np.ndarray) -> dict[str, Any]:
    data = [None if np.isnan(v) else float(v) for v in x.ravel()]  # JSON null: NaN
    return {"inputs": [{"name": "x", "shape": list(x.shape), "datatype": "FP32", "data": data}]}


def test_the_manifest_records_source_and_hash(repo: Path) -> None:
    version = repo / "scaler" / "1"
    manifest = read_manifest(version)
    assert manifest.format == "handler"
    assert manifest.handler is not None
    assert manifest.handler.class_name == "Handler"
    assert manifest.handler.source == HANDLER
    assert manifest.handler.sha256 == source_sha256((version / "handler.py").read_bytes())
    assert [s.name for s in manifest.inputs] == ["x"]
    assert [(s.name, s.shape) for s in manifest.outputs] == [("y", [-1, 3]), ("total", [-1, 1])]


def test_refused_without_the_flag(repo: Path) -> None:
    with running(repo, ServeSettings(port=0, log_format="text")) as (url, state):
        ready = httpx.get(f"{url}/v2/models/scaler/ready", timeout=30)
        assert ready.status_code == 503
        reason = ready.json()["error"]
        assert "loading code is executing code" in reason
        assert "--allow-python-handlers" in reason
        x = np.ones((1, 3), dtype=np.float32)
        answer = httpx.post(f"{url}/v2/models/scaler/infer", json=infer_body(x), timeout=30)
        assert answer.status_code == 503
        assert "--allow-python-handlers" in answer.json()["error"]
        client = tgrpc.InferenceServerClient(state.grpc_address)
        assert not client.is_model_ready("scaler")
        tensor = tgrpc.InferInput("x", [1, 3], "FP32")
        tensor.set_data_from_numpy(x)
        with pytest.raises(InferenceServerException) as caught:
            client.infer("scaler", [tensor])
        assert caught.value.status() == "StatusCode.UNAVAILABLE"
        assert "loading code is executing code" in caught.value.message()


def test_served_with_the_flag_over_rest_and_grpc(allowed: tuple[str, Any]) -> None:
    url, state = allowed
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    answer = httpx.post(f"{url}/v2/models/scaler/infer", json=infer_body(x), timeout=30)
    assert answer.status_code == 200, answer.text
    outputs = {o["name"]: np.array(o["data"]).reshape(o["shape"]) for o in answer.json()["outputs"]}
    np.testing.assert_allclose(outputs["y"], x * 3)
    np.testing.assert_allclose(outputs["total"], x.sum(axis=1, keepdims=True))
    meta = httpx.get(f"{url}/v2/models/scaler", timeout=30).json()
    assert meta["platform"] == "python"

    client = tgrpc.InferenceServerClient(state.grpc_address)
    assert client.is_model_ready("scaler")
    tensor = tgrpc.InferInput("x", [2, 3], "FP32")
    tensor.set_data_from_numpy(x)
    result = client.infer("scaler", [tensor])
    np.testing.assert_allclose(result.as_numpy("y"), x * 3)


def test_a_raising_row_fails_only_its_request(allowed: tuple[str, Any]) -> None:
    """Three requests queued together (the config waits 300 ms for company): the one with
    a NaN gets a 400 naming the handler's error, the others their answers."""
    url, state = allowed
    requests = [np.full((2, 3), 1.0, np.float32), np.full((1, 3), np.nan, np.float32),
                np.full((3, 3), 2.0, np.float32)]  # fmt: skip
    answers: dict[int, httpx.Response] = {}
    splits = state.registry.resolve("scaler").batcher.stats().isolation_splits

    def send(index: int) -> None:
        body = infer_body(requests[index])
        answers[index] = httpx.post(f"{url}/v2/models/scaler/infer", json=body, timeout=30)

    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(requests))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert answers[1].status_code == 400, answers[1].text
    assert "a NaN row" in answers[1].json()["error"]
    for index in (0, 2):
        assert answers[index].status_code == 200, answers[index].text
        (y, _) = sorted(answers[index].json()["outputs"], key=lambda o: o["name"] != "y")
        np.testing.assert_allclose(np.array(y["data"]).reshape(y["shape"]), requests[index] * 3)
    # they ran as one batch, which failed and was split to find the culprit
    assert state.registry.resolve("scaler").batcher.stats().isolation_splits > splits


def test_a_tampered_handler_is_refused_by_its_hash(repo: Path, tmp_path: Path) -> None:
    copy = tmp_path / "models"
    version = copy / "scaler" / "1"
    version.mkdir(parents=True)
    for item in (repo / "scaler" / "1").iterdir():
        (version / item.name).write_bytes(item.read_bytes())
    with (version / "handler.py").open("a") as handle:
        handle.write("\nimport os  # an edit after packing\n")
    with running(copy, ALLOWED) as (url, _):
        ready = httpx.get(f"{url}/v2/models/scaler/ready", timeout=30)
        assert ready.status_code == 503
        reason = ready.json()["error"]
        assert "handler.py does not match its sha256" in reason
        assert "not run" in reason


def test_the_loader_runs_only_the_bytes_the_manifest_names(repo: Path, tmp_path: Path) -> None:
    """Past discovery's check, the loader hashes the bytes it executes once more."""
    version = tmp_path / "1"
    version.mkdir()
    manifest = read_manifest(repo / "scaler" / "1")
    (version / "handler.py").write_text(HANDLER.replace("3.0", "4.0"))
    with pytest.raises(ArtifactError, match="changed since it was packed"):
        verified_source(version, manifest)
    (version / "handler.py").write_text(HANDLER)
    assert verified_source(version, manifest) == HANDLER.encode()


def test_the_handler_module_has_a_name_of_its_own(allowed: tuple[str, Any]) -> None:
    _, state = allowed
    served = state.registry.resolve("scaler")
    assert not served.batcher.inline  # its code may block: never on the event loop
    executor = served.executor
    module = executor.program.__module__
    assert module.startswith("torchrig_handler_scaler_1_")
    assert module in sys.modules
    assert "handler" not in sys.modules  # never imported under its file's name


def test_pack_errors_name_the_fix(tmp_path: Path) -> None:
    (tmp_path / "bad.py").write_text("class Other:\n    pass\n")
    with pytest.raises(PackError, match="no class Handler with an infer"):
        pack_handler(tmp_path / "bad.py", {"x": torch.zeros(2, 3)}, name="m",
                     repository=tmp_path / "models")  # fmt: skip
    (tmp_path / "boom.py").write_text("raise RuntimeError('no GPU here')\n")
    with pytest.raises(PackError, match="raised RuntimeError: no GPU here"):
        pack_handler(tmp_path / "boom.py", {"x": torch.zeros(2, 3)}, name="m",
                     repository=tmp_path / "models")  # fmt: skip
    (tmp_path / "handler.py").write_text(HANDLER)
    missing = torchrig_pack("--handler", "handler.py", "--name", "m", "--repository", "models",
                       cwd=tmp_path)  # fmt: skip
    assert missing.returncode == 2
    assert "--handler needs --example" in missing.stderr
    assert "Traceback" not in missing.stderr


def test_instances_get_a_handler_each_and_unloading_forgets_the_module(
    tmp_path: Path,
) -> None:
    (tmp_path / "handler.py").write_text(HANDLER)
    config = ModelConfig(instances=2, batching=BatchingConfig(max_batch_size=4), warmup=False)
    pack_handler(tmp_path / "handler.py", {"x": torch.zeros(2, 3)}, name="scaler",
                 repository=tmp_path / "models", config=config)  # fmt: skip
    with running(tmp_path / "models", ALLOWED) as (_, state):
        executor = state.registry.resolve("scaler").executor
        handlers = executor._made
        assert len(handlers) == 2
        assert handlers[0] is not handlers[1]
        assert handlers[0].directory == tmp_path / "models" / "scaler" / "1"
        module = executor.program.__module__
        assert module in sys.modules
    assert module not in sys.modules  # the server closed: the version was released


def test_files_packed_beside_the_handler_are_in_its_directory(tmp_path: Path) -> None:
    """`--file` packs what the handler loads (weights, a vocabulary) beside it, checksummed;
    its load() reads it at pack time and when served."""
    (tmp_path / "handler.py").write_text(
        "from pathlib import Path\n\n"
        "class Handler:\n"
        "    def load(self, directory, device):\n"
        "        self.scale = float((Path(directory) / 'scale.txt').read_text())\n\n"
        "    def infer(self, inputs):\n"
        "        return {'y': inputs['x'] * self.scale}\n"
    )
    (tmp_path / "scale.txt").write_text("5\n")
    packed = torchrig_pack("--handler", "handler.py", "--file", "scale.txt", "--example",
                      "x:FP32:2x3", "--name", "scaled", "--repository", "models",
                      cwd=tmp_path)  # fmt: skip
    assert packed.returncode == 0, packed.stderr
    manifest = read_manifest(tmp_path / "models" / "scaled" / "1")
    assert "scale.txt" in [item.path for item in manifest.files]
    with running(tmp_path / "models", ALLOWED) as (url, _):
        x = np.ones((1, 3), dtype=np.float32)
        answer = httpx.post(f"{url}/v2/models/scaled/infer", json=infer_body(x), timeout=30)
        assert answer.status_code == 200, answer.text
        assert answer.json()["outputs"][0]["data"] == [5.0, 5.0, 5.0]
