"""CPU time to deserialize and decode one ModelInfer request, in-process (issue #16).

Two ways for the same serialized requests (the benchmark workloads of
`grpc_transports.py`: the demo ranker at 1 row, 8 uint8 frames of 224x224x3): the
generated parser on the whole message, its raw contents then read from the message (what
ModelInfer did before, two copies of each raw input), and `parse_infer_request`, which
views the raw contents where they lie and parses only the other fields. Each figure is the
median over rounds of the process CPU time per request; the ratio is split / whole. CPU
time, not wall time, so that other jobs on a shared machine barely move it.

Run: `python benchmarks/grpc_decode.py [--rounds 7]`
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np

from torchrig.packaging.manifest import TensorSpec
from torchrig.runtime.validation import check_declared
from torchrig.server.grpc.codec import decode_request
from torchrig.server.grpc.generated import grpc_service_pb2 as pb
from torchrig.server.grpc.raw_contents import parse_infer_request


def workloads() -> dict[str, dict[str, tuple[np.ndarray, str]]]:
    rng = np.random.default_rng(0)
    return {
        "ranker": {
            "dense": (rng.standard_normal((1, 13)).astype(np.float32), "FP32"),
            "sparse": (rng.integers(0, 1000, (1, 26)).astype(np.int64), "INT64"),
        },
        "frames": {
            "frames": (rng.integers(0, 255, (8, 224, 224, 3), dtype=np.uint8), "UINT8"),
        },
    }


def cpu_us(work: Callable[[], Any], calls: int) -> float:
    work()
    start = time.process_time()
    for _ in range(calls):
        work()
    return (time.process_time() - start) / calls * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    print(f"{args.rounds} rounds; medians of CPU us per request; ratio split / whole")
    print(f"{'workload':8} {'whole':>9} {'split':>9} {'ratio':>7}")
    for name, arrays in workloads().items():
        request = pb.ModelInferRequest(model_name=name)
        for input_name, (array, datatype) in arrays.items():
            request.inputs.add(name=input_name, datatype=datatype, shape=list(array.shape))
            request.raw_input_contents.append(array.tobytes())
        wire = request.SerializeToString()
        specs = [
            TensorSpec(name=k, datatype=d, shape=[-1, *a.shape[1:]]) for k, (a, d) in arrays.items()
        ]
        accept = partial(check_declared, f"{name}/1", specs, max_batch_size=64, dynamic=())

        def whole(wire: bytes = wire, accept: Any = accept) -> Any:
            message = pb.ModelInferRequest.FromString(wire)
            return decode_request(message, accept=accept, max_body_bytes=1 << 30)

        def split(wire: bytes = wire, accept: Any = accept) -> Any:
            call = parse_infer_request(wire)
            return decode_request(
                call.request, accept=accept, max_body_bytes=1 << 30, raw_contents=call.raw
            )

        calls = 20_000 if len(wire) < 65536 else 300
        rounds: dict[str, list[float]] = {"whole": [], "split": []}
        for _ in range(args.rounds):
            rounds["whole"].append(cpu_us(whole, calls))
            rounds["split"].append(cpu_us(split, calls))
        before, after = (statistics.median(rounds[k]) for k in ("whole", "split"))
        print(f"{name:8} {before:9.1f} {after:9.1f} {after / before:7.2f}")


if __name__ == "__main__":
    main()
