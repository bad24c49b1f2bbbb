"""The `--deep` probes: real work on the devices, in a child process.

`run_probes` starts `python -m torchrig.facts.probes` and turns whatever happens
to it (a result, a crash, garbage, a timeout) into `ProbeFacts`; it never raises.
This module does not import torch: only the child does.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping

import msgspec

from torchrig.facts.model import ProbeFacts

__all__ = ["run_probes"]

_STDERR_TAIL_CHARS = 2000


def run_probes(*, timeout_s: float = 180.0, environ: Mapping[str, str] | None = None) -> ProbeFacts:
    """Run the probes in a child process with `environ` (default: this one's) and a deadline.

    The child and everything it started are killed at the deadline.
    """
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="torchrig-probes-") as workdir:
        command = [
            sys.executable, "-m", "torchrig.facts.probes",
            "--budget-s", f"{timeout_s:.3f}", "--workdir", workdir,
        ]  # fmt: skip
        facts = _run_child(command, timeout_s, environ)
    return msgspec.structs.replace(facts, duration_s=time.monotonic() - start)


def _run_child(
    command: list[str], timeout_s: float, environ: Mapping[str, str] | None
) -> ProbeFacts:
    try:
        child = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=None if environ is None else dict(environ),
            start_new_session=True,  # its own process group, so its workers die with it
        )
    except OSError as exc:
        return ProbeFacts(error=f"the probe process could not start: {exc}")
    try:
        stdout, stderr = child.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        _kill_group(child)
        stdout, stderr = child.communicate()
        return ProbeFacts(
            error=_with_tail(f"the probes did not finish within {timeout_s:g} s", stderr)
        )
    if child.returncode != 0:
        return ProbeFacts(error=_with_tail(_exit_status(child.returncode), stderr))
    lines = stdout.strip().splitlines()
    try:
        return msgspec.json.decode(lines[-1] if lines else b"", type=ProbeFacts)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        return ProbeFacts(
            error=_with_tail(f"the probe process printed no valid result ({exc})", stderr)
        )


def _kill_group(child: subprocess.Popen[bytes]) -> None:
    killpg = getattr(os, "killpg", None)
    if killpg is None:
        child.kill()
        return
    with contextlib.suppress(ProcessLookupError):  # it ended on its own meanwhile
        killpg(child.pid, signal.SIGKILL)


def _exit_status(returncode: int) -> str:
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"the probe process was killed by {name}"
    return f"the probe process exited with code {returncode}"


def _with_tail(message: str, stderr: bytes) -> str:
    tail = stderr.decode("utf-8", errors="replace").strip()[-_STDERR_TAIL_CHARS:]
    return f"{message}; stderr: {tail}" if tail else message
