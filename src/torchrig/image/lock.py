"""The constraints file of an image: every Python package pinned, resolved for its Python.

`lock(spec)` resolves the flavour's requirement set for the image's Python on
manylinux x86_64 and writes `name==version` lines. It uses `uv pip compile`
(which evaluates environment markers for the *target* Python), or
`pip install --dry-run --report` when the target Python is the one running
torchrig (pip evaluates markers for the running interpreter only).

Only the package index torchrig can reach is asked. The torch CUDA index is
usually not reachable where images are rendered, so torch is resolved as the
PyPI wheel of the same version: its CPU-independent dependencies (sympy,
filelock, ...) are the same in every variant. For a variant other than PyPI's,
the CUDA-specific packages (nvidia-*, triton, cuda-*) are left to torch itself,
whose metadata pins each of them exactly (`==`), so the build is still exact.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from torchrig import __version__
from torchrig.compat import load_kb
from torchrig.errors import TorchrigError, UsageError
from torchrig.image.spec import ImageSpec

PLATFORM_UV = "x86_64-manylinux_2_28"
# pip takes no "this glibc or older": name every manylinux tag up to the base image's glibc
_PIP_PLATFORMS = [f"manylinux_2_{minor}_x86_64" for minor in range(39, 4, -1)] + [
    "manylinux2014_x86_64",
    "manylinux2010_x86_64",
    "manylinux1_x86_64",
]
_VARIANT_FAMILIES = ("nvidia-", "cuda-", "triton")
_PIN_RE = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([A-Za-z0-9][A-Za-z0-9.+!_-]*)$")
_HEADER_RE = re.compile(r"^# torchrig image constraints: .*, Python (\d+\.\d+),", re.MULTILINE)
_UNREACHABLE = (
    "connection refused",
    "failed to connect",
    "failed to fetch",
    "error sending request",
    "dns error",
    "name or service not known",
    "temporary failure in name resolution",
    "max retries exceeded",
    "newconnectionerror",
    "network is unreachable",
    "timed out",
)


class IndexUnreachableError(TorchrigError):
    """The package index could not be reached, so the requirement set could not be resolved."""

    status_code = 503
    exit_code = 3


# the extras a serve image carries: the fsspec file systems of s3:// and gs:// repositories
SERVE_EXTRAS = ("s3", "gcs")


def requirements_for(spec: ImageSpec, *, torchrig_spec: str | None = None) -> list[str]:
    """The top-level requirements the image installs (requirements.txt in the context).

    A serve image installs torchrig with its storage extras, from the wheel put into the
    context or, with `torchrig_spec`, as that requirement from the package index.
    """
    reqs = [spec.torch_pin, "numpy"]
    if spec.flavour == "dev":
        reqs.append("jupyterlab")
    if spec.flavour == "serve":
        if torchrig_spec is not None:
            try:
                req = Requirement(torchrig_spec)
            except InvalidRequirement as exc:
                raise UsageError(f"--torchrig-spec {torchrig_spec!r}: {exc}") from None
            if canonicalize_name(req.name) != "torchrig":
                raise UsageError(
                    f"--torchrig-spec {torchrig_spec!r} names {req.name}, not torchrig; give "
                    "e.g. 'torchrig[s3,gcs]==0.1.0'"
                )
            reqs.append(torchrig_spec)
        else:
            reqs.append(f"torchrig[{','.join(SERVE_EXTRAS)}]=={__version__}")
    return reqs


def _torchrig_dependencies() -> list[str]:
    """torchrig's runtime dependencies and those of the serve extras, from its metadata."""
    found = []
    for text in importlib.metadata.requires("torchrig") or []:
        req = Requirement(text)
        if req.marker is not None and "extra" in str(req.marker):
            if not any(req.marker.evaluate({"extra": extra}) for extra in SERVE_EXTRAS):
                continue
            req.marker = None
            found.append(str(req))
            continue
        found.append(text)
    return found


def _resolution_input(spec: ImageSpec) -> list[str]:
    # torchrig itself is installed from the company index at build time; here its
    # dependencies stand for it, and it is pinned to this version below
    reqs = [f"torch=={spec.torch_version}", "numpy"]
    if spec.flavour == "dev":
        reqs.append("jupyterlab")
    if spec.flavour == "serve":
        reqs.extend(_torchrig_dependencies())
    return reqs


