"""Build a model repository of demo models, for tests, benchmarks and trying torchrig."""

from __future__ import annotations

from pathlib import Path

from torchrig.errors import PackError
from torchrig.repository.config import BatchingConfig, ModelConfig

RANKER_CONFIG = ModelConfig(
    batching=BatchingConfig(max_batch_size=64),
    device="cpu",
)
CLASSIFIER_CONFIG = ModelConfig(
    batching=BatchingConfig(max_batch_size=32),
    device="cpu",
)
TORCHVISION_CONFIG = ModelConfig(
    batching=BatchingConfig(max_batch_size=128),
    channels_last=True,
)


def build_demo_repository(path: Path, *, include_torchvision: bool = False) -> Path:
    """Pack "ranker" and "classifier" (and, if asked, "resnet50" and "vit_b_16") as
    version 1 each, with a config.toml; returns `path`."""
    from torchrig.demo.models import EMBEDDING_ROWS, classifier, ranker, torchvision_models
    from torchrig.envlock import take_lock
    from torchrig.packaging import pack

    path = Path(path)
    environment = take_lock()  # one lock for all models: they share the environment
    module, example = ranker()
    pack(
        module,
        example,
        name="ranker",
        repository=path,
        version=1,
        output_names=["probability"],
        max_batch_size=1024,
        config=RANKER_CONFIG,
        description="DLRM-style demo ranker: 13 dense + 26 sparse features -> click probability",
        environment=environment,
        input_ranges={"sparse": (0, EMBEDDING_ROWS - 1)},
    )
    module, example = classifier()
    pack(
        module,
        example,
        name="classifier",
        repository=path,
        version=1,
        output_names=["logits"],
        max_batch_size=256,
        config=CLASSIFIER_CONFIG,
        description="Tiny demo CNN: 3x64x64 image -> 10 logits",
        environment=environment,
    )
    if include_torchvision:
        try:
            models = torchvision_models()
        except ImportError:
            raise PackError(
                "include_torchvision=True needs torchvision; install the build that matches "
                "your torch (pip install torchvision)."
            ) from None
        except RuntimeError as exc:  # a torchvision built for another torch (its ops fail)
            import torch

            raise PackError(
                f"torchvision does not load beside torch {torch.__version__}: {exc}; install "
                "the torchvision release built for this torch (same CUDA or CPU variant)."
            ) from None
        for name, (module, example) in models.items():
            pack(
                module,
                example,
                name=name,
                repository=path,
                version=1,
                output_names=["logits"],
                max_batch_size=256,
                config=TORCHVISION_CONFIG,
                description=f"torchvision {name}, random weights",
                environment=environment,
            )
    return path
