"""The standard images' size, build time (cold and with the layer cache) and serve start-up.

Each image is locked, rendered and built with torchrig's own commands and buildah, on the
Debian 12 base the image tests use (made with mmdebstrap), in a storage of its own:
- cold: an empty image storage holding only the base (every layer built, every package
  downloaded: the images install with pip's cache off);
- cached: the same context built again with a new creation date, as a nightly rebuild
  does (the build stages come from the layer cache; the final stage's labels change);
- size: the built image as the engine stores it;
- run -> ready (serve): `podman run` to the first 200 of /v2/health/ready from the host,
  median of --runs starts (the entrypoint's doctor, import, load and warm-up of the demo
  models, which the image packs itself).

Run as root with buildah, podman and mmdebstrap installed:
`python benchmarks/image_build.py [--flavours serve,dev] [--cuda] [--runs 3]`
(about 15 min for the two CPU images; `--cuda` adds the CUDA 13.0 runtime image, ~10 min).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
import torch

import oci  # the image tests' engine set-up: one place for it
from torchrig.image.container import engineer
from torchrig.image.engine import find_engine
from torchrig.image.verify import make_demo_repository

CPU_TORCH = torch.__version__.split("+", 1)[0]


def _timed(engines: oci.Engines, *args: str) -> float:
    start = time.monotonic()
    proc = engines.torchrig(*args, timeout_s=3600)
    if proc.returncode != 0:
        raise SystemExit(f"torchrig {' '.join(args)} failed:\n{proc.stderr[-2000:]}")
    return time.monotonic() - start


def _ready_after_run(engines: oci.Engines, tag: str, repo: Path) -> float:
    start = time.monotonic()
    container = engines.run(
        "podman",
        "run",
        "--detach",
        "--no-healthcheck",
        "--publish",
        "127.0.0.1::8000",
        "--volume",
        f"{repo}:/models:ro",
        tag,
    ).strip()
    try:
        port = engines.run("podman", "port", container, "8000/tcp").strip().rsplit(":", 1)[1]
        while time.monotonic() - start < 300:
            try:
                url = f"http://127.0.0.1:{port}/v2/health/ready"
                with urllib.request.urlopen(url, timeout=2) as answer:
                    if answer.status == 200:
                        return time.monotonic() - start
            except OSError:
                pass
            time.sleep(0.05)
        raise SystemExit(f"{tag} was not ready within 300 s")
    finally:
        engines.run("podman", "rm", "--force", container, check=False)


def measure(engines: oci.Engines, work: Path, flavour: str, cuda: str, runs: int) -> dict:
    torch_version = CPU_TORCH if cuda == "cpu" else "2.14.1"
    pattern = f"torch-{CPU_TORCH}+cpu-cp311-*.whl" if cuda == "cpu" else "torch-2.14.1-cp311-*.whl"
    wheelhouse = oci.wheelhouse_with(pattern)
    spec = ["--torch", torch_version, "--cuda", cuda, "--flavour", flavour, "--python", "3.11"]
    constraints = work / f"{flavour}-{cuda}.txt"
    _timed(engines, "image", "lock", *spec, "-o", str(constraints))
    context = work / f"{flavour}-{cuda}-context"
    render = [
        "image",
        "render",
        *spec,
        "--python-source",
        "distro",
        "--base",
        oci.BASE_IMAGE,
        "--constraints",
        str(constraints),
        "-o",
        str(context),
    ]
    build_args: list[str] = []
    if wheelhouse is not None:
        render += ["--wheelhouse", str(wheelhouse)]
        build_args = ["--build-arg", "TORCH_INDEX_URL="]
    _timed(engines, *render)
    tag = f"localhost/pytorch:bench-{flavour}-{cuda.replace('.', '')}"
    build = ["image", "build", str(context), "--tag", tag, "--engine", "buildah", *build_args]
    cold = _timed(engines, *build)
    cached = _timed(engines, *build)
    size = int(engines.run("podman", "image", "inspect", "--format", "{{.Size}}", tag).strip())
    row = {
        "image": f"{flavour} ({cuda})",
        "size_mb": size / 1e6,
        "cold_s": cold,
        "cached_s": cached,
    }
    if flavour == "serve":
        os.environ.update(engines.env)  # the engine configuration for torchrig's own runner
        with engineer(find_engine("podman", purpose="run")) as runner:
            repo = make_demo_repository(runner, tag, work / "models")
        times = [_ready_after_run(engines, tag, repo) for _ in range(runs)]
        row["ready_s"] = statistics.median(times)
        row["ready_runs"] = times
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flavours", default="serve,dev")
    parser.add_argument("--cuda", action="store_true", help="also the CUDA 13.0 runtime image")
    parser.add_argument("--runs", type=int, default=3, help="serve starts for run -> ready")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="torchrig-image-bench-") as tmp:
        # a storage of its own, so "cold" means an empty layer cache
        os.environ["TORCHRIG_TEST_CONTAINERS"] = str(Path(tmp) / "containers")
        base_tar = Path("/var/tmp/torchrig-image-tests/base-bookworm.tar")
        (Path(tmp) / "containers").mkdir()
        if base_tar.is_file():  # the tests' base tarball: mmdebstrap is not what is timed
            (Path(tmp) / "containers" / base_tar.name).symlink_to(base_tar)
        engines = oci.prepare_engines()
        work = Path(tmp) / "work"
        work.mkdir()
        rows = [measure(engines, work, f, "cpu", args.runs) for f in args.flavours.split(",")]
        if args.cuda:
            rows.append(measure(engines, work, "runtime", "13.0", args.runs))
    print(f"storage driver: {engines.driver}; torch {CPU_TORCH} (CPU images), 2.14.1 (CUDA)")
    print(
        f"{'image':<22}{'size MB':>10}{'cold build s':>14}{'cached build s':>16}"
        f"{'run->ready s':>14}"
    )
    for row in rows:
        ready = f"{row['ready_s']:.1f}" if "ready_s" in row else "-"
        print(
            f"{row['image']:<22}{row['size_mb']:>10.0f}{row['cold_s']:>14.1f}"
            f"{row['cached_s']:>16.1f}{ready:>14}"
        )
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