def _is_variant_specific(name: str) -> bool:
    return name.startswith(_VARIANT_FAMILIES)


def _raise_failure(tool: str, output: str, evidence: str = "") -> None:
    """A UsageError naming the failure from the tail of `output`; IndexUnreachableError
    when it (or `evidence`, a verbose rerun's output) shows the index was not reached."""
    lowered = (output + evidence).lower()
    tail = " ".join(output.strip().splitlines()[-3:])[:400]
    if any(marker in lowered for marker in _UNREACHABLE):
        raise IndexUnreachableError(
            f"the package index is unreachable, so the requirement set was not resolved "
            f"({tool}: {tail}); check the network or pass --index-url of a reachable mirror"
        )
    raise UsageError(f"the requirement set does not resolve ({tool}: {tail})")


def _resolve_uv(uv: str, reqs: list[str], python: str, index_url: str | None) -> dict[str, str]:
    with tempfile.TemporaryDirectory(prefix="torchrig-lock-") as tmp:
        source = Path(tmp, "requirements.in")
        source.write_text("\n".join(reqs) + "\n", encoding="utf-8")
        out = Path(tmp, "resolved.txt")
        argv = [uv, "pip", "compile", str(source), "-o", str(out), "--quiet", "--no-header",
                "--no-annotate", "--python-version", python, "--python-platform", PLATFORM_UV,
                "--only-binary", ":all:"]  # fmt: skip
        if index_url:
            argv += ["--index-url", index_url]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=600, check=False)
        if proc.returncode != 0:
            _raise_failure("uv pip compile", proc.stderr + proc.stdout)
        return parse_constraints(out.read_text(encoding="utf-8"), source="uv pip compile")


def _resolve_pip(reqs: list[str], python: str, index_url: str | None) -> dict[str, str]:
    with tempfile.TemporaryDirectory(prefix="torchrig-lock-") as tmp:
        report = Path(tmp, "report.json")
        argv = [sys.executable, "-m", "pip", "install", "--dry-run", "--quiet", "--report",
                str(report), "--ignore-installed", "--target", str(Path(tmp, "unused")),
                "--python-version", python, "--only-binary=:all:"]  # fmt: skip
        for platform in _PIP_PLATFORMS:
            argv += ["--platform", platform]
        env = dict(os.environ)
        if index_url:
            # only this index: not the machine's pip configuration and its mirrors
            argv += ["--index-url", index_url]
            env["PIP_CONFIG_FILE"] = os.devnull
            for name in ("PIP_EXTRA_INDEX_URL", "PIP_FIND_LINKS", "PIP_INDEX_URL"):
                env.pop(name, None)
        argv += reqs
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=600, env=env,
                              check=False)  # fmt: skip
        if proc.returncode != 0:
            output = proc.stderr + proc.stdout
            evidence = ""
            if "(from versions: none)" in output:
                # no version at all: a package the index lacks, or an index pip could not
                # reach and, with no retries left to warn about (PIP_RETRIES=0), says
                # nothing of under --quiet; its debug log tells which
                verbose = [("-vv" if arg == "--quiet" else arg) for arg in argv]
                rerun = subprocess.run(verbose, capture_output=True, text=True, timeout=600,
                                       env=env, check=False)  # fmt: skip
                evidence = rerun.stderr + rerun.stdout
            _raise_failure("pip install --dry-run", output, evidence)
        data = json.loads(report.read_text(encoding="utf-8"))
    return {
        canonicalize_name(item["metadata"]["name"]): item["metadata"]["version"]
        for item in data["install"]
    }


def find_uv() -> str | None:
    """The uv binary: from the `uv` package (torchrig[image]) or PATH, else None."""
    try:
        import uv  # type: ignore[import-not-found, unused-ignore]

        found: str = uv.find_uv_bin()
        return found
    except (ImportError, FileNotFoundError):
        return shutil.which("uv")


