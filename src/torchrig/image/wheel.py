"""A wheel of the running torchrig, written into a build context so images can install it.

torchrig is not on a public index, so a serve image installs the torchrig that rendered
it. The wheel is made from the installed package itself (an editable checkout or a
wheel install alike) and its metadata, without a build backend or the network; its
entries carry a fixed timestamp, so the same code gives the same bytes and the build's
layer cache holds.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import zipfile
from pathlib import Path

import torchrig
from torchrig import __version__
from torchrig.errors import TorchrigError

_EPOCH = (1980, 1, 1, 0, 0, 0)  # the earliest time a zip entry can hold
_SKIP_SUFFIXES = (".pyc", ".pyo")


class WheelError(TorchrigError):
    """The running torchrig cannot be turned into a wheel (no metadata: not installed)."""

    exit_code = 2


def _record_hash(data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
    return f"sha256={digest.decode('ascii')}"


def _package_files() -> list[tuple[str, bytes]]:
    root = Path(torchrig.__file__).resolve().parent
    found = []
    for path in sorted(root.rglob("*")):
        if not path.is_file() or "__pycache__" in path.parts or path.suffix in _SKIP_SUFFIXES:
            continue
        found.append((f"torchrig/{path.relative_to(root).as_posix()}", path.read_bytes()))
    return found


def wheel_name() -> str:
    """The file name of the running torchrig's wheel."""
    return f"torchrig-{__version__}-py3-none-any.whl"


def write_torchrig_wheel(directory: Path) -> Path:
    """Write `torchrig-<version>-py3-none-any.whl` of the running torchrig into `directory`."""
    try:
        dist = importlib.metadata.distribution("torchrig")
    except importlib.metadata.PackageNotFoundError:
        raise WheelError(
            "torchrig runs without installed metadata, so no wheel of it can be made; install "
            "it (pip install -e . in a checkout) or pass --torchrig-spec to take it from an index"
        ) from None
    metadata = dist.read_text("METADATA")
    if metadata is None:
        raise WheelError("torchrig's installed metadata has no METADATA file; reinstall torchrig")
    dist_info = f"torchrig-{__version__}.dist-info"
    entries = _package_files()
    entries.append((f"{dist_info}/METADATA", metadata.encode("utf-8")))
    entry_points = dist.read_text("entry_points.txt")
    if entry_points:
        entries.append((f"{dist_info}/entry_points.txt", entry_points.encode("utf-8")))
    wheel_meta = (
        "Wheel-Version: 1.0\nGenerator: torchrig (image render)\nRoot-Is-Purelib: true\n"
        "Tag: py3-none-any\n"
    )
    entries.append((f"{dist_info}/WHEEL", wheel_meta.encode("utf-8")))
    record = "".join(f"{name},{_record_hash(data)},{len(data)}\n" for name, data in entries)
    record += f"{dist_info}/RECORD,,\n"
    entries.append((f"{dist_info}/RECORD", record.encode("utf-8")))
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / wheel_name()
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries:
            info = zipfile.ZipInfo(name, date_time=_EPOCH)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            archive.writestr(info, data)
    return target
