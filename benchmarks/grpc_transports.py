"""REST (binary tensors) vs gRPC vs gRPC with system shared memory, in one run (issue #16).

One `torchrig serve` process serves two workloads: the demo ranker at 1 row per request, and
8 uint8 frames of 224x224x3 per request (a nearly free model, so that what is measured is
moving and decoding the tensors). Each transport is driven by Triton's own client
(tritonclient.http with binary data, tritonclient.grpc with raw contents, and
tritonclient.grpc with the input and output in registered POSIX shared-memory regions),
`-c` client threads each sending requests back to back, arms interleaved over `--rounds`.
Figures are medians over rounds: requests/s and the server's own CPU time per request
(user + system of all its threads, from /proc), with the ratio to REST binary. A third row,
`live`, times a no-op call on each transport (GET /v2/health/live, gRPC ServerLive): the
floor each transport's server machinery costs before any tensor is touched. The server
runs with OMP_NUM_THREADS=1 (see `start_server`). `--baseline TREE` serves a second
server from another source tree (e.g. `git archive <commit> | tar -x -C TREE`) with its arms
interleaved with this tree's, for before/after ratios measured in the same run.

On a small machine the clients share the cores with the server, so requests/s say little
about the server alone; CPU per request is the figure that carries over to a big machine.
Goals: gRPC >= REST binary on both workloads; shared memory at most half of gRPC's (and
REST's) CPU per request for the frames.

Run: `python benchmarks/grpc_transports.py [--rounds 3] [--duration 4] [-c 4] [--baseline TREE]`
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

FRAMES = 8
SHAPE = (224, 224, 3)
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from serve_compare import free_port, stop, wait_ready  # noqa: E402 (the scripts beside this one)
from serve_frames import build_repository  # noqa: E402


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process, all its threads (/proc/PID/stat, clock ticks)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def workload_arrays(workload: str) -> dict[str, tuple[np.ndarray, str]]:
    rng = np.random.default_rng(0)
    if workload == "ranker":
        return {
            "dense": (rng.standard_normal((1, 13)).astype(np.float32), "FP32"),
            "sparse": (rng.integers(0, 1000, (1, 26)).astype(np.int64), "INT64"),
        }
    return {"frames": (rng.integers(0, 255, (FRAMES, *SHAPE), dtype=np.uint8), "UINT8")}


OUTPUT = {"ranker": ("probability", 4), "frames": ("pixel", FRAMES * 3 * 4)}
# "live": a no-op call (GET /v2/health/live, gRPC ServerLive): each transport's own floor
WORKLOADS = ("live", "ranker", "frames")
ARMS = {
    "live": ["rest", "grpc"],
    "ranker": ["rest", "grpc", "grpc+shm"],
    "frames": ["rest", "grpc", "grpc+shm"],
}


def make_sender(arm: str, workload: str, http_url: str, grpc_target: str) -> Callable[[], Any]:
    """A function sending one request of `workload` over `arm` (its own client)."""
    import tritonclient.grpc as tgrpc
    import tritonclient.http as thttp

    if workload == "live":
        client: Any = (
            thttp.InferenceServerClient(http_url)
            if arm == "rest"
            else tgrpc.InferenceServerClient(grpc_target)
        )
        return client.is_server_live
    arrays = workload_arrays(workload)
    output_name, output_bytes = OUTPUT[workload]
    if arm == "rest":
        client = thttp.InferenceServerClient(http_url)
        inputs = []
        for name, (array, datatype) in arrays.items():
            tensor = thttp.InferInput(name, list(array.shape), datatype)
            tensor.set_data_from_numpy(array, binary_data=True)
            inputs.append(tensor)
        outputs = [thttp.InferRequestedOutput(output_name, binary_data=True)]
        return lambda: client.infer(workload, inputs, outputs=outputs).as_numpy(output_name)
    client = tgrpc.InferenceServerClient(grpc_target)
    inputs = []
    outputs = [tgrpc.InferRequestedOutput(output_name)]
    if arm == "grpc":
        for name, (array, datatype) in arrays.items():
            tensor = tgrpc.InferInput(name, list(array.shape), datatype)
            tensor.set_data_from_numpy(array)
            inputs.append(tensor)
        return lambda: client.infer(workload, inputs, outputs=outputs).as_numpy(output_name)
    import tritonclient.utils.shared_memory as shm

    tag = secrets.token_hex(4)
    total = sum(array.nbytes for array, _ in arrays.values())
    region_in = shm.create_shared_memory_region(f"in{tag}", f"/bench_in_{tag}", total)
    region_out = shm.create_shared_memory_region(f"out{tag}", f"/bench_out_{tag}", output_bytes)
    shm.set_shared_memory_region(region_in, [array for array, _ in arrays.values()])
    client.register_system_shared_memory(f"in{tag}", f"/bench_in_{tag}", total)
    client.register_system_shared_memory(f"out{tag}", f"/bench_out_{tag}", output_bytes)
    offset = 0
    for name, (array, datatype) in arrays.items():
        tensor = tgrpc.InferInput(name, list(array.shape), datatype)
        tensor.set_shared_memory(f"in{tag}", array.nbytes, offset=offset)
        offset += array.nbytes
        inputs.append(tensor)
    outputs[0].set_shared_memory(f"out{tag}", output_bytes)
    REGIONS.extend([region_in, region_out])
    return lambda: client.infer(workload, inputs, outputs=outputs)


REGIONS: list[Any] = []


def run_arm(
    arm: str, workload: str, pid: int, urls: tuple[str, str], args: argparse.Namespace
) -> tuple[float, float]:
    """(requests/s, server CPU ms per request) of `args.concurrency` threads for a while."""
    counts = [0] * args.concurrency
    stop_at: list[float] = []
    ready = threading.Barrier(args.concurrency + 1)
    go = threading.Barrier(args.concurrency + 1)

    def loop(index: int) -> None:
        # tritonclient.http's connections belong to the thread that made them (gevent)
        send = make_sender(arm, workload, *urls)
        send()  # warm the connection up
        ready.wait()
        go.wait()
        while time.perf_counter() < stop_at[0]:
            send()
            counts[index] += 1

    threads = [threading.Thread(target=loop, args=(i,)) for i in range(args.concurrency)]
    for thread in threads:
        thread.start()
    ready.wait()  # every client connected and warmed up
    cpu0, t0 = cpu_seconds(pid), time.perf_counter()
    stop_at.append(t0 + args.duration)
    go.wait()
    for thread in threads:
        thread.join()
    elapsed, cpu = time.perf_counter() - t0, cpu_seconds(pid) - cpu0
    requests = sum(counts)
    return requests / elapsed, 1000 * cpu / requests


def start_server(
    repo: Path, tmp: Path, name: str, source: str | None
) -> tuple[subprocess.Popen[bytes], tuple[str, str], Path]:
    """A `torchrig serve` process (from `source`/src when given), ready; its URLs and log."""
    port, grpc_port = free_port(), free_port()
    log = tmp / f"server-{name}.log"
    command = [sys.executable, "-m", "torchrig", "serve", str(repo), "--port", str(port)]
    command += ["--grpc-port", str(grpc_port), "--log-format", "text", "--log-level", "warning"]
    # one intra-op thread: on a small shared box, torch's idle threads spin-waiting on a
    # core another process holds add CPU time that has nothing to do with the transport
    environ = {**os.environ, "OMP_NUM_THREADS": "1"}
    if source is not None:
        environ["PYTHONPATH"] = str(Path(source).resolve() / "src")
    server = subprocess.Popen(
        command,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
        env=environ,
    )
    wait_ready(server, f"http://127.0.0.1:{port}/v2/health/ready", 300)
    return server, (f"127.0.0.1:{port}", f"127.0.0.1:{grpc_port}"), log


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=4.0)
    parser.add_argument("-c", "--concurrency", type=int, default=4)
    parser.add_argument(
        "--baseline",
        metavar="SOURCE_TREE",
        help="also serve from this source tree (e.g. `git archive <commit>` extracted) and "
        "interleave its arms with this tree's, for before/after figures from one run",
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    from torchrig.demo import build_demo_repository

    servers: dict[str, tuple[subprocess.Popen[bytes], tuple[str, str], Path]] = {}
    with tempfile.TemporaryDirectory(prefix="torchrig-grpc-bench-") as tmp:
        repo = Path(tmp) / "models"
        build_demo_repository(repo)
        build_repository(repo)
        results: dict[tuple[str, str, str], list[tuple[float, float]]] = {}
        try:
            servers["now"] = start_server(repo, Path(tmp), "now", None)
            if args.baseline:
                servers["before"] = start_server(repo, Path(tmp), "before", args.baseline)
            order = list(servers)
            for round_index in range(args.rounds):
                for workload in WORKLOADS:
                    arms = ARMS[workload] if round_index % 2 == 0 else ARMS[workload][::-1]
                    for arm in arms:
                        for name in order if round_index % 2 == 0 else order[::-1]:
                            server, urls, _ = servers[name]
                            results.setdefault((name, workload, arm), []).append(
                                run_arm(arm, workload, server.pid, urls, args)
                            )
        finally:
            import tritonclient.utils.shared_memory as shm

            for server, _, log in servers.values():
                stop(server)
                if server.returncode not in (0, -signal.SIGINT, None):
                    print(log.read_text()[-3000:], file=sys.stderr)
            for region in REGIONS:
                shm.destroy_shared_memory_region(region)
    report(results, list(servers), args)


def report(
    results: dict[tuple[str, str, str], list[tuple[float, float]]],
    names: list[str],
    args: argparse.Namespace,
) -> None:
    print(
        f"{args.rounds} rounds of {args.duration:.0f} s, {args.concurrency} client threads, "
        f"{os.cpu_count()} cores, server OMP_NUM_THREADS=1; medians; x REST: against REST "
        "binary of the same server"
        + ("; x before: against the baseline tree" if len(names) > 1 else "")
    )
    head = f"{'server':6} {'workload':8} {'transport':9} {'req/s':>9} {'x REST':>7}"
    head += f" {'CPU ms/req':>11} {'x REST':>7}"
    print(head + (f" {'x before':>9}" if len(names) > 1 else ""))
    for workload in WORKLOADS:
        for name in names:
            base_rate = statistics.median(r for r, _ in results[(name, workload, "rest")])
            base_cpu = statistics.median(c for _, c in results[(name, workload, "rest")])
            for arm in ARMS[workload]:
                rate = statistics.median(r for r, _ in results[(name, workload, arm)])
                cpu = statistics.median(c for _, c in results[(name, workload, arm)])
                line = (
                    f"{name:6} {workload:8} {arm:9} {rate:9.1f} {rate / base_rate:7.2f} "
                    f"{cpu:11.3f} {cpu / base_cpu:7.2f}"
                )
                if len(names) > 1:
                    before = statistics.median(c for _, c in results[("before", workload, arm)])
                    line += f" {cpu / before:9.2f}"
                print(line)


if __name__ == "__main__":
    main()
