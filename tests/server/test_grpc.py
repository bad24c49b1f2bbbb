"""NVIDIA's gRPC client against torchrig's gRPC service: health, metadata, infer with raw and
typed contents, streaming, errors with their status codes, deadlines and cancellation,
and the repository API behind its token. Answers equal REST's and the in-process model's."""

from __future__ import annotations

import queue
import socket
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
from tritonclient import grpc as tgrpc
from tritonclient import http as thttp
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from doubles import until
from faults import gate, pack_faulty, seen
from ranker_data import in_process, ranker_arrays
from serving import running
from torchrig.errors import ConfigError
from torchrig.repository import BatchingConfig, ModelConfig
from torchrig.server.runner import build_state, make_server
from torchrig.settings import ServeSettings

TAG = 216


def grpc_inputs(arrays: dict[str, np.ndarray]) -> list[tgrpc.InferInput]:
    inputs = []
    for name, array in arrays.items():
        tensor = tgrpc.InferInput(name, list(array.shape), "FP32" if name == "dense" else "INT64")
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    return inputs


@pytest.fixture
def client(server: tuple[str, Any]) -> tgrpc.InferenceServerClient:
    _, state = server
    assert state.grpc_address
    return tgrpc.InferenceServerClient(state.grpc_address)


@pytest.fixture
def stub(server: tuple[str, Any]) -> Any:
    _, state = server
    return service_pb2_grpc.GRPCInferenceServiceStub(grpc.insecure_channel(state.grpc_address))


def code_of(call: Any) -> str | None:
    with pytest.raises(InferenceServerException) as caught:
        call()
    status: str | None = caught.value.status()
    return status


def test_health_and_metadata(client: tgrpc.InferenceServerClient) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("ranker")
    assert not client.is_model_ready("nope")
    assert not client.is_model_ready("ranker", "9")
    server = client.get_server_metadata(as_json=True)
    assert server["name"] == "torchrig"
    assert "binary_tensor_data" in server["extensions"]
    meta = client.get_model_metadata("classifier", as_json=True)
    assert meta["inputs"][0]["shape"] == ["-1", "3", "64", "64"]  # int64 as JSON strings
    assert meta["inputs"][0]["datatype"] == "FP32"
    assert code_of(lambda: client.get_model_metadata("nope")) == "StatusCode.NOT_FOUND"


def test_infer_equals_rest_and_in_process(
    client: tgrpc.InferenceServerClient, server: tuple[str, Any], demo_repo: Path
) -> None:
    arrays = ranker_arrays()
    result = client.infer(
        "ranker",
        grpc_inputs(arrays),
        outputs=[tgrpc.InferRequestedOutput("probability")],
        request_id="g-1",
    )
    got = result.as_numpy("probability")
    assert got is not None
    np.testing.assert_allclose(got, in_process(demo_repo, "ranker", arrays), rtol=1e-6)
    assert result.get_response().id == "g-1"
    assert result.get_response().model_version == "1"

    url, _ = server
    rest = thttp.InferenceServerClient(url.removeprefix("http://"))
    rest_inputs = []
    for name, array in arrays.items():
        tensor = thttp.InferInput(name, list(array.shape), "FP32" if name == "dense" else "INT64")
        tensor.set_data_from_numpy(array)
        rest_inputs.append(tensor)
    np.testing.assert_array_equal(got, rest.infer("ranker", rest_inputs).as_numpy("probability"))


def test_bf16_travels_raw(client: tgrpc.InferenceServerClient) -> None:
    """BF16 has no typed contents field: raw in and raw out (tritonclient's default)."""
    ml_dtypes = pytest.importorskip("ml_dtypes", reason="tritonclient's BF16 needs ml_dtypes")
    x = tgrpc.InferInput("x", [2, 8], "BF16")
    values = np.arange(16, dtype=np.float32).reshape(2, 8)
    x.set_data_from_numpy(values.astype(ml_dtypes.bfloat16))
    result = client.infer("halver", [x])
    np.testing.assert_array_equal(result.as_numpy("y").astype(np.float32), values * 0.5)


