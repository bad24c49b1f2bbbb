"""Reading small kernel-provided text files without ever raising."""

from __future__ import annotations

from pathlib import Path


def read_text(path: Path) -> str | None:
    """The file's text, or None when it is missing or unreadable (not Linux, no permission)."""
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
