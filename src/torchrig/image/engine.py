"""The local OCI engines torchrig drives: docker (buildx), buildah and podman.

Building takes the first that works: docker when its client reaches an engine, else
buildah, else podman (both daemonless, rootless-capable; many CI systems use them).
Running an image (for `image test`) takes docker or podman. How an engine stores images
or isolates builds on this machine (`STORAGE_DRIVER`, `BUILDAH_ISOLATION`,
`CONTAINERS_CONF`) is the engine's own configuration: torchrig passes none of it.
"""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
from typing import Literal, get_args

from torchrig.errors import TorchrigError, UsageError

EngineName = Literal["docker", "buildah", "podman"]
ENGINES: tuple[EngineName, ...] = get_args(EngineName)
BUILD_ORDER: tuple[EngineName, ...] = ("docker", "buildah", "podman")
RUN_ORDER: tuple[EngineName, ...] = ("docker", "podman")


class EngineUnavailableError(TorchrigError):
    """No OCI engine that can do the job is installed or reachable here."""

    status_code = 503
    exit_code = 2


@dataclasses.dataclass(frozen=True)
class Engine:
    """One usable engine: its name and the client binary's path."""

    name: EngineName
    path: str

    def argv(self, *args: str) -> list[str]:
        return [self.path, *args]


def _docker_problem(client: str, timeout_s: float) -> str | None:
    """Why this docker client cannot build (no engine, no buildx), or None when it can."""
    try:
        proc = subprocess.run(
            [client, "info", "--format", "{{.ServerVersion}}"],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"docker info did not answer: {exc}"
    if proc.returncode != 0 or not proc.stdout.strip():
        reason = " ".join((proc.stderr or proc.stdout).split())[:200] or "no server version"
        return f"no Docker engine is reachable ({reason})"
    return None


def _working(name: EngineName, timeout_s: float) -> tuple[Engine | None, str]:
    client = shutil.which(name)
    if client is None:
        return None, f"no {name} on PATH"
    if name == "docker":
        problem = _docker_problem(client, timeout_s)
        if problem is not None:
            return None, problem
    return Engine(name, client), ""


def find_engine(
    wanted: str = "auto", *, purpose: Literal["build", "run"] = "build", timeout_s: float = 30.0
) -> Engine:
    """The engine to use: `wanted` (checked), or the first that works in the purpose's order."""
    order = BUILD_ORDER if purpose == "build" else RUN_ORDER
    if wanted != "auto":
        if wanted not in order:
            raise UsageError(
                f"--engine {wanted!r} cannot {purpose} images; use one of {', '.join(order)} "
                "or auto"
            )
        engine, problem = _working(wanted, timeout_s)
        if engine is None:
            raise EngineUnavailableError(f"--engine {wanted}: {problem}")
        return engine
    problems = []
    for name in order:
        engine, problem = _working(name, timeout_s)
        if engine is not None:
            return engine
        problems.append(problem)
    verb = "build" if purpose == "build" else "run"
    raise EngineUnavailableError(
        f"no OCI engine here can {verb} images ({'; '.join(problems)}); install Docker with "
        f"buildx{', buildah' if purpose == 'build' else ''} or podman, or {verb} the rendered "
        "context on a machine that has one"
    )
