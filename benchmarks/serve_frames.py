"""The server's own cost for large binary requests: 8 uint8 frames (8x224x224x3, 1.2 MB) each.

This is the request shape of the GPU target in issue #7, measured on any machine: the
model is nearly free (it reads one pixel per frame), so what is timed is HTTP, reading the
body, decoding the binary tensors, batching and answering. Baseline, in the same run: a
bare ASGI app under the same uvicorn (httptools, uvloop) that reads the whole body and
answers a fixed V2 response, i.e. the floor for moving the bytes. Both are driven by
`torchrig bench --binary --batch 8` at the same concurrency, in alternating rounds; the
figures are medians over rounds and the ratio is torchrig / bare.

On a small machine the load generator shares the cores with the server, so requests/s
say little about the server alone; the server's own CPU time per request (user + system,
all its threads, from /proc) is the figure that carries over to a big GPU machine, where
one server process's CPU is what limits it (issue #7).

Run: `python benchmarks/serve_frames.py [--rounds 3] [--duration 5] [-c 32] [--processes 1]`
(about 1 min with the defaults).
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
from pathlib import Path
from typing import Any

import gpu_throughput  # the scripts beside this one (this directory is on sys.path)
import torch
from bench_ceiling import cpu_seconds
from serve_compare import free_port, wait_ready

FRAMES = 8
WARMUP_S = 1.0
SHAPE = (224, 224, 3)
HERE = Path(__file__).resolve().parent


class Corner(torch.nn.Module):  # type: ignore[misc]
    """uint8 frames [N, 224, 224, 3] -> the first pixel of each, as float: nearly free."""

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return frames[:, 0, 0, :].to(torch.float32)


def build_repository(path: Path, threads: int | None = 1) -> Path:
    from torchrig.packaging import pack
    from torchrig.repository.config import BatchingConfig, ModelConfig

    config = ModelConfig(
        batching=BatchingConfig(max_batch_size=64, max_queue_delay_ms=2.0),
        device="cpu",
        threads=threads,
    )
    example = torch.zeros((2, *SHAPE), dtype=torch.uint8)
    pack(
        Corner(),
        (example,),
        name="frames",
        repository=path,
        version=1,
        input_names=["frames"],
        output_names=["pixel"],
        max_batch_size=64,
        config=config,
    )
    return path


# ---- the bare baseline: an ASGI app that reads the body and answers a fixed response -----

_METADATA = json.dumps(
    {
        "name": "frames",
        "versions": ["1"],
        "platform": "bare",
        "inputs": [{"name": "frames", "datatype": "UINT8", "shape": [-1, *SHAPE]}],
        "outputs": [{"name": "pixel", "datatype": "FP32", "shape": [-1, 3]}],
    }
).encode()
_ANSWER = json.dumps(
    {
        "model_name": "frames",
        "outputs": [
            {"name": "pixel", "datatype": "FP32", "shape": [FRAMES, 3], "data": [0.0] * FRAMES * 3}
        ],
    }
).encode()


async def bare_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Reads every body chunk and joins them (one copy, as any server must), no decode."""
    if scope["type"] != "http":
        return
    path = scope["path"]
    if scope["method"] == "POST":
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        reply = _ANSWER if body else b"{}"
    elif path == "/v2/models/frames":
        reply = _METADATA
    elif path == "/v2":
        reply = b'{"name": "bare", "version": "0", "extensions": ["binary_tensor_data"]}'
    else:
        reply = b"{}"
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(reply))]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": reply})


# ---- driving -------------------------------------------------------------------------------


def bench(url: str, args: argparse.Namespace) -> dict[str, Any]:
    flags = ["--binary", "--batch", str(FRAMES), "-c", str(args.concurrency)]
    flags += ["--duration", str(args.duration), "--warmup", str(WARMUP_S)]
    flags += ["--processes", str(args.processes)]
    return dict(gpu_throughput.bench(url, *flags, model="frames")["levels"][0])


def start(kind: str, repo: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": f"{HERE}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    if kind == "torchrig":
        command = [sys.executable, "-m", "torchrig", "serve", str(repo), "--port", str(port)]
        command += ["--host", "127.0.0.1", "--log-format", "text"]
        command += ["--grpc-port", "0"]  # gRPC on, as by default, on a free port
    else:
        command = [sys.executable, "-m", "uvicorn", "serve_frames:bare_app", "--port", str(port)]
        command += ["--host", "127.0.0.1", "--loop", "uvloop", "--http", "httptools"]
        command += ["--log-level", "warning", "--no-access-log"]
    return subprocess.Popen(command, stdout=log.open("wb"), stderr=subprocess.STDOUT, env=env)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("-c", "--concurrency", type=int, default=32)
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="the model worker's torch CPU threads (config `threads`); 1 is what a CUDA model "
        "gets by default, 0 leaves torch's count as a CPU model has it",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        holder: list[Path] = []
        worker = threading.Thread(
            target=lambda: holder.append(build_repository(Path(tmp) / "r", args.threads or None))
        )
        worker.start()  # torch work off the main thread (see torchrig.runtime.threads)
        worker.join()
        repo = holder[0]
        figures: dict[str, list[dict[str, Any]]] = {"torchrig": [], "bare": []}
        for _ in range(args.rounds):
            for kind, levels in figures.items():
                port = free_port()
                url = f"http://127.0.0.1:{port}"
                process = start(kind, repo, port, Path(tmp) / f"{kind}.log")
                try:
                    ready = "/v2/health/ready" if kind == "torchrig" else "/v2"
                    wait_ready(process, url + ready, 120)
                    before = cpu_seconds([process.pid])
                    level = bench(url, args)
                    used = cpu_seconds([process.pid]) - before
                    served = level["requests_per_s"] * (args.duration + WARMUP_S)
                    level["server_cpu_ms"] = 1000 * used / served if served else float("nan")
                    levels.append(level)
                finally:
                    process.terminate()
                    process.wait(60)
    megabytes = FRAMES * SHAPE[0] * SHAPE[1] * SHAPE[2] / 1e6
    print(
        f"torch {torch.__version__}; {os.cpu_count()} cores; {FRAMES} uint8 frames "
        f"{'x'.join(map(str, SHAPE))} per request ({megabytes:.2f} MB), binary; "
        f"c={args.concurrency}, {args.processes} load process(es); model worker threads "
        f"{args.threads or 'default'}; {args.rounds} rounds of "
        f"{args.duration:g} s, median"
    )
    print(
        f"{'server':<10} {'req/s':>8} {'MB/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7} "
        f"{'server CPU ms/req':>18}"
    )
    rates: dict[str, float] = {}
    costs: dict[str, float] = {}
    for kind, levels in figures.items():
        rate = statistics.median(level["requests_per_s"] for level in levels)
        rates[kind] = rate
        p50 = statistics.median(level["latency_ms"]["p50"] for level in levels)
        p99 = statistics.median(level["latency_ms"]["p99"] for level in levels)
        errors = sum(level["errors"] for level in levels)
        cpu_ms = statistics.median(level["server_cpu_ms"] for level in levels)
        costs[kind] = cpu_ms
        print(
            f"{kind:<10} {rate:>8,.0f} {rate * megabytes:>8,.0f} {p50:>8.1f} {p99:>8.1f} "
            f"{errors:>7} {cpu_ms:>18.2f}"
        )
    print(
        f"torchrig / bare: {rates['torchrig'] / rates['bare']:.2f} of the requests/s, "
        f"{costs['torchrig'] / costs['bare']:.2f}x the server CPU per request"
    )


if __name__ == "__main__":
    main()
