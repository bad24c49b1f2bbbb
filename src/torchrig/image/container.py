"""Start and inspect containers of a built image with docker or podman (same CLI verbs).

`image test` uses this to check what an image promises from outside, as a user would:
published ports reached from the host, commands run inside as the image's user.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import subprocess
import time
from collections.abc import Iterator
from typing import Any

from torchrig.errors import TorchrigError
from torchrig.image.engine import Engine


class ContainerError(TorchrigError):
    """The engine could not start or inspect a container of the image under test."""

    exit_code = 2


@dataclasses.dataclass(frozen=True)
class Result:
    """A finished command: exit code and what it printed."""

    code: int
    out: str
    err: str

    @property
    def text(self) -> str:
        return (self.out + self.err).strip()


@dataclasses.dataclass(frozen=True)
class RunOptions:
    """How to start one container: what `docker run` / `podman run` options say."""

    env: tuple[tuple[str, str], ...] = ()
    publish: tuple[int, ...] = ()  # container ports, published on 127.0.0.1 at random ports
    volumes: tuple[str, ...] = ()  # HOST:CONTAINER[:ro]
    tmpfs: tuple[str, ...] = ()  # PATH[:options]
    user: str | None = None
    read_only: bool = False
    drop_capabilities: bool = False
    shm_size: str | None = None
    entrypoint: str | None = None
    command: tuple[str, ...] = ()


class Engineer:
    """Runs engine commands with a timeout; every container it starts is removed on close."""

    def __init__(self, engine: Engine, timeout_s: float = 120.0) -> None:
        self.engine = engine
        self.timeout_s = timeout_s
        self._started: list[str] = []

    def call(self, *args: str, timeout_s: float | None = None) -> Result:
        try:
            proc = subprocess.run(
                self.engine.argv(*args),
                capture_output=True,
                text=True,
                timeout=timeout_s or self.timeout_s,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            return Result(124, "", f"{self.engine.name} {args[0]} timed out after {exc.timeout} s")
        return Result(proc.returncode, proc.stdout, proc.stderr)

    def inspect_image(self, image: str) -> dict[str, Any]:
        result = self.call("image", "inspect", image)
        if result.code != 0:
            raise ContainerError(
                f"{self.engine.name} has no image {image!r} ({result.text[:200]}); build it first "
                "with `torchrig image build` or pull it"
            )
        data = json.loads(result.out)
        found: dict[str, Any] = data[0] if isinstance(data, list) else data
        return found

    def _run_argv(self, image: str, options: RunOptions) -> list[str]:
        # the test runs the image's healthcheck command itself (the same with either engine);
        # podman would otherwise try to schedule it with systemd timers
        argv: list[str] = ["--no-healthcheck"]
        for name, value in options.env:
            argv += ["--env", f"{name}={value}"]
        for port in options.publish:
            argv += ["--publish", f"127.0.0.1::{port}"]
        for volume in options.volumes:
            argv += ["--volume", volume]
        for mount in options.tmpfs:
            argv += ["--tmpfs", mount]
        if options.user:
            argv += ["--user", options.user]
        if options.read_only:
            argv += ["--read-only"]
        if options.drop_capabilities:
            argv += ["--cap-drop", "ALL", "--security-opt", "no-new-privileges"]
        if options.shm_size:
            argv += ["--shm-size", options.shm_size]
        if options.entrypoint is not None:
            argv += ["--entrypoint", options.entrypoint]
        return [*argv, image, *options.command]

    def run_once(self, image: str, options: RunOptions, timeout_s: float | None = None) -> Result:
        """Run a container to completion and remove it."""
        return self.call("run", "--rm", *self._run_argv(image, options), timeout_s=timeout_s)

    def start(self, image: str, options: RunOptions) -> str:
        """Start a container in the background; its id."""
        result = self.call("run", "--detach", *self._run_argv(image, options))
        if result.code != 0:
            raise ContainerError(f"{self.engine.name} run {image} failed: {result.text[-300:]}")
        container = result.out.strip().splitlines()[-1]
        self._started.append(container)
        return container

    def port(self, container: str, port: int) -> int:
        """The host port the container's `port` is published on."""
        result = self.call("port", container, f"{port}/tcp")
        for line in result.out.splitlines():
            host, _, number = line.strip().rpartition(":")
            if host and number.isascii() and number.isdigit():
                return int(number)
        raise ContainerError(f"{self.engine.name} port {container} {port}: {result.text[:200]}")

    def exec(self, container: str, *command: str, user: str | None = None) -> Result:
        argv = ["exec"] + (["--user", user] if user else []) + [container, *command]
        return self.call(*argv)

    def logs(self, container: str) -> str:
        return self.call("logs", container).text

    def running(self, container: str) -> bool:
        result = self.call("inspect", "--format", "{{.State.Running}}", container)
        return result.out.strip() == "true"

    def remove(self, container: str) -> None:
        self.call("rm", "--force", container)
        if container in self._started:
            self._started.remove(container)

    def close(self) -> None:
        for container in list(self._started):
            self.remove(container)


@contextlib.contextmanager
def engineer(engine: Engine, timeout_s: float = 120.0) -> Iterator[Engineer]:
    """An `Engineer` whose containers are all removed when the block ends."""
    runner = Engineer(engine, timeout_s)
    try:
        yield runner
    finally:
        runner.close()


def poll(
    condition: Any, *, timeout_s: float, interval_s: float = 0.25, while_true: Any = None
) -> bool:
    """Call `condition()` until it is truthy or the deadline passes (or `while_true()` fails)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        if while_true is not None and not while_true():
            return bool(condition())
        time.sleep(interval_s)
    return bool(condition())
