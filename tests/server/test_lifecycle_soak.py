"""Soak: concurrent clients on a real server in poll mode while the repository changes under
it: versions added (copied non-atomically, half-written first), a broken version dropped
in, fixed, and removed again (a hot swap back). Every request is counted and every answer
checked: nothing fails except the requests the test makes bad on purpose. Bounded in time,
loopback only."""

from __future__ import annotations

import asyncio
import json
import random
import shutil
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest

from doubles import until
from faults import body, pack_faulty
from serving import running
from torchrig.repository import BatchingConfig, ModelConfig
from torchrig.settings import ServeSettings

CLIENTS = 6
MIN_DURATION_S = 10.0
DEADLINE_S = 90.0


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("soak-source")
    config = ModelConfig(
        batching=BatchingConfig(max_batch_size=16, max_queue_delay_ms=2, preferred_batch_sizes=[1])
    )
    for version in (1, 2, 3):
        pack_faulty(root, "a", version, config=config)
    pack_faulty(root, "b", 1, config=config)
    return root


def copy_slowly(source: Path, target: Path) -> None:
    """Copy a version the way an upload lands: files first, the program half-written, the
    manifest, then the rest of the program."""
    target.mkdir()
    manifest = json.loads((source / "manifest.json").read_text())
    program = (source / manifest["program"]).read_bytes()
    for item in source.iterdir():
        if item.name not in ("manifest.json", manifest["program"]):
            shutil.copy(item, target / item.name)
    (target / manifest["program"]).write_bytes(program[: len(program) // 3])
    shutil.copy(source / "manifest.json", target / "manifest.json")
    (target / manifest["program"]).write_bytes(program)


def break_program(directory: Path) -> None:
    """Garbage program bytes with matching checksums: a complete version that cannot load."""
    import hashlib

    manifest = json.loads((directory / "manifest.json").read_text())
    junk = b"garbage, not a program"
    (directory / manifest["program"]).write_bytes(junk)
    for item in manifest["files"]:
        if item["path"] == manifest["program"]:
            item["sha256"], item["size"] = hashlib.sha256(junk).hexdigest(), len(junk)
    (directory / "manifest.json").write_text(json.dumps(manifest))


class Tally:
    """Every request sent and every answer, by kind."""

    def __init__(self) -> None:
        self.sent = 0
        self.ok = 0
        self.refused_as_meant = 0
        self.problems: list[str] = []
        self.versions: Counter[tuple[str, str]] = Counter()


async def client_loop(url: str, index: int, tally: Tally, stop: asyncio.Event) -> None:
    rng = random.Random(index)
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        while not stop.is_set():
            model = "a" if rng.random() < 0.7 else "b"
            rows = rng.randint(1, 3)
            values = [float(rng.randint(1, 1000)) for _ in range(rows)]
            payload: dict[str, Any] = body(values)
            bad = rng.random() < 0.05
            if bad:  # deliberately wrong: three columns for a two-column input
                payload["inputs"][0]["shape"] = [1, 3]
                payload["inputs"][0]["data"] = [1.0, 2.0, 3.0]
            tally.sent += 1
            try:
                response = await client.post(f"/v2/models/{model}/infer", json=payload)
            except httpx.HTTPError as exc:
                tally.problems.append(f"{model}: {type(exc).__name__}: {exc}")
                continue
            if bad:
                if response.status_code == 400 and "shape" in response.json()["error"]:
                    tally.refused_as_meant += 1
                else:
                    tally.problems.append(f"bad request got {response.status_code}")
                continue
            if response.status_code != 200:
                tally.problems.append(f"{model}: {response.status_code} {response.text}")
                continue
            answer = response.json()
            version = answer["model_version"]
            expected = [v for value in values for v in (value * int(version), 0.0)]
            if answer["outputs"][0]["data"] != expected:
                tally.problems.append(f"{model} v{version}: wrong output for {values}")
                continue
            tally.ok += 1
            tally.versions[(model, version)] += 1


class Changes:
    """The repository changes of the soak, each awaited through the registry's state."""

    def __init__(self, source: Path, repo: Path, registry: Any, tally: Tally) -> None:
        self.source, self.repo, self.registry, self.tally = source, repo, registry, tally
        self.steps: list[str] = []

    def served(self, model: str) -> list[tuple[int, str]]:
        return [(v.version, v.state) for v in self.registry.versions() if v.model == model]

    def traffic(self) -> None:
        """Let requests flow across the change just made."""
        start = self.tally.ok
        until(lambda: self.tally.ok >= start + 30, "traffic after a change")

    def run(self) -> None:
        a = self.repo / "a"
        self.traffic()
        copy_slowly(self.source / "a" / "2", a / "2")
        until(lambda: self.served("a") == [(2, "ready")], "version 2 replaces version 1")
        self.steps.append("added 2")
        self.traffic()
        shutil.copytree(self.source / "a" / "3", a / "3")
        break_program(a / "3")
        until(lambda: (3, "failed") in self.served("a"), "the broken version 3 fails")
        assert self.registry.resolve("a").version == 2
        self.steps.append("broken 3 refused")
        self.traffic()
        shutil.rmtree(a / "3")
        copy_slowly(self.source / "a" / "3", a / "3")
        until(lambda: self.served("a") == [(3, "ready")], "the fixed version 3 serves")
        self.steps.append("fixed 3")
        self.traffic()
        shutil.rmtree(a / "3")
        until(lambda: self.served("a") == [(2, "ready")], "removing 3 brings 2 back")
        self.steps.append("removed 3")
        self.traffic()


async def soak(url: str, changes: Changes, tally: Tally) -> None:
    """Clients run from start to end; the changes happen meanwhile (in a thread)."""
    stop = asyncio.Event()
    clients = [asyncio.ensure_future(client_loop(url, i, tally, stop)) for i in range(CLIENTS)]
    started = time.monotonic()
    try:
        await asyncio.wait_for(asyncio.to_thread(changes.run), DEADLINE_S)
        remaining = MIN_DURATION_S - (time.monotonic() - started)
        if remaining > 0:
            await asyncio.wait(clients, timeout=remaining)  # keep the load on a while
    finally:
        stop.set()
        await asyncio.gather(*clients)


def test_soak_under_versions_added_broken_swapped_and_removed(source: Path, tmp_path: Path) -> None:
    repo = tmp_path / "models"
    shutil.copytree(source / "a" / "1", repo / "a" / "1")
    shutil.copytree(source / "b" / "1", repo / "b" / "1")
    settings = ServeSettings(port=0, log_format="text", control_mode="poll", poll_interval_s=0.2)
    tally = Tally()
    with running(repo, settings) as (url, state):
        changes = Changes(source, repo, state.registry, tally)
        asyncio.run(soak(url, changes, tally))
        ready = httpx.get(f"{url}/v2/health/ready").status_code
    assert changes.steps == ["added 2", "broken 3 refused", "fixed 3", "removed 3"]
    assert tally.problems == [], tally.problems[:10]
    assert tally.sent == tally.ok + tally.refused_as_meant  # every request was answered
    assert tally.refused_as_meant > 0
    for version in ("1", "2", "3"):
        assert tally.versions[("a", version)] > 0, tally.versions
    assert tally.versions[("b", "1")] > 0
    assert ready == 200
