"""`torchrig` as a user runs it: a real process, free of this shell's TORCHRIG_ settings."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def torchrig(
    *args: str, cwd: Path | None = None, timeout_s: float = 240
) -> subprocess.CompletedProcess[str]:
    """`python -m torchrig ARGS` in `cwd`, its output captured (never raises on exit)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TORCHRIG_")}
    return subprocess.run(
        [sys.executable, "-m", "torchrig", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=timeout_s,
        check=False,
    )


def torchrig_pack(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """`python -m torchrig pack ARGS` in `cwd` (see `torchrig`)."""
    return torchrig("pack", *args, cwd=cwd)
