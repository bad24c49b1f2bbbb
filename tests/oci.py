"""The local OCI engines for the built-image tests: buildah builds, podman runs, daemonless.

Images live in their own storage (`TORCHRIG_TEST_CONTAINERS`, default
/var/tmp/torchrig-image-tests), so the base image and the layer cache outlast a run and
nothing touches the machine's own containers. The engines' configuration is written
there and handed to every engine command through the standard variables
(CONTAINERS_STORAGE_CONF, CONTAINERS_CONF, BUILDAH_ISOLATION), so torchrig itself runs
the engines exactly as a user's shell would.
"""

from __future__ import annotations

import dataclasses
import fcntl
import os
import resource
import shutil
import subprocess
import sys
from pathlib import Path

from system_tools import missing, require_tool

BASE_IMAGE = "localhost/torchrig-test-base:bookworm"
DEBIAN_TOOLS = "apt-get install -y buildah podman mmdebstrap runc (Debian's packages)"


@dataclasses.dataclass(frozen=True)
class Engines:
    """The environment that points buildah and podman at the test storage."""

    root: Path
    env: dict[str, str]
    driver: str

    def run(self, *argv: str, timeout_s: float = 600, check: bool = True) -> str:
        proc = subprocess.run(argv, env=self.env, capture_output=True, text=True,
                              timeout=timeout_s, check=False)  # fmt: skip
        if check and proc.returncode != 0:
            raise AssertionError(f"{' '.join(argv)} exited {proc.returncode}:\n"
                                 f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")  # fmt: skip
        return proc.stdout

    def torchrig(self, *args: str, timeout_s: float = 1800) -> subprocess.CompletedProcess[str]:
        """`torchrig ARGS` as a user runs it, with the engines' configuration."""
        argv = [sys.executable, "-m", "torchrig", *args]
        return subprocess.run(argv, env=self.env, capture_output=True, text=True,
                              timeout=timeout_s, check=False)  # fmt: skip

    def has_image(self, name: str) -> bool:
        return subprocess.run(["podman", "image", "exists", name], env=self.env,
                              capture_output=True, check=False).returncode == 0  # fmt: skip


def _write_config(root: Path, driver: str) -> dict[str, str]:
    storage = root / f"storage-{driver}.conf"
    storage.write_text(
        f'[storage]\ndriver = "{driver}"\nrunroot = "{root}/run-{driver}"\n'
        f'graphroot = "{root}/graph-{driver}"\n',
        encoding="utf-8",
    )
    # modest, fixed resource limits: a container runtime that may not raise limits (a
    # sandbox without CAP_SYS_RESOURCE) refuses to start otherwise; lowering always works
    nofile = min(resource.getrlimit(resource.RLIMIT_NOFILE)[0], 4096)
    nproc = min(resource.getrlimit(resource.RLIMIT_NPROC)[0], 4096)
    lines = [
        "[containers]",
        f'default_ulimits = ["nofile={nofile}:{nofile}", "nproc={nproc}:{nproc}"]',
    ]
    if shutil.which("runc"):  # crun cannot run in cgroup v1 hybrid setups; runc can
        lines += ["[engine]", 'runtime = "runc"']
    containers = root / "containers.conf"
    containers.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return {
        **os.environ,
        "CONTAINERS_STORAGE_CONF": str(storage),
        "CONTAINERS_CONF": str(containers),
        "BUILDAH_ISOLATION": "chroot",
    }


def _base_tarball(root: Path) -> Path:
    tarball = root / "base-bookworm.tar"
    if not tarball.is_file():
        mmdebstrap = require_tool("mmdebstrap", DEBIAN_TOOLS)
        partial = tarball.with_name("base-bookworm.partial.tar")  # the suffix picks the format
        proc = subprocess.run([mmdebstrap, "--variant=minbase", "--include=ca-certificates",
                               "bookworm", str(partial)], capture_output=True, text=True,
                              timeout=900, check=False)  # fmt: skip
        if proc.returncode != 0:
            raise AssertionError(f"mmdebstrap failed:\n{proc.stderr[-3000:]}")
        partial.rename(tarball)
    return tarball


def _reclaim(engines: Engines) -> None:
    """Drop what earlier runs left: working containers of interrupted builds and images no
    tag reaches (superseded builds). The tagged images keep their layers as the cache."""
    engines.run("buildah", "rm", "--all", check=False)
    engines.run("podman", "image", "prune", "--force", check=False)


def require_free_disk(engines: Engines, gigabytes: int) -> None:
    """Skip (fail in CI) when the image storage's disk cannot hold a build of this size."""
    free = shutil.disk_usage(engines.root).free / 1e9
    if free < gigabytes:
        missing(f"{free:.0f} GB free under {engines.root}; this build needs about {gigabytes}")


def prepare_engines() -> Engines:
    """Engines with a Debian 12 base image (mmdebstrap) imported into the test storage;
    overlay storage where this kernel allows it, else vfs."""
    for tool in ("buildah", "podman"):
        require_tool(tool, DEBIAN_TOOLS)
    if os.geteuid() != 0:
        missing("the image tests run buildah and podman as root (rootful, daemonless)")
    root = Path(os.environ.get("TORCHRIG_TEST_CONTAINERS", "/var/tmp/torchrig-image-tests"))
    root.mkdir(parents=True, exist_ok=True)
    # test workers build at once in this storage: one prepares it (the base tarball and
    # image, dropping what earlier runs left) while the others wait, and only the first of
    # a run reclaims, since reclaiming removes working containers, a running build's too
    with (root / "prepare.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _prepare(root)


def _prepare(root: Path) -> Engines:
    tarball = _base_tarball(root)
    run = os.environ.get("PYTEST_XDIST_TESTRUNUID", f"pid {os.getpid()}")
    marker = root / "reclaimed-by"
    first = not marker.is_file() or marker.read_text(encoding="utf-8") != run
    problems = []
    for driver in ("overlay", "vfs"):
        engines = Engines(root, _write_config(root, driver), driver)
        if first:
            _reclaim(engines)
        if not engines.has_image(BASE_IMAGE):
            engines.run("podman", "import", str(tarball), BASE_IMAGE, check=False)
        probe = subprocess.run(["podman", "run", "--rm", "--no-healthcheck", BASE_IMAGE, "true"],
                               env=engines.env, capture_output=True, text=True, timeout=300,
                               check=False)  # fmt: skip
        if probe.returncode == 0:
            marker.write_text(run, encoding="utf-8")
            return engines
        problems.append(f"{driver}: {probe.stderr.strip()[-300:]}")
    missing(f"podman cannot run a container here ({'; '.join(problems)})")
    raise AssertionError("unreachable")  # pragma: no cover


def wheelhouse_with(pattern: str) -> Path | None:
    """A local directory (pip's find-links here) that holds a wheel matching `pattern`."""
    candidates = [part for part in os.environ.get("PIP_FIND_LINKS", "").split() if part]
    candidates += ["/opt/wheels"]
    for directory in candidates:
        path = Path(directory)
        if path.is_dir() and any(path.glob(pattern)):
            return path
    return None
