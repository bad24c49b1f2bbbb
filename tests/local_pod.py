"""Run a rendered pod's server container as a local process (test helper).

The container's command, env, envFrom and volume mounts are translated once, the way a
kubelet would give them to the process, under a scratch root directory:
- every absolute path in the env and args moves under the root (so /models becomes
  ROOT/models, /var/run/secrets/torchrig/token ROOT/var/run/...);
- an emptyDir is an empty directory, a Secret volume its keys as files;
- a PVC or NFS volume is a symlink to the directory standing in for it (with subPath
  followed), which is what a bind mount of that volume would show;
- envFrom Secrets come from `secrets` (name -> data), as the kubelet would resolve them.
Host and port go to 127.0.0.1 and an OS-assigned port, and a GPU requirement is lifted
(no GPU here); everything else is the pod's own.
"""

from __future__ import annotations

import dataclasses
import json
import os
import queue
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from torchrig.settings import ServeSettings

LIFTED = {
    "TORCHRIG_SERVE_HOST": "127.0.0.1",
    "TORCHRIG_SERVE_PORT": "0",
    "TORCHRIG_SERVE_REQUIRE_GPU": "false",
    "TORCHRIG_DOCTOR_REQUIRE_GPU": "false",
}
if "grpc_port" in {f.name for f in dataclasses.fields(ServeSettings)}:
    LIFTED["TORCHRIG_SERVE_GRPC_PORT"] = "0"  # never a fixed port in a test


def _under(root: Path, value: str) -> str:
    return str(root / value.lstrip("/")) if value.startswith("/") else value


def materialize(
    pod: Mapping[str, Any],
    root: Path,
    *,
    stand_ins: Mapping[str, Path],
    secrets: Mapping[str, Mapping[str, str]],
) -> tuple[list[str], dict[str, str]]:
    """(argv, env) of the pod's first container, its volumes laid out under `root`.

    `stand_ins` maps a PVC claim name or an NFS "server:path" to a local directory."""
    (container,) = pod["containers"]
    volumes = {volume["name"]: volume for volume in pod.get("volumes", [])}
    for mount in container.get("volumeMounts", []):
        volume, path = volumes[mount["name"]], mount["mountPath"]
        if path == "/dev/shm":
            continue
        target = Path(_under(root, path))
        target.parent.mkdir(parents=True, exist_ok=True)
        if "emptyDir" in volume:
            target.mkdir(parents=True, exist_ok=True)
        elif "secret" in volume:
            target.mkdir(parents=True, exist_ok=True)
            data = secrets[volume["secret"]["secretName"]]
            for item in volume["secret"].get("items", [{"key": k, "path": k} for k in data]):
                (target / item["path"]).write_text(data[item["key"]], encoding="utf-8")
        elif "persistentVolumeClaim" in volume or "nfs" in volume:
            claim = volume.get("persistentVolumeClaim", {}).get("claimName")
            nfs = volume.get("nfs")
            key = claim or f"{nfs['server']}:{nfs['path']}"
            source = stand_ins[key] / mount.get("subPath", "")
            assert mount.get("readOnly") is True, f"{key} must be mounted read-only"
            target.symlink_to(source, target_is_directory=True)
        else:  # pragma: no cover - a volume kind this helper does not know
            raise AssertionError(f"no local equivalent for volume {volume}")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TORCHRIG_", "AWS_"))}
    for ref in container.get("envFrom", []):
        env.update(secrets[ref["secretRef"]["name"]])
    for item in container.get("env", []):
        env[item["name"]] = _under(root, str(item["value"]))
    Path(env["HOME"]).mkdir(parents=True, exist_ok=True)  # the image's home, not a volume
    env.update(LIFTED)
    command, *args = container["args"]
    if command != "torchrig":  # pragma: no cover - the image's entrypoint runs torchrig
        raise AssertionError(f"unexpected command {container['args']}")
    return [sys.executable, "-m", "torchrig", *[_under(root, a) for a in args]], env


@contextmanager
def serving_pod(argv: list[str], env: dict[str, str], log: Path) -> Iterator[str]:
    """Start the translated container; yield its URL once it logs "serving on" (models
    loaded); SIGTERM it at the end."""
    with log.open("w") as errors:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=errors, text=True, env=env)
    assert proc.stdout is not None
    stdout = proc.stdout
    urls: queue.Queue[str] = queue.Queue()

    def read() -> None:  # drains stdout for the process's whole life
        for line in stdout:
            url = json.loads(line).get("url") if line.startswith("{") else None
            if isinstance(url, str) and url.startswith("http"):  # not gRPC's address
                urls.put(str(url))
        urls.put("")

    threading.Thread(target=read, daemon=True).start()
    try:
        try:
            url = urls.get(timeout=180)
        except queue.Empty:
            url = ""
        if not url:
            raise AssertionError(f"the pod's server never served: {log.read_text()[-2000:]}")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:  # pragma: no cover - reported by the test
            proc.kill()
            proc.wait(10)
        proc.stdout.close()
