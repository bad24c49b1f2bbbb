"""The cost of tracing and the access log, in one run (issue #15): `torchrig serve` of a
tiny model in four configurations, their servers interleaved in every round:
  off       --access-log-sample 0, no OpenTelemetry: nothing listens to any request
  sampled   --access-log-sample 0.01 (the default): one request in 100 has its times
            recorded and an access line written
  tracing   --access-log-sample 0, OpenTelemetry on (OTLP/HTTP to a local sink that drops
            what it gets), every request traced (the default sampler, parentbased_always_on)
  both      --access-log-sample 1 and tracing as above: every request listened to twice
  trace-1%  the sampled default and OpenTelemetry sampling 1 % of new traces
            (OTEL_TRACES_SAMPLER=parentbased_traceidratio, OTEL_TRACES_SAMPLER_ARG=0.01)
Every request comes without a `traceparent` (a new trace each). Each server logs JSON to a
pipe that is drained (as a container's stdout is). Load: one keep-alive httpx client per
thread, closed loop, one row per V2 JSON request.

Printed per configuration, medians over the rounds: requests/s and the server process's
CPU time (user + system, all threads) per request over the measured load, and both as
ratios to "off". CPU per request is the headline: on a shared box, requests/s moves with
whatever else runs, while the CPU a request costs the server moves much less. Goal: the
sampled default costs under 5 %.

First, in-process and without a server around them, what the hooks themselves cost per
request (`--hooks-only` prints just these): the server's begin / marks / finish, the
batcher's per-request and per-batch checks, the access line (JSON to /dev/null) and the
spans (handed to a processor that drops them: the SDK's OTLP encoding, in its exporter
thread, comes on top), in the same configurations, interleaved, medians of the rounds.

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

CONFIGS = {  # name: (access-log sample, OpenTelemetry's sampled share of new traces or None)
    "off": ("0", None),
    "sampled": ("0.01", None),
    "tracing": ("0", "1"),
    "both": ("1", "1"),
    "trace-1%": ("0.01", "0.01"),
}
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


def start(
    repo: Path, sample: str, otlp: str | None, ratio: str | None
) -> tuple[subprocess.Popen[str], str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TORCHRIG_", "OTEL_"))}
    env["TORCHRIG_SERVE_ACCESS_LOG_SAMPLE"] = sample
    if otlp is not None and ratio is not None:
        env["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"] = otlp
        env["OTEL_TRACES_SAMPLER"] = "parentbased_traceidratio"
        env["OTEL_TRACES_SAMPLER_ARG"] = ratio
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


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process, all its threads, so far (Linux /proc)."""
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _drain(stream: Any) -> None:
    for _line in stream:  # the log lines, read as a log collector would
        pass


def load(url: str, threads: int, duration: float) -> int:
    """Requests answered in `duration` seconds by `threads` closed-loop clients."""
    counts = [0] * threads
    deadline = time.monotonic() + duration

    def run(index: int) -> None:
        with httpx.Client(base_url=url, timeout=30) as client:
            while time.monotonic() < deadline:
                reply = client.post("/v2/models/m/infer", json=BODY)
                reply.raise_for_status()
                counts[index] += 1

    workers = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return sum(counts)


def measure(
    repo: Path, sample: str, otlp: str, ratio: str | None, args: argparse.Namespace
) -> tuple[float, float]:
    """One server: (requests/s, server CPU microseconds per request) over the load."""
    proc, url = start(repo, sample, otlp, ratio)
    try:
        load(url, args.threads, 1.0)  # warm-up
        cpu_before, began = process_cpu_seconds(proc.pid), time.monotonic()
        answered = load(url, args.threads, args.duration)
        elapsed = time.monotonic() - began
        cpu = process_cpu_seconds(proc.pid) - cpu_before
    finally:
        proc.terminate()
        proc.wait(60)
    return answered / elapsed, 1e6 * cpu / max(answered, 1)


class _Queued:
    """What the batcher's hooks read of a queued request."""

    def __init__(self, stage: Any) -> None:
        self.stage = stage


class _Drop:
    """A span processor that drops every span (the hooks' cost without the exporter's)."""

    def on_end(self, span: Any) -> None:
        pass


