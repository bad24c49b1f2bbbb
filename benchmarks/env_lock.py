"""How long `torchrig env` takes: the snapshot end to end, and the diff in-process.

Prints the median of several runs of:
- `python -c "import torch"` (the floor, fresh interpreter each time) beside
  `torchrig env snapshot -o FILE` end to end (fresh interpreter each time; target < 2 s);
- `msgspec.json.decode` of one lock (the floor) beside `envlock.load_lock` of both lock
  files and `envlock.diff()` of the two loaded locks (target < 100 ms).
The two locks are real: one taken live by the snapshot runs, the other the same lock with
another torch minor, another numpy major and some distributions changed, added and removed.
Run: `python benchmarks/env_lock.py [--runs 5] [--inner-runs 50]`.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import msgspec
from packaging.version import Version

from torchrig.envlock import Distribution, EnvLock, diff, load_lock, write_lock

ADDED = (
    Distribution(name="accelerate", version="1.2.1", installer="pip", source="index"),
    Distribution(name="safetensors", version="0.4.5", installer="pip", source="index"),
    Distribution(name="transformers", version="4.47.1", installer="pip", source="index"),
)


def timed_process(cmd: list[str]) -> float:
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, check=False)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stderr.decode()}")
    return elapsed


def timed_calls(call: Callable[[], object], runs: int) -> list[float]:
    times: list[float] = []
    for _ in range(runs):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return times


def _next_minor(version: str) -> str:
    release, _, local = version.partition("+")
    parsed = Version(release)
    bumped = f"{parsed.major}.{parsed.minor + 1}.0"
    return f"{bumped}+{local}" if local else bumped


def _other_major(version: str) -> str:
    return "1.26.4" if Version(version.partition("+")[0]).major >= 2 else "2.1.3"


def _drifted(position: int, dist: Distribution) -> Distribution | None:
    """`dist` as the drifted environment has it; None where it was removed."""
    if dist.name == "numpy":
        return msgspec.structs.replace(dist, version=_other_major(dist.version))
    if dist.name == "torch":
        return msgspec.structs.replace(dist, version=_next_minor(dist.version))
    if position % 7 == 3:
        return None
    if position % 5 == 1:
        return msgspec.structs.replace(dist, version=dist.version + ".post1")
    return dist


def edited(lock: EnvLock) -> EnvLock:
    """The lock of a drifted environment: torch minor, numpy major, packages changed."""
    snapshot = lock.snapshot
    python = msgspec.structs.replace(snapshot.python, executable="/opt/other-venv/bin/python")
    snapshot = msgspec.structs.replace(snapshot, python=python, taken_at="2030-01-01T00:00:00Z")
    if snapshot.torch is not None:
        torch = msgspec.structs.replace(snapshot.torch, version=_next_minor(snapshot.torch.version))
        snapshot = msgspec.structs.replace(snapshot, torch=torch)
    packages = [
        drifted
        for position, dist in enumerate(lock.packages)
        if (drifted := _drifted(position, dist)) is not None
    ]
    if not any(d.name == "numpy" for d in packages):
        packages.append(Distribution(name="numpy", version="1.26.4", source="index"))
    present = {d.name for d in packages}
    packages.extend(d for d in ADDED if d.name not in present)
    packages.sort(key=lambda d: d.name)
    return msgspec.structs.replace(lock, snapshot=snapshot, packages=packages)


def _row(what: str, times: list[float], unit: str, extra: str = "") -> str:
    scale = 1000.0 if unit == "ms" else 1.0
    runs = ", ".join(f"{t * scale:.2f}" for t in times[:8]) + (" …" if len(times) > 8 else "")
    median = statistics.median(times) * scale
    return f"{what:<40}{median:>10.2f} {unit:<3}  {runs}{extra}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5, help="fresh-interpreter runs per figure")
    parser.add_argument("--inner-runs", type=int, default=50, help="in-process runs per figure")
    args = parser.parse_args()
    py = sys.executable
    with tempfile.TemporaryDirectory(prefix="torchrig-bench-") as tmp:
        live, drifted = Path(tmp) / "live.json", Path(tmp) / "drifted.json"
        floor_times: list[float] = []
        snapshot_times: list[float] = []
        for _ in range(args.runs):  # interleaved, so that load drift hits both alike
            floor_times.append(timed_process([py, "-c", "import torch"]))
            snapshot_times.append(
                timed_process([py, "-m", "torchrig", "env", "snapshot", "-o", str(live)])
            )
        write_lock(edited(load_lock(live)), drifted)

        raw = live.read_bytes()
        decode_times = timed_calls(lambda: msgspec.json.decode(raw), args.inner_runs)
        load_times = timed_calls(lambda: (load_lock(live), load_lock(drifted)), args.inner_runs)
        a, b = load_lock(live), load_lock(drifted)
        start = time.perf_counter()
        report = diff(a, b)  # the first call imports the rules' lazy dependencies
        first_diff = time.perf_counter() - start
        diff_times = timed_calls(lambda: diff(a, b), args.inner_runs)

    floor, snap = statistics.median(floor_times), statistics.median(snapshot_times)
    decode, load = statistics.median(decode_times), statistics.median(load_times)
    compare = statistics.median(diff_times)
    print(
        f"runs per figure: {args.runs} (fresh interpreter), {args.inner_runs} (in-process); "
        f"lock: {len(raw)} bytes, {len(a.packages)} distributions"
    )
    print(f"{'what':<40}{'median':>10}       runs")
    print(_row("python -c 'import torch'", floor_times, "s"))
    print(_row("torchrig env snapshot -o FILE", snapshot_times, "s"))
    print(_row("msgspec.json.decode(one lock)", decode_times, "ms"))
    print(_row("load_lock(A) + load_lock(B)", load_times, "ms"))
    print(
        _row(
            "envlock.diff(A, B)",
            diff_times,
            "ms",
            f"   ({report.breaking} breaking, {report.risky} risky, {report.info} info)",
        )
    )
    print(_row("envlock.diff(A, B), first call", [first_diff], "ms"))
    print(
        f"snapshot / bare torch import: {snap / floor:.2f}x; over the floor: {snap - floor:+.2f} s;"
        f" target < 2 s: {'met' if snap < 2 else 'MISSED'}"
    )
    print(
        f"diff / decode of one lock: {compare / decode:.1f}x; "
        f"load of both / decode of one: {load / decode:.1f}x; "
        f"diff target < 100 ms: {'met' if compare < 0.1 else 'MISSED'}"
    )


if __name__ == "__main__":
    main()
