"""Image tags by one rule: `<registry>/pytorch:<torch>-{cuda<X.Y>,cpu}-<flavour>[-<suffix>]`.

Registry and suffix are checked against the OCI distribution reference grammar
(github.com/distribution/reference), so a tag torchrig prints is one a registry takes.
"""

from __future__ import annotations

import re

from torchrig.errors import UsageError
from torchrig.image.spec import ImageSpec

REPOSITORY = "pytorch"
# reference grammar: domain-component, optional :port, path components of lower-case
# alphanumerics joined by one '.', one or two '_', or any number of '-'.
_DOMAIN_COMPONENT = r"(?:[A-Za-z0-9]|[A-Za-z0-9][A-Za-z0-9-]*[A-Za-z0-9])"
_DOMAIN = rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*(?::[0-9]+)?)"
_PATH_COMPONENT = r"(?:[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)"
_HOST_RE = re.compile(rf"^{_DOMAIN}(?:/{_PATH_COMPONENT})*$")
_PATH_RE = re.compile(rf"^{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*$")
_TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_SUFFIX_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
MAX_NAME = 255


def validate_registry(registry: str) -> str:
    """The registry prefix without a trailing '/', or a UsageError naming the rule."""
    cleaned = registry.strip().rstrip("/")
    first = cleaned.split("/", 1)[0]
    # the first component is a host when it has '.' or ':' or is 'localhost'; otherwise
    # the whole prefix is a (Docker Hub) path, and paths are lower-case
    is_host = "." in first or ":" in first or first == "localhost"
    pattern = _HOST_RE if is_host else _PATH_RE
    if not pattern.match(cleaned) or len(f"{cleaned}/{REPOSITORY}") > MAX_NAME:
        raise UsageError(
            f"registry {registry!r} is not a valid image name prefix: use host[:port][/path] "
            "with lower-case path components of letters and digits joined by '.', '_', '__' "
            "or '-', e.g. registry.example.com/platform"
        )
    return cleaned


def validate_suffix(suffix: str) -> str:
    """A tag suffix (a date or a patch label) of tag characters, or a UsageError."""
    if not _SUFFIX_RE.match(suffix):
        raise UsageError(
            f"tag suffix {suffix!r} may only hold letters, digits, '_', '.' and '-', and "
            "must not start with '.' or '-'"
        )
    return suffix


def tag_for(spec: ImageSpec, registry: str | None = None, suffix: str | None = None) -> str:
    """The image's tag by the rule, e.g. `registry.example.com/ml/pytorch:2.9.1-cuda12.8-serve`."""
    tag = f"{spec.torch_version}-{spec.accelerator_label}-{spec.flavour}"
    if suffix:
        tag += "-" + validate_suffix(suffix)
    if not _TAG_RE.match(tag):
        raise UsageError(f"tag {tag!r} is longer than 128 characters; shorten the suffix")
    name = f"{validate_registry(registry)}/{REPOSITORY}" if registry else REPOSITORY
    return f"{name}:{tag}"
