"""`torchrig serve --demo` as a user runs it, and the README's curl against it."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx

README = Path(__file__).resolve().parents[2] / "README.md"


def test_demo_serves_and_the_readme_curl_works(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TORCHRIG_")}
    stderr = (tmp_path / "stderr.txt").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "torchrig", "serve", "--demo", "--port", "0"],
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
        for command in re.findall(r"^\$ (curl .*)$", README.read_text(), re.MULTILINE):
            live = command.replace("127.0.0.1:8000", host)
            out = subprocess.run(
                ["bash", "-c", live], capture_output=True, text=True, timeout=60, check=True
            ).stdout
            if "/infer" in command:
                body = json.loads(out)
                assert body["model_name"] == "ranker"
                (prob,) = body["outputs"][0]["data"]
                assert 0.0 < prob < 1.0
            elif "ready" in command:
                assert out.strip() == "200"
            else:
                assert json.loads(out)["name"] == "ranker"
        # the banner's own curl lines work too
        for command in re.findall(r"^  (curl .*)$", banner, re.MULTILINE):
            subprocess.run(["bash", "-c", command], capture_output=True, timeout=60, check=True)
    finally:
        proc.terminate()
        proc.wait(60)
        if proc.stdout is not None:
            proc.stdout.close()
