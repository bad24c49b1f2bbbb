"""Per-call CPU cost of the ways torch can run the demo ranker's exported program, in one
run: what `Program.trace` (packaging/traced.py) buys a small model served on the CPU.

Each way is called with the same inputs (1 torch thread), `--calls` calls per sample,
`--samples` samples interleaved across the ways, in this thread's CPU time (robust to other
work on a shared machine); printed: the median µs per call and the ratio to the exported
module as served before traces (torch.export's unlifted module, per-call guards off).
  eager            the nn.Module itself (not what the server runs: a reference)
  exported         ExportedProgram.module(): pytree + guards + 15 aten ops through Python
  exported-unchecked  the same without the per-call guards (what `load_program` serves)
  traced           torch.jit.trace of the unchecked module
  traced-frozen    the same after torch.jit.freeze (weights folded in as constants; what
                   `Program.trace` serves when it matches exactly)
Every way's answers are compared with the exported module's before timing.

Run: `python benchmarks/program_call.py [--rows 1] [--calls 2000] [--samples 7] [--cold-kb 1024]`
(`--cold-kb`: the caches as a server's request path leaves them between model calls).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch


def per_call_us(call: Callable[[], Any], calls: int, cold: bytearray | None = None) -> float:
    """CPU µs per call; with `cold`, a buffer written through (one byte per cache line)
    before every call, untimed, as a server's request path evicts the model between
    requests."""
    if cold is None:
        started = time.thread_time()
        for _ in range(calls):
            call()
        return (time.thread_time() - started) / calls * 1e6
    spent = 0
    for _ in range(calls):
        for offset in range(0, len(cold), 64):
            cold[offset] ^= 1
        begun = time.thread_time_ns()
        call()
        spent += time.thread_time_ns() - begun
    return spent / calls / 1e3


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--rows", type=int, default=1, help="rows per call (batch size)")
    parser.add_argument("--calls", type=int, default=2000, help="calls per sample")
    parser.add_argument("--samples", type=int, default=7, help="samples per way (median)")
    parser.add_argument(
        "--cold-kb",
        type=int,
        default=0,
        help="write through this many KiB before each call (untimed): the model's caches "
        "as a request path leaves them (the server's case; e.g. 1024)",
    )
    args = parser.parse_args(argv)
    cold = bytearray(args.cold_kb * 1024) if args.cold_kb > 0 else None
    warnings.simplefilter("ignore")  # TorchScript's deprecation notices
    torch.set_num_threads(1)
    from torchrig.demo import DemoRanker, build_demo_repository
    from torchrig.packaging import load_program, read_manifest

    with tempfile.TemporaryDirectory() as work:
        version = build_demo_repository(Path(work) / "repo") / "ranker" / "1"
        manifest = read_manifest(version)
        unchecked = load_program(version, manifest, max_rows=64).module
        exported = torch.export.load(str(version / manifest.program)).module()
    dense, sparse = DemoRanker.example_inputs(max(args.rows, 8), seed=1)
    dense, sparse = dense[: args.rows], sparse[: args.rows]
    with torch.inference_mode():
        traced = torch.jit.trace(unchecked, DemoRanker.example_inputs(8), check_trace=False)
        frozen = torch.jit.freeze(
            torch.jit.trace(unchecked, DemoRanker.example_inputs(8), check_trace=False).eval(),
            optimize_numerics=False,  # as packaging/traced.py freezes
        )
        eager = DemoRanker().eval()
        ways: dict[str, Callable[[], Any]] = {
            "eager": lambda: eager(dense, sparse),
            "exported": lambda: exported(dense, sparse),
            "exported-unchecked": lambda: unchecked(dense, sparse),
            "traced": lambda: traced(dense, sparse),
            "traced-frozen": lambda: frozen(dense, sparse),
        }
        want = exported(dense, sparse)
        for name, call in ways.items():
            for _ in range(3):  # TorchScript optimises after its first runs
                got = call()
            same = "equal" if torch.equal(got, want) else f"max diff {(got - want).abs().max():.2e}"
            print(f"{name:>19}: answers {same} to the exported module's")
        samples: dict[str, list[float]] = {name: [] for name in ways}
        for _ in range(args.samples):
            for name, call in ways.items():
                samples[name].append(per_call_us(call, args.calls, cold))
    base = statistics.median(samples["exported-unchecked"])
    caches = f", {args.cold_kb} KiB written between calls" if cold is not None else ""
    print(f"\ntorch {torch.__version__}, {args.rows} row(s) per call, 1 thread, CPU time{caches}")
    print(f"{'way':>19}  µs/call (median of {args.samples})  vs exported-unchecked")
    for name, values in samples.items():
        median = statistics.median(values)
        print(f"{name:>19}  {median:>10.1f}  {median / base:>10.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
