"""The classification extension: an output asked for with `classification: K` (tritonclient:
`InferRequestedOutput(name, class_count=K)`) comes back as its top K classes, a BYTES tensor
of "score:index" or "score:index:label" strings (Triton's format: the score as C's "%f"),
instead of the raw scores. Labels come from the version's manifest (`pack --labels`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from torchrig.errors import InvalidInput
from torchrig.protocol.types import BytesTensor

MAX_CLASS_COUNT = 1 << 20


def class_count(value: Any, where: str) -> int:
    """The `classification` parameter of an output, checked: a positive integer."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= MAX_CLASS_COUNT:
        raise InvalidInput(
            f"{where}: parameter classification must be a positive integer (the number of "
            f"top classes to return), not {value!r}"
        )
    return value


def classify(
    name: str,
    datatype: str,
    value: Any,
    count: int,
    labels: Sequence[str] | None,
    *,
    batching: bool,
) -> BytesTensor:
    """The top `count` classes of each row (the whole tensor without batching), best first."""
    if datatype in ("BYTES", "BOOL"):
        raise InvalidInput(f"output {name!r} is {datatype}: only numeric outputs classify")
    scores = value.detach().to("cpu", torch.float64)
    rows = (
        scores.reshape(scores.shape[0], -1)
        if batching and scores.dim() > 0
        else scores.reshape(1, -1)
    )
    k = min(count, rows.shape[1])
    top = torch.topk(rows, k, dim=1) if k else None
    items: list[bytes] = []
    if top is not None:
        for row_scores, row_indices in zip(top.values.tolist(), top.indices.tolist(), strict=True):
            for score, index in zip(row_scores, row_indices, strict=True):
                text = f"{score:f}:{index}"
                if labels is not None and index < len(labels):
                    text += f":{labels[index]}"
                items.append(text.encode())
    shape = [rows.shape[0], k] if batching and scores.dim() > 0 else [k]
    return BytesTensor(items, shape)
