"""`torchrig serve --demo` as a user runs it, and the README's curl sessions against it:
each answer must be the one the README shows."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

README = Path(__file__).resolve().parents[2] / "README.md"
# FP32 results printed as JSON: the seeded demo gives the same value to a few ULPs on any
# CPU (another instruction set may round differently); a changed model moves it far more
FP32_REL = 1e-5


def readme_curl_sessions() -> list[tuple[str, str]]:
    """Each `$ curl ...` line of the README with the output it shows (up to the next `$`
    line or the end of its block)."""
    sessions: list[tuple[str, str]] = []
    for block in re.findall(r"^```text\n(.*?)^```", README.read_text(), re.MULTILINE | re.DOTALL):
        lines = block.splitlines()
        for index, line in enumerate(lines):
            if line.startswith("$ curl "):
                shown = []
                for after in lines[index + 1 :]:
                    if after.startswith("$ "):
                        break
                    shown.append(after)
                sessions.append((line[2:], "\n".join(shown).strip()))
    return sessions


def assert_same_answer(out: str, shown: str, command: str) -> None:
    """The live answer is the README's: the same JSON document (floats within FP32_REL)
    or the same text."""
    if not shown.startswith("{"):
        assert out.strip() == shown, command
        return
    assert same(json.loads(out), json.loads(shown)), f"{command}\nlive: {out}\nREADME: {shown}"


def same(live: Any, documented: Any) -> bool:
    if isinstance(documented, float) and isinstance(live, float):
        return live == pytest.approx(documented, rel=FP32_REL)
    if isinstance(documented, dict) and isinstance(live, dict):
        return live.keys() == documented.keys() and all(
            same(live[k], documented[k]) for k in documented
        )
    if isinstance(documented, list) and isinstance(live, list):
        return len(live) == len(documented) and all(
            same(a, b) for a, b in zip(live, documented, strict=True)
        )
    return type(live) is type(documented) and live == documented


def test_demo_serves_and_the_readme_curl_works(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TORCHRIG_")}
    stderr = (tmp_path / "stderr.txt").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "torchrig", "serve", "--demo", "--port", "0", "--grpc-port", "0"],
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    stderr.close()
    try:
        assert proc.stdout is not None
        url = ""
        deadline = time.monotonic() + 180
        while not url and time.monotonic() < deadline:
            line = proc.stdout.readline()
            assert line, (tmp_path / "stderr.txt").read_text()
            url = json.loads(line).get("url", "")
        assert httpx.get(f"{url}/v2/health/ready").status_code == 200
        banner = (tmp_path / "stderr.txt").read_text()
        assert f"torchrig is serving the demo repository at {url}" in banner
        host = url.removeprefix("http://")
        sessions = readme_curl_sessions()
        assert len(sessions) >= 3
        for command, shown in sessions:
            live = command.replace("127.0.0.1:8000", host)
            out = subprocess.run(
                ["bash", "-c", live], capture_output=True, text=True, timeout=60, check=True
            ).stdout
            assert_same_answer(out, shown, command)
        # the banner's own curl lines work too
        for command in re.findall(r"^  (curl .*)$", banner, re.MULTILINE):
            subprocess.run(["bash", "-c", command], capture_output=True, timeout=60, check=True)
    finally:
        proc.terminate()
        proc.wait(60)
        if proc.stdout is not None:
            proc.stdout.close()
