"""Render a build context (Dockerfile + the files it copies) for one validated image.

Rendering is plain templating of the package's templates: no network, no Docker.
The Python requirement set comes from a constraints file made by `lock`, so the same
inputs always render the same context. What the image installs that is not on a public
index travels in the context's `wheels/`: a wheel of the running torchrig (serve) and
any wheelhouse the user adds (an air-gapped build, a company-built wheel).
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import os
import re
import shutil
from importlib import resources
from pathlib import Path

from torchrig import __version__
from torchrig.errors import UsageError
from torchrig.image.data_files import load_image_data
from torchrig.image.lock import check_constraints, requirements_for
from torchrig.image.spec import ImageSpec
from torchrig.image.wheel import write_torchrig_wheel

UID = 10001
DEFAULT_SOURCE = "https://example.com/platform/images"
_PLACEHOLDER = re.compile(r"@([a-z_]+)@")
# template file -> name in the build context, per flavour
_FLAVOUR_FILES: dict[str, dict[str, str]] = {
    "runtime": {},
    "dev": {"sshd_config": "sshd_config", "dev-start.sh": "dev-start.sh"},
    "serve": {"entrypoint.sh": "entrypoint.sh", "healthcheck.py": "healthcheck.py"},
}
WHEELS_DIR = "wheels"  # the context's wheelhouse, bind-mounted into the install step
WHEELS_SUMS = "wheels.sha256"  # its checksums (sha256sum format), copied into the build
WHEELS_MOUNT = "/tmp/torchrig/wheels"  # where the install step mounts the wheelhouse
# lint rules the rendered Dockerfiles are allowed to break, each justified in the template
IGNORED_HADOLINT_RULES = ("DL3008",)


@dataclasses.dataclass(frozen=True)
class RenderedContext:
    """A build context: file name -> content, the Dockerfile's build target, and the wheels
    that go into its wheelhouse (a wheel of the running torchrig, and the user's wheels)."""

    files: dict[str, str]
    target: str
    bundle_torchrig: bool = False
    wheels: tuple[Path, ...] = ()

    def write(self, directory: Path) -> list[Path]:
        """Write every file into `directory` (created if needed); scripts are made executable.

        The wheelhouse is made anew: wheels from an earlier render are removed first.
        """
        directory.mkdir(parents=True, exist_ok=True)
        written = []
        for name, content in sorted(self.files.items()):
            path = directory / name
            path.write_text(content, encoding="utf-8")
            if name.endswith((".sh", ".py")) and name != "verify_pins.py":
                path.chmod(0o755)
            written.append(path)
        wheelhouse = directory / WHEELS_DIR
        wheelhouse.mkdir(exist_ok=True)
        for stale in wheelhouse.glob("*.whl"):
            stale.unlink()
        for wheel in self.wheels:
            _link_or_copy(wheel, wheelhouse / wheel.name)
        if self.bundle_torchrig:
            write_torchrig_wheel(wheelhouse)
        written.append(wheelhouse)
        # the wheels' checksums, copied into the build: a changed wheel changes a COPY, so no
        # engine reuses a cached install step (bind-mount contents are not in buildah's
        # cache key), and the install step checks the wheels against them
        sums = directory / WHEELS_SUMS
        sums.write_text(
            "".join(
                f"{_sha256(wheel)}  {WHEELS_MOUNT}/{wheel.name}\n"
                for wheel in sorted(wheelhouse.glob("*.whl"))
            ),
            encoding="utf-8",
        )
        written.append(sums)
        return written


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _link_or_copy(source: Path, target: Path) -> None:
    """A hard link where the file system allows it (wheels can be gigabytes), else a copy."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def wheelhouse_files(directories: tuple[Path, ...]) -> tuple[Path, ...]:
    """The `*.whl` files of each --wheelhouse directory; a missing or empty one is an error."""
    found: list[Path] = []
    for directory in directories:
        if not directory.is_dir():
            raise UsageError(f"--wheelhouse {directory} is not a directory of wheels")
        wheels = sorted(directory.glob("*.whl"))
        if not wheels:
            raise UsageError(
                f"--wheelhouse {directory} holds no *.whl file; fill it with `pip download` "
                "or `pip wheel`, or drop the option"
            )
        found.extend(wheels)
    names = [wheel.name for wheel in found]
    for name in sorted({n for n in names if names.count(n) > 1}):
        raise UsageError(f"wheel {name} is in more than one --wheelhouse; keep one copy")
    return tuple(found)


def template(name: str) -> str:
    """The text of a template shipped in `torchrig/image/templates/`."""
    return (
        resources.files("torchrig.image")
        .joinpath("templates")
        .joinpath(name)
        .read_text(encoding="utf-8")
    )


def _fill(text: str, values: dict[str, str]) -> str:
    def replace(match: re.Match[str]) -> str:
        key = match.group(1)
        if key not in values:
            raise KeyError(f"template placeholder @{key}@ has no value")
        return values[key]

    return _PLACEHOLDER.sub(replace, text)


def _apt_packages(spec: ImageSpec) -> list[str]:
    packages: list[str] = []
    if spec.compiler:
        # torch.compile (Inductor) builds C++ wrappers and Triton compiles a small C helper
        # against Python.h: both need a compiler and, for Ubuntu's Python, its headers
        packages.append("g++")
        if spec.uses_distro_python:
            packages.append(f"python{spec.python}-dev")
    if spec.flavour == "dev":
        packages += ["openssh-server", "openssh-client", "git"]
    return sorted(packages)


def _packages_block(spec: ImageSpec) -> str:
    packages = _apt_packages(spec)
    if not packages:
        return ""
    lines = " \\\n        ".join(packages)
    return (
        "RUN apt-get update \\\n"
        f"    && apt-get install -y --no-install-recommends \\\n        {lines} \\\n"
        "    && rm -rf /var/lib/apt/lists/*\n"
    )


_CUDA_ENV = " \\\n    NVIDIA_VISIBLE_DEVICES=all \\\n    NVIDIA_DRIVER_CAPABILITIES=compute,utility"


def render_context(
    spec: ImageSpec,
    constraints: str,
    *,
    source: str = DEFAULT_SOURCE,
    created: str | None = None,
    constraints_name: str = "constraints file",
    torchrig_spec: str | None = None,
    wheels: tuple[Path, ...] = (),
) -> RenderedContext:
    """The build context of `spec` with `constraints` (checked to be this image's lock).

    A serve image installs torchrig from a wheel of the running torchrig put into the
    context, unless `torchrig_spec` names the requirement to take from an index instead.
    """
    check_constraints(spec, constraints, constraints_name)
    if any(ch.isspace() or ch == '"' for ch in source):
        raise UsageError(f"--source {source!r} must be a URL without spaces or quotes")
    if torchrig_spec is not None and spec.flavour != "serve":
        raise UsageError("--torchrig-spec applies to serve images only (they install torchrig)")
    data = load_image_data()
    values = {
        "flavour": spec.flavour,
        "torch": spec.torch_version,
        "torch_label": spec.torch_label,
        "torch_pin": spec.torch_pin,
        "variant": spec.variant,
        "cuda": "none" if spec.is_cpu else spec.cuda,
        "accelerator_text": "no CUDA (CPU only)" if spec.is_cpu else f"CUDA {spec.cuda}",
        "accelerator_env": "" if spec.is_cpu else _CUDA_ENV,
        "require_gpu": "false" if spec.is_cpu else "true",
        "python": spec.python,
        "torchrig_version": __version__,
        "base_image": spec.base_image,
        "index_url": spec.index_url,
        "created": created
        or datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "source": source,
        "tag_version": f"{spec.torch_version}-{spec.accelerator_label}-{spec.flavour}",
        "min_driver": spec.min_driver or "none",
        "driver_floor": spec.driver_floor or spec.min_driver or "none",
        "uid": str(UID),
        "uv_image": data.uv_image,
        "packages": _packages_block(spec),
    }
    python_template = "python-distro.in" if spec.uses_distro_python else "python-uv.in"
    values["python_install"] = _fill(template(python_template), values)
    dockerfile = "".join(
        _fill(template(name), values)
        for name in ("Dockerfile.base", f"{spec.flavour}.in", "labels.in")
    )
    files = {
        "Dockerfile": dockerfile,
        "constraints.txt": constraints,
        "requirements.txt": "\n".join(requirements_for(spec, torchrig_spec=torchrig_spec)) + "\n",
        "verify_pins.py": template("verify_pins.py"),
        ".dockerignore": "*\n!requirements.txt\n!constraints.txt\n!verify_pins.py\n"
        + f"!{WHEELS_DIR}\n!{WHEELS_DIR}/*.whl\n!{WHEELS_SUMS}\n"
        + "".join(f"!{name}\n" for name in _FLAVOUR_FILES[spec.flavour].values()),
    }
    for template_name, context_name in _FLAVOUR_FILES[spec.flavour].items():
        files[context_name] = template(template_name)
    return RenderedContext(
        files=files,
        target=spec.flavour,
        bundle_torchrig=spec.flavour == "serve" and torchrig_spec is None,
        wheels=wheels,
    )