def test_typed_contents(stub: Any, demo_repo: Path) -> None:
    """KServe's clients and hand-written ones send typed contents, not raw bytes."""
    arrays = ranker_arrays(rows=2)
    request = service_pb2.ModelInferRequest(model_name="ranker")
    dense = request.inputs.add(name="dense", datatype="FP32", shape=[2, 13])
    dense.contents.fp32_contents.extend(arrays["dense"].reshape(-1).tolist())
    sparse = request.inputs.add(name="sparse", datatype="INT64", shape=[2, 26])
    sparse.contents.int64_contents.extend(arrays["sparse"].reshape(-1).tolist())
    response = stub.ModelInfer(request)
    (output,) = response.outputs
    got = np.frombuffer(response.raw_output_contents[0], dtype=np.float32).reshape(output.shape)
    np.testing.assert_allclose(got, in_process(demo_repo, "ranker", arrays), rtol=1e-6)

    request.inputs[0].contents.ClearField("fp32_contents")
    request.inputs[0].contents.int64_contents.extend([1] * 26)
    with pytest.raises(grpc.RpcError) as caught:
        stub.ModelInfer(request)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "fp32_contents" in caught.value.details()


def hostile_requests() -> dict[str, service_pb2.ModelInferRequest]:
    """The REST hostile-input cases, as gRPC messages."""
    ok = ranker_arrays(rows=1)
    raw = [ok["dense"].tobytes(), ok["sparse"].tobytes()]

    def request(**changes: Any) -> service_pb2.ModelInferRequest:
        inputs = changes.pop(
            "inputs",
            [("dense", "FP32", [1, 13]), ("sparse", "INT64", [1, 26])],
        )
        message = service_pb2.ModelInferRequest(model_name=changes.pop("model", "ranker"))
        for name, datatype, shape in inputs:
            message.inputs.add(name=name, datatype=datatype, shape=shape)
        message.raw_input_contents.extend(changes.pop("raw", raw))
        return message

    return {
        "wrong datatype": request(
            inputs=[("dense", "FP64", [1, 13]), ("sparse", "INT64", [1, 26])]
        ),
        "unknown datatype": request(
            inputs=[("dense", "FP99", [1, 13]), ("sparse", "INT64", [1, 26])]
        ),
        "wrong shape": request(inputs=[("dense", "FP32", [1, 12]), ("sparse", "INT64", [1, 26])]),
        "short raw": request(raw=[raw[0][:-4], raw[1]]),
        "long raw": request(raw=[raw[0] + b"\0" * 4, raw[1]]),
        "raw count": request(raw=[raw[0]]),
        "missing input": request(inputs=[("dense", "FP32", [1, 13])], raw=[raw[0]]),
        "unknown input": request(
            inputs=[("dense", "FP32", [1, 13]), ("sparse", "INT64", [1, 26]), ("z", "FP32", [1])],
            raw=[*raw, b"\0" * 4],
        ),
        "duplicate input": request(
            inputs=[("dense", "FP32", [1, 13]), ("dense", "FP32", [1, 13])], raw=[raw[0]] * 2
        ),
        "negative dim": request(inputs=[("dense", "FP32", [-1, 13]), ("sparse", "INT64", [1, 26])]),
        "huge dims": request(
            inputs=[("dense", "FP32", [2**62, 2**62]), ("sparse", "INT64", [1, 26])]
        ),
        "too many rows": request(
            inputs=[("dense", "FP32", [100_000, 13]), ("sparse", "INT64", [100_000, 26])]
        ),
        "index out of range": request(raw=[raw[0], np.full((1, 26), -5, np.int64).tobytes()]),
    }


@pytest.mark.parametrize("case", sorted(hostile_requests()))
def test_hostile_input_is_invalid_argument(stub: Any, client: Any, case: str) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        stub.ModelInfer(hostile_requests()[case])
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, caught.value.details()
    assert caught.value.details()
    assert client.is_server_live()


