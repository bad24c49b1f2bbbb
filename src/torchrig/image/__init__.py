"""The standard PyTorch-CUDA images (runtime, dev, serve): validate, lock, render, tag, build.

Every image is first validated against the compat knowledge base (`resolve_spec`),
then its Python requirement set is locked into a constraints file (`lock`), and a
build context is rendered from the package's templates (`render`). Nothing here
needs a Docker engine except `build`.
"""

from __future__ import annotations

from torchrig.image.spec import FLAVOURS, Flavour, ImageSpec, resolve_spec

__all__ = ["FLAVOURS", "Flavour", "ImageSpec", "resolve_spec"]
