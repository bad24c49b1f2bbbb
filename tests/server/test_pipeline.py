"""A pipeline of two packed models served as one model (Triton's ensemble): its answers
equal running the two in-process programs in sequence, over REST and gRPC; its metadata,
Triton configuration and statistics are the pipeline's; it is ready exactly when its
members are, and a missing member is named."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from tritonclient import grpc as tgrpc
from tritonclient import http as thttp

from doubles import until
from pipeline_models import PIPELINE_TOML, build_repo, in_sequence
from serving import running
from torchrig.settings import ServeSettings


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_repo(tmp_path_factory.mktemp("pipeline") / "models")


@pytest.fixture(scope="module")
def server(repo: Path) -> Iterator[tuple[str, Any]]:
    with running(repo, ServeSettings(port=0, log_format="text")) as served:
        yield served


def features(rows: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((rows, 6)).astype(np.float32)


def test_rest_answer_equals_the_two_models_in_sequence(server: tuple[str, Any], repo: Path) -> None:
    url, _ = server
    x = features(5, 1)
    body = {"inputs": [{"name": "features", "shape": [5, 6], "datatype": "FP32",
                        "data": x.ravel().tolist()}]}  # fmt: skip
    answer = httpx.post(f"{url}/v2/models/chain/infer", json=body, timeout=30)
    assert answer.status_code == 200, answer.text
    (output,) = answer.json()["outputs"]
    assert output["name"] == "scores"
    assert output["shape"] == [5, 3]
    got = np.array(output["data"], dtype=np.float32).reshape(5, 3)
    np.testing.assert_allclose(got, in_sequence(repo, x), rtol=1e-5, atol=1e-6)


def test_grpc_and_concurrent_requests_equal_in_sequence(
    server: tuple[str, Any], repo: Path
) -> None:
    _, state = server
    client = tgrpc.InferenceServerClient(state.grpc_address)
    arrays = [features(rows, seed) for seed, rows in enumerate([1, 3, 7, 2], start=10)]
    results: list[Any] = []
    for x in arrays:  # async_infer: the requests are in flight together and batch per step
        tensor = tgrpc.InferInput("features", list(x.shape), "FP32")
        tensor.set_data_from_numpy(x)
        client.async_infer(
            "chain", [tensor], callback=lambda result, error: results.append((result, error))
        )
    until(lambda: len(results) == len(arrays), "the four pipeline answers")
    got = sorted((r.as_numpy("scores") for r, e in results if e is None), key=lambda a: a.shape[0])
    assert len(got) == len(arrays), [e for _, e in results]
    for answer, x in zip(got, sorted(arrays, key=lambda a: a.shape[0]), strict=True):
        np.testing.assert_allclose(answer, in_sequence(repo, x), rtol=1e-5, atol=1e-6)


def test_metadata_config_and_readiness_as_one_model(server: tuple[str, Any]) -> None:
    url, state = server
    client = thttp.InferenceServerClient(url.removeprefix("http://"))
    assert client.is_server_ready()
    assert client.is_model_ready("chain")
    meta = client.get_model_metadata("chain")
    assert meta["platform"] == "ensemble"
    assert meta["versions"] == ["1"]
    assert meta["inputs"] == [{"name": "features", "datatype": "FP32", "shape": [-1, 6]}]
    assert meta["outputs"] == [{"name": "scores", "datatype": "FP32", "shape": [-1, 3]}]
    config = client.get_model_config("chain")
    assert config["platform"] == "ensemble"
    assert config["max_batch_size"] == 16
    steps = config["ensemble_scheduling"]["step"]
    assert [s["model_name"] for s in steps] == ["encoder", "head"]
    assert steps[0]["input_map"] == {"x": "features"}
    assert steps[1]["output_map"] == {"logits": "scores"}
    assert "dynamic_batching" not in config
    grpc_client = tgrpc.InferenceServerClient(state.grpc_address)
    grpc_config = grpc_client.get_model_config("chain", as_json=True)["config"]
    assert grpc_config["platform"] == "ensemble"
    assert grpc_config["ensemble_scheduling"]["step"][1]["model_name"] == "head"
    grpc_meta = grpc_client.get_model_metadata("chain", as_json=True)
    assert grpc_meta["platform"] == "ensemble"


def test_statistics_count_the_pipeline_and_its_members(server: tuple[str, Any]) -> None:
    url, state = server
    client = thttp.InferenceServerClient(url.removeprefix("http://"))

    def counts(model: str) -> tuple[int, int]:
        (row,) = client.get_inference_statistics(model)["model_stats"]
        return row["inference_count"], row["inference_stats"]["success"]["count"]

    before = {m: counts(m) for m in ("chain", "encoder", "head")}
    tensor = thttp.InferInput("features", [4, 6], "FP32")
    tensor.set_data_from_numpy(features(4, 3))
    client.infer("chain", [tensor])
    chain_rows, chain_ok = counts("chain")
    assert (chain_rows, chain_ok) == (before["chain"][0] + 4, before["chain"][1] + 1)
    # the members ran its rows through their own batchers (not counted as client requests)
    for member in ("encoder", "head"):
        assert counts(member)[0] == before[member][0] + 4
    grpc_client = tgrpc.InferenceServerClient(state.grpc_address)
    stats = grpc_client.get_inference_statistics("chain", as_json=True)["model_stats"]
    assert stats[0]["name"] == "chain"
    assert int(stats[0]["inference_count"]) == chain_rows


def test_a_wrong_input_names_the_pipeline_signature(server: tuple[str, Any]) -> None:
    url, _ = server
    body = {"inputs": [{"name": "x", "shape": [1, 6], "datatype": "FP32", "data": [0.0] * 6}]}
    answer = httpx.post(f"{url}/v2/models/chain/infer", json=body, timeout=30)
    assert answer.status_code == 400
    assert "features" in answer.json()["error"]


def test_a_missing_member_leaves_the_pipeline_not_ready_and_named(tmp_path: Path) -> None:
    root = build_repo(tmp_path / "models")
    (root / "chain" / "config.toml").write_text(PIPELINE_TOML.replace('"head"', '"classifier"'))
    with running(root, ServeSettings(port=0, log_format="text")) as (url, _):
        ready = httpx.get(f"{url}/v2/models/chain/ready", timeout=30)
        assert ready.status_code == 503
        assert "member classifier" in ready.json()["error"]
        assert httpx.get(f"{url}/v2/health/ready", timeout=30).status_code == 503
        body = {"inputs": [{"name": "features", "shape": [1, 6], "datatype": "FP32",
                            "data": [0.0] * 6}]}  # fmt: skip
        answer = httpx.post(f"{url}/v2/models/chain/infer", json=body, timeout=30)
        assert answer.status_code == 503
        assert "classifier" in answer.json()["error"]
        # the other models serve
        assert httpx.get(f"{url}/v2/models/encoder/ready", timeout=30).status_code == 200
        index = httpx.post(f"{url}/v2/repository/index", timeout=30).json()
        (row,) = [r for r in index if r["name"] == "chain"]
        assert (row["version"], row["state"]) == ("1", "FAILED")
        assert "member classifier" in row["reason"]


def test_unloading_a_member_takes_the_pipeline_out_and_loading_it_back_in(
    tmp_path: Path,
) -> None:
    root = build_repo(tmp_path / "models")
    settings = ServeSettings(port=0, log_format="text", control_mode="explicit")
    headers = {"authorization": "Bearer t0ken"}
    with running(root, settings, management_token="t0ken") as (url, _):
        assert httpx.get(f"{url}/v2/models/chain/ready", timeout=30).status_code == 200
        gone = httpx.post(f"{url}/v2/repository/models/head/unload", headers=headers, timeout=30)
        assert gone.status_code == 200, gone.text
        ready = httpx.get(f"{url}/v2/models/chain/ready", timeout=30)
        assert ready.status_code == 503
        assert "member head" in ready.json()["error"]
        back = httpx.post(f"{url}/v2/repository/models/head/load", headers=headers, timeout=30)
        assert back.status_code == 200, back.text
        assert httpx.get(f"{url}/v2/models/chain/ready", timeout=30).status_code == 200
