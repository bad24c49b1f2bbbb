"""Monitoring against the real thing: a running `torchrig serve` over the demo repository,
scraped by a real Prometheus on loopback that loads torchrig's alerting rules.

Every metric the rules, the dashboard and the Prometheus adapter's rules name must be one
the server really exports; every dashboard query must be PromQL that Prometheus accepts.
"""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from doubles import until
from torchrig.deploy.monitoring import (
    ADAPTER_FILE,
    RULES_FILE,
    adapter_values,
    alert_rules,
    dashboard,
    data_text,
)
from torchrig.server.gpu_metrics import NvmlCollector, TorchAllocatorCollector, _Gpu

METRIC = re.compile(r"\btorchrig_[a-z0-9_]+")
LISTENING = re.compile(r'msg="Listening on" address=127\.0\.0\.1:(\d+)')
DEADLINE_S = 30.0
DENSE = [[0.1 * i for i in range(13)]]
SPARSE = [[i * 37 % 1000 for i in range(26)]]


def ranker_request(dense: list[list[float]]) -> dict[str, Any]:
    return {
        "inputs": [
            {"name": "dense", "datatype": "FP32", "shape": [len(dense), 13], "data": dense},
            {"name": "sparse", "datatype": "INT64", "shape": [1, 26], "data": SPARSE},
        ]
    }


@pytest.fixture(scope="module")
def busy_server(demo_server: str) -> str:
    """The demo server after a successful and a rejected request, so every series exists."""
    ok = httpx.post(f"{demo_server}/v2/models/ranker/infer", json=ranker_request(DENSE))
    assert ok.status_code == 200, ok.text
    bad = httpx.post(f"{demo_server}/v2/models/ranker/infer", json=ranker_request([[0.1] * 12]))
    assert bad.status_code == 400
    return demo_server


def dashboard_exprs() -> list[str]:
    return [target["expr"] for panel in dashboard()["panels"] for target in panel["targets"]]


def referenced_metrics() -> dict[str, set[str]]:
    """Where each torchrig metric name is used: rules, dashboard, adapter."""
    texts = {
        RULES_FILE: [rule["expr"] for g in alert_rules()["groups"] for rule in g["rules"]],
        "grafana-dashboard.json": dashboard_exprs(),
        ADAPTER_FILE: [r["seriesQuery"] for r in adapter_values()["rules"]["custom"]],
    }
    uses: dict[str, set[str]] = {}
    for source, exprs in texts.items():
        for expr in exprs:
            for name in METRIC.findall(expr):
                uses.setdefault(name, set()).add(source)
    return uses


class OneGpuNvml:
    """Answers as nvidia-ml-py does for one healthy GPU: what the NVML collector reads on a
    GPU node, so that on a CPU machine too its series are collected, not only described."""

    class NVMLError(Exception):
        pass

    @staticmethod
    def nvmlDeviceGetUtilizationRates(handle: object) -> SimpleNamespace:
        return SimpleNamespace(gpu=37, memory=12)

    @staticmethod
    def nvmlDeviceGetMemoryInfo(handle: object) -> SimpleNamespace:
        return SimpleNamespace(used=6 << 30, total=80 << 30, free=74 << 30)

    @staticmethod
    def nvmlDeviceGetPowerUsage(handle: object) -> int:
        return 312_000  # milliwatts

    @staticmethod
    def nvmlDeviceGetTemperature(handle: object, sensor: int) -> int:
        return 54

    @staticmethod
    def nvmlShutdown() -> None:
        return None


class OneDeviceCuda:
    """Answers as torch.cuda does in a process that has initialised one device."""

    @staticmethod
    def is_initialized() -> bool:
        return True

    @staticmethod
    def device_count() -> int:
        return 1

    @staticmethod
    def memory_allocated(index: int) -> int:
        return 1 << 30

    @staticmethod
    def memory_reserved(index: int) -> int:
        return 2 << 30


def collected_gpu_series() -> set[str]:
    """The sample names the GPU collectors yield on a node with one GPU in use."""
    gpu = _Gpu(index="0", uuid="GPU-0000", handle=object())
    names: set[str] = set()
    for collector in (NvmlCollector(OneGpuNvml(), [gpu]), TorchAllocatorCollector(OneDeviceCuda())):
        names |= {sample.name for family in collector.collect() for sample in family.samples}
    return names


def exported_metrics(url: str) -> set[str]:
    """Sample names in the server's real /metrics, plus the GPU series its collectors
    yield where NVML and CUDA are present (collected from them with a one-GPU NVML and
    torch.cuda; on a GPU node the real scrape has them too)."""
    text = httpx.get(f"{url}/metrics").text
    names = {
        sample.name for family in text_string_to_metric_families(text) for sample in family.samples
    }
    return names | collected_gpu_series()


def test_the_gpu_series_are_collected_not_only_described() -> None:
    assert collected_gpu_series() == {
        "torchrig_gpu_utilization_ratio",
        "torchrig_gpu_memory_used_bytes",
        "torchrig_gpu_memory_total_bytes",
        "torchrig_gpu_power_watts",
        "torchrig_gpu_temperature_celsius",
        "torchrig_torch_allocated_bytes",
        "torchrig_torch_reserved_bytes",
    }


def test_every_referenced_metric_is_exported(busy_server: str) -> None:
    uses = referenced_metrics()
    exported = exported_metrics(busy_server)
    unknown = {name: sorted(where) for name, where in uses.items() if name not in exported}
    assert not unknown, f"metrics the server does not export: {unknown}"
    # the check bites: the names come from the real scrape, and most of them are used
    assert "torchrig_request_duration_seconds_bucket" in exported
    assert "torchrig_request_duration_seconds" not in exported  # a family, not a sample
    assert len(uses) >= 15


