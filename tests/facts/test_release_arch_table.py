"""torch's own arch table (PYTORCH_RELEASES_CODE_CC) is a fact even without a GPU."""

from __future__ import annotations

import types

import torch

from torchrig.facts.torch_build import read_torch, release_arch_table


def test_the_installed_torch_s_table_is_recorded() -> None:
    facts, error = read_torch()
    assert error is None
    assert facts is not None
    if not hasattr(torch.cuda, "PYTORCH_RELEASES_CODE_CC"):
        assert facts.release_arch_table == {}
        return
    table = facts.release_arch_table
    assert table, "recent torch releases ship PYTORCH_RELEASES_CODE_CC"
    for by_host in table.values():
        for codes in by_host.values():
            assert codes == sorted(codes)
            assert all(isinstance(code, int) for code in codes)


def test_table_conversion_and_absence() -> None:
    fake = types.SimpleNamespace(
        cuda=types.SimpleNamespace(PYTORCH_RELEASES_CODE_CC={"13.0": {"aarch64": {120, 80, 110}}})
    )
    assert release_arch_table(fake) == {"13.0": {"aarch64": [80, 110, 120]}}
    assert release_arch_table(types.SimpleNamespace(cuda=types.SimpleNamespace())) == {}
