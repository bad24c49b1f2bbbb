"""The demo ranker for the peer servers, without importing torchrig.

The peers run in their own virtual environments where torchrig is not installed, so the
module class is loaded straight from torchrig's `demo/models.py` (it imports only torch)
and the weights from the state dict the benchmark saved (tensors only, weights_only=True).

Environment: TORCHRIG_BENCH_MODELS_PY (path of demo/models.py), TORCHRIG_BENCH_WEIGHTS
(state dict file), TORCHRIG_BENCH_THREADS (torch intra-op threads).
"""

from __future__ import annotations

import importlib.util
import os
from typing import Any

import torch


def set_threads() -> int:
    threads = int(os.environ.get("TORCHRIG_BENCH_THREADS", "1"))
    torch.set_num_threads(threads)
    return threads


def load_ranker() -> Any:
    """The demo ranker in eval mode with the benchmark's weights."""
    set_threads()
    path = os.environ["TORCHRIG_BENCH_MODELS_PY"]
    spec = importlib.util.spec_from_file_location("torchrig_bench_demo_models", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    models = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(models)
    module = models.DemoRanker()
    state = torch.load(os.environ["TORCHRIG_BENCH_WEIGHTS"], weights_only=True)
    module.load_state_dict(state)
    return module.eval()