def resolve(spec: ImageSpec, *, index_url: str | None = None, resolver: str = "auto") -> str:
    """Resolve the image's requirement set and return the constraints file's text."""
    running = f"{sys.version_info[0]}.{sys.version_info[1]}"
    uv = find_uv() if resolver in ("auto", "uv") else None
    if resolver == "uv" and uv is None:
        raise UsageError("--resolver uv: uv is not installed; pip install 'torchrig[image]'")
    reqs = _resolution_input(spec)
    if uv is not None:
        pins, tool = _resolve_uv(uv, reqs, spec.python, index_url), "uv pip compile"
    elif spec.python == running:
        pins, tool = _resolve_pip(reqs, spec.python, index_url), "pip install --dry-run"
    else:
        raise UsageError(
            f"pip evaluates environment markers for the running Python {running}, not the "
            f"image's {spec.python}: install uv (pip install 'torchrig[image]') or run the "
            f"lock under Python {spec.python}"
        )
    rel = load_kb().release(spec.release)
    from_pypi = rel is not None and rel.pypi_default == spec.variant
    pins.pop("torch", None)
    if not from_pypi:
        # torch pins its own CUDA packages; what the image asks for directly stays pinned
        # (torchrig's nvidia-ml-py is an nvidia-* package that torch does not pin)
        direct = {canonicalize_name(Requirement(text).name) for text in reqs}
        pins = {
            name: ver
            for name, ver in pins.items()
            if name in direct or not _is_variant_specific(name)
        }
    if spec.flavour == "serve":
        pins["torchrig"] = __version__
    lines = [
        f"# torchrig image constraints: torch {spec.torch_label} "
        f"({'CPU' if spec.is_cpu else 'CUDA ' + spec.cuda}), flavour {spec.flavour}, "
        f"Python {spec.python}, linux x86_64",
        f"# resolved {datetime.date.today().isoformat()} by {tool} (torchrig {__version__});"
        " regenerate with `torchrig image lock`",
    ]
    if spec.is_cpu:
        lines.append(f"# the CPU build of torch comes from {spec.index_url}")
    elif not from_pypi:
        lines.append(
            f"# nvidia-*, cuda-* and triton are pinned exactly by {spec.torch_pin} itself "
            f"and come from {spec.index_url}"
        )
    lines.append(f"{spec.torch_pin}")
    lines += [f"{name}=={pins[name]}" for name in sorted(pins)]
    return "\n".join(lines) + "\n"


def parse_constraints(text: str, *, source: str = "constraints file") -> dict[str, str]:
    """Parse `name==version` lines (comments and blanks allowed); anything else is an error."""
    pins: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        match = _PIN_RE.match(line)
        if match is None:
            raise UsageError(
                f"{source} line {number}: {raw.strip()!r} is not an exact pin; every line must "
                "be name==version (regenerate it with `torchrig image lock`)"
            )
        try:
            Requirement(line)
        except InvalidRequirement as exc:
            raise UsageError(f"{source} line {number}: {exc}") from None
        name = canonicalize_name(match.group(1))
        if name in pins:
            raise UsageError(f"{source} line {number}: {name} is pinned twice")
        pins[name] = match.group(2)
    return pins


def check_constraints(spec: ImageSpec, text: str, source: str) -> dict[str, str]:
    """Parse a constraints file and check that it is the lock of this image's torch build."""
    pins = parse_constraints(text, source=source)
    header = _HEADER_RE.search(text)
    if header is not None and header.group(1) != spec.python:
        raise UsageError(
            f"{source} was resolved for Python {header.group(1)}, but the image has Python "
            f"{spec.python}; regenerate it with `torchrig image lock --python {spec.python}`"
        )
    have = pins.get("torch")
    wanted = spec.torch_pin.removeprefix("torch==")
    if have != wanted:
        raise UsageError(
            f"{source} pins torch {have or '(nothing)'}, but the image is torch {wanted}; "
            f"regenerate it: torchrig image lock --torch {spec.torch_version} --cuda "
            f"{spec.cuda} --flavour {spec.flavour} --python {spec.python}"
        )
    for name in requirements_for(spec)[1:]:
        bare = canonicalize_name(Requirement(name).name)
        if bare not in pins:
            raise UsageError(
                f"{source} does not pin {bare}, which the {spec.flavour} image installs; "
                "regenerate it with `torchrig image lock`"
            )
    return pins
