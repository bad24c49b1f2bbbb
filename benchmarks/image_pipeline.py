"""Images/s from JPEG bytes to class scores: the server's image pipeline against a loop.

The model is ResNet-50 (random weights; torchvision's when it imports, else the same
network from tests/models_zoo.py), packed with the image pipeline of config.toml:
decode, shorter side to --resize, center crop --side, CHW FP32, ImageNet normalisation,
softmax and top-5 with labels. The JPEGs are made here (640x480 photo-like frames).

- server: `torchrig serve` in its own process (CPU); --concurrency client threads each
  send one JPEG per request over REST (tritonclient.http, binary BYTES); the server
  batches them and runs the steps per batch in its worker thread.
- loop (the baseline): the same work in a plain Python loop in this process: per image,
  PIL decode, resize, crop, normalise, the model on a batch of one, softmax, top-5.
- loop batched (a second baseline, what batching alone gives): the same loop running the
  model on --concurrency images at a time.

Rounds alternate; the figures are medians over rounds; the ratios are server / loop and
server / loop batched. All use the same torch thread count (--threads; the server's model
gets it via config.toml).
CPU ms per image (the server process's, from /proc; the loop's own) is printed too: on a
shared machine images/s follow the other load, CPU time per image much less.

GPU variant (for the GPU check script): `python benchmarks/image_pipeline.py --device cuda`
serves with device = "cuda": with torchvision importable, the JPEGs of a batch are decoded
together by nvJPEG (`torchvision.io.decode_jpeg` on a list, on the GPU), resized and
normalised there; the loop baselines still decode with PIL and run the model on the GPU.

Run: `python benchmarks/image_pipeline.py [--rounds 3] [--images 32] [-c 8]` (about 5 min
on 2 cores with the defaults).
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))

from bench_ceiling import cpu_seconds  # noqa: E402  (beside this script)
from serve_compare import free_port, stop, wait_ready  # noqa: E402  (beside this script)

from models_zoo import resnet50  # noqa: E402  (tests/models_zoo.py)

MEAN = [0.485, 0.456, 0.406]
STD = [0.229, 0.224, 0.225]
MEAN_CHW = torch.tensor(MEAN).reshape(3, 1, 1)
STD_CHW = torch.tensor(STD).reshape(3, 1, 1)


def frame(seed: int, width: int = 640, height: int = 480) -> bytes:
    """A photo-like JPEG: smooth structure plus sensor-like noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    channels = [
        128
        + 100
        * np.sin(x / rng.uniform(20, 80) + rng.uniform(0, 6))
        * np.cos(y / rng.uniform(20, 80))
        for _ in range(3)
    ]
    pixels = np.stack(channels, axis=-1) + rng.normal(0, 8, (height, width, 3))
    buffer = io.BytesIO()
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(buffer, "JPEG", quality=85)
    return buffer.getvalue()


def build(repo: Path, args: argparse.Namespace) -> None:
    from torchrig.packaging import pack

    torch.manual_seed(0)
    module = resnet50().eval()
    pack(
        module,
        (torch.randn(2, 3, args.side, args.side),),
        name="resnet50",
        repository=repo,
        version=1,
        max_batch_size=64,
        golden_examples=0,
        output_names=["logits"],
        labels={"": [f"class-{i}" for i in range(1000)]},
    )
    (repo / "resnet50" / "config.toml").write_text(
        f'device = "{args.device}"\nthreads = {args.threads}\n\n'
        f"[batching]\nmax_batch_size = {args.concurrency}\n\n"
        f'[[preprocess]]\nstep = "image"\nresize = {args.resize}\ncenter_crop = {args.side}\n'
        f"mean = {MEAN}\nstd = {STD}\n\n"
        '[[postprocess]]\nstep = "softmax"\n\n'
        '[[postprocess]]\nstep = "top_k"\nk = 5\ninto = "classes"\n'
    )


def prepare(data: bytes, args: argparse.Namespace) -> torch.Tensor:
    """The PIL steps of one image, as a loop would write them: CHW FP32, normalised."""
    image = Image.open(io.BytesIO(data)).convert("RGB")
    width, height = image.size
    scale = args.resize / min(width, height)
    image = image.resize((int(width * scale), int(height * scale)), Image.Resampling.BILINEAR)
    left, top = (image.width - args.side) // 2, (image.height - args.side) // 2
    image = image.crop((left, top, left + args.side, top + args.side))
    x = torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1).float() / 255.0
    return (x - MEAN_CHW) / STD_CHW


