"""The throughput cost of tracing and the access log, in one run (issue #15): `torchrig
serve` of a tiny model four ways, servers interleaved per round:
  off      --access-log-sample 0, requests without `traceparent`
  sampled  --access-log-sample 0.01 (the default), every request with a `traceparent`
  every    --access-log-sample 1, every request with a `traceparent`
  otel     as sampled, and OpenTelemetry spans exported over OTLP/HTTP to a local sink,
           every request traced (the caller's traceparent says sampled)
  otel-1%  as otel, the requests without traceparent and the traces sampled at 1 %
           (OTEL_TRACES_SAMPLER=parentbased_traceidratio, OTEL_TRACES_SAMPLER_ARG=0.01)
Each server logs JSON to a pipe that is drained (as a container's stdout is). Load: one
keep-alive httpx client per thread, closed loop, one row per V2 JSON request. Printed:
median req/s per configuration over the rounds and the ratio to "off"; goal: sampled
costs under 5 %.

Run: `python benchmarks/serve_tracing.py [--duration 5] [--rounds 3] [--threads 8]`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

CONFIGS = {
    "off": ("0", False, False),
    "sampled": ("0.01", True, False),
    "every": ("1", True, False),
    "otel": ("0.01", True, True),
    "otel-1%": ("0.01", False, True),
}
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
BODY = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1.0] * 4}]}


def build_repo(root: Path) -> None:
    import torch

    from torchrig.packaging import pack
    from torchrig.repository import BatchingConfig, ModelConfig

    class AddOne(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + 1

    config = ModelConfig(batching=BatchingConfig(max_batch_size=32, max_queue_delay_ms=0))
    pack(AddOne(), (torch.zeros(2, 4),), name="m", repository=root, version=1,
         output_names=["y"], config=config)  # fmt: skip


class _Sink(BaseHTTPRequestHandler):
    """An OTLP/HTTP endpoint that accepts and drops every export."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["content-length"]))
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *_: Any) -> None:
        pass


def start(repo: Path, sample: str, otlp: str | None) -> tuple[subprocess.Popen[str], str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TORCHRIG_", "OTEL_"))}
    env["TORCHRIG_SERVE_ACCESS_LOG_SAMPLE"] = sample
    if otlp is not None:
        env["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"] = otlp
        env["OTEL_TRACES_SAMPLER"] = "parentbased_traceidratio"
        env["OTEL_TRACES_SAMPLER_ARG"] = "0.01"
    proc = subprocess.Popen(
        [sys.executable, "-m", "torchrig", "serve", str(repo), "--port", "0",
         "--grpc-port", "-1", "--log-format", "json"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env,
    )  # fmt: skip
    assert proc.stdout is not None
    for line in proc.stdout:
        url = json.loads(line).get("url", "")
        if url.startswith("http"):
            threading.Thread(target=_drain, args=(proc.stdout,), daemon=True).start()
            return proc, url
    raise RuntimeError("the server did not start")


def _drain(stream: Any) -> None:
    for _line in stream:  # the log lines, read as a log collector would
        pass


def load(url: str, traced: bool, threads: int, duration: float) -> float:
    headers = {"traceparent": TRACEPARENT} if traced else {}
    counts = [0] * threads
    deadline = time.monotonic() + duration

    def run(index: int) -> None:
        with httpx.Client(base_url=url, timeout=30) as client:
            while time.monotonic() < deadline:
                reply = client.post("/v2/models/m/infer", json=BODY, headers=headers)
                reply.raise_for_status()
                counts[index] += 1

    workers = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return sum(counts) / duration


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=8)
    args = parser.parse_args()
    sink = ThreadingHTTPServer(("127.0.0.1", 0), _Sink)
    threading.Thread(target=sink.serve_forever, daemon=True).start()
    otlp = f"http://127.0.0.1:{sink.server_address[1]}/v1/traces"
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "models"
        build_repo(repo)
        results: dict[str, list[float]] = {name: [] for name in CONFIGS}
        for round_ in range(args.rounds):
            for name, (sample, traced, spans) in CONFIGS.items():
                proc, url = start(repo, sample, otlp if spans else None)
                try:
                    load(url, traced, args.threads, 1.0)  # warm-up
                    rate = load(url, traced, args.threads, args.duration)
                finally:
                    proc.terminate()
                    proc.wait(60)
                results[name].append(rate)
                print(f"round {round_ + 1} {name:8s} {rate:9.1f} req/s", flush=True)
    base = statistics.median(results["off"])
    print(f"\n{'config':8s} {'median req/s':>12s} {'vs off':>8s}")
    for name, rates in results.items():
        median = statistics.median(rates)
        print(f"{name:8s} {median:12.1f} {median / base:8.3f}")
    for name in ("sampled", "otel", "otel-1%"):
        cost = 1 - statistics.median(results[name]) / base
        print(f"{name} costs {cost * 100:.1f} % of throughput against off (goal: < 5 %)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
