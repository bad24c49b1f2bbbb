"""Render a build context (Dockerfile + the files it copies) for one validated image.

Rendering is plain templating of the package's templates: no network, no Docker.
The Python requirement set comes from a constraints file made by `lock` (passed in,
or resolved on the spot), so the same inputs always render the same context.
"""

from __future__ import annotations

import dataclasses
import datetime
import re
from importlib import resources
from pathlib import Path

from torchrig import __version__
from torchrig.errors import UsageError
from torchrig.image.data_files import load_image_data
from torchrig.image.lock import check_constraints, requirements_for
from torchrig.image.spec import ImageSpec

UID = 10001
DEFAULT_SOURCE = "https://example.com/platform/images"
_PLACEHOLDER = re.compile(r"@([a-z_]+)@")
# template file -> name in the build context, per flavour
_FLAVOUR_FILES: dict[str, dict[str, str]] = {
    "runtime": {},
    "dev": {"sshd_config": "sshd_config", "dev-start.sh": "dev-start.sh"},
    "serve": {"entrypoint.sh": "entrypoint.sh"},
}
# lint rules the rendered Dockerfiles are allowed to break, each justified in the template
IGNORED_HADOLINT_RULES = ("DL3008",)


@dataclasses.dataclass(frozen=True)
class RenderedContext:
    """A build context: file name -> content, and the Dockerfile's build target."""

    files: dict[str, str]
    target: str

    def write(self, directory: Path) -> list[Path]:
        """Write every file into `directory` (created if needed); scripts are made executable."""
        directory.mkdir(parents=True, exist_ok=True)
        written = []
        for name, content in sorted(self.files.items()):
            path = directory / name
            path.write_text(content, encoding="utf-8")
            if name.endswith(".sh"):
                path.chmod(0o755)
            written.append(path)
        return written


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


def render_context(
    spec: ImageSpec,
    constraints: str,
    *,
    source: str = DEFAULT_SOURCE,
    created: str | None = None,
    constraints_name: str = "constraints file",
) -> RenderedContext:
    """The build context of `spec` with `constraints` (checked to be this image's lock)."""
    check_constraints(spec, constraints, constraints_name)
    if any(ch.isspace() or ch == '"' for ch in source):
        raise UsageError(f"--source {source!r} must be a URL without spaces or quotes")
    data = load_image_data()
    values = {
        "flavour": spec.flavour,
        "torch": spec.torch_version,
        "variant": spec.variant,
        "cuda": spec.cuda,
        "python": spec.python,
        "torchrig_version": __version__,
        "base_image": spec.base_image,
        "index_url": spec.index_url,
        "created": created
        or datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "source": source,
        "tag_version": f"{spec.torch_version}-cuda{spec.cuda}-{spec.flavour}",
        "min_driver": spec.min_driver,
        "driver_floor": spec.driver_floor or spec.min_driver,
        "uid": str(UID),
        "uv_image": data.uv_image,
        "packages": _packages_block(spec),
    }
    python_template = "python-distro.in" if spec.uses_distro_python else "python-uv.in"
    values["python_install"] = _fill(template(python_template), values)
    dockerfile = _fill(template("Dockerfile.base"), values) + _fill(
        template(f"{spec.flavour}.in"), values
    )
    files = {
        "Dockerfile": dockerfile,
        "constraints.txt": constraints,
        "requirements.txt": "\n".join(requirements_for(spec)) + "\n",
        "verify_pins.py": template("verify_pins.py"),
        ".dockerignore": "*\n!requirements.txt\n!constraints.txt\n!verify_pins.py\n"
        + "".join(f"!{name}\n" for name in _FLAVOUR_FILES[spec.flavour].values()),
    }
    for template_name, context_name in _FLAVOUR_FILES[spec.flavour].items():
        files[context_name] = template(template_name)
    return RenderedContext(files=files, target=spec.flavour)
