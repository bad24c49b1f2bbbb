"""torchrig: the PyTorch-CUDA runtime that GPU platform teams trust."""

__version__ = "0.1.0"
