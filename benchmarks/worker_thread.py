"""The packed demo ranker called in the main thread vs in a worker thread.

The runtime runs models in worker threads; on this CPU box a torch program with more
than one intra-op thread runs markedly slower there than in the main thread. Prints the
median µs per call of each, at batch 64, for the torch thread count given.

Run: `python benchmarks/worker_thread.py [--threads 2] [--calls 1000] [--runs 3]`
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import torch

from torchrig.demo import build_demo_repository
from torchrig.packaging import load_program, read_manifest


def per_call_us(program: Any, inputs: dict[str, Any], calls: int) -> float:
    with torch.inference_mode():
        for _ in range(50):
            program(inputs)
        start = time.perf_counter()
        for _ in range(calls):
            program(inputs)
    return (time.perf_counter() - start) / calls * 1e6


def in_thread(program: Any, inputs: dict[str, Any], calls: int) -> float:
    result: list[float] = []
    worker = threading.Thread(target=lambda: result.append(per_call_us(program, inputs, calls)))
    worker.start()
    worker.join()
    return result[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        repo = build_demo_repository(Path(tmp) / "repo")
        directory = repo / "ranker" / "1"
        program = load_program(directory, read_manifest(directory))
        generator = torch.Generator().manual_seed(0)
        inputs = {
            "dense": torch.randn(64, 13, generator=generator),
            "sparse": torch.randint(0, 1000, (64, 26), generator=generator),
        }
        main_us = statistics.median(
            per_call_us(program, inputs, args.calls) for _ in range(args.runs)
        )
        thread_us = statistics.median(
            in_thread(program, inputs, args.calls) for _ in range(args.runs)
        )
    print(f"torch threads {args.threads}; batch 64; median of {args.runs} x {args.calls} calls")
    print(f"main thread:   {main_us:8.0f} us/call")
    print(f"worker thread: {thread_us:8.0f} us/call  ({thread_us / main_us:.2f}x the main thread)")


if __name__ == "__main__":
    main()
