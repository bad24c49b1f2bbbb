"""Triton's trace and log settings through tritonclient's HTTP and gRPC clients: read by
anyone, changed with the management token only, bad values refused naming the setting, and
the changes really applied (new traces' sampling, the access-log share, the log level).
CUDA shared memory is refused naming system shared memory."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from tritonclient import grpc as tgrpc
from tritonclient import http as thttp
from tritonclient.utils import InferenceServerException

from serving import running
from torchrig.server.logs import LOGGERS
from torchrig.settings import ServeSettings

TOKEN = {"authorization": "Bearer s3cret"}


@pytest.fixture(scope="module")
def guarded(demo_repo: Path) -> Iterator[tuple[str, Any]]:
    """A server with the management API on (token s3cret)."""
    settings = ServeSettings(port=0, log_format="text", control_mode="explicit")
    with running(demo_repo, settings, management_token="s3cret") as (url, state):
        yield url, state


@pytest.fixture
def clients(guarded: tuple[str, Any]) -> tuple[thttp.InferenceServerClient, Any, Any]:
    url, state = guarded
    return (
        thttp.InferenceServerClient(url.removeprefix("http://")),
        tgrpc.InferenceServerClient(state.grpc_address),
        state,
    )


def refused(call: Callable[[], Any]) -> tuple[str | None, str]:
    with pytest.raises(InferenceServerException) as caught:
        call()
    return caught.value.status(), caught.value.message()


def sampled_flag(url: str) -> str:
    """The sampled flag of the traceparent a new trace (no caller's) gets from the ranker."""
    body = {
        "inputs": [
            {"name": "dense", "datatype": "FP32", "shape": [1, 13], "data": [0.0] * 13},
            {"name": "sparse", "datatype": "INT64", "shape": [1, 26], "data": [1] * 26},
        ]
    }
    answer = httpx.post(f"{url}/v2/models/ranker/infer", json=body)
    assert answer.status_code == 200, answer.text
    flag: str = answer.headers["traceparent"].rsplit("-", 1)[1]
    return flag


def test_trace_settings_read_and_changed_on_both_transports(
    guarded: tuple[str, Any], clients: tuple[thttp.InferenceServerClient, Any, Any]
) -> None:
    url, _ = guarded
    http, grpc, state = clients
    start = http.get_trace_settings()
    assert start["trace_level"] == ["TIMESTAMPS"]
    assert start["trace_rate"] == "1"
    assert start["trace_mode"] == "opentelemetry"
    assert start["access_log_sample"] == "0.01"
    over_grpc = grpc.get_trace_settings(as_json=True)["settings"]
    assert over_grpc["trace_rate"]["value"] == ["1"]
    assert over_grpc["trace_level"]["value"] == ["TIMESTAMPS"]
    assert sampled_flag(url) == "01"
    try:
        # without the token: refused on both, nothing changed
        assert refused(lambda: grpc.update_trace_settings(settings={"trace_rate": "4"}))[0] == (
            "StatusCode.UNAUTHENTICATED"
        )
        assert refused(lambda: http.update_trace_settings(settings={"trace_rate": "4"}))[0] == (
            "401"
        )
        assert state.trace_settings.root_ratio("ranker") == 1.0
        # with it: the rate, the level and the access-log share take effect
        changed = grpc.update_trace_settings(
            settings={"trace_rate": "4", "access_log_sample": "0.5"}, headers=TOKEN, as_json=True
        )
        assert changed["settings"]["trace_rate"]["value"] == ["4"]
        assert state.trace_settings.root_ratio("ranker") == 0.25
        assert state.trace_settings.access_log.sample == 0.5
        http.update_trace_settings(settings={"trace_level": ["OFF"]}, headers=TOKEN)
        assert http.get_trace_settings()["trace_level"] == ["OFF"]
        assert sampled_flag(url) == "00"
        # per model: the ranker on again while the server stays off, then cleared
        http.update_trace_settings(
            model_name="ranker",
            settings={"trace_level": "TIMESTAMPS", "trace_rate": "1"},
            headers=TOKEN,
        )
        assert grpc.get_trace_settings("ranker", as_json=True)["settings"]["trace_level"][
            "value"
        ] == ["TIMESTAMPS"]
        assert http.get_trace_settings()["trace_level"] == ["OFF"]
        assert sampled_flag(url) == "01"
        grpc.update_trace_settings("ranker", settings={"trace_level": None}, headers=TOKEN)
        assert http.get_trace_settings("ranker")["trace_level"] == ["OFF"]
        assert http.get_trace_settings("ranker")["trace_rate"] == "1"  # still its own
        assert sampled_flag(url) == "00"
    finally:  # back to where the server started (null: the starting value)
        http.update_trace_settings(
            settings={"trace_level": None, "trace_rate": None, "access_log_sample": None},
            headers=TOKEN,
        )
        http.update_trace_settings(
            model_name="ranker", settings={"trace_rate": None}, headers=TOKEN
        )
    assert http.get_trace_settings() == start
    assert http.get_trace_settings("ranker") == start
    assert state.trace_settings.access_log.sample == 0.01


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({"trace_rate": "0"}, "trace_rate"),
        ({"trace_rate": "often"}, "trace_rate"),
        ({"trace_level": ["TENSORS"]}, "trace_level"),
        ({"trace_level": ["OFF", "TIMESTAMPS"]}, "trace_level"),
        ({"access_log_sample": "2"}, "access_log_sample"),
        ({"trace_mode": "triton"}, "trace_mode"),
        ({"trace_count": "10"}, "trace_count"),
        ({"trace_bogus": "1"}, "trace_bogus"),
    ],
)
def test_bad_trace_settings_are_refused_naming_the_setting(
    clients: tuple[thttp.InferenceServerClient, Any, Any], settings: dict[str, Any], named: str
) -> None:
    http, grpc, _state = clients
    before = http.get_trace_settings()
    code, message = refused(lambda: grpc.update_trace_settings(settings=settings, headers=TOKEN))
    assert code == "StatusCode.INVALID_ARGUMENT"
    assert named in message
    code, message = refused(lambda: http.update_trace_settings(settings=settings, headers=TOKEN))
    assert code == "400"
    assert named in message
    assert http.get_trace_settings() == before