def loop(
    module: torch.nn.Module, images: list[bytes], args: argparse.Namespace, batch: int = 1
) -> float:
    """Images/s of a plain loop: the PIL steps, then the model on `batch` images at a time."""
    device = torch.device(args.device)
    started = time.perf_counter()
    for start in range(0, len(images), batch):
        x = torch.stack([prepare(data, args) for data in images[start : start + batch]])
        with torch.inference_mode():
            probabilities = torch.softmax(module(x.to(device)), dim=1)
            torch.topk(probabilities, 5, dim=1)
        probabilities.cpu()
    return len(images) / (time.perf_counter() - started)


def through_server(url: str, images: list[bytes], concurrency: int) -> float:
    """Images/s of `concurrency` clients sending one JPEG per request."""
    from tritonclient import http as thttp

    def send(part: list[bytes]) -> None:
        client = thttp.InferenceServerClient(url, connection_timeout=120, network_timeout=120)
        for data in part:
            tensor = thttp.InferInput("image", [1], "BYTES")
            tensor.set_data_from_numpy(np.array([data], dtype=np.object_))
            client.infer("resnet50", [tensor]).as_numpy("classes")

    parts = [images[i::concurrency] for i in range(concurrency)]
    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(send, parts))
    return len(images) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--images", type=int, default=32, help="JPEGs per round and side")
    parser.add_argument("-c", "--concurrency", type=int, default=8)
    parser.add_argument("--side", type=int, default=224, help="center crop (model input)")
    parser.add_argument("--resize", type=int, default=256, help="shorter side before the crop")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    images = [frame(seed) for seed in range(args.images)]
    print(
        f"ResNet-50, {args.images} JPEGs of 640x480 ({sum(map(len, images)) // 1024} KiB) per "
        f"round -> {args.resize} -> {args.side}x{args.side}, top-5; {args.threads} torch "
        f"threads, device {args.device}; server: {args.concurrency} clients, 1 JPEG a request"
    )
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "models"
        build(repo, args)
        # the loops run the very program the server serves (torch.export's), not the eager
        # module, so that only the serving differs
        module = torch.export.load(str(repo / "resnet50" / "1" / "model.pt2")).module()
        module = module.to(args.device)
        port = free_port()
        log = Path(tmp) / "serve.log"
        command = [sys.executable, "-m", "torchrig", "serve", str(repo), "--port", str(port)]
        command += ["--host", "127.0.0.1", "--log-format", "text"]
        env = {k: v for k, v in os.environ.items() if not k.startswith("TORCHRIG_")}
        server = subprocess.Popen(
            command, stdout=log.open("wb"), stderr=subprocess.STDOUT, env=env,
            start_new_session=True,
        )  # fmt: skip
        try:
            wait_ready(server, f"http://127.0.0.1:{port}/v2/health/ready", 300)
            url = f"127.0.0.1:{port}"
            through_server(url, images[: args.concurrency * 2], args.concurrency)  # warm
            loop(module, images[:2], args)
            loop(module, images[: args.concurrency], args, args.concurrency)
            rates: dict[str, list[float]] = {"server": [], "loop": [], "loop batched": []}
            cpu: dict[str, list[float]] = {name: [] for name in rates}
            for number in range(1, args.rounds + 1):
                before = cpu_seconds([server.pid])
                rates["server"].append(through_server(url, images, args.concurrency))
                cpu["server"].append((cpu_seconds([server.pid]) - before) * 1000 / len(images))
                for name, batch in (("loop", 1), ("loop batched", args.concurrency)):
                    before = time.process_time()
                    rates[name].append(loop(module, images, args, batch))
                    cpu[name].append((time.process_time() - before) * 1000 / len(images))
                print(
                    f"round {number}: "
                    + ", ".join(
                        f"{name} {rates[name][-1]:.1f} img/s ({cpu[name][-1]:.0f} CPU ms/img)"
                        for name in rates
                    )
                )
        finally:
            stop(server)
    median = {name: statistics.median(values) for name, values in rates.items()}
    print(
        f"median of {args.rounds}: "
        + ", ".join(
            f"{name} {median[name]:.1f} img/s ({statistics.median(cpu[name]):.0f} CPU ms/img)"
            for name in rates
        )
    )
    print(
        f"ratio server/loop {median['server'] / median['loop']:.2f}, server/loop batched "
        f"{median['server'] / median['loop batched']:.2f}"
    )


if __name__ == "__main__":
    main()
