"""Top-k classes as strings, "score:index[:label]" (Triton's classification format, the
score as C's "%f"): what the classification extension answers and the `top_k` step returns."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from torchrig.errors import InvalidInput
from torchrig.runtime.bytes_tensor import BytesTensor


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
