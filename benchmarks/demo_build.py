"""How long `build_demo_repository` takes (what `torchrig serve --demo` and many tests wait
for before anything serves).

Prints the median of several builds of the demo repository (ranker and classifier:
torch.export, manifest, golden examples, environment lock) and, as the baseline in the
same run, the median of exporting the same two modules with torch.export alone, the part
no packing can avoid; then their ratio.
Run: `python benchmarks/demo_build.py [--runs 3]`.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from torchrig.demo import build_demo_repository
from torchrig.demo.models import classifier, ranker


def median_s(work: Callable[[], object], runs: int) -> tuple[float, list[float]]:
    timings = []
    for _ in range(runs):
        started = time.perf_counter()
        work()
        timings.append(time.perf_counter() - started)
    return statistics.median(timings), timings


def build() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        build_demo_repository(Path(tmp) / "models")


def export_only() -> None:
    for factory in (ranker, classifier):
        module, example = factory()
        batch = torch.export.Dim("batch", min=1)
        shapes = tuple({0: batch} for _ in example)
        torch.export.export(module.eval(), tuple(example), dynamic_shapes=shapes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    build()  # first-use costs (imports, torch's lazy initialisation) out of the figures
    built, built_all = median_s(build, args.runs)
    exported, exported_all = median_s(export_only, args.runs)
    print(f"runs per figure: {args.runs}")
    print(f"{'what':<36}{'median s':>10}   all runs")
    for name, median, runs in [
        ("build_demo_repository", built, built_all),
        ("torch.export of both (baseline)", exported, exported_all),
    ]:
        print(f"{name:<36}{median:>10.2f}   {', '.join(f'{t:.2f}' for t in runs)}")
    print(f"build / export alone: {built / exported:.2f}x")


if __name__ == "__main__":
    main()
