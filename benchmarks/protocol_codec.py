"""The V2 codec on a ranker-shaped request: µs per decode and per encode, one row.

Requests: 13 dense FP32 + 26 sparse INT64 features, each its own [1, 1] input (DLRM-style
feature inputs), and the same as two inputs (dense [1, 13], sparse [1, 26]) as the demo
ranker takes them; each sent as JSON and as binary. Baseline: `msgspec.json.decode` of the
same JSON (for binary: of the JSON header), i.e. the parse alone with no tensors made.
Response: one FP32 [1, 1] score, as JSON and as binary. Median of runs.

Run: `python benchmarks/protocol_codec.py [--runs 7] [--iterations 2000]`
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import msgspec
import numpy as np
import torch

from torchrig.packaging.manifest import TensorSpec
from torchrig.protocol import decode_infer_request, encode_infer_response


def _tensors(split: bool) -> list[tuple[str, str, Any]]:
    rng = np.random.default_rng(0)
    dense = rng.standard_normal((1, 13)).astype(np.float32)
    sparse = rng.integers(0, 100_000, (1, 26), dtype=np.int64)
    if not split:
        return [("dense", "FP32", dense), ("sparse", "INT64", sparse)]
    return [(f"dense_{i}", "FP32", dense[:, i : i + 1]) for i in range(13)] + [
        (f"sparse_{i}", "INT64", sparse[:, i : i + 1]) for i in range(26)
    ]


def request_body(split: bool, binary: bool) -> tuple[bytes, int | None]:
    inputs: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    for name, datatype, array in _tensors(split):
        entry: dict[str, Any] = {"name": name, "datatype": datatype, "shape": list(array.shape)}
        if binary:
            entry["parameters"] = {"binary_data_size": array.nbytes}
            blobs.append(np.ascontiguousarray(array).tobytes())
        else:
            entry["data"] = array.ravel().tolist()
        inputs.append(entry)
    header = msgspec.json.encode({"id": "1", "inputs": inputs})
    return header + b"".join(blobs), (len(header) if binary else None)


def median_us(function: Callable[[], Any], runs: int, iterations: int) -> float:
    for _ in range(iterations // 10):
        function()
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        for _ in range(iterations):
            function()
        samples.append((time.perf_counter() - start) / iterations * 1e6)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--iterations", type=int, default=2000)
    args = parser.parse_args()
    torch.set_num_threads(1)

    print(f"{'request':<34} {'bytes':>6} {'decode µs':>10} {'msgspec µs':>11} {'ratio':>6}")
    for split in (True, False):
        for binary in (False, True):
            body, header_length = request_body(split, binary)
            header = body if header_length is None else body[:header_length]
            ours = median_us(
                lambda body=body, header_length=header_length: decode_infer_request(
                    body, header_length=header_length, max_body_bytes=1 << 20
                ),
                args.runs,
                args.iterations,
            )
            base = median_us(
                lambda header=header: msgspec.json.decode(header), args.runs, args.iterations
            )
            label = f"{'13+26 inputs of [1,1]' if split else 'dense [1,13] + sparse [1,26]'}"
            label += " binary" if binary else " JSON"
            print(f"{label:<34} {len(body):>6} {ours:>10.1f} {base:>11.1f} {ours / base:>6.1f}")

    specs = [TensorSpec(name="score", datatype="FP32", shape=[-1, 1])]
    outputs = {"score": torch.tensor([[0.73]])}
    print(f"\n{'response':<34} {'bytes':>6} {'encode µs':>10}")
    for binary in (False, True):

        def encode(binary: bool = binary) -> tuple[bytes, dict[str, str]]:
            return encode_infer_response(
                model_name="ranker",
                model_version="1",
                request_id="1",
                outputs=outputs,
                specs=specs,
                requested=None,
                binary_output_default=binary,
            )

        size = len(encode()[0])
        us = median_us(encode, args.runs, args.iterations)
        print(f"{'score [1,1] ' + ('binary' if binary else 'JSON'):<34} {size:>6} {us:>10.1f}")


if __name__ == "__main__":
    main()
