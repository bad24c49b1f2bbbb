"""Built-in steps around a real packed program: batched in the batcher's worker, a bad
image failing only its own request, and every mismatch with the program named at load."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from torchrig.errors import ArtifactError, InvalidInput
from torchrig.packaging import pack, read_manifest
from torchrig.protocol.types import BytesTensor
from torchrig.repository import BatchingConfig, Repository
from torchrig.repository.config import parse_config
from torchrig.runtime import ModelRegistry
from torchrig.runtime.batcher import Batcher
from torchrig.runtime.executor import Executor
from torchrig.runtime.steps import WithSteps, bind_steps

IMAGE = """
device = "cpu"
[[preprocess]]
step = "image"
resize = 20
center_crop = 16
mean = [0.5]
std = [0.25]
[[postprocess]]
step = "top_k"
k = 2
"""


class Tiny(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 4, 3)
        self.fc = torch.nn.Linear(4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(x).mean((2, 3)))


@pytest.fixture(scope="module")
def version(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("steps") / "models"
    packed = pack(
        Tiny().eval(),
        (torch.randn(2, 3, 16, 16),),
        name="tiny",
        repository=root,
        version=1,
        golden_examples=0,
        output_names=["logits"],
        labels={"": [f"c{i}" for i in range(10)]},
    )
    return packed.path


def png(seed: int, width: int = 30, height: int = 24) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def bound(version: Path, text: str) -> Any:
    manifest = read_manifest(version)
    config = parse_config(text)
    executor = Executor(version, manifest, config)
    executor.load()
    steps = bind_steps(config, manifest, version, executor.device)
    assert steps is not None
    return WithSteps(executor, steps)


def test_a_bad_image_fails_only_its_request_in_a_shared_batch(version: Path) -> None:
    engine = bound(version, IMAGE)
    # the batch starts when 4 rows are queued: the four requests run as one batch first
    batcher = Batcher(engine, BatchingConfig(max_batch_size=4, max_queue_delay_ms=30_000))
    payloads = [[png(1)], [png(2)[:60]], [png(3), png(4, 40, 40)]]

    async def main() -> list[Any]:
        futures = [
            batcher.submit({"image": BytesTensor(p, (len(p),))}, rows=len(p)) for p in payloads
        ]
        return await asyncio.gather(*futures, return_exceptions=True)

    try:
        results = asyncio.run(main())
    finally:
        batcher.close()
    stats = batcher.stats()
    assert stats.batch_sizes[4] == 1  # the three requests started as one batch
    assert stats.isolation_splits >= 1
    assert isinstance(results[1], InvalidInput)
    assert "input 'image' element 0 is not a decodable JPEG or PNG image" in str(results[1])
    alone = [engine.infer({"image": BytesTensor(p, (len(p),))}) for p in (payloads[0], payloads[2])]
    for got, want in zip((results[0], results[2]), alone, strict=True):
        assert got["logits"].shape == want["logits"].shape
        assert list(got["logits"]) == list(want["logits"])


def test_steps_run_on_a_batch_as_on_each_request(version: Path) -> None:
    engine = bound(version, IMAGE)
    images = [png(5), png(6, 50, 20), png(7, 16, 16)]
    together = engine.infer({"image": BytesTensor(images, (3,))})["logits"]
    assert together.shape == (3, 2)
    for row, image in enumerate(images):
        alone = engine.infer({"image": BytesTensor([image], (1,))})["logits"]
        assert list(together[row : row + 1]) == list(alone)
        assert all(item.decode().count(":") == 2 for item in alone)  # score:index:label


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ('[[preprocess]]\nstep = "image"\ninto = "pixels"\ncenter_crop = 16',
         "preprocess[0].into: the model has no input 'pixels'; its inputs are x"),
        ('[[preprocess]]\nstep = "image"\nresize = 32\ncenter_crop = 24',
         "makes CHW images of shape [-1, 3, 24, 24] but the model's input x is [-1, 3, 16, 16]"),
        ('[[preprocess]]\nstep = "image"\nresize = 32',
         "set center_crop (with resize = shorter side) or resize = [height, width]"),
        ('[[preprocess]]\nstep = "image"\nresize = 10\ncenter_crop = 16',
         "center_crop [16, 16] is larger than the resized shorter side 10"),
        ('[[preprocess]]\nstep = "image"\ncenter_crop = 16\ndtype = "FP16"',
         "dtype is 'FP16' but the model's input x is FP32"),
        ('[[preprocess]]\nstep = "image"\ncenter_crop = 16\nlayout = "HWC"',
         "makes HWC images of shape [-1, 16, 16, 3]"),
        ('[[preprocess]]\nstep = "text"', "ids: the model has no input 'input_ids'"),
        ('[[postprocess]]\nstep = "softmax"\noutput = "scores"',
         "postprocess[0].output: the model has no output 'scores'; its outputs are logits"),
        ('[[postprocess]]\nstep = "softmax"\n[[postprocess]]\nstep = "top_k"\ninto = "logits"',
         None),  # into = output: top_k replaces it, which is fine
    ],
)  # fmt: skip
def test_steps_are_checked_against_the_program(
    version: Path, config: str, message: str | None
) -> None:
    manifest = read_manifest(version)
    parsed = parse_config(config)
    if message is None:
        steps = bind_steps(parsed, manifest, version, "cpu")
        assert steps is not None
        assert [(s.name, s.datatype) for s in steps.public.outputs] == [("logits", "BYTES")]
        return
    with pytest.raises(ArtifactError) as raised:
        bind_steps(parsed, manifest, version, "cpu")
    assert message in str(raised.value)


def test_a_version_whose_steps_do_not_fit_fails_with_the_reason(version: Path) -> None:
    root = version.parent.parent
    (root / "tiny" / "config.toml").write_text(
        '[[preprocess]]\nstep = "image"\nresize = [20, 20]\n'
    )

    async def main() -> None:
        registry = ModelRegistry(Repository(root))
        await registry.load_all()
        try:
            [served] = registry.versions()
            assert served.state == "failed"
            assert served.reason is not None
            assert "preprocess[0]" in served.reason
            assert "[-1, 3, 20, 20]" in served.reason
        finally:
            await registry.close()

    try:
        asyncio.run(main())
    finally:
        (root / "tiny" / "config.toml").unlink()
