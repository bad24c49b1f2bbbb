"""Request deadlines through a real server: 504, the default timeout, the cap on a
request's own `timeout` parameter, and the `timeout` reason in the failure metric.

A deadline is checked when a worker takes the request from the queue, so a deadline of a
microsecond has always passed by then (a thread wake-up alone takes longer), and one of
a minute never has: the outcomes below do not depend on the machine's speed.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch
from prometheus_client.parser import text_string_to_metric_families

from serving import running
from torchrig.packaging import pack
from torchrig.repository import BatchingConfig, ModelConfig
from torchrig.settings import ServeSettings

MICROSECOND_S = 1e-6
MINUTE_US = 60_000_000  # the V2 `timeout` parameter is in microseconds, as Triton sends it


class PlusOne(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + 1


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("deadlines") / "models"
    pack(
        PlusOne(),
        (torch.zeros(2, 4),),
        name="plus",
        repository=root,
        version=1,
        output_names=["y"],
        config=ModelConfig(
            batching=BatchingConfig(max_batch_size=8, max_queue_delay_ms=1), warmup=False
        ),
    )
    return root


@contextmanager
def serving(repo: Path, *, request_timeout_s: float, max_request_timeout_s: float) -> Iterator[str]:
    settings = ServeSettings(
        port=0,
        log_format="text",
        request_timeout_s=request_timeout_s,
        max_request_timeout_s=max_request_timeout_s,
    )
    cache = repo.parent / f"cache-{request_timeout_s}-{max_request_timeout_s}"
    with running(repo, settings, cache_dir=cache) as (url, _):
        yield url


@pytest.fixture(scope="module")
def defaults(repo: Path) -> Iterator[str]:
    """The server's own defaults: 30 s without `timeout`, at most 300 s with it."""
    with serving(repo, request_timeout_s=30, max_request_timeout_s=300) as url:
        yield url


@pytest.fixture(scope="module")
def tiny_default(repo: Path) -> Iterator[str]:
    """--request-timeout-s of a microsecond: a request without `timeout` always expires."""
    with serving(repo, request_timeout_s=MICROSECOND_S, max_request_timeout_s=300) as url:
        yield url


@pytest.fixture(scope="module")
def tiny_cap(repo: Path) -> Iterator[str]:
    """--max-request-timeout-s of a microsecond: a request's own `timeout` is cut to it."""
    with serving(repo, request_timeout_s=30, max_request_timeout_s=MICROSECOND_S) as url:
        yield url


def infer(url: str, timeout_us: int | None = None) -> httpx.Response:
    body: dict[str, Any] = {
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]
    }
    if timeout_us is not None:
        body["parameters"] = {"timeout": timeout_us}
    return httpx.post(f"{url}/v2/models/plus/infer", json=body, timeout=60)


def timeouts_counted(url: str) -> float:
    """torchrig_request_failure_total{model="plus", reason="timeout"}, over every version."""
    text = httpx.get(f"{url}/metrics").text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "torchrig_request_failure_total"
        and sample.labels.get("model") == "plus"
        and sample.labels.get("reason") == "timeout"
    )


def assert_expired(response: httpx.Response) -> None:
    assert response.status_code == 504, response.text
    assert "deadline passed while it waited in the queue" in response.json()["error"]
    assert response.headers["x-request-id"]


def test_a_request_within_its_deadline_is_answered(defaults: str) -> None:
    for timeout_us in (None, MINUTE_US):
        answer = infer(defaults, timeout_us)
        assert answer.status_code == 200, answer.text
        assert answer.json()["outputs"][0]["data"] == [2.0, 3.0, 4.0, 5.0]
    assert timeouts_counted(defaults) == 0


def test_a_requests_own_short_timeout_expires(defaults: str) -> None:
    before = timeouts_counted(defaults)
    assert_expired(infer(defaults, timeout_us=1))
    assert timeouts_counted(defaults) == before + 1


def test_a_request_without_timeout_gets_the_servers_default(tiny_default: str) -> None:
    before = timeouts_counted(tiny_default)
    assert_expired(infer(tiny_default))
    assert timeouts_counted(tiny_default) == before + 1


def test_a_requests_own_timeout_overrides_the_default(tiny_default: str) -> None:
    answer = infer(tiny_default, timeout_us=MINUTE_US)
    assert answer.status_code == 200, answer.text
    assert answer.json()["outputs"][0]["data"] == [2.0, 3.0, 4.0, 5.0]


def test_a_requests_own_timeout_is_capped(tiny_cap: str) -> None:
    # a minute asked for, a microsecond allowed: the cap wins
    before = timeouts_counted(tiny_cap)
    assert_expired(infer(tiny_cap, timeout_us=MINUTE_US))
    assert timeouts_counted(tiny_cap) == before + 1


def test_the_cap_limits_the_clients_timeout_not_the_servers_default(tiny_cap: str) -> None:
    answer = infer(tiny_cap)  # no `timeout`: the default 30 s, which the cap does not cut
    assert answer.status_code == 200, answer.text
