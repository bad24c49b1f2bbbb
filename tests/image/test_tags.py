"""The tag rule and the OCI reference grammar for registry and suffix."""

from __future__ import annotations

import pytest

from torchrig.errors import UsageError
from torchrig.image.spec import resolve_spec
from torchrig.image.tags import tag_for, validate_registry


def test_tag_rule() -> None:
    spec = resolve_spec(torch="2.9.1", cuda="12.8", flavour="serve")
    assert tag_for(spec) == "pytorch:2.9.1-cuda12.8-serve"
    assert tag_for(spec, "registry.example.com/platform/", "20260101") == (
        "registry.example.com/platform/pytorch:2.9.1-cuda12.8-serve-20260101"
    )
    assert tag_for(spec, "localhost:5000", "p1") == "localhost:5000/pytorch:2.9.1-cuda12.8-serve-p1"


@pytest.mark.parametrize(
    "registry",
    ["registry.example.com", "reg.io:5000/a/b-c", "acme", "ghcr.io/acme__x", "localhost"],
)
def test_valid_registries(registry: str) -> None:
    assert validate_registry(registry) == registry


@pytest.mark.parametrize(
    "registry",
    ["", "Acme", "ghcr.io/Acme", "a..b/x", "reg.io/-a", "reg io", "reg.io/a/", "x" * 300],
)
def test_invalid_registries(registry: str) -> None:
    if registry == "reg.io/a/":  # a trailing slash is forgiven
        assert validate_registry(registry) == "reg.io/a"
        return
    with pytest.raises(UsageError, match="not a valid image name prefix"):
        validate_registry(registry)


@pytest.mark.parametrize("suffix", ["-x", ".x", "a b", "a/b", "ü", "x" * 120])
def test_invalid_suffixes(suffix: str) -> None:
    spec = resolve_spec(torch="2.9")
    with pytest.raises(UsageError):
        tag_for(spec, "registry.example.com", suffix)
