"""Demo models (random weights, fixed seed) and a demo model repository builder.

`torchrig pack torchrig.demo:ranker --name ranker --repository repo` packs the ranker.
"""

from __future__ import annotations

from torchrig.demo.models import (
    DemoRanker,
    TinyImageClassifier,
    classifier,
    encoder,
    ranker,
    torchvision_models,
)
from torchrig.demo.repository import build_demo_repository

__all__ = [
    "DemoRanker",
    "TinyImageClassifier",
    "build_demo_repository",
    "classifier",
    "encoder",
    "ranker",
    "torchvision_models",
]