def test_unknown_model_oversized_and_bad_version(stub: Any) -> None:
    requests = hostile_requests()
    unknown = requests["wrong shape"]
    unknown.model_name = "nope"
    with pytest.raises(grpc.RpcError) as caught:
        stub.ModelInfer(unknown)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    version = requests["short raw"]
    version.model_version = "01"
    with pytest.raises(grpc.RpcError) as caught:
        stub.ModelInfer(version)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    oversized = service_pb2.ModelInferRequest(model_name="ranker")
    oversized.inputs.add(name="dense", datatype="FP32", shape=[1, 13])
    oversized.raw_input_contents.append(b"\0" * (2 * 1024 * 1024))  # the server takes 1 MiB
    with pytest.raises(grpc.RpcError) as caught:
        stub.ModelInfer(oversized)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_stream_infer(client: tgrpc.InferenceServerClient, demo_repo: Path) -> None:
    answers: queue.Queue[tuple[Any, Any]] = queue.Queue()
    client.start_stream(callback=lambda result, error: answers.put((result, error)))
    try:
        arrays = [ranker_arrays(rows=2, seed=seed) for seed in range(3)]
        for index, each in enumerate(arrays):
            client.async_stream_infer("ranker", grpc_inputs(each), request_id=str(index))
        bad = tgrpc.InferInput("dense", [1, 12], "FP32")
        bad.set_data_from_numpy(np.zeros((1, 12), np.float32))
        client.async_stream_infer("ranker", [bad], request_id="bad")
        got = {}
        errors = []
        for _ in range(4):
            result, error = answers.get(timeout=30)
            if error is not None:
                errors.append(str(error))
            else:
                got[result.get_response().id] = result.as_numpy("probability")
    finally:
        client.stop_stream()
    assert len(errors) == 1
    assert "dense" in errors[0]
    for index, each in enumerate(arrays):
        np.testing.assert_allclose(
            got[str(index)], in_process(demo_repo, "ranker", each), rtol=1e-6
        )


def test_deadline_and_cancel_keep_rows_from_the_model(tmp_path: Path) -> None:
    """While the model is held by a first request, a call that passes its deadline ends
    DEADLINE_EXCEEDED and a call its client cancels ends CANCELLED: neither reaches the
    model, the others are answered."""
    repo = tmp_path / "models"
    config = ModelConfig(
        batching=BatchingConfig(max_batch_size=1, max_queue_delay_ms=0, preferred_batch_sizes=[1])
    )
    pack_faulty(repo, "slow", 1, tag=TAG, config=config)
    held = gate(TAG)
    with running(repo) as (_, state):
        client = tgrpc.InferenceServerClient(state.grpc_address)
        batcher = state.registry.resolve("slow").batcher
        before = len(seen(TAG))
        done: queue.Queue[tuple[float, Any, Any]] = queue.Queue()

        def send(value: float, **options: Any) -> Any:
            x = tgrpc.InferInput("x", [1, 2], "FP32")
            x.set_data_from_numpy(np.array([[value, 0.0]], np.float32))
            return client.async_infer(
                "slow",
                [x],
                callback=lambda result, error: done.put((value, result, error)),
                **options,
            )

        held.clear()
        try:
            send(1.0)
            until(lambda: 1.0 in seen(TAG), "the first request holds the model")
            send(2.0, client_timeout=0.2)
            cancelled = send(3.0)
            send(4.0)
            until(lambda: batcher.stats().queue_depth == 3, "three requests queued")
            cancelled.cancel()
            answers = {}
            for _ in range(2):  # the deadline and the cancel end while the model is held
                value, result, error = done.get(timeout=30)
                answers[value] = error.status() if error is not None else "answered"
            assert answers == {
                2.0: "StatusCode.DEADLINE_EXCEEDED",
                3.0: "StatusCode.CANCELLED",
            }
        finally:
            held.set()
        for _ in range(2):
            value, result, error = done.get(timeout=30)
            assert error is None, error
            np.testing.assert_array_equal(result.as_numpy("y"), [[value, 0.0]])
        stats = batcher.stats()
    assert sorted(seen(TAG)[before:]) == [1.0, 4.0]  # 2 and 3 never ran
    assert stats.cancelled + stats.expired == 2


