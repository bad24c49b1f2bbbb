"""`torchrig` as a user runs it: a real process, free of this shell's TORCHRIG_ settings.

The process is forked from one that has already imported torch and the CLI
(tests/cli_zygote.py, one per test worker): its own directory, environment, stdout,
stderr and exit status as `python -m torchrig ARGS` has them, without paying torch's
import (seconds on a busy runner) for every command a test runs.
"""

from __future__ import annotations

import atexit
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ZYGOTE = Path(__file__).resolve().with_name("cli_zygote.py")


def clean_environment(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This process's environment without TORCHRIG_ settings, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TORCHRIG_")}
    env.update(extra or {})
    return env


def torchrig(
    *args: str,
    cwd: Path | None = None,
    timeout_s: float = 240,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """`python -m torchrig ARGS` in `cwd` with `env` added to the clean environment, its
    output captured (never raises on exit; raises subprocess.TimeoutExpired past
    `timeout_s`, the process killed)."""
    return _zygote().run(list(args), cwd or Path.cwd(), clean_environment(env), timeout_s)


def torchrig_pack(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """`python -m torchrig pack ARGS` in `cwd` (see `torchrig`)."""
    return torchrig("pack", *args, cwd=cwd)


class _Zygote:
    """The forking process, spoken to one command at a time."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, str(ZYGOTE)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=clean_environment(),
        )
        self.buffer = b""
        self.lock = threading.Lock()

    def alive(self) -> bool:
        return self.process.poll() is None

    def run(
        self, args: list[str], cwd: Path, env: dict[str, str], timeout_s: float
    ) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "torchrig", *args]
        with self.lock, tempfile.TemporaryDirectory(prefix="torchrig-run-") as tmp:
            out, err = Path(tmp, "stdout"), Path(tmp, "stderr")
            request = {"argv": args, "cwd": str(cwd), "env": env, "stdout": str(out),
                       "stderr": str(err)}  # fmt: skip
            assert self.process.stdin is not None
            self.process.stdin.write(json.dumps(request).encode() + b"\n")
            self.process.stdin.flush()
            deadline = time.monotonic() + timeout_s
            pid = self._answer(deadline)["pid"]
            try:
                returncode = self._answer(deadline)["returncode"]
            except TimeoutError:
                os.kill(pid, signal.SIGKILL)
                self._answer(time.monotonic() + 60)
                raise subprocess.TimeoutExpired(argv, timeout_s) from None
            stdout = out.read_text(encoding="utf-8", errors="replace")
            stderr = err.read_text(encoding="utf-8", errors="replace")
        return subprocess.CompletedProcess(argv, returncode, stdout, stderr)

    def _answer(self, deadline: float) -> dict[str, Any]:
        assert self.process.stdout is not None
        fd = self.process.stdout.fileno()
        while b"\n" not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise TimeoutError
            chunk = os.read(fd, 65536)
            if not chunk:
                raise RuntimeError(f"the CLI zygote ended ({self.process.wait()})")
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        answer: dict[str, Any] = json.loads(line)
        return answer

    def close(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


_running: list[_Zygote] = []


def _zygote() -> _Zygote:
    """This test worker's zygote, started on first use (again if it ended)."""
    if not _running or not _running[0].alive():
        if not _running:
            atexit.register(lambda: [z.close() for z in _running])
        _running[:] = [_Zygote()]
    return _running[0]