def test_trace_settings_of_models_and_bodies(
    guarded: tuple[str, Any], clients: tuple[thttp.InferenceServerClient, Any, Any]
) -> None:
    url, _ = guarded
    http, grpc, _ = clients
    assert refused(lambda: grpc.get_trace_settings("nope"))[0] == "StatusCode.NOT_FOUND"
    assert refused(lambda: http.get_trace_settings("nope"))[0] == "404"
    code, message = refused(
        lambda: http.update_trace_settings("ranker", {"access_log_sample": "1"}, headers=TOKEN)
    )
    assert (code, "server-wide" in message) == ("400", True)
    for body in (b"[1, 2]", b"{not json"):
        answer = httpx.post(f"{url}/v2/trace/setting", content=body, headers=TOKEN)
        assert answer.status_code == 400
        assert "JSON object" in answer.json()["error"]
    assert httpx.post(f"{url}/v2/logging", content=b'"x"', headers=TOKEN).status_code == 400


@pytest.fixture
def log_levels() -> Iterator[None]:
    """The loggers' levels put back after a test that changes them through the API."""
    before = {name: logging.getLogger(name).level for name in LOGGERS}
    yield
    for name, level in before.items():
        logging.getLogger(name).setLevel(level)


@pytest.mark.usefixtures("log_levels")
def test_log_settings_set_the_level_on_both_transports(
    clients: tuple[thttp.InferenceServerClient, Any, Any],
) -> None:
    http, grpc, _ = clients
    torchrig_log = logging.getLogger("torchrig")
    start = http.get_log_settings()
    assert start["log_file"] == ""
    assert start["log_format"] == "text"
    assert refused(lambda: grpc.update_log_settings({"log_verbose_level": 1}))[0] == (
        "StatusCode.UNAUTHENTICATED"
    )
    assert refused(lambda: http.update_log_settings({"log_verbose_level": 1}))[0] == "401"
    grpc.update_log_settings({"log_verbose_level": 1}, headers=TOKEN)
    assert torchrig_log.getEffectiveLevel() == logging.DEBUG
    assert http.get_log_settings()["log_verbose_level"] == 1
    http.update_log_settings({"log_info": False}, headers=TOKEN)
    assert torchrig_log.getEffectiveLevel() == logging.WARNING
    assert all(logging.getLogger(name).level == logging.WARNING for name in LOGGERS)
    report = grpc.get_log_settings(as_json=True)["settings"]
    assert report["log_info"]["bool_param"] is False
    assert report["log_warning"]["bool_param"] is True
    assert report["log_verbose_level"].get("uint32_param", 0) == 0
    http.update_log_settings({"log_warning": False, "log_error": False}, headers=TOKEN)
    assert torchrig_log.getEffectiveLevel() == logging.CRITICAL
    http.update_log_settings(
        {"log_info": True, "log_warning": True, "log_error": True}, headers=TOKEN
    )
    assert torchrig_log.getEffectiveLevel() == logging.INFO
    assert http.get_log_settings()["log_info"] is True