class Prometheus:
    """A real Prometheus (Debian's package) on 127.0.0.1:<OS-assigned port>."""

    def __init__(self, binary: str, workdir: Path, target: str) -> None:
        (workdir / RULES_FILE).write_text(data_text(RULES_FILE))
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [RULES_FILE],
            "scrape_configs": [
                {
                    "job_name": "torchrig",
                    "static_configs": [
                        {
                            "targets": [target.removeprefix("http://")],
                            # what a ServiceMonitor adds in a cluster, which the adapter needs
                            "labels": {"namespace": "test", "pod": "torchrig-demo-0"},
                        }
                    ],
                }
            ],
        }
        (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.log = workdir / "prometheus.log"
        with self.log.open("w") as log:
            self.process = subprocess.Popen(
                [
                    binary,
                    f"--config.file={workdir / 'prometheus.yml'}",
                    f"--storage.tsdb.path={workdir / 'data'}",
                    "--web.listen-address=127.0.0.1:0",
                    f"--web.console.templates={workdir}",
                    f"--web.console.libraries={workdir}",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=workdir,
            )
        self.url = f"http://127.0.0.1:{self._port()}"

    def _port(self) -> int:
        deadline = time.monotonic() + DEADLINE_S
        while time.monotonic() < deadline:
            match = LISTENING.search(self.log.read_text())
            if match:
                return int(match.group(1))
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError(f"prometheus did not start:\n{self.log.read_text()}")

    def query(self, expr: str) -> dict[str, Any]:
        reply = httpx.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=10)
        body: dict[str, Any] = reply.json()
        return body

    def until(self, expr: str) -> list[dict[str, Any]]:
        """Poll until `expr` returns data (or fail at the deadline)."""

        def data() -> list[dict[str, Any]] | None:
            body = self.query(expr)
            return body["data"]["result"] if body["status"] == "success" else None

        return until(  # type: ignore[no-any-return]
            data,
            lambda: f"{expr} returned no data in {DEADLINE_S} s: {self.query(expr)}",
            DEADLINE_S,
            0.2,
        )

    def close(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)


@pytest.fixture(scope="module")
def prometheus(
    prometheus_binary: str, busy_server: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Prometheus]:
    server = Prometheus(prometheus_binary, tmp_path_factory.mktemp("prometheus"), busy_server)
    try:
        yield server
    finally:
        server.close()


def test_prometheus_scrapes_the_server(prometheus: Prometheus) -> None:
    result = prometheus.until('torchrig_request_success_total{job="torchrig", model="ranker"}')
    assert float(result[0]["value"][1]) >= 1
    (up,) = prometheus.until('up{job="torchrig"}')
    assert up["value"][1] == "1"
    ready = prometheus.until('torchrig_model_ready{job="torchrig"}')
    assert {r["metric"]["model"] for r in ready} >= {"ranker", "classifier"}


def test_the_rules_load_and_evaluate(prometheus: Prometheus) -> None:
    def evaluated_rules() -> list[dict[str, Any]] | None:
        reply = httpx.get(f"{prometheus.url}/api/v1/rules", timeout=10).json()
        rules = [rule for g in reply["data"]["groups"] for rule in g["rules"]]
        evaluated = [r for r in rules if not r["lastEvaluation"].startswith("0001-")]
        return rules if rules and len(evaluated) == len(rules) else None

    rules = until(
        evaluated_rules,
        lambda: f"every rule evaluated once: {httpx.get(f'{prometheus.url}/api/v1/rules').text}",
        DEADLINE_S,
        0.2,
    )
    assert {r["name"] for r in rules} == {
        r["alert"] for g in alert_rules()["groups"] for r in g["rules"]
    }
    assert {r["health"] for r in rules} == {"ok"}, [r for r in rules if r["health"] != "ok"]
    # a healthy demo server fires nothing but (on this CPU machine) nothing about GPUs either
    assert [r["name"] for r in rules if r["state"] == "firing"] == []


def test_every_dashboard_query_is_valid_promql(prometheus: Prometheus) -> None:
    prometheus.until('torchrig_inflight_requests{job="torchrig"}')
    grafana = {"$namespace": "test", "$model": ".*", "$__rate_interval": "1m"}
    for template in dashboard_exprs():
        expr = template
        for variable, value in grafana.items():
            expr = expr.replace(variable, value)
        assert "$" not in expr, expr
        body = prometheus.query(expr)
        assert body["status"] == "success", (expr, body)
    for variable in dashboard()["templating"]["list"]:
        if variable["type"] != "query":
            continue
        match = re.fullmatch(r"label_values\((.+), (\w+)\)", variable["definition"])
        assert match, variable["definition"]
        selector = match.group(1).replace("$namespace", "test")
        series = prometheus.until(selector)
        assert all(match.group(2) in s["metric"] for s in series)


def test_the_adapter_query_gives_inflight_per_pod(prometheus: Prometheus) -> None:
    """The adapter's metricsQuery, filled in as the adapter does for a pods metric."""
    rule = adapter_values()["rules"]["custom"][0]
    assert rule["name"]["as"] == "torchrig_inflight_requests"
    series = rule["seriesQuery"].split("{", 1)[0]
    query = (
        rule["metricsQuery"]
        .replace("<<.Series>>", series)
        .replace("<<.LabelMatchers>>", 'namespace="test",pod=~"torchrig-demo-0"')
        .replace("<<.GroupBy>>", "pod")
    )
    (result,) = prometheus.until(query)
    assert result["metric"] == {"pod": "torchrig-demo-0"}
    assert float(result["value"][1]) >= 0
