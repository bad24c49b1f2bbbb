"""Rendering helpers shared by the subcommands: JSON for machines, rich for people."""

from __future__ import annotations

import os
import sys
from typing import Any

from rich.console import Console

from torchrig.jsondoc import to_json


def emit_json(value: Any) -> None:
    """Write `value` (msgspec Structs, dataclasses, dicts) as indented JSON on stdout."""
    sys.stdout.write(to_json(value).decode())
    sys.stdout.flush()


def console() -> Console:
    """A console on stdout; no colour codes and 120 columns when stdout is not a terminal."""
    width = None if sys.stdout.isatty() or os.environ.get("COLUMNS") else 120
    return Console(highlight=False, soft_wrap=False, width=width)
