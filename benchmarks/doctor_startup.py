"""How long the quick doctor takes, for use as a startup probe (target: under 2 s).

Prints the median of several runs of: `import torch` alone (the floor, in a fresh
interpreter), `torchrig doctor --json` end to end (fresh interpreter each time), and
`--deep` once. Run: `python benchmarks/doctor_startup.py [--runs 5]`.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time


def timed(cmd: list[str]) -> tuple[float, int]:
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, check=False)
    return time.perf_counter() - start, proc.returncode


def median_of(cmd: list[str], runs: int) -> tuple[float, list[float], int]:
    times: list[float] = []
    code = 0
    for _ in range(runs):
        elapsed, code = timed(cmd)
        times.append(elapsed)
    return statistics.median(times), times, code


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    py = sys.executable
    floor, floor_all, _ = median_of([py, "-c", "import torch"], args.runs)
    quick, quick_all, code = median_of([py, "-m", "torchrig", "doctor", "--json"], args.runs)
    deep, _, deep_code = median_of([py, "-m", "torchrig", "doctor", "--deep", "--json"], 1)
    print(f"runs per figure: {args.runs} (deep: 1)")
    print(f"{'what':<34}{'median s':>10}   all runs")
    print(
        f"{'python -c import torch':<34}{floor:>10.2f}   {', '.join(f'{t:.2f}' for t in floor_all)}"
    )
    print(
        f"{'torchrig doctor --json':<34}{quick:>10.2f}   {', '.join(f'{t:.2f}' for t in quick_all)}"
        f"   (exit {code})"
    )
    print(f"{'torchrig doctor --deep --json':<34}{deep:>10.2f}   (exit {deep_code})")
    print(
        f"quick doctor / bare torch import: {quick / floor:.2f}x; "
        f"over the floor: {quick - floor:+.2f} s; target < 2 s: {'met' if quick < 2 else 'MISSED'}"
    )


if __name__ == "__main__":
    main()