def test_repository_api_behind_the_token(demo_repo: Path) -> None:
    settings = ServeSettings(port=0, log_format="text", control_mode="explicit")
    with running(demo_repo, settings, management_token="s3cret") as (url, state):
        client = tgrpc.InferenceServerClient(state.grpc_address)
        index = client.get_model_repository_index(as_json=True)
        assert {m["name"] for m in index["models"]} >= {"ranker", "classifier"}
        assert code_of(lambda: client.unload_model("ranker")) == "StatusCode.UNAUTHENTICATED"
        wrong = {"authorization": "Bearer nope"}
        assert (
            code_of(lambda: client.unload_model("ranker", headers=wrong))
            == "StatusCode.UNAUTHENTICATED"
        )
        token = {"authorization": "Bearer s3cret"}
        client.unload_model("ranker", headers=token)
        until(lambda: not client.is_model_ready("ranker"), "ranker unloaded")
        assert httpx.get(f"{url}/v2/models/ranker/ready").status_code != 200
        client.load_model("ranker", headers=token)
        assert client.is_model_ready("ranker")
        assert code_of(lambda: client.load_model("nope", headers=token)) == "StatusCode.NOT_FOUND"


def test_off_and_management_disabled(demo_repo: Path, server: tuple[str, Any]) -> None:
    _, state = server
    client = tgrpc.InferenceServerClient(state.grpc_address)
    token = {"authorization": "Bearer s3cret"}
    assert (
        code_of(lambda: client.unload_model("ranker", headers=token))
        == "StatusCode.PERMISSION_DENIED"
    )
    settings = ServeSettings(port=0, log_format="text", grpc_port=-1)
    with running(demo_repo, settings) as (url, off):
        assert off.grpc_address == ""
        assert httpx.get(f"{url}/v2/health/ready").json() == {"ready": True}


def test_a_taken_grpc_port_is_refused_before_models_load(demo_repo: Path, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        settings = ServeSettings(port=0, grpc_port=taken.getsockname()[1], log_format="text")
        state = build_state(demo_repo, settings, cache_dir=tmp_path)
        with pytest.raises(ConfigError, match="--grpc-port"):
            make_server(state)


def grpc_socket(address: str) -> socket.socket:
    """A raw TCP connection to the gRPC port; whether the server took it shows at once:
    it either sends its HTTP/2 SETTINGS frame or closes the connection."""
    host, port = address.rsplit(":", 1)
    return socket.create_connection((host, int(port)), timeout=10)


def taken(sock: socket.socket) -> bool:
    """True if the server sent its SETTINGS (it took the connection), False if it closed."""
    try:
        return sock.recv(9) != b""  # an HTTP/2 frame header, or end of stream
    except ConnectionResetError:
        return False


def test_idle_connections_cannot_use_up_the_grpc_port(demo_repo: Path) -> None:
    """--max-connections bounds open gRPC connections too (one past it is closed as it
    comes), and --header-timeout-s closes a connection that never sets up HTTP/2: idle
    sockets cannot use up the process's open files and stop every port accepting."""
    settings = ServeSettings(port=0, log_format="text", max_connections=2, header_timeout_s=60)
    with running(demo_repo, settings) as (url, state):
        idle = [grpc_socket(state.grpc_address) for _ in range(2)]
        try:
            assert all(taken(sock) for sock in idle)
            with grpc_socket(state.grpc_address) as third:
                assert not taken(third)
            # the REST port is bounded on its own
            assert httpx.get(f"{url}/v2/health/ready").json() == {"ready": True}
        finally:
            for sock in idle:
                sock.close()

        def serves() -> bool:
            with grpc_socket(state.grpc_address) as sock:
                return taken(sock)

        until(serves, "a gRPC connection is taken once the idle ones closed")
        client = tgrpc.InferenceServerClient(state.grpc_address)
        assert client.is_server_ready()

    settings = ServeSettings(port=0, log_format="text", header_timeout_s=0.5)
    with running(demo_repo, settings) as (_, state):
        with grpc_socket(state.grpc_address) as silent:
            assert taken(silent)
            # then nothing from the client: closed after 0.5 s (the socket's own 10 s
            # timeout is the test's deadline)
            while chunk := silent.recv(65536):
                assert chunk  # the rest of SETTINGS, then a GOAWAY
        client = tgrpc.InferenceServerClient(state.grpc_address)
        assert client.is_server_ready()
