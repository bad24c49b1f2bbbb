"""Triton's model configuration and statistics extensions, through tritonclient's HTTP and
gRPC clients: the same configuration on both, statistics that count the requests sent."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from tritonclient import grpc as tgrpc
from tritonclient import http as thttp
from tritonclient.utils import InferenceServerException

from serving import running


def ranker_inputs(module: Any, rows: int) -> list[Any]:
    rng = np.random.default_rng(rows)
    dense = module.InferInput("dense", [rows, 13], "FP32")
    dense.set_data_from_numpy(rng.standard_normal((rows, 13)).astype(np.float32))
    sparse = module.InferInput("sparse", [rows, 26], "INT64")
    sparse.set_data_from_numpy(rng.integers(0, 1000, (rows, 26)).astype(np.int64))
    return [dense, sparse]


def test_model_config_on_both_transports(server: tuple[str, Any]) -> None:
    url, state = server
    http = thttp.InferenceServerClient(url.removeprefix("http://"))
    grpc = tgrpc.InferenceServerClient(state.grpc_address)
    rest = http.get_model_config("ranker")
    config = grpc.get_model_config("ranker", as_json=True)["config"]
    assert rest["name"] == config["name"] == "ranker"
    assert rest["max_batch_size"] == int(config["max_batch_size"]) > 0
    assert [(t["name"], t["data_type"], t["dims"]) for t in rest["input"]] == [
        ("dense", "TYPE_FP32", [13]),
        ("sparse", "TYPE_INT64", [26]),
    ]
    assert [(t["name"], t["data_type"], [int(d) for d in t["dims"]]) for t in config["input"]] == [
        (t["name"], t["data_type"], t["dims"]) for t in rest["input"]
    ]
    assert rest["output"][0]["name"] == config["output"][0]["name"] == "probability"
    assert "dynamic_batching" in rest
    assert "dynamic_batching" in config
    assert rest["instance_group"][0]["kind"] == config["instance_group"][0]["kind"] == "KIND_CPU"
    with pytest.raises(InferenceServerException):
        http.get_model_config("nope")
    with pytest.raises(InferenceServerException) as caught:
        grpc.get_model_config("nope")
    assert caught.value.status() == "StatusCode.NOT_FOUND"
    extensions = http.get_server_metadata()["extensions"]
    assert {"model_configuration", "statistics"} <= set(extensions)


def test_statistics_count_the_requests(demo_repo: Path) -> None:
    with running(demo_repo) as (url, state):
        http = thttp.InferenceServerClient(url.removeprefix("http://"))
        grpc = tgrpc.InferenceServerClient(state.grpc_address)
        before = http.get_inference_statistics("ranker")["model_stats"][0]
        assert before["inference_stats"]["success"]["count"] == 0
        for rows in (1, 2, 3):
            http.infer("ranker", ranker_inputs(thttp, rows))
        for rows in (4, 5):
            grpc.infer("ranker", ranker_inputs(tgrpc, rows))
        rest = http.get_inference_statistics("ranker")["model_stats"]
        over_grpc = grpc.get_inference_statistics("ranker", as_json=True)["model_stats"]
        everything = http.get_inference_statistics()["model_stats"]
    (stats,) = rest
    assert stats["name"] == "ranker"
    assert stats["version"] == "1"
    inference = stats["inference_stats"]
    assert inference["success"]["count"] == 5
    assert inference["success"]["ns"] > 0
    assert inference["queue"]["count"] == 5
    assert inference["compute_infer"]["count"] == 5
    # decoding and encoding, timed by the transports, for each of the five requests
    for stage in ("compute_input", "compute_output"):
        assert inference[stage]["count"] == 5
        assert inference[stage]["ns"] > 0
        assert inference[stage]["ns"] < inference["success"]["ns"]
    grpc_inference = over_grpc[0]["inference_stats"]
    assert int(grpc_inference["compute_input"]["count"]) == 5
    assert int(grpc_inference["compute_output"]["ns"]) == inference["compute_output"]["ns"]
    assert stats["inference_count"] == 1 + 2 + 3 + 4 + 5
    batches = stats["batch_stats"]
    assert sum(b["compute_infer"]["count"] for b in batches) == stats["execution_count"]
    assert sum(b["batch_size"] * b["compute_infer"]["count"] for b in batches) == 15
    assert int(over_grpc[0]["inference_stats"]["success"]["count"]) == 5
    assert int(over_grpc[0]["inference_count"]) == 15
    assert {(s["name"], s["version"]) for s in everything} >= {("ranker", "1"), ("classifier", "1")}