def hook_costs(rounds: int, count: int = 20_000) -> None:
    """Microseconds per request of the tracing hooks, per configuration (module doc)."""
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.util.instrumentation import InstrumentationScope

    from torchrig.runtime.batch_requests import listened, listened_stage, mark_batch
    from torchrig.server.logs import configure_logging
    from torchrig.server.otel import SpanRecorder
    from torchrig.server.request_trace import RequestTracing
    from torchrig.server.tracing import AccessLog, TraceContext

    configure_logging("json", stream=open(os.devnull, "w"))  # noqa: SIM115 - for the run
    tracers = {}
    for name, (sample, ratio) in CONFIGS.items():
        spans = None
        if ratio is not None:
            spans = SpanRecorder(_Drop(), Resource.create({}), InstrumentationScope("bench"))
            spans.root_ratio = float(ratio)
        tracers[name] = RequestTracing(AccessLog(float(sample)), spans)

    def one(tracing: RequestTracing) -> None:
        ratio = tracing.spans.root_ratio if tracing.spans is not None else 1.0
        request = tracing.begin(TraceContext.from_headers({}, root_ratio=ratio))
        request.decoded_ns = time.monotonic_ns()
        queued = _Queued(request.submit(listened_stage, "m/1", time.monotonic()))
        batch = [queued]
        if listened(batch):
            started = time.monotonic()
            times = mark_batch(batch, 1, started, time.monotonic())
            if times is not None:
                times.ended_ns = time.monotonic_ns()
        request.resumed_ns = request.encoded_ns = time.monotonic_ns()
        tracing.finish(request, request_id="r-1", model="m", version="1", status=200,
                       request_bytes=100, response_bytes=100, duration_s=0.001,
                       transport="http")  # fmt: skip

    costs: dict[str, list[float]] = {name: [] for name in CONFIGS}
    for _ in range(rounds):
        for name, tracing in tracers.items():
            began = time.process_time()
            for _ in range(count):
                one(tracing)
            costs[name].append(1e6 * (time.process_time() - began) / count)
    base = statistics.median(costs["off"])
    print("the hooks alone, in-process, CPU us per request (median of rounds):")
    for name, values in costs.items():
        cost = statistics.median(values)
        print(f"  {name:8s} {cost:7.2f} us  ({cost - base:+.2f} us vs off)")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument(
        "--configs", default=",".join(CONFIGS), help="which, comma-separated (off always runs)"
    )
    parser.add_argument("--hooks-only", action="store_true", help="only the in-process part")
    args = parser.parse_args()
    hook_costs(args.rounds)
    if args.hooks_only:
        return 0
    names = ["off", *(n for n in args.configs.split(",") if n in CONFIGS and n != "off")]
    sink = ThreadingHTTPServer(("127.0.0.1", 0), _Sink)
    threading.Thread(target=sink.serve_forever, daemon=True).start()
    otlp = f"http://127.0.0.1:{sink.server_address[1]}/v1/traces"
    print(f"cores: {os.cpu_count()}; {args.rounds} rounds of {args.duration:g} s", end="")
    print(f", {args.threads} client threads")
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "models"
        build_repo(repo)
        rates: dict[str, list[float]] = {name: [] for name in names}
        cpus: dict[str, list[float]] = {name: [] for name in names}
        for round_ in range(args.rounds):
            for name in names:
                sample, ratio = CONFIGS[name]
                rate, cpu_us = measure(repo, sample, otlp, ratio, args)
                rates[name].append(rate)
                cpus[name].append(cpu_us)
                print(
                    f"round {round_ + 1} {name:8s} {rate:9.1f} req/s {cpu_us:8.1f} us CPU/req",
                    flush=True,
                )
    base_rate, base_cpu = statistics.median(rates["off"]), statistics.median(cpus["off"])
    print(f"\n{'config':8s} {'req/s':>9s} {'vs off':>7s} {'CPU us/req':>11s} {'vs off':>7s}")
    for name in names:
        rate, cpu = statistics.median(rates[name]), statistics.median(cpus[name])
        print(f"{name:8s} {rate:9.1f} {rate / base_rate:7.3f} {cpu:11.1f} {cpu / base_cpu:7.3f}")
    # each round's ratio to the "off" server of the same round: what drifts between rounds
    # (other load on the box) cancels out
    print("\nmedian of the per-round ratios to off (paired):")
    for name in names[1:]:
        cpu = statistics.median(c / b for c, b in zip(cpus[name], cpus["off"], strict=True))
        rate = statistics.median(r / b for r, b in zip(rates[name], rates["off"], strict=True))
        print(f"{name}: {(cpu - 1) * 100:+.1f} % server CPU per request, ", end="")
        print(f"{(rate - 1) * 100:+.1f} % req/s")
    print("goal: the sampled default under 5 %")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
