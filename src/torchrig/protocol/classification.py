"""The classification extension: an output asked for with `classification: K` (tritonclient:
`InferRequestedOutput(name, class_count=K)`) comes back as its top K classes, a BYTES tensor
of "score:index" or "score:index:label" strings (Triton's format: the score as C's "%f"),
instead of the raw scores. Labels come from the version's manifest (`pack --labels`).
"""

from __future__ import annotations

from typing import Any

from torchrig.errors import InvalidInput
from torchrig.runtime.classes import classify

__all__ = ["MAX_CLASS_COUNT", "class_count", "classify"]

MAX_CLASS_COUNT = 1 << 20


def class_count(value: Any, where: str) -> int:
    """The `classification` parameter of an output, checked: a positive integer."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= MAX_CLASS_COUNT:
        raise InvalidInput(
            f"{where}: parameter classification must be a positive integer (the number of "
            f"top classes to return), not {value!r}"
        )
    return value