@pytest.mark.usefixtures("log_levels")
@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({"log_info": True, "log_warning": False}, "log_warning"),
        ({"log_format": "ISO8601"}, "log_format"),
        ({"log_file": "/tmp/triton.log"}, "log_file"),
        ({"log_level": True}, "log_level"),
    ],
)
def test_bad_log_settings_are_refused_naming_the_setting(
    clients: tuple[thttp.InferenceServerClient, Any, Any], settings: dict[str, Any], named: str
) -> None:
    http, grpc, _ = clients
    level = logging.getLogger("torchrig").getEffectiveLevel()
    code, message = refused(lambda: grpc.update_log_settings(settings, headers=TOKEN))
    assert (code, named in message) == ("StatusCode.INVALID_ARGUMENT", True)
    code, message = refused(lambda: http.update_log_settings(settings, headers=TOKEN))
    assert (code, named in message) == ("400", True)
    for value in (-1, "2", 1.5):
        code, message = refused(
            lambda v=value: http.update_log_settings({"log_verbose_level": v}, headers=TOKEN)
        )
        assert (code, "log_verbose_level" in message) == ("400", True)
    assert logging.getLogger("torchrig").getEffectiveLevel() == level


def test_settings_updates_without_the_management_api(
    server: tuple[str, Any],
) -> None:
    url, state = server
    http = thttp.InferenceServerClient(url.removeprefix("http://"))
    grpc = tgrpc.InferenceServerClient(state.grpc_address)
    assert http.get_trace_settings()["trace_level"] == ["TIMESTAMPS"]
    assert "log_info" in grpc.get_log_settings(as_json=True)["settings"]
    assert (
        refused(lambda: grpc.update_trace_settings(settings={"trace_rate": "2"}, headers=TOKEN))[0]
        == "StatusCode.PERMISSION_DENIED"
    )
    assert refused(lambda: http.update_log_settings({"log_info": True}, headers=TOKEN))[0] == (
        "403"
    )
    extensions = http.get_server_metadata()["extensions"]
    assert {"trace", "logging"} <= set(extensions)


def test_cuda_shared_memory_is_refused_naming_system_shared_memory(
    server: tuple[str, Any],
) -> None:
    url, state = server
    http = thttp.InferenceServerClient(url.removeprefix("http://"))
    grpc = tgrpc.InferenceServerClient(state.grpc_address)
    calls = [
        lambda: grpc.register_cuda_shared_memory("frames", b"aGFuZGxl", 0, 1024),
        grpc.get_cuda_shared_memory_status,
        lambda: grpc.unregister_cuda_shared_memory("frames"),
    ]
    for call in calls:
        code, message = refused(call)
        assert code == "StatusCode.UNIMPLEMENTED"
        assert "system shared memory" in message
    for call in (
        lambda: http.register_cuda_shared_memory("frames", b"aGFuZGxl", 0, 1024),
        http.get_cuda_shared_memory_status,
    ):
        code, message = refused(call)
        assert code == "501"
        assert "system shared memory" in message
    np.testing.assert_equal(len(http.get_system_shared_memory_status()), 0)
