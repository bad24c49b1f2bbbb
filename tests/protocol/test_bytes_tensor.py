"""BytesTensor behaves like a tensor where the batcher needs it: rows slice and join."""

from __future__ import annotations

import pytest

from torchrig.protocol import BytesTensor
from torchrig.runtime.rows import concat_rows


def test_a_slice_takes_rows_not_elements() -> None:
    value = BytesTensor([b"a", b"b", b"c", b"d", b"e", b"f"], (3, 2))
    assert value[1:3] == [b"c", b"d", b"e", b"f"]
    assert value[1:3].shape == (2, 2)
    assert value[2:].shape == (1, 2)
    assert value[5:9].shape == (0, 2)
    assert value[1] == b"b"  # an index is still an element
    assert list(value) == [b"a", b"b", b"c", b"d", b"e", b"f"]
    with pytest.raises(ValueError, match="step 1 only"):
        value[::2]


def test_requests_join_by_rows_in_a_batch() -> None:
    first = {"text": BytesTensor([b"x"], (1,))}
    second = {"text": BytesTensor([b"y", b"z"], (2,))}
    joined = concat_rows([first, second])["text"]
    assert isinstance(joined, BytesTensor)
    assert (list(joined), joined.shape) == ([b"x", b"y", b"z"], (3,))
    assert joined[1:3] == second["text"]
    with pytest.raises(ValueError, match="cannot be joined along dimension 0"):
        BytesTensor.concat([BytesTensor([b"a", b"b"], (1, 2)), BytesTensor([b"c"], (1, 1))])
