"""The GPU twin of tests/runtime/test_steps.py: on CUDA the image step decodes a batch's
JPEGs together with nvJPEG when torchvision imports (Pillow otherwise), resizes and
normalises on the device and hands the program device tensors; the answers equal the
CPU path's within the tolerance of a different resize implementation, and a corrupt JPEG
in the batch is still named by its element."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from torchrig.errors import InvalidInput
from torchrig.packaging import pack, read_manifest
from torchrig.protocol.types import BytesTensor
from torchrig.repository.config import parse_config
from torchrig.runtime.executor import Executor
from torchrig.runtime.steps import WithSteps, bind_steps

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]

STEPS = """
[[preprocess]]
step = "image"
resize = 40
center_crop = 32
mean = [0.485, 0.456, 0.406]
std = [0.229, 0.224, 0.225]
[[postprocess]]
step = "softmax"
"""


def jpeg(seed: int, width: int, height: int) -> bytes:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    pixels = np.stack([128 + 100 * np.sin(x / (5 + c) + y / 9) for c in range(3)], axis=-1)
    buffer = io.BytesIO()
    noisy = pixels + rng.normal(0, 5, pixels.shape)
    Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).save(buffer, "JPEG", quality=95)
    return buffer.getvalue()


def engine(version: Path, device: str) -> WithSteps:
    manifest = read_manifest(version)
    config = parse_config(f'device = "{device}"\n{STEPS}')
    executor = Executor(version, manifest, config)
    executor.load()
    steps = bind_steps(config, manifest, version, executor.device)
    assert steps is not None
    return WithSteps(executor, steps)


def test_gpu_image_steps_equal_the_cpu_path(tmp_path: Path) -> None:
    torch.manual_seed(0)
    module = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
        torch.nn.Linear(8, 10),
    ).eval()  # fmt: skip
    packed = pack(module, (torch.randn(2, 3, 32, 32),), name="m", repository=tmp_path, version=1)
    images = [jpeg(1, 64, 48), jpeg(2, 50, 90), jpeg(3, 120, 120)]
    batch = {"image": BytesTensor(images, (3,))}
    on_cpu = engine(packed.path, "cpu").infer(batch)["output"]
    gpu = engine(packed.path, "cuda")
    on_gpu = gpu.infer(batch)["output"]
    torch.testing.assert_close(on_gpu.float().cpu(), on_cpu, rtol=0.05, atol=2e-3)
    corrupt = images[0][:300] + b"\x00" * 64
    with pytest.raises(InvalidInput, match="element 1"):
        gpu.infer({"image": BytesTensor([images[1], corrupt], (2,))})
