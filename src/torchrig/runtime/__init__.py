"""The batching runtime: executors on devices, the dynamic batcher, the model registry.

The server's hot path does not know about HTTP: endpoints decode requests into tensors
and call `ModelRegistry.infer`, which validates against the signature, queues into the
version's `Batcher`, and returns that request's rows of the outputs.
"""

from torchrig.runtime.batcher import Batcher, BatcherStats
from torchrig.runtime.executor import Executor
from torchrig.runtime.registry import ModelMetadata, ModelRegistry, ServedVersion
from torchrig.runtime.validation import validate_inputs

__all__ = [
    "Batcher",
    "BatcherStats",
    "Executor",
    "ModelMetadata",
    "ModelRegistry",
    "ServedVersion",
    "validate_inputs",
]
